#pragma once
// MedMamba inference on a CUDA GPU (eval mode: BatchNorm running statistics, no drop path).
//
// Built from a CPU MedMamba, whose weights it copies and prepares once: BatchNorms that
// follow a conv are folded into it, the one that precedes a padded conv (conv33conv33conv11.0)
// is applied inside the im2col gather, GEMM weights are converted to the chosen precision.
// Activations are channels-last in that precision; LayerNorm statistics, the scan's Δ, A, B,
// C, D and state, and all reductions stay float32 (see docs/benchmarks-gpu.md for the design).
// Buffers are sized once per batch shape (nothing is allocated per batch) and the forward pass
// of a shape is replayed as a CUDA graph after its first run.
//
// In builds without CUDA the constructor throws mm::Error("built without CUDA").
#include <memory>
#include <string>

#include "core/tensor.h"
#include "model/medmamba.h"

struct CUstream_st;

namespace mm {

enum class Precision { F32, BF16, F16 };
Precision precision_from_name(const std::string& name);  // "fp32" | "bf16" | "fp16"; throws otherwise
const char* precision_name(Precision p);

struct CudaModelOptions {
  Precision precision = Precision::BF16;
  bool allow_tf32 = true;  // float32 GEMMs on TF32 tensor cores (Precision::F32 only)
  bool use_graphs = true;  // replay each batch shape's forward as a CUDA graph
};

class CudaMedMamba {
 public:
  explicit CudaMedMamba(const MedMamba& model, CudaModelOptions opts = {});
  ~CudaMedMamba();
  CudaMedMamba(const CudaMedMamba&) = delete;
  CudaMedMamba& operator=(const CudaMedMamba&) = delete;

  // The weights of `model` (the same configuration) into the buffers this engine already has,
  // keeping its workspace, GEMM plans and captured graphs: a trainer's eval engine after each
  // optimiser epoch, without building a new one. Waits for the passes queued before.
  void reload_weights(const MedMamba& model);

  const ModelConfig& config() const;
  const CudaModelOptions& options() const;
  std::string device_name() const;  // the GPU's name, as the driver gives it

  // images: (B,in_chans,S,S) float32 NCHW, on the CPU or the GPU. Returns logits (B,classes)
  // float32 on the CPU. A batch of more than half the largest one so far runs at that size
  // (the short last batch of a run reuses its buffers and graph); a smaller one gets buffers
  // of its own size.
  Tensor forward(const Tensor& images);

  // Same, but enqueues the pass and returns without waiting: the logits (B,classes) float32
  // stay on the GPU, in a buffer that the next call overwrites. synchronize() before reading.
  Tensor forward_device(const Tensor& images);
  void synchronize();
  // The stream every pass is queued on (a cudaStream_t), for work that must run in order with them.
  CUstream_st* stream() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mm
