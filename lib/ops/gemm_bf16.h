#pragma once
// bfloat16 GEMMs and convolutions for CPU inference (float32 accumulation).
//
// Weights are given in float32 (PyTorch layouts) and converted to bf16 once, in the
// constructor, into the layout the kernel wants; activations come in as bf16 and
// leave as float32 or bf16. The work is done by oneDNN, which picks AMX or
// AVX512_BF16 kernels at run time. A build without oneDNN, or a CPU without
// either instruction set (oneDNN would emulate bf16, slower than float32), has
// no bf16 GEMM: bf16_unavailable_reason() says why, and Bf16Linear throws.
// Bf16Conv2d still runs there (so that CpuInt8Model, whose convolutions take bf16
// activations, runs on CPUs with VNNI alone): it widens its bf16 operands to
// float32, exactly, and convolves in float32.
//
// Primitives are created per input shape on first use and cached; the ops are
// not safe to call from several threads at once (each call is parallel inside).
#include <cstdint>
#include <memory>
#include <string>

#include "ops/conv2d.h"

namespace mm {

// Empty when this build and this CPU run bf16 GEMMs natively; otherwise the reason.
std::string bf16_unavailable_reason();
// Empty when Bf16Conv2d can run (natively or widened to float32): a build with oneDNN.
std::string bf16_conv_unavailable_reason();

// dst[i] = bf16(src[i]), rounded to nearest even (as torch's .to(torch.bfloat16)).
void to_bf16(uint16_t* dst, const float* src, int64_t n);

enum class Bf16Epilogue { None, Relu };

// out (M,N) = epilogue(x (M,K) · weightᵀ + bias), weight (N,K) as torch.nn.Linear.
class Bf16Linear {
 public:
  Bf16Linear();
  // weight (N,K) float32; bias (N) or nullptr. Both are copied.
  Bf16Linear(const float* weight, const float* bias, int64_t K, int64_t N,
             Bf16Epilogue epilogue = Bf16Epilogue::None);
  ~Bf16Linear();
  Bf16Linear(Bf16Linear&&) noexcept;
  Bf16Linear& operator=(Bf16Linear&&) noexcept;

  void forward(float* out, const uint16_t* x, int64_t M) const;         // out float32
  void forward_bf16(uint16_t* out, const uint16_t* x, int64_t M) const;  // out bf16

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Channels-last convolution, out (B,OH,OW,Cout) = epilogue(scale ⊙ (conv(x, weight) + bias) + shift)
// for x (B,H,W,Cin). scale/shift (Cout) fold an eval-mode BatchNorm that follows the conv into
// its weight and bias (in float32, before the conversion to bf16).
class Bf16Conv2d {
 public:
  Bf16Conv2d();
  // geometry: Cin, Cout, KH, KW, stride, pad (B, H, W are given per call).
  // weight (Cout,Cin,KH,KW) float32; bias, scale, shift (Cout) or nullptr.
  Bf16Conv2d(const Conv2dShape& geometry, const float* weight, const float* bias, const float* scale,
             const float* shift, Bf16Epilogue epilogue = Bf16Epilogue::None);
  ~Bf16Conv2d();
  Bf16Conv2d(Bf16Conv2d&&) noexcept;
  Bf16Conv2d& operator=(Bf16Conv2d&&) noexcept;

  void forward(float* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const;
  void forward_bf16(uint16_t* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
