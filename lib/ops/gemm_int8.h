#pragma once
// int8 GEMMs for CPU inference: s8 activations x s8 weights, s32 accumulation, float32 out.
//
// Weights are quantised symmetrically per output channel (scale = max|w_n| / 127);
// activations symmetrically per tensor, with a scale taken from each batch
// (dynamic: max|x| / 127) or fixed in advance from calibration data (static:
// values beyond it saturate). The product is rescaled by x_scale * w_scale[n]
// and the bias added in float32. oneDNN does the work with AVX512_VNNI or AMX
// kernels; without oneDNN or either instruction set there is no int8 path
// (int8_unavailable_reason() says why and the constructors throw).
//
// Not safe to call from several threads at once (each call is parallel inside).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mm {

// Empty when this build and this CPU run int8 GEMMs natively; otherwise the reason.
std::string int8_unavailable_reason();

// w (N,K) float32 as q[n,k] * scale[n], q in [-127, 127], scale[n] = max_k |w[n,k]| / 127
// (1 for an all-zero row). The form mm-convert --quantize int8 stores.
struct Int8Weights {
  int64_t N = 0, K = 0;
  std::vector<int8_t> q;     // (N,K)
  std::vector<float> scale;  // (N)
};
Int8Weights quantize_per_channel(const float* w, int64_t N, int64_t K);

float abs_max(const float* x, int64_t n);
// dst[i] = saturate(round(src[i] / scale)) to [-127, 127].
void quantize_s8(int8_t* dst, const float* src, int64_t n, float scale);

enum class Int8Epilogue { None, Relu };

// out (M,N) = epilogue(x (M,K) · weightᵀ + bias), weight (N,K) as torch.nn.Linear.
class Int8Linear {
 public:
  Int8Linear();
  // weight (N,K) float32, quantised here; bias (N) or nullptr. Both are copied.
  Int8Linear(const float* weight, const float* bias, int64_t K, int64_t N,
             Int8Epilogue epilogue = Int8Epilogue::None);
  ~Int8Linear();
  Int8Linear(Int8Linear&&) noexcept;
  Int8Linear& operator=(Int8Linear&&) noexcept;

  // 0 (the default): a scale from each batch; > 0: this scale for every batch.
  void set_input_scale(float scale);
  float input_scale() const;
  // The largest |x| seen by forward since construction (what a calibration run records),
  // over the calls made while the scale was per batch (a fixed scale skips that pass).
  float observed_abs_max() const;

  // x float32, quantised to s8 inside the call. x_abs_max >= 0: max|x|, known to the caller
  // (its producer tracked it), which saves a pass over x when the scale is per batch.
  void forward(float* out, const float* x, int64_t M, float x_abs_max = -1.f) const;
  // forward of `other` (same input width) on the same x, reusing this call's quantised x
  // when both quantise it with the same scale (per-batch scales, or equal fixed ones).
  void forward_same_input(const Int8Linear& other, float* out_other, float* out, const float* x, int64_t M,
                          float x_abs_max = -1.f) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
