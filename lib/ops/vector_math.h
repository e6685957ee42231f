#pragma once
// Elementwise math written so that gcc vectorises `omp simd` loops calling it into AVX-512
// code: no libm calls, float min/max or branches (glibc's expf only vectorises, through
// libmvec, under -ffast-math). Shared by the selective scan and the bf16 inference path.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MM_HOST_DEVICE __host__ __device__
#else
#define MM_HOST_DEVICE
#endif

namespace mm {

// Minimax polynomial for 2^f on [-0.5, 0.5] (relative error 2e-9 before float rounding).
// Shared with the CUDA training scan (kernels/scan_train_common.cuh) and the AVX-512 scan
// (T = __m512, GCC's vector arithmetic), so every backend computes the same exp(Δ·A).
template <class T>
MM_HOST_DEVICE inline T exp2_fraction(T f) {
  T p = 1.534581243e-4f * f + 1.339993090e-3f;
  p = p * f + 9.618489072e-3f;
  p = p * f + 5.550328642e-2f;
  p = p * f + 2.402264625e-1f;
  p = p * f + 6.931471825e-1f;
  return p * f + 1.0f;
}

// p·2^n for p in [0.7, 1.42] (exponent -1 or 0) by adding n to p's exponent field; n is
// clamped at -125, so tiny results stay in [0.7, 1.5]·2^-125 (never a denormal).
inline float times_pow2(float p, float n) {
  int32_t bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += std::max(int32_t(n), int32_t(-125)) * (int32_t(1) << 23);  // not << : n < 0, UB before C++20
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
}

// 2^x for finite x <= 0 (max relative error ~1e-7). Below 2^-125 (x < -125) the result is not
// exact but stays in [0.7, 1.5]·2^-125 ≈ 1e-38 (never a denormal), which is as good as 0 here.
inline float exp2_nonpos(float x) {
  const float n = std::nearbyint(x);
  const float f = x - n;  // exact, in [-0.5, 0.5]
  return times_pow2(exp2_fraction(f), n);
}

// The same to 2.7e-6 relative with a degree-4 polynomial (near-minimax in relative error,
// fitted by test/reference/fit_exp2_coarse.py), two fewer FMAs: for the bf16 inference scan,
// whose bf16 GEMM inputs already cost ~4e-3.
inline float exp2_nonpos_coarse(float x) {
  const float n = std::nearbyint(x);
  const float f = x - n;
  float p = 9.57010e-3f;
  p = p * f + 5.591786e-2f;
  p = p * f + 2.4024745e-1f;
  p = p * f + 6.9312181e-1f;
  p = p * f + 0.99999926f;
  return times_pow2(p, n);
}

// 1.0f where x's sign bit is clear, e where it is set, by integer masks on the sign bit. Written
// `x >= 0 ? r : e * r`, gcc makes e·r conditional and, under -ftrapping-math, cannot vectorise
// that without AVX-512's masked multiplies, so on AVX2 every loop calling it ran scalar; a
// factor picked this way and multiplied in always gives the same values (-0 takes e, which
// is 1 wherever e = exp(-|x|)).
inline float one_or(float e, float x) {
  int32_t xb, eb;
  std::memcpy(&xb, &x, sizeof xb);
  std::memcpy(&eb, &e, sizeof eb);
  const int32_t neg = xb >> 31;                         // all ones where x's sign bit is set
  const int32_t fb = (eb & neg) | (0x3f800000 & ~neg);  // e, or 1.0f
  float factor;
  std::memcpy(&factor, &fb, sizeof factor);
  return factor;
}

// sigmoid(x), as sigmoid() in activations.h to ~2e-7 relative: r for x >= 0, e·r below
// (r = 1/(1 + e), e = exp(-|x|)), vectorisable on AVX2 (one_or).
inline float sigmoid_vectorisable(float x) {
  const float e = exp2_nonpos(-std::fabs(x) * 1.44269504088896341f);  // exp(-|x|) in (0, 1]
  return one_or(e, x) * (1.f / (1.f + e));
}

// x·sigmoid(x), as silu() in activations.h to ~2e-7 relative.
inline float silu_vectorisable(float x) { return x * sigmoid_vectorisable(x); }

}  // namespace mm
