#pragma once
// MedMamba inference on the CPU with bfloat16 GEMMs and convolutions.
//
// The same function as MedMamba::forward in eval mode, computed as:
//  * bf16 weights (converted once, here) and bf16 activations into every GEMM and
//    convolution (patch embedding, in_proj, x_proj, out_proj, the conv branch,
//    patch merging), float32 accumulation and float32 outputs where a float32
//    op follows; the eval-mode BatchNorms after conv1 and conv4 are folded into
//    those convs' weights, their ReLUs run in the conv's epilogue;
//  * float32 everywhere else: the residual stream, LayerNorms, BatchNorm before
//    conv1, the depthwise conv, SiLU, the selective scan (state and dt/B/C; its
//    decay factors exp(Δ·A) to 2.7e-6 instead of 1e-7, see selective_scan.h) and
//    the classifier head.
// Logits agree with float32 to about 1e-2 relative L2; the shipped brain-MRI
// model's top-1 class to 99.9% (see test/test_bf16.cpp).
//
// Inference only: there is no backward and no training mode. Throws mm::Error at
// construction when the build or the CPU has no bf16 path (bf16_unavailable_reason()).
#include <memory>

#include "core/tensor.h"
#include "model/medmamba.h"

namespace mm {

class CpuBf16Model {
 public:
  // Converts model's weights; reads its float32 parameters again in every forward
  // (LayerNorm, scan, depthwise conv, head), so model must outlive this object and
  // a change to its parameters needs a new CpuBf16Model.
  explicit CpuBf16Model(const MedMamba& model);
  ~CpuBf16Model();
  CpuBf16Model(CpuBf16Model&&) noexcept;

  const ModelConfig& config() const;
  // images: (B,in_chans,S,S) float32 CPU, S divisible by 32. Returns logits (B,classes).
  Tensor forward(const Tensor& images);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
