// The forward SS2D scan with AVX-512 intrinsics (see selective_scan_detail.h).
//
// Why a second forward kernel: the portable one (selective_scan.cpp) keeps the state of its
// 32 channels (N·32 floats) in L1, loads and stores it at every step, builds 2^x from integer
// ops, and gcc compiles its inner loops position by position. Here a task is also 32 channels
// (2 vectors), but the recurrence runs state-outer over runs of 32 positions with 4 states'
// vectors held in registers through the run, and 2^x ends in vscalefps: ~10 vector ops per
// state vector and step (9 on the coarse path), with the runs' exps independent of each
// other (see run_recurrence).
//
// Numbers: with the exact exp (training, float32 inference) every value equals the portable
// kernel's bit for bit, except decays below 2^-125 (~1e-38 there, denormal or 0 here).
// The coarse path (bf16/int8 inference) computes the decays with a cubic pinned at the
// integers (exp2_decay_coarse: 1.8e-4 relative at worst, far less for slow decays) and the
// softplus from polynomials alone (softplus_coarse, ~3e-6 relative): its e^-|x| with a
// degree-4 2^f on [0, 1) (vreduceps gives x - floor(x) in one instruction; 2.7e-6 relative,
// test/reference/fit_exp2_unit.py), its log1p without a reciprocal.
#include <immintrin.h>

#include "ops/selective_scan_detail.h"

// Everything from here to pop_options is compiled for AVX-512 and runs only where
// avx512_forward_available() says so. No std:: templates are instantiated in it: an AVX-512
// instance of, say, std::min<long> could be the copy the linker keeps for the whole program.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,prefer-vector-width=512")
// gcc 12's unmasked AVX-512 intrinsics pass an undefined vector as the unused merge source,
// which -Wmaybe-uninitialized reports at every call (a header bug, no effect on the code).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace mm::scan_detail {
namespace {

constexpr int64_t kL = kAvx512Lanes;

// 2^x for finite x <= 0. Unlike exp2_nonpos, no clamp at -125 (it would cost a tenth of the
// recurrence): below 2^-126 the result is a denormal, then 0 from 2^-150 on; the state it
// multiplies ends up as good as 0 either way.
template <bool kCoarse>
inline __m512 exp2_nonpos_avx512(__m512 x) {
  if constexpr (kCoarse) {
    const __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);  // x - floor(x)
    __m512 p = 1.3534168e-2f * f + 5.2011466e-2f;
    p = p * f + 2.4144275e-1f;
    p = p * f + 6.9300384e-1f;
    p = p * f + 1.0000026f;
    return _mm512_scalef_ps(p, x);  // p·2^floor(x)
  } else {
    // exp2_nonpos's arithmetic: f = x - nearbyint(x) (vreduceps: one uop, vrndscaleps is two),
    // then its polynomial, then p·2^n.
    const __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_scalef_ps(exp2_fraction(f), x - f);
  }
}

// The recurrence's decay 2^x, x = Δ·A·log2(e) <= 0, on the coarse (inference) path, from
// x5 = x + 1/2 (one fma: Δ·A2 + 1/2): with g = x5 - floor(x5) in [0, 1), 2^x = 2^floor(x5)·2^(g-1/2),
// and 2^(g-1/2) is a cubic pinned to 1 at g = 1/2 (test/reference/fit_exp2_pinned.py).
// Six vector ops where exp2_nonpos_avx512<true>(Δ·A2) takes seven. Its error, 1.8e-4 relative
// at most, shrinks with |x - round(x)| (3.6e-4·|x - round(x)|): a slow decay (x near 0),
// multiplied into the state over thousands of steps, is as exact as the float rounding of x5
// allows (3e-8 in x), while a fast one forgets its error within a few steps. The degree-4 fit
// on [0, 1) of exp2_nonpos_avx512<true> is off by up to 2.7e-6 at x near 0 instead, which
// compounds over the ~1/|x| steps such a state remembers.
inline __m512 exp2_decay_coarse(__m512 x5) {
  const __m512 g = _mm512_reduce_ps(x5, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 p = 5.55039644e-2f * g + 1.58772931e-1f;
  p = p * g + 4.92777407e-1f;
  p = p * g + 7.0698005e-1f;
  return _mm512_scalef_ps(p, x5);  // p·2^floor(x5)
}

// softplus(x) = max(x,0) + log1p(t), t = e^-|x| in (0, 1], to ~3e-6 relative, for the coarse
// (inference) scan: log1p(t) = t·r(t) with r a degree-6 near-minimax fit of log1p(t)/t on
// [0, 1] (1.4e-6 relative; test/reference/fit_log1p_unit.py), 16 vector ops in all where
// the atanh series with a reciprocal (the exact path's) takes 22.
inline __m512 softplus_coarse(__m512 x) {
  const __m512 t = exp2_nonpos_avx512<true>(-kLog2e * _mm512_abs_ps(x));
  __m512 r = 1.41409766e-2f * t - 6.64016604e-2f;
  r = r * t + 1.49223715e-1f;
  r = r * t - 2.35038519e-1f;
  r = r * t + 3.31094474e-1f;
  r = r * t - 4.99869645e-1f;
  r = r * t + 9.99998748e-1f;
  return _mm512_fmadd_ps(t, r, _mm512_max_ps(x, _mm512_setzero_ps()));
}

// A block is kV vectors of 16 channels. Two, not one: every position's dt/B/C row is then read
// once per 32 channels, and at stage 1 of MedMamba-T (B·L·4·(R+2N) floats of dbl, 7 MB) that
// traffic, not arithmetic, set the pace with one vector.
constexpr int kV = kAvx512Lanes / 16;

struct Masks {
  __mmask16 m[kV];
  explicit Masks(int64_t cw) {
    for (int v = 0; v < kV; ++v) {
      const int64_t rest = cw - 16 * v, n = rest < 0 ? 0 : rest > 16 ? 16 : rest;
      m[v] = __mmask16((1u << n) - 1);
    }
  }
};

// 16·kV floats at p (lanes past the channel count read as 0).
inline void load_block(__m512* dst, const float* p, const Masks& mk) {
  for (int v = 0; v < kV; ++v) dst[v] = _mm512_maskz_loadu_ps(mk.m[v], p + 16 * v);
}

// Per-direction constants of one block (zero in lanes past the channel count).
struct Direction {
  const float* W;  // (R, kL) dt_projs_weight
  __m512 bias[kV], Dk[kV];
};

// The cache lines of position q that the run after next reads (u, its dt/B/C, out). Issued one
// position per recurrence step: a burst of them at once fills the line-fill buffers and stalls.
inline void prefetch_position(const ScanCtx& c, int64_t q, const float* u_b, const float* dbl_b, const float* out_b) {
  for (int v = 0; v < kV; ++v) {
    _mm_prefetch(reinterpret_cast<const char*>(u_b + q * c.D + 16 * v), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(out_b + q * c.D + 16 * v), _MM_HINT_T1);
  }
  const float* row = dbl_b + q * c.KC;
  for (int64_t e = 0; e < c.RN; e += 16) _mm_prefetch(reinterpret_cast<const char*>(row + e), _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(row + c.RN - 1), _MM_HINT_T1);
}

// Inputs of the recurrence for positions order[l0 .. l0+len): u, Δ = softplus(dt_proj(dt)) and
// Δ·u, (len, kL) each. The exact path takes selective_scan.cpp's softplus, as its backward does.
template <bool kCoarse>
void run_inputs(const ScanCtx& c, const Direction& dir, const int32_t* order, int64_t l0, int64_t len,
                const float* u_b, const float* dbl_b, const Masks& mk, float* su, float* sdl, float* sdlu) {
  const int64_t D = c.D, R = c.R;
  for (int64_t i = 0; i < len; ++i) {
    const int64_t p = order[l0 + i];
    __m512 u[kV], pre[kV];
    load_block(u, u_b + p * D, mk);
    const float* dt = dbl_b + p * c.KC;
    for (int v = 0; v < kV; ++v) pre[v] = dir.bias[v];
    for (int64_t r = 0; r < R; ++r) {
      const __m512 dr = _mm512_set1_ps(dt[r]);
      for (int v = 0; v < kV; ++v) pre[v] = _mm512_fmadd_ps(dr, _mm512_load_ps(dir.W + r * kL + 16 * v), pre[v]);
    }
    for (int v = 0; v < kV; ++v) {
      const int64_t e = i * kL + 16 * v;
      _mm512_store_ps(su + e, u[v]);
      if constexpr (kCoarse) {
        const __m512 dl = softplus_coarse(pre[v]);
        _mm512_store_ps(sdl + e, dl);
        _mm512_store_ps(sdlu + e, dl * u[v]);
      } else {
        _mm512_store_ps(sdl + e, pre[v]);
      }
    }
  }
  if constexpr (!kCoarse) {
    const int64_t n = len * kL;
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      sdl[e] = softplus(sdl[e]);
      sdlu[e] = sdl[e] * su[e];
    }
  }
}

// The recurrence over one run of len positions for states [n0, n0+G): h_n (G·kV registers)
// through the run, y[i] += Σ_n C_n·h_n. State-outer order: the exps of the run's positions
// are independent, so out-of-order execution overlaps them. (Position-outer order, the whole
// state in registers, ran at half the vector ports' throughput: the scheduler window held too
// few of the long exp chains.) G = 4 states per pass cuts the traffic to y (measured, one
// vector: 6.4 against 7.6 cycles per state and position with G = 1). y sums over n in the
// portable kernel's order.
//   rows[i]: dt/B/C row of position i (B at rows[i][R], C at rows[i][R+N]); h, A2: (N, kL);
//   sdl, sdlu, y: (len, kL), y holding D·u on entry.
template <int G, bool kCoarse>
inline void run_recurrence(int64_t n0, int64_t N, int64_t R, const float* A2, const float* const* rows, const float* sdl,
                           const float* sdlu, int64_t len, float* h, float* y) {
  __m512 a2[G][kV], hn[G][kV];
  for (int g = 0; g < G; ++g)
    for (int v = 0; v < kV; ++v) {
      a2[g][v] = _mm512_load_ps(A2 + (n0 + g) * kL + 16 * v);
      hn[g][v] = _mm512_load_ps(h + (n0 + g) * kL + 16 * v);
    }
  const int64_t bn = R + n0, cn = R + N + n0;
  for (int64_t i = 0; i < len; ++i) {
    for (int v = 0; v < kV; ++v) {
      const int64_t e = i * kL + 16 * v;
      const __m512 dl = _mm512_load_ps(sdl + e), dlu = _mm512_load_ps(sdlu + e);
      __m512 yi = _mm512_load_ps(y + e);
      for (int g = 0; g < G; ++g) {
        __m512 a;
        if constexpr (kCoarse) a = exp2_decay_coarse(_mm512_fmadd_ps(dl, a2[g][v], _mm512_set1_ps(0.5f)));
        else a = exp2_nonpos_avx512<false>(dl * a2[g][v]);
        hn[g][v] = _mm512_fmadd_ps(a, hn[g][v], dlu * _mm512_set1_ps(rows[i][bn + g]));
        yi = _mm512_fmadd_ps(_mm512_set1_ps(rows[i][cn + g]), hn[g][v], yi);
      }
      _mm512_store_ps(y + e, yi);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int v = 0; v < kV; ++v) _mm512_store_ps(h + (n0 + g) * kL + 16 * v, hn[g][v]);
}

template <bool kCoarse>
void run_recurrence(int64_t N, int64_t R, const float* A2, const float* const* rows, const float* sdl,
                    const float* sdlu, int64_t len, float* h, float* y) {
  int64_t n = 0;
  for (; n + 4 <= N; n += 4) run_recurrence<4, kCoarse>(n, N, R, A2, rows, sdl, sdlu, len, h, y);
  for (; n < N; ++n) run_recurrence<1, kCoarse>(n, N, R, A2, rows, sdl, sdlu, len, h, y);
}

// One task: channels [d0, d0+kL) of batch element b, all four directions.
// scratch: avx512_forward_scratch_floats(N, R) floats, 64-byte aligned.
template <bool kCoarse>
void forward_block(const ScanCtx& c, int64_t b, int64_t d0, float* out, float* scratch) {
  const int64_t L = c.L, D = c.D, N = c.N, R = c.R;
  const Masks mk(D - d0 < kL ? D - d0 : kL);
  float* A2 = scratch;        // (N, kL) A·log2(e): exp(Δ·A) = 2^(Δ·A2)
  float* h = A2 + N * kL;     // (N, kL) the state
  float* W = h + N * kL;      // (R, kL)
  float* su = W + R * kL;     // run inputs and outputs, (kSeg, kL) each
  float* sdl = su + kSeg * kL;
  float* sdlu = sdl + kSeg * kL;
  float* y = sdlu + kSeg * kL;
  const float* rows[kSeg];
  const float* u_b = c.u + b * L * D + d0;
  float* out_b = out + b * L * D + d0;
  __m512 tmp[kV];

  for (int k = 0; k < 4; ++k) {
    for (int64_t n = 0; n < N; ++n) {
      load_block(tmp, c.prep->A.data() + (k * N + n) * D + d0, mk);
      for (int v = 0; v < kV; ++v) {
        _mm512_store_ps(A2 + n * kL + 16 * v, tmp[v] * kLog2e);
        _mm512_store_ps(h + n * kL + 16 * v, _mm512_setzero_ps());
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      load_block(tmp, c.prep->dtw.data() + (k * R + r) * D + d0, mk);
      for (int v = 0; v < kV; ++v) _mm512_store_ps(W + r * kL + 16 * v, tmp[v]);
    }
    Direction dir;
    dir.W = W;
    load_block(dir.bias, c.bias + k * D + d0, mk);
    load_block(dir.Dk, c.Ds + k * D + d0, mk);
    const int32_t* order = c.prep->order.data() + k * L;
    const float* dbl_b = c.dbl + b * L * c.KC + k * c.RN;  // dt, B, C of direction k
    float* states_bk = c.states_out ? c.states_out + (b * 4 + k) * c.nseg * N * D + d0 : nullptr;

    for (int64_t seg = 0; seg < c.nseg; ++seg) {
      const int64_t l0 = seg * kSeg, len = L - l0 < kSeg ? L - l0 : kSeg;
      if (states_bk)
        for (int64_t n = 0; n < N; ++n)
          for (int v = 0; v < kV; ++v)
            _mm512_mask_storeu_ps(states_bk + (seg * N + n) * D + 16 * v, mk.m[v], _mm512_load_ps(h + n * kL + 16 * v));
      run_inputs<kCoarse>(c, dir, order, l0, len, u_b, dbl_b, mk, su, sdl, sdlu);
      for (int64_t i = 0; i < len; ++i) {
        rows[i] = dbl_b + order[l0 + i] * c.KC;
        for (int v = 0; v < kV; ++v)
          _mm512_store_ps(y + i * kL + 16 * v, dir.Dk[v] * _mm512_load_ps(su + i * kL + 16 * v));
        if (l0 + 2 * kSeg + i < L) prefetch_position(c, order[l0 + 2 * kSeg + i], u_b, dbl_b, out_b);
      }
      run_recurrence<kCoarse>(N, R, A2, rows, sdl, sdlu, len, h, y);
      for (int64_t i = 0; i < len; ++i) {
        float* o = out_b + order[l0 + i] * D;
        for (int v = 0; v < kV; ++v) {
          __m512 yi = _mm512_load_ps(y + i * kL + 16 * v);
          if (k > 0) yi = _mm512_maskz_loadu_ps(mk.m[v], o + 16 * v) + yi;
          _mm512_mask_storeu_ps(o + 16 * v, mk.m[v], yi);
        }
      }
    }
  }
}

}  // namespace

void avx512_forward_block(const ScanCtx& c, int64_t b, int64_t d0, float* out, float* scratch, bool coarse_exp) {
  if (coarse_exp) forward_block<true>(c, b, d0, out, scratch);
  else forward_block<false>(c, b, d0, out, scratch);
}

}  // namespace mm::scan_detail

#pragma GCC diagnostic pop
#pragma GCC pop_options

namespace mm::scan_detail {

bool avx512_forward_available() {
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return cpu;
}

int64_t avx512_forward_scratch_floats(int64_t N, int64_t R) { return (2 * N + R + 4 * kSeg) * kAvx512Lanes; }

}  // namespace mm::scan_detail
