#pragma once
// Where mm-predict runs the model, behind one call from a batch of model inputs to logits:
// a backend of the model interface (the CPU MedMamba; on a GPU, MedMambaCuda, whose eval
// forwards run the CudaMedMamba inference engine at the chosen precision), or one of the
// CPU's inference-only bf16/int8 engines (CpuBf16Model, CpuInt8Model).
#include <memory>
#include <string>

#include "core/tensor.h"
#include "model/cpu_int8_model.h"
#include "model/cuda_model.h"
#include "model/medmamba.h"

namespace mm {

enum class DeviceChoice { Cpu, Cuda, Auto };  // Auto: CUDA when built with it and a GPU is present
DeviceChoice device_choice_from_name(const std::string& name);  // "cpu" | "cuda" | "auto"; throws otherwise

struct ClassifierOptions {
  DeviceChoice device = DeviceChoice::Auto;
  // GPU: "fp32" (float32 GEMMs: agrees with the CPU to ~1e-6), "tf32"
  // (float32 data, TF32 tensor-core GEMMs: ~1e-3), "bf16" or "fp16" activations
  // and weights (~1e-2 / ~1e-3; see docs/benchmarks-gpu.md).
  // CPU: "fp32", or "bf16" (CpuBf16Model; float32 with a note on stderr where the
  // build has no oneDNN or the CPU neither AVX512_BF16 nor AMX).
  // "int8" (CPU only; CpuInt8Model; float32 with a note on stderr where the build
  // has no oneDNN or the CPU neither AVX512_VNNI nor AMX).
  std::string precision = "fp32";
  ActivationScales int8_scales;  // calibrated scales for "int8" (ModelMeta's); empty: per row
};

// The CudaMedMamba options for a GPU precision name: fp32 (no TF32), tf32, bf16 or fp16.
CudaModelOptions cuda_inference_options(const std::string& precision);

class Classifier {
 public:
  virtual ~Classifier() = default;
  // images: (B,C,S,S) float32 on the CPU. Returns logits (B,classes) float32 on the CPU.
  virtual Tensor logits(const Tensor& images) = 0;
  // "cpu" or "cuda (<GPU name>, <precision>)", for -v output.
  virtual std::string description() const = 0;
  // The GPU engine behind a CUDA classifier, for callers that make batches on the GPU
  // (GpuBatches); nullptr on the CPU.
  virtual CudaMedMamba* cuda_engine() { return nullptr; }
};

// The CPU classifier keeps a reference to model, which must outlive it; the GPU
// one copies the weights. Throws mm::Error when CUDA is asked for and cannot be
// had (built without CUDA, no device), or a precision other than fp32, bf16 or
// int8 is asked of the CPU, or int8 of the GPU.
std::unique_ptr<Classifier> make_classifier(MedMamba& model, const ClassifierOptions& options);

}  // namespace mm
