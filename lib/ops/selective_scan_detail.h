#pragma once
// Internals of the CPU selective scan shared by selective_scan.cpp (the portable kernels,
// forward and backward) and selective_scan_avx512.cpp (the AVX-512 forward). Not a public API.
#include <cmath>
#include <cstdint>
#include <vector>

#include "ops/selective_scan.h"
#include "ops/vector_math.h"

namespace mm::scan_detail {

constexpr int64_t kSeg = 32;  // positions per run (inputs ahead of the recurrence) and per
                              // backward segment (checkpoint interval)
constexpr float kLog2e = 1.44269504088896341f;

// Vectorisable math. Written without float min/max, branches or libm calls so that gcc turns
// `omp simd` loops calling them into AVX-512 code (glibc's expf only vectorises, through
// libmvec, under -ffast-math).

inline float exp_nonpos(float x) { return exp2_nonpos(x * kLog2e); }

// log(1+t) for t in [0, 1]: 2·atanh(s) with s = t/(2+t) <= 1/3; the series to s^15 is
// accurate to ~1e-8 relative, also for tiny t.
inline float log1p_unit(float t) {
  const float s = t / (2.0f + t);
  const float s2 = s * s;
  float q = 1.0f / 15;
  q = q * s2 + 1.0f / 13;
  q = q * s2 + 1.0f / 11;
  q = q * s2 + 1.0f / 9;
  q = q * s2 + 1.0f / 7;
  q = q * s2 + 1.0f / 5;
  q = q * s2 + 1.0f / 3;
  q = q * s2 + 1.0f;
  return 2.0f * s * q;
}

// PyTorch softplus (beta 1, threshold 20): x > 20 ? x : log(1 + e^x), computed as
// max(x,0) + log1p(e^-|x|). Above 20 that already is exactly x in float (the second term is
// below 2.1e-9, under half an ulp of 20), so the threshold needs no branch or select.
inline float softplus(float x) {
  return (x > 0.0f ? x : 0.0f) + log1p_unit(exp_nonpos(-std::fabs(x)));
}

// softplus(x), and its derivative in `grad`: sigmoid(x), which like PyTorch's is exactly 1 above
// the threshold (1/(1 + e^-x) rounds to 1 for x > 17): 1/(1 + e) for x >= 0, e/(1 + e) below,
// the factor picked by one_or so that the backward scan's loop over it vectorises on AVX2.
inline float softplus_and_grad(float x, float& grad) {
  const float e = exp_nonpos(-std::fabs(x));
  grad = one_or(e, x) * (1.0f / (1.0f + e));
  return (x > 0.0f ? x : 0.0f) + log1p_unit(e);
}

// Parameters rearranged once per call so that channels are contiguous.
struct Prepared {
  std::vector<float> A;        // (4, N, D)  -exp(A_logs)
  std::vector<float> dtw;      // (4, R, D)  dt_projs_weight transposed
  std::vector<int32_t> order;  // (4, L)     spatial position of sequence index l in direction k
};

// What every scan block reads, shared by all tasks (forward may also write states_out).
struct ScanCtx {
  int64_t B, L, D, N, R;
  int64_t RN;            // R + 2N: one direction's part of a dbl row (dt, B, C)
  int64_t KC;            // 4·RN: a row of dbl
  const float* u;        // (B·L, D)
  const float* dbl;      // (B·L, KC)
  const float* bias;     // (4, D) dt_projs_bias
  const float* Ds;       // (4·D)
  const Prepared* prep;
  // Optional (B, 4, nseg, N, D): the state before each kSeg-step segment of each direction,
  // written by forward (states_out), read by backward (states_in) instead of recomputing them.
  int64_t nseg;          // ceil(L / kSeg)
  float* states_out;
  const float* states_in;
};

// The forward of channels [d0, d0+kAvx512Lanes) of batch element b through all four
// directions, with AVX-512 intrinsics (selective_scan_avx512.cpp), when the CPU has
// AVX512F/DQ. With the exact exp its results equal the portable kernel's bit for bit
// (decays below 2^-125 aside).
constexpr int64_t kAvx512Lanes = 32;
bool avx512_forward_available();
int64_t avx512_forward_scratch_floats(int64_t N, int64_t R);
// scratch: avx512_forward_scratch_floats(c.N, c.R) floats, 64-byte aligned, per thread.
void avx512_forward_block(const ScanCtx& c, int64_t b, int64_t d0, float* out, float* scratch, bool coarse_exp);

// ss2d_scan_forward_from_dbl; use_avx512 = false runs the portable kernel (for tests).
void forward_from_dbl(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w, const float* dbl, float* out,
                      float* states, bool coarse_exp, bool use_avx512);

}  // namespace mm::scan_detail
