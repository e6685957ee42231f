#pragma once
// AdamW over the model's flat parameter buffer, the learning-rate schedule and
// global-norm gradient clipping: what one optimiser step of mm-train does.
// Weight decay applies to ParamKind::Weight entries only (never to norms,
// biases, A_logs or Ds); Buffer entries (BatchNorm running statistics) are
// never touched.
#include <cstdint>

#include "core/tensor.h"
#include "model/params.h"

namespace mm {

struct AdamWOptions {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.05f;
};

// torch.optim.AdamW (single-tensor path), the same float operations in the same order:
//   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
class AdamW {
 public:
  // The moments live on `device`, beside the parameters they update.
  AdamW(const ParamTable& table, const AdamWOptions& options, Device device = Device::CPU);

  // params, grads: (table.total_floats()) float32 on the optimiser's device. On CUDA one
  // fused kernel (kernels/cuda_train_ops.h) does the same float operations.
  void step(Tensor& params, const Tensor& grads, float lr);

  int64_t steps() const { return steps_; }
  // The moments and step count, for saving and resuming a run.
  Tensor& first_moment() { return m_; }
  Tensor& second_moment() { return v_; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  const ParamTable& table_;
  AdamWOptions options_;
  Tensor m_, v_;
  int64_t steps_ = 0;
};

// One byte per float of the flat buffers: 0 trained with weight decay, 1 trained without,
// 2 not trained (BatchNorm running statistics and the alignment gaps between tensors).
Tensor param_roles(const ParamTable& table);

// torch.nn.utils.clip_grad_norm_: the L2 norm over every trained gradient; when
// above max_norm, all of them are scaled by max_norm / (norm + 1e-6).
// Returns the norm before clipping. max_norm <= 0 only measures. grads may be on the CPU
// or a CUDA device; the CUDA sum is in float64 partials in a fixed order (deterministic).
double clip_grad_norm(Tensor& grads, const ParamTable& table, double max_norm);

// Linear warm-up from base_lr/warmup_steps to base_lr over warmup_steps, then
// cosine decay to min_lr at total_steps (timm's CosineLRScheduler, per step).
// step counts from 0 (the first optimiser step).
float cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, float base_lr, float min_lr = 0.f);

}  // namespace mm
