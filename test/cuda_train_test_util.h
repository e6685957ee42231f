#pragma once
// Helpers of the CUDA training-op tests (test_cuda_train_*.cpp): float vectors to and from
// the device, gradient buffers that start non-zero (so backward must accumulate), and the
// bit-for-bit comparison of the determinism checks.
#include <cstring>
#include <string>
#include <vector>

#include "test_cuda_util.h"

#ifdef MM_HAVE_CUDA

#include "cuda_train_ops.h"

namespace mm::test {

using Vec = std::vector<float>;
constexpr double kElementwise = 1e-10;  // normalized MSE: elementwise ops and layout moves
constexpr double kReduction = 1e-9;     // ops that sum over rows or channels
inline const cuda::Stream kStream = nullptr;  // legacy stream: the test's copies order after the ops

inline Tensor dev(const Vec& v) { return to_gpu(v, DType::F32); }
inline Tensor dev_empty(int64_t n) { return Tensor::empty({n}, DType::F32, Device::CUDA); }
inline const float* in(const Tensor& t) { return t.as<float>(); }

template <class T>
Tensor dev_of(const std::vector<T>& v, DType dt) {
  return Tensor::wrap(const_cast<T*>(v.data()), {int64_t(v.size())}, dt).to(Device::CUDA);
}

inline bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// A gradient buffer that starts non-zero, as the CPU reference (want) and on the GPU (got).
struct Grad {
  Vec want;
  Tensor got;
  Grad(size_t n, std::mt19937& rng) : want(random_vector(n, rng, 0.5f)), got(dev(want)) {}
  float* d() { return got.as<float>(); }
  float* h() { return want.data(); }
  Vec result() const { return from_gpu(got); }
  void check(const std::string& what, double threshold) const { check_nmse(what, result(), want, threshold); }
};

}  // namespace mm::test

#endif  // MM_HAVE_CUDA
