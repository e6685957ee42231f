#include "train/optimizer_cuda.h"

#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "train/optimizer.h"

#ifdef MM_HAVE_CUDA
#include "cuda_train_ops.h"
#endif

namespace mm {

#ifndef MM_HAVE_CUDA

const Tensor& device_roles(const ParamTable&) { throw Error("the optimiser: built without CUDA"); }
void adamw_step_cuda(Tensor&, const Tensor&, Tensor&, Tensor&, const Tensor&, float, const AdamWOptions&, int64_t) {
  throw Error("AdamW: built without CUDA");
}
double clip_grad_norm_cuda(Tensor&, const Tensor&, double) { throw Error("clip_grad_norm: built without CUDA"); }

#else

const Tensor& device_roles(const ParamTable& table) {
  // Keyed by the layout itself, not the table's address: tables are cheap values that come and go.
  using Key = std::tuple<int64_t, size_t, int64_t>;
  static std::mutex mu;
  static std::map<Key, Tensor> cache;
  int64_t fingerprint = 0;
  for (const ParamEntry& e : table.entries()) fingerprint = fingerprint * 31 + e.offset * 3 + int64_t(e.kind);
  const Key key{table.total_floats(), table.entries().size(), fingerprint};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, param_roles(table).to(Device::CUDA)).first;
  return it->second;
}

void adamw_step_cuda(Tensor& params, const Tensor& grads, Tensor& m, Tensor& v, const Tensor& roles, float lr,
                     const AdamWOptions& o, int64_t step) {
  cuda::AdamWStep a;
  a.lr = lr;
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.eps = o.eps;
  a.weight_decay = o.weight_decay;
  a.t = step;
  cuda::adamw_step(params.as<float>(), m.as<float>(), v.as<float>(), grads.as<float>(), roles.as<uint8_t>(),
                   params.numel(), a, nullptr);
}

double clip_grad_norm_cuda(Tensor& grads, const Tensor& roles, double max_norm) {
  Tensor norm = Tensor::empty({1}, DType::F32, Device::CUDA);
  cuda::grad_norm(norm.as<float>(), grads.as<float>(), roles.as<uint8_t>(), grads.numel(), nullptr);
  if (max_norm > 0.0)
    cuda::clip_grads(grads.as<float>(), roles.as<uint8_t>(), grads.numel(), norm.as<float>(), float(max_norm), nullptr);
  return double(norm.to(Device::CPU).as<float>()[0]);
}

#endif

}  // namespace mm
