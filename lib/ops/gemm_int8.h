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

#include "ops/conv2d.h"

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

// What an Int8Conv2d's input holds: never negative (it follows a ReLU), quantised to u8 with
// max x / 255; or of either sign (a BatchNorm's output), quantised to s8 with max |x| / 127.
enum class Int8ConvInput { NonNegative, Signed };

// Channels-last convolution in int8 (VNNI): out (B,OH,OW,Cout) = [relu](scale ⊙ (conv(x, weight)
// + bias) + shift) for x (B,H,W,Cin) given in bf16 (what the bf16/int8 skeleton's convolutions
// read). x is quantised here with one scale per image (see Int8ConvInput): a convolution mixes
// neighbouring pixels, so Int8Linear's per-row scales do not apply, and a scale per batch would
// make an image's result depend on the others in the batch. Zero padding stays exact either way
// (0 quantises to 0; oneDNN handles the s8 source's compensation). The weights, with an eval BatchNorm's scale
// folded in, are quantised per output channel. The sums are s32, rescaled and biased in
// float32 (oneDNN post-ops) and written in float32 or bf16.
class Int8Conv2d {
 public:
  Int8Conv2d();
  // As Bf16Conv2d: geometry Cin, Cout, KH, KW, stride, pad; weight (Cout,Cin,KH,KW) float32;
  // bias, scale, shift (Cout) or nullptr.
  Int8Conv2d(const Conv2dShape& geometry, const float* weight, const float* bias, const float* scale,
             const float* shift, Int8Epilogue epilogue = Int8Epilogue::None,
             Int8ConvInput input = Int8ConvInput::NonNegative);
  ~Int8Conv2d();
  Int8Conv2d(Int8Conv2d&&) noexcept;
  Int8Conv2d& operator=(Int8Conv2d&&) noexcept;

  // With Int8ConvInput::NonNegative, negative values of x would be clamped to 0.
  void forward(float* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const;
  void forward_bf16(uint16_t* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
