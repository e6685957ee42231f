#pragma once
// The MedMamba classifier (reference class VSSM) on the CPU backend.
//
//   image (B,Cin,S,S) NCHW -> patch_embed (conv 4x4/4 + LayerNorm) -> (B,S/4,S/4,dims[0])
//   -> stages of SS_Conv_SSM blocks with patch merging between them
//   -> global average pool (B,dims[-1]) -> head -> logits (B,classes)
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/model.h"
#include "model/params.h"
#include "ops/winograd.h"

namespace mm {

struct ModelActs;  // activations of one forward pass, kept for backward

class MedMamba : public Model {
 public:
  explicit MedMamba(ModelConfig cfg);  // parameters zeroed; call init_reference or load_state
  ~MedMamba() override;
  MedMamba(MedMamba&&) noexcept;
  MedMamba& operator=(MedMamba&&) noexcept;

  const ModelConfig& config() const override { return cfg_; }
  const ParamTable& table() const override { return table_; }
  Device device() const override { return Device::CPU; }
  Tensor& params() override { return params_; }  // (total_floats) float32
  Tensor& grads() override { return grads_; }    // same layout as params()
  const Tensor& params() const { return params_; }
  Tensor param(const std::string& name);  // view into params()
  Tensor grad(const std::string& name);   // view into grads()
  std::vector<int64_t>& batches_tracked() override { return batches_tracked_; }  // one per BatchNorm

  // The reference initialisation (see the architecture spec), deterministic in seed.
  void init_reference(uint64_t seed);

  // Copies a state dict in. Refuses missing, unexpected and mis-shaped tensors,
  // naming every one. Float16/bfloat16/float64 tensors are converted; the
  // `num_batches_tracked` entries are optional.
  void load_state(const std::map<std::string, Tensor>& state) override;
  // The state dict, float32 (plus int64 num_batches_tracked), under the reference keys.
  std::map<std::string, Tensor> state() const override;

  // images: (B,in_chans,S,S) float32 NCHW with S divisible by 32. Returns logits (B,classes).
  // train: BatchNorm uses (and updates) batch statistics, drop path is active,
  // and activations are kept for backward().
  // keep_for_backward: in eval mode, keep activations so that backward() can
  // differentiate the eval-mode function (saliency maps, input gradients).
  Tensor forward(const Tensor& images, bool train = false, bool keep_for_backward = false) override;

  // Backpropagates dlogits (B,classes) through the last forward that kept its
  // activations, accumulating into grads(). Returns dL/dimages (B,in_chans,S,S)
  // if want_input_grad.
  Tensor backward(const Tensor& dlogits, bool want_input_grad = false) override;

  void zero_grad() override { grads_.zero_(); }
  void seed_drop_path(uint64_t seed) override { rng_.seed(seed); }
  void set_batchnorm_sync(BatchNormSync sync) override { batchnorm_sync_ = std::move(sync); }
  // Drops what the eval forward derived from the parameters (the 3x3 convs' Winograd
  // weights); load_state and init_reference call it, whoever else changes params() must.
  void params_changed() override;

 private:
  // images (a.B, in_chans, a.S, a.S) -> logits (a.B, classes) through a's activations, in
  // the mode (train, keep) they were allocated for.
  void forward_pass(float* logits, const float* images, ModelActs& a);

  ModelConfig cfg_;
  ParamTable table_;
  Tensor params_, grads_;
  std::vector<int64_t> batches_tracked_;
  std::unique_ptr<ModelActs> acts_;
  // An eval forward split into sub-batches (lib/model/cpu_batch_split.h): one set of
  // activations per worker thread, kept for the next batch.
  std::vector<std::unique_ptr<ModelActs>> sub_batch_acts_;
  // The eval forward's Winograd weights of every block's two 3x3 convs (BatchNorms folded
  // in), two per block in order, built on first use and kept until params_changed().
  std::vector<WinogradWeightCache> winograd_caches_;
  std::mt19937_64 rng_{0};
  BatchNormSync batchnorm_sync_;
};

}  // namespace mm
