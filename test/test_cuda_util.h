#pragma once
// Helpers of the CUDA tests (test_cuda_*.cpp): host<->device copies in a chosen element
// type, and the normalized MSE used as the per-op acceptance measure.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "test_util.h"

// Without a GPU (CI, build machines) the CUDA tests pass and say why they did nothing.
#define MM_REQUIRE_GPU_OR_SKIP()                                                  \
  do {                                                                            \
    if (!::mm::cuda_available()) {                                                \
      MESSAGE("skipped: no CUDA GPU on this machine (or built without CUDA)");    \
      return;                                                                     \
    }                                                                             \
  } while (0)

namespace mm::test {

// sum (got-want)^2 / sum want^2; NaN and Inf make it infinite.
inline double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - want[i];
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return num / std::max(den, 1e-30);
}

inline void check_nmse(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
                       double threshold) {
  REQUIRE(got.size() == want.size());
  const double e = nmse(got, want);
  INFO(what << ": normalized MSE " << e << " (threshold " << threshold << ")");
  CHECK(e <= threshold);
}

inline std::vector<float> random_vector(size_t n, std::mt19937& rng, float scale = 1.f, float offset = 0.f) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = offset + scale * nd(rng);
  return v;
}

// v rounded to dt and back: the CPU reference then sees exactly the GPU op's inputs.
inline std::vector<float> rounded(const std::vector<float>& v, DType dt) {
  Tensor t = Tensor::wrap(const_cast<float*>(v.data()), {int64_t(v.size())}).to(dt).to(DType::F32);
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

inline Tensor to_gpu(const std::vector<float>& v, DType dt) {
  return Tensor::wrap(const_cast<float*>(v.data()), {int64_t(v.size())}).to(dt).to(Device::CUDA);
}

inline std::vector<float> from_gpu(const Tensor& t) {
  Tensor h = t.to(Device::CPU).to(DType::F32);
  return std::vector<float>(h.f32(), h.f32() + h.numel());
}


}  // namespace mm::test
