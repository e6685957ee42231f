#pragma once
// n / d and n % d by a multiply-high, an add and a shift, for a divisor that stays the same for a
// whole launch (T. Granlund and P. Montgomery, "Division by invariant integers using
// multiplication", 1994, the round-up variant). A 32-bit integer division is about 20 GPU
// instructions, and index arithmetic with several of them per element bound the layout
// kernels (im2col, the depthwise conv) well below memory speed.
//
// Exact for 0 <= n < 2^31 and 1 <= d < 2^31. Plain data: it goes into kernel parameters.
#include <cstdint>

#ifdef __CUDACC__
#define MM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MM_HOST_DEVICE inline
#endif

namespace mm::cuda {

struct FastDivmod {
  uint32_t d = 1, mul = 0, shift = 0;

  FastDivmod() = default;
  explicit FastDivmod(uint32_t divisor) : d(divisor) {
    while ((uint64_t(1) << shift) < d) ++shift;  // ceil(log2 d)
    mul = uint32_t((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d) / d + 1);
  }
  MM_HOST_DEVICE uint32_t div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t hi = __umulhi(n, mul);
#else
    const uint32_t hi = uint32_t((uint64_t(n) * mul) >> 32);
#endif
    return (hi + n) >> shift;  // hi < n < 2^31: no overflow
  }
  MM_HOST_DEVICE uint32_t mod(uint32_t n, uint32_t q) const { return n - q * d; }  // q = div(n)
};

}  // namespace mm::cuda

#undef MM_HOST_DEVICE
