#include "ops/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "ops/vector_math.h"

namespace mm {

namespace {

// Row statistics, each row's sums in one fixed order whatever loop or thread computes them
// (the squares summed with explicit fmas: left to gcc, some terms would be fused and some not,
// depending on how it vectorised the loop).
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// The sum of v's 8 lanes, folded in halves.
inline float sum8(__m256 v) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
}
#endif

#if defined(__AVX512F__)
// Lane j of one 16-float accumulator sums x[j], x[16 + j], ... (the last, partial vector
// masked), then the lanes fold in halves. (16 rows side by side in the lanes, through gathers
// of each column, had been 6x slower on Zen 4.)
inline float fold16(__m512 a) {
  // Masked extracts (also for the low half, which _mm512_castps512_ps256 extracts): gcc 12's
  // unmasked one passes an undefined vector that -Wmaybe-uninitialized reports.
  const __m512d ad = _mm512_castps_pd(a);
  const __m256 lo = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, ad, 0));
  const __m256 hi = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, ad, 1));
  return sum8(_mm256_add_ps(lo, hi));
}
template <class VecF>
inline float row_sum(const float* x, int64_t C, const VecF& fv) {
  __m512 a = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= C; c += 16) a = fv(_mm512_loadu_ps(x + c), a, __mmask16(0xFFFF));
  if (c < C) {
    const __mmask16 k = __mmask16((1u << (C - c)) - 1);
    a = fv(_mm512_maskz_loadu_ps(k, x + c), a, k);
  }
  return fold16(a);
}
inline void row_stats(const float* xr, int64_t C, float eps, float& mean, float& rstd) {
  const float m = row_sum(xr, C, [](__m512 x, __m512 a, __mmask16 k) { return _mm512_mask_add_ps(a, k, a, x); }) /
                  float(C);
  const __m512 mv = _mm512_set1_ps(m);
  const float v = row_sum(xr, C, [&](__m512 x, __m512 a, __mmask16 k) {
    const __m512 d = _mm512_sub_ps(x, mv);
    return _mm512_mask3_fmadd_ps(d, d, a, k);
  });
  mean = m;
  rstd = 1.f / std::sqrt(v / float(C) + eps);
}
#elif defined(__AVX2__) && defined(__FMA__)
// Each row's sums run over 8-float vectors: four accumulators over 32 channels at a time,
// folded in a fixed order, then a scalar tail.
// Σ_c f(x[c]) with f a vector function (and its scalar twin for the tail).
template <class VecF, class ScalarF>
inline float row_sum(const float* x, int64_t C, const VecF& fv, const ScalarF& fs) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t c = 0;
  for (; c + 32 <= C; c += 32) {
    a0 = fv(_mm256_loadu_ps(x + c), a0);
    a1 = fv(_mm256_loadu_ps(x + c + 8), a1);
    a2 = fv(_mm256_loadu_ps(x + c + 16), a2);
    a3 = fv(_mm256_loadu_ps(x + c + 24), a3);
  }
  for (; c + 8 <= C; c += 8) a0 = fv(_mm256_loadu_ps(x + c), a0);
  float s = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; c < C; ++c) s = fs(x[c], s);
  return s;
}
inline void row_stats(const float* xr, int64_t C, float eps, float& mean, float& rstd) {
  const float m = row_sum(
      xr, C, [](__m256 x, __m256 a) { return _mm256_add_ps(a, x); }, [](float x, float a) { return a + x; }) / float(C);
  const __m256 mv = _mm256_set1_ps(m);
  const float v = row_sum(
      xr, C,
      [&](__m256 x, __m256 a) {
        const __m256 d = _mm256_sub_ps(x, mv);
        return _mm256_fmadd_ps(d, d, a);
      },
      [&](float x, float a) { return std::fma(x - m, x - m, a); });
  mean = m;
  rstd = 1.f / std::sqrt(v / float(C) + eps);
}
#else
inline void row_stats(const float* xr, int64_t C, float eps, float& mean, float& rstd) {
  float m = 0.f;
  for (int64_t c = 0; c < C; ++c) m += xr[c];
  m /= float(C);
  float v = 0.f;
  for (int64_t c = 0; c < C; ++c) v = std::fma(xr[c] - m, xr[c] - m, v);
  mean = m;
  rstd = 1.f / std::sqrt(v / float(C) + eps);
}
#endif

// Each row of x (N rows, ldx floats apart): its statistics, then out_row(n, mean, rstd).
template <class OutRow>
void for_each_row(const float* x, int64_t ldx, int64_t N, int64_t C, float eps, const OutRow& out_row) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float m, r;
    row_stats(x + n * ldx, C, eps, m, r);
    out_row(n, m, r);
  }
}

}  // namespace

void layernorm_row_stats(const float* x, int64_t C, float eps, float& mean, float& rstd) {
  row_stats(x, C, eps, mean, rstd);
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t N, int64_t C, float eps) {
  for_each_row(x, C, N, C, eps, [&](int64_t n, float m, float r) {
    const float* xr = x + n * C;
    float* o = out + n * C;
    for (int64_t c = 0; c < C; ++c) o[c] = (xr[c] - m) * r * weight[c] + bias[c];
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
  });
}

void layernorm_forward_rows(float* out, const float* x, int64_t ldx, const float* z, const float* weight,
                            const float* bias, int64_t N, int64_t C, float eps) {
  for_each_row(x, ldx, N, C, eps, [&](int64_t n, float m, float r) {
    const float* xr = x + n * ldx;
    float* o = out + n * C;
    for (int64_t c = 0; c < C; ++c) o[c] = (xr[c] - m) * r * weight[c] + bias[c];
    if (z) {
      const float* zr = z + n * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] *= silu_vectorisable(zr[c]);
    }
  });
}

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t N,
                        int64_t C) {
  // Per-thread partial sums for the parameter grads, reduced at the end: no atomics.
  const int T = omp_get_max_threads();
  std::vector<float> part(size_t(T) * 2 * C, 0.f);
#pragma omp parallel
  {
    float* pw = part.data() + size_t(omp_get_thread_num()) * 2 * C;
    float* pb = pw + C;
#pragma omp for
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* g = dout + n * C;
      const float m = mean[n], r = rstd[n];
      float sum_g = 0.f, sum_gx = 0.f;  // sums of dxhat and dxhat*xhat
      for (int64_t c = 0; c < C; ++c) {
        const float xhat = (xr[c] - m) * r;
        const float dxhat = g[c] * weight[c];
        sum_g += dxhat;
        sum_gx += dxhat * xhat;
        pw[c] += g[c] * xhat;
        pb[c] += g[c];
      }
      if (dx) {
        const float inv_c = 1.f / float(C);
        for (int64_t c = 0; c < C; ++c) {
          const float xhat = (xr[c] - m) * r;
          dx[n * C + c] += r * (g[c] * weight[c] - inv_c * (sum_g + xhat * sum_gx));
        }
      }
    }
  }
  for (int t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      if (dweight) dweight[c] += part[size_t(t) * 2 * C + c];
      if (dbias) dbias[c] += part[size_t(t) * 2 * C + C + c];
    }
}

}  // namespace mm
