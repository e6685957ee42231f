#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "train/optimizer_cuda.h"

namespace mm {

Tensor param_roles(const ParamTable& table) {
  Tensor roles = Tensor::empty({table.total_floats()}, DType::U8);
  std::fill(roles.as<uint8_t>(), roles.as<uint8_t>() + roles.numel(), uint8_t(2));
  for (const ParamEntry& e : table.entries()) {
    const uint8_t r = e.kind == ParamKind::Weight ? 0 : e.kind == ParamKind::NoDecay ? 1 : 2;
    std::fill(roles.as<uint8_t>() + e.offset, roles.as<uint8_t>() + e.offset + e.numel(), r);
  }
  return roles;
}

AdamW::AdamW(const ParamTable& table, const AdamWOptions& options, Device device)
    : table_(table), options_(options) {
  m_ = Tensor::zeros({table.total_floats()}, DType::F32, device);
  v_ = Tensor::zeros({table.total_floats()}, DType::F32, device);
}

void AdamW::step(Tensor& params, const Tensor& grads, float lr) {
  MM_CHECK(params.device() == m_.device() && grads.device() == m_.device(),
           "AdamW: the parameters, gradients and moments are on different devices");
  MM_CHECK(params.numel() == table_.total_floats() && grads.numel() == table_.total_floats(),
           "AdamW: buffers do not match the parameter table");
  ++steps_;
  if (m_.device() == Device::CUDA) {
    adamw_step_cuda(params, grads, m_, v_, device_roles(table_), lr, options_, steps_);
    return;
  }
  const float b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
  // torch computes the bias corrections in double (Python floats) and passes them as scalars.
  const double bc1 = 1.0 - std::pow(double(b1), double(steps_));
  const double bc2 = 1.0 - std::pow(double(b2), double(steps_));
  const float step_size = float(double(lr) / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  float* P = params.f32();
  const float* G = grads.f32();
  float* M = m_.f32();
  float* V = v_.f32();
  for (const ParamEntry& e : table_.entries()) {
    if (e.kind == ParamKind::Buffer) continue;
    const float decay = e.kind == ParamKind::Weight ? 1.f - lr * options_.weight_decay : 1.f;
    const int64_t o = e.offset, n = e.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = o; i < o + n; ++i) {
      const float g = G[i];
      P[i] *= decay;
      M[i] = M[i] * b1 + g * (1.f - b1);
      V[i] = V[i] * b2 + (1.f - b2) * g * g;
      const float denom = std::sqrt(V[i]) / bc2_sqrt + eps;
      P[i] += -step_size * (M[i] / denom);
    }
  }
}

double clip_grad_norm(Tensor& grads, const ParamTable& table, double max_norm) {
  if (grads.device() == Device::CUDA) return clip_grad_norm_cuda(grads, device_roles(table), max_norm);
  float* G = grads.f32();
  double sum_sq = 0.0;
  for (const ParamEntry& e : table.entries()) {
    if (e.kind == ParamKind::Buffer) continue;
    const int64_t o = e.offset, n = e.numel();
#pragma omp parallel for reduction(+ : sum_sq) schedule(static)
    for (int64_t i = o; i < o + n; ++i) sum_sq += double(G[i]) * double(G[i]);
  }
  const double norm = std::sqrt(sum_sq);
  if (max_norm > 0.0 && norm > max_norm) {
    const float coef = float(max_norm / (norm + 1e-6));
    for (const ParamEntry& e : table.entries()) {
      if (e.kind == ParamKind::Buffer) continue;
      const int64_t o = e.offset, n = e.numel();
#pragma omp parallel for simd schedule(static)
      for (int64_t i = o; i < o + n; ++i) G[i] *= coef;
    }
  }
  return norm;
}

float cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, float base_lr, float min_lr) {
  if (step < warmup_steps) return base_lr * float(step + 1) / float(warmup_steps);
  const int64_t span = std::max<int64_t>(total_steps - warmup_steps, 1);
  const double t = std::min(1.0, double(step - warmup_steps) / double(span));
  return float(min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * t)));
}

}  // namespace mm
