#pragma once
// int8 GEMMs for CPU inference: s8 activations x s8 weights, s32 accumulation, float32 out.
//
// Weights are quantised symmetrically per output channel (scale = max|w_n| / 127);
// activations symmetrically per row (per token): each row of x its own scale,
// max|x_m| / 127, taken as the row is written (dynamic), or one scale for every
// row fixed in advance from calibration data (static: values beyond it
// saturate). The product is rescaled by x_scale[m] * w_scale[n] and the bias
// added in float32. Per-row scales let the op that produces x write it in s8
// row by row, with no pass over the whole tensor for its range first.
// oneDNN does the work with AVX512_VNNI or AMX kernels; without oneDNN or
// either instruction set there is no int8 path (int8_unavailable_reason() says
// why and the constructors throw).
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
// One row of an activation: dst (n) = saturate(round(src / s)), s = fixed_scale where > 0,
// else max|src| / 127 (0 for an all-zero row, which quantises to zeros); returns s. Serial:
// producers call it for each row they finish, inside their own parallel loops.
float quantize_row_s8(int8_t* dst, const float* src, int64_t n, float fixed_scale = 0.f);

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

  int64_t in_features() const;  // K

  // 0 (the default): each row its own scale; > 0: this scale for every row. What the
  // producer of x passes to quantize_row_s8 as fixed_scale.
  void set_input_scale(float scale);
  float input_scale() const;
  // The largest |x| seen by forward since construction (what a calibration run records),
  // over the calls made while the scales were per row (a fixed scale hides the range).
  float observed_abs_max() const;

  // x (M,K) quantised by rows: row m is xq[m,:] * x_scale[m] (quantize_row_s8 with
  // input_scale() as fixed_scale).
  void forward(float* out, const int8_t* xq, const float* x_scale, int64_t M) const;
  // x (M,K) float32, quantised by rows inside the call.
  void forward(float* out, const float* x, int64_t M) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
