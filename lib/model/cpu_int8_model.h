#pragma once
// MedMamba inference on the CPU with int8 Linear layers.
//
// The skeleton of CpuBf16Model (lib/model/cpu_fast_forward.h) with every Linear
// layer int8 (in_proj, x_proj, out_proj, the 1x1 conv of the conv branch, patch
// merging): weights per output channel, activations per row (per token) with scales
// the producing op takes from each row as it writes it in s8, or one calibrated scale
// per Linear (lib/ops/gemm_int8.h). The block's two 3x3 convolutions are int8 too
// (Int8Conv2d, one scale per image: the first's input, BatchNorm 0's output, in s8, the
// second's, after a ReLU, in u8); the patch embedding stays bf16, as in CpuBf16Model; the
// scan, norms, depthwise conv, activations and the head float32. Agreement with float32 on the shipped
// brain-MRI model: see test/test_int8.cpp and docs/benchmarks.md.
//
// Inference only. Throws mm::Error at construction when the build or the CPU has
// no int8 path (int8_model_unavailable_reason()).
#include <map>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "model/medmamba.h"
#include "model/quantization.h"

namespace mm {

// Empty when CpuInt8Model can run here (oneDNN, and AVX512_VNNI or AMX; its bf16 convolutions
// compute in float32 on CPUs without AVX512_BF16, see Bf16Conv2d).
std::string int8_model_unavailable_reason();

class CpuInt8Model {
 public:
  // Quantises model's Linear weights; reads its float32 parameters again in every
  // forward, so model must outlive this object. Without scales (or for a Linear
  // they do not name) each row of its input has its own scale.
  explicit CpuInt8Model(const MedMamba& model, const ActivationScales& scales = {});
  ~CpuInt8Model();
  CpuInt8Model(CpuInt8Model&&) noexcept;

  const ModelConfig& config() const;
  // images: (B,in_chans,S,S) float32 CPU, S divisible by 32. Returns logits (B,classes).
  Tensor forward(const Tensor& images);

  // Calibration: run forward (without scales) over real images, then read max|x| / 127
  // per Linear (the largest input seen by each, over every call so far).
  ActivationScales observed_scales() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
