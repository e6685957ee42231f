#pragma once
// The one model interface the tools drive, whatever the backend: the CPU
// reference (MedMamba) and the CUDA backend (MedMambaCuda). A trainer, an
// evaluator or a benchmark written against it runs on either.
//
// Parameters and gradients are one flat float32 buffer each, in the ParamTable
// layout, in the backend's memory (params().device()). Batches cross the
// interface as float32 CPU tensors; a GPU backend copies them in and out.
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"
#include "ops/batchnorm.h"  // BatchNormSync

namespace mm {

class Model {
 public:
  virtual ~Model() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const ParamTable& table() const = 0;
  virtual Device device() const = 0;

  virtual Tensor& params() = 0;  // (total_floats) float32, ParamTable layout
  virtual Tensor& grads() = 0;   // same layout as params()
  virtual std::vector<int64_t>& batches_tracked() = 0;  // one per BatchNorm, in table().batchnorms() order
  // Call after params() were changed from outside (an optimizer step, a copy):
  // backends with derived inference forms (folded BatchNorm, packed weights) rebuild them.
  virtual void params_changed() {}

  // The state dict under the reference keys, float32 on the CPU (plus int64
  // num_batches_tracked); load_state refuses missing, extra and mis-shaped tensors.
  virtual void load_state(const std::map<std::string, Tensor>& state) = 0;
  virtual std::map<std::string, Tensor> state() const = 0;

  // images: (B,in_chans,S,S) float32 CPU. Returns logits (B,classes) float32 CPU.
  // train: BatchNorm batch statistics (running statistics updated), drop path,
  // activations kept for backward(). keep_for_backward: eval mode, but kept.
  virtual Tensor forward(const Tensor& images, bool train = false, bool keep_for_backward = false) = 0;
  // dlogits (B,classes) float32 CPU through the last kept forward, accumulating
  // into grads(). Returns dL/dimages (CPU) when want_input_grad.
  virtual Tensor backward(const Tensor& dlogits, bool want_input_grad = false) = 0;
  virtual void zero_grad() = 0;
  // Drop path draws from a generator seeded here; a trainer seeds it per step so
  // that a resumed run draws what an uninterrupted one would.
  virtual void seed_drop_path(uint64_t seed) = 0;
  // Synchronised BatchNorm for data-parallel training: train-mode statistics summed over
  // every process through `sync` (empty: this process's batch alone). Backends that cannot
  // synchronise throw.
  virtual void set_batchnorm_sync(BatchNormSync sync) {
    if (sync) throw Error("this backend cannot synchronise BatchNorm across processes");
  }
};

// What every backend's forward asks of its input: float32 (B, in_chans, S, S) with S a
// positive multiple of the model's downsampling (4 x 2 per stage after the first).
// Returns S; throws mm::Error naming the shape otherwise.
int64_t check_forward_input(const ModelConfig& cfg, const Tensor& images);

// Drop path's per-sample factors for block `block_index` (0-based over all blocks) in
// training: 0 or 1/(1-rate), drawn from rng, the rate rising linearly over the blocks as
// torch.linspace(0, drop_path_rate, n). Every backend draws through here, so one seed
// drops the same samples on the CPU and the GPU. scale: (B).
void draw_drop_path(float* scale, int64_t B, const ModelConfig& cfg, int64_t block_index, std::mt19937_64& rng);

}  // namespace mm
