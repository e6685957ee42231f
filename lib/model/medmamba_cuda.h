#pragma once
// MedMamba on the CUDA backend: the mm::Model interface for training and evaluation on a GPU.
//
// Parameters and gradients are one float32 device buffer each, in the ParamTable layout;
// forward and backward run the CUDA twins of the CPU ops (kernels/cuda_train_*.h) in
// float32 (GEMMs optionally on tensor cores: GemmMath), with no floating-point atomics: the
// same seed and data on the same GPU give bit-identical weights. The CPU MedMamba is the reference it is tested
// against (test/test_cuda_train_model.cpp).
//
// Eval forwards can instead go through CudaMedMamba (folded BatchNorm, packed 16-bit
// weights, CUDA graphs): set MedMambaCudaOptions::fast_eval. That engine is built from the
// parameters on the first eval forward and rebuilt after params_changed().
//
// In builds without CUDA the constructor throws mm::Error("built without CUDA").
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model/cuda_model.h"  // CudaModelOptions
#include "model/model.h"

namespace mm {

// The compute of the GEMMs (Linear, convolutions, the scan's projections) in training and
// in eval forwards that don't go to CudaMedMamba. Every buffer stays float32 in all three:
// parameters, gradients, optimizer state, activations and the scan state.
enum class GemmMath {
  FP32,  // float32 units, no TF32: the CPU-matching reference
  TF32,  // tensor cores, operands rounded to TF32
  BF16,  // tensor cores, operands rounded to bf16 with float32 accumulation (as bf16 autocast)
};
// "fp32" | "tf32" | "bf16"; throws mm::Error naming `what` otherwise.
GemmMath parse_gemm_math(const std::string& name, const std::string& what);

struct MedMambaCudaOptions {
  bool fast_eval = false;      // eval forwards (no backward wanted) through CudaMedMamba
  CudaModelOptions fast;       // its precision and options
  GemmMath math = GemmMath::FP32;
};

class MedMambaCuda : public Model {
 public:
  explicit MedMambaCuda(ModelConfig cfg, MedMambaCudaOptions opts = {});  // parameters zeroed
  // A device copy of a CPU model: parameters, running statistics, batches tracked.
  static std::unique_ptr<MedMambaCuda> copy_of(const Model& cpu, MedMambaCudaOptions opts = {});
  ~MedMambaCuda() override;

  const ModelConfig& config() const override;
  const ParamTable& table() const override;
  Device device() const override { return Device::CUDA; }
  Tensor& params() override;
  Tensor& grads() override;
  std::vector<int64_t>& batches_tracked() override;
  void params_changed() override;

  void load_state(const std::map<std::string, Tensor>& state) override;
  std::map<std::string, Tensor> state() const override;

  Tensor forward(const Tensor& images, bool train = false, bool keep_for_backward = false) override;
  Tensor backward(const Tensor& dlogits, bool want_input_grad = false) override;
  void zero_grad() override;
  void seed_drop_path(uint64_t seed) override;

  std::string device_name() const;
  // The eval engine (MedMambaCudaOptions::fast_eval), built from the parameters on first use
  // and after params_changed(): for callers that queue work on its stream (GpuBatches).
  CudaMedMamba& eval_engine();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The model on a device: `cpu` itself for Device::CPU, a MedMambaCuda copy for Device::CUDA.
std::unique_ptr<Model> model_on_device(std::unique_ptr<Model> cpu, Device device, MedMambaCudaOptions opts = {});

// "cpu" | "cuda" | "auto" (CUDA when a GPU is present). Throws for "cuda" without one.
Device resolve_device(const std::string& name);

}  // namespace mm
