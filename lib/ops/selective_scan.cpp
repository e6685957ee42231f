// SS2D selective scan on the CPU (see selective_scan.h for the maths).
//
// Forward:
//   dbl (B·L, 4·(R+2N))  x_proj of every spatial position for the four directions, one sgemm.
//                        Rows are spatial positions p = h·W + w: every direction reads the same
//                        rows, only in a different order.
//   scan                 a task = (batch b, block of kLanes = 32 channels). The state (N, kLanes)
//                        stays in L1 and every inner loop runs over the 32 contiguous channels
//                        with `omp simd` (two AVX-512 vectors). dt_proj (R multiply-adds per
//                        channel) is done inside the scan, which saves a (4, B·L, D) buffer and
//                        the memory traffic to fill and read it. A task runs the four directions
//                        one after the other, so it owns out[b, :, its channels].
//   The column-major directions jump a whole image row between steps (a new page every step),
//   which the hardware prefetchers don't follow, so the loops prefetch a few positions ahead.
//
// Backward recomputes dbl, then per task and direction:
//   pass 1: the forward recurrence, keeping the state h every kSeg steps (checkpoints);
//   pass 2: for each segment from the last: recompute its states and decays exp(Δ·A) into a
//           small buffer (L2), then walk it backwards carrying dh. Per position that gives du
//           and the gradient of the (dt, B, C) row, a sum over channels (ddbl); per channel,
//           sums over positions for dA_logs, dDs, dt_projs_bias and dt_projs_weight.
//   Races are avoided by ownership: a task owns du[b, :, its channels]. ddbl rows sum over all
//   channels, so the channel blocks of one batch element are split into G groups, each with its
//   own copy of ddbl (G = 1 when the batch alone gives enough tasks); the per-channel sums go
//   to one buffer per batch element. Partials are reduced in a fixed order, so results do not
//   depend on the thread count. Finally x_proj's gradients are two sgemms on ddbl.
#include "ops/selective_scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "ops/gemm.h"
#include "ops/selective_scan_detail.h"
#include "ops/vector_math.h"

// gcc's -march=native on Sapphire Rapids prefers 256-bit vectors; the `omp simd` loops over
// 32 channels here run ~13% faster as zmm (measured: the bf16 forward, 300 against 345 ms).
#pragma GCC target("prefer-vector-width=512")

namespace mm {
namespace {

using namespace scan_detail;

constexpr int64_t kLanes = 32;       // channels per scan block (two 16-float vectors)
constexpr int64_t kTargetTasks = 8;  // backward: split channels into groups below this many tasks

// ---------------------------------------------------------------------------------------------
// Small helpers on one block of kLanes channels.

// dst[0:kLanes] = src[0:n], padded with zeros (n <= kLanes).
inline void load_padded(float* dst, const float* src, int64_t n) {
  if (n == kLanes) {  // constant trip count: a couple of vector moves, no memcpy call
    for (int64_t j = 0; j < kLanes; ++j) dst[j] = src[j];
    return;
  }
  for (int64_t j = 0; j < n; ++j) dst[j] = src[j];
  for (int64_t j = n; j < kLanes; ++j) dst[j] = 0.0f;
}

// The kLanes floats at src: src itself for a full block, else a zero-padded copy in tmp.
inline const float* lanes(const float* src, int64_t n, float* tmp) {
  if (n == kLanes) return src;
  load_padded(tmp, src, n);
  return tmp;
}

// dst[0:n] = src[0:n] (store) or += (add), n <= kLanes.
inline void store_lanes(float* dst, const float* src, int64_t n) {
  if (n == kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) dst[j] = src[j];
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = src[j];
  }
}
inline void add_lanes(float* dst, const float* src, int64_t n) {
  if (n == kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) dst[j] += src[j];
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
  }
}

// Software prefetch of n floats (one hint per cache line).
inline void prefetch(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i);
  __builtin_prefetch(p + n - 1);
}

#if defined(__AVX512F__)
// out[r] += Σ_j P[r·32 + j] for r < 16: the sums of 16 rows of 32 floats as one transpose-add
// tree (≈50 instructions instead of 16 separate horizontal reductions).
inline void add_row_sums16(const float* P, float* out) {
  static_assert(kLanes == 32, "add_row_sums16 folds two 16-float halves");
  // (maskz forms with a full mask: gcc 12 warns about the unmasked ones' undefined source)
  const __mmask16 all = 0xFFFF;
  __m512 v[16], w[8], x[4], y[2];
  for (int r = 0; r < 16; ++r) v[r] = _mm512_add_ps(_mm512_loadu_ps(P + r * 32), _mm512_loadu_ps(P + r * 32 + 16));
  for (int i = 0; i < 8; ++i)  // 256-bit halves: w[i] = 8 partial sums of rows 2i, 2i+1
    w[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all, v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_maskz_shuffle_f32x4(all, v[2 * i], v[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)  // 128-bit quarters: 4 partial sums each of rows 4i..4i+3
    x[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all, w[2 * i], w[2 * i + 1], 0x88),
                         _mm512_maskz_shuffle_f32x4(all, w[2 * i], w[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)  // pairs within each quarter
    y[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(all, x[2 * i], x[2 * i + 1], 0x44),
                         _mm512_maskz_shuffle_ps(all, x[2 * i], x[2 * i + 1], 0xEE));
  const __m512 z = _mm512_add_ps(_mm512_maskz_shuffle_ps(all, y[0], y[1], 0x88),
                                 _mm512_maskz_shuffle_ps(all, y[0], y[1], 0xDD));
  // z holds row (i%4)·4 + i/4 in lane i; the same index vector puts them back in order.
  const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), _mm512_maskz_permutexvar_ps(all, idx, z)));
}
#endif

// Rows of a row-sum buffer: n rounded up to a multiple of 16.
constexpr int64_t padded_rows(int64_t n) { return (n + 15) / 16 * 16; }

// out[r] += Σ_j P[r·kLanes + j] for r < n. P is (padded_rows(n), kLanes) with rows n.. zero.
inline void add_row_sums(const float* P, int64_t n, float* out) {
#if defined(__AVX512F__)
  int64_t r = 0;
  for (; r + 16 <= n; r += 16) add_row_sums16(P + r * kLanes, out + r);
  if (r < n) {
    alignas(64) float tail[16] = {};
    add_row_sums16(P + r * kLanes, tail);
    for (int64_t i = 0; r + i < n; ++i) out[r + i] += tail[i];
  }
#else
  for (int64_t r = 0; r < n; ++r) {
    float sum = 0.0f;
    for (int64_t j = 0; j < kLanes; ++j) sum += P[r * kLanes + j];
    out[r] += sum;
  }
#endif
}

// p, which its caller keeps 64-byte aligned, said so to the compiler. Every per-block buffer
// here is carved from a 64-byte aligned base (AlignedBuffer, alignas(64)) in whole rows of
// kLanes floats. Why it matters: gcc's tuning for AMD Zen 1 (what -march=native picks there)
// splits each 256-bit store it cannot prove aligned into two 128-bit halves, and the state
// row that one step stores is loaded whole by the next, which the store buffer cannot forward
// from two halves. Measured there: MedMamba-T's forward scan 2.5% faster on one thread (the
// recurrence is bound by its arithmetic on Zen 1's 128-bit units, not by these stores).
template <class T>
inline T* aligned64(T* p) {
  return static_cast<T*>(__builtin_assume_aligned(p, 64));
}

// A float buffer whose start is 64-byte aligned.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(int64_t n) : v_(size_t(n) + 16) {
    data_ = v_.data();
    while (reinterpret_cast<uintptr_t>(data_) % 64 != 0) ++data_;
  }
  float* data() { return data_; }

 private:
  std::vector<float> v_;
  float* data_;
};

// ---------------------------------------------------------------------------------------------
// The scan of one channel block.

// Per-direction constants of one channel block, zero-padded to kLanes.
struct BlockParams {
  float* A;   // (N, kLanes) A = -exp(A_logs)
  float* A2;  // (N, kLanes) A·log2(e): exp(Δ·A) = 2^(Δ·A2)
  float* W;   // (R, kLanes) dt_projs_weight
  alignas(64) float bias[kLanes];
  alignas(64) float Dk[kLanes];

  static int64_t scratch_floats(int64_t N, int64_t R) { return (2 * N + R) * kLanes; }
  BlockParams(float* scratch, int64_t N) : A(scratch), A2(A + N * kLanes), W(A2 + N * kLanes) {}

  void load(const ScanCtx& c, int k, int64_t d0, int64_t cw) {
    for (int64_t n = 0; n < c.N; ++n) {
      load_padded(A + n * kLanes, c.prep->A.data() + (k * c.N + n) * c.D + d0, cw);
      for (int64_t j = 0; j < kLanes; ++j) A2[n * kLanes + j] = A[n * kLanes + j] * kLog2e;
    }
    for (int64_t r = 0; r < c.R; ++r) load_padded(W + r * kLanes, c.prep->dtw.data() + (k * c.R + r) * c.D + d0, cw);
    load_padded(bias, c.bias + k * c.D + d0, cw);
    load_padded(Dk, c.Ds + k * c.D + d0, cw);
  }
};

// pre = dt_projs_weight[k]·dt + bias for the block's channels (dt: the R values of a dbl row).
// The 32 sums stay in four 8-float registers over the R steps: summed in pre itself, which
// gcc cannot prove apart from W and dt, all 32 were stored and reloaded at every step (and a
// local array copied to pre afterwards went out through 16-byte moves that stalled on the
// 32-byte stores before them). Same products, same order, same fused multiply-adds.
inline void dt_proj(const BlockParams& prm, int64_t R, const float* dt, float* pre) {
  // may_alias: it reads and writes float arrays (as __m256 is declared).
  using Vec8 = float __attribute__((vector_size(32), aligned(32), __may_alias__));
  constexpr int kVecs = int(kLanes / 8);
  static_assert(kLanes % 8 == 0, "whole vectors of 8 lanes");
  Vec8 acc[kVecs];
  for (int q = 0; q < kVecs; ++q) acc[q] = *reinterpret_cast<const Vec8*>(prm.bias + 8 * q);
  for (int64_t r = 0; r < R; ++r) {
    const float dr = dt[r];
    const Vec8* Wr = reinterpret_cast<const Vec8*>(aligned64(prm.W + r * kLanes));
    for (int q = 0; q < kVecs; ++q) acc[q] += dr * Wr[q];
  }
  for (int q = 0; q < kVecs; ++q) reinterpret_cast<Vec8*>(aligned64(pre))[q] = acc[q];
}

// exp(Δ·A) of the recurrence: exact to ~1e-7, or (inference that asks for it) to ~3e-6.
template <bool kCoarseExp>
inline float decay_exp2(float x) {
  if constexpr (kCoarseExp) return exp2_nonpos_coarse(x);
  else return exp2_nonpos(x);
}

// One step of the recurrence: h_out = exp(Δ·A)⊙h_in + Δ·u·B (h_out may alias h_in).
// dl = Δ and dlu = Δ·u per lane; Bl: the N values of B. If decay is set, exp(Δ·A) is stored
// there (N, kLanes). If y is set, y += C·h_out.
template <bool kCoarseExp = false>
inline void scan_step(int64_t N, const float* A2, const float* dl, const float* dlu, const float* Bl,
                      const float* Cl, const float* h_in, float* h_out, float* decay, float* y) {
  dl = aligned64(dl), dlu = aligned64(dlu);
  if (y) y = aligned64(y);
  for (int64_t n = 0; n < N; ++n) {
    const float Bn = Bl[n];
    const float* A2n = aligned64(A2 + n * kLanes);
    const float* hi = aligned64(h_in + n * kLanes);
    float* ho = aligned64(h_out + n * kLanes);
    if (decay) {
      float* an = aligned64(decay + n * kLanes);
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) {
        an[j] = decay_exp2<kCoarseExp>(dl[j] * A2n[j]);
        ho[j] = an[j] * hi[j] + dlu[j] * Bn;
      }
    } else if (y) {
      const float Cn = Cl[n];
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) {
        ho[j] = decay_exp2<kCoarseExp>(dl[j] * A2n[j]) * hi[j] + dlu[j] * Bn;
        y[j] += Cn * ho[j];
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) ho[j] = decay_exp2<kCoarseExp>(dl[j] * A2n[j]) * hi[j] + dlu[j] * Bn;
    }
  }
}

// Per-position inputs of the recurrence for positions order[l0 .. l0+len) of one block, each
// (len, kLanes): u (zero-padded copy), Δ = softplus(dt_proj), Δ·u, and softplus' if grad is set.
// They don't depend on the state, so computing a run of them ahead of the recurrence keeps the
// long softplus latency (exp, divide, polynomial) off the recurrence's critical path.
// Prefetches the rows of positions order[pf0 .. pf0+len) (pf0 < 0: none) for the next run.
void step_inputs(const ScanCtx& c, const BlockParams& prm, const int32_t* order, int64_t l0, int64_t len,
                 int64_t pf0, const float* u_b, const float* dbl_b, int64_t cw, float* u, float* dl, float* dlu,
                 float* grad) {
  const int64_t D = c.D;
  u = aligned64(u), dl = aligned64(dl), dlu = aligned64(dlu);
  if (grad) grad = aligned64(grad);
  for (int64_t i = 0; i < len; ++i) {
    if (pf0 >= 0 && pf0 + i < c.L) {
      const int64_t q = order[pf0 + i];
      prefetch(u_b + q * D, cw);
      prefetch(dbl_b + q * c.KC, c.RN);
    }
    const int64_t p = order[l0 + i];
    load_padded(u + i * kLanes, u_b + p * D, cw);
    dt_proj(prm, c.R, dbl_b + p * c.KC, dl + i * kLanes);  // pre-activation, made Δ below
  }
  // One flat loop over the run: long enough for the compiler and the CPU to overlap the steps.
  const int64_t n = len * kLanes;
  if (grad) {
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      dl[e] = softplus_and_grad(dl[e], grad[e]);
      dlu[e] = dl[e] * u[e];
    }
  } else {
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      dl[e] = softplus(dl[e]);
      dlu[e] = dl[e] * u[e];
    }
  }
}

// Forward of channels [d0, d0+kLanes) of batch element b through all four directions, in runs
// of kSeg positions (inputs of the run first, then the recurrence).
// scratch: forward_scratch_floats(N, R) floats, 64-byte aligned.
int64_t forward_scratch_floats(int64_t N, int64_t R) {
  return BlockParams::scratch_floats(N, R) + (N + 3 * kSeg) * kLanes;
}
template <bool kCoarseExp>
void forward_block(const ScanCtx& c, int64_t b, int64_t d0, float* out, float* scratch) {
  const int64_t N = c.N, L = c.L, D = c.D, cw = std::min(kLanes, D - d0);
  BlockParams prm(scratch, N);
  float* h = scratch + BlockParams::scratch_floats(N, c.R);  // state (N, kLanes)
  float* u = h + N * kLanes;                                 // run inputs, (kSeg, kLanes) each
  float* dl = u + kSeg * kLanes;
  float* dlu = dl + kSeg * kLanes;
  alignas(64) float y[kLanes];
  const float* u_b = c.u + b * L * D + d0;
  float* out_b = out + b * L * D + d0;

  for (int k = 0; k < 4; ++k) {
    prm.load(c, k, d0, cw);
    std::fill(h, h + N * kLanes, 0.0f);
    const int32_t* order = c.prep->order.data() + k * L;
    const float* dbl_b = c.dbl + b * L * c.KC + k * c.RN;  // dt, B, C of direction k
    float* states_bk = c.states_out ? c.states_out + (b * 4 + k) * c.nseg * N * D + d0 : nullptr;
    for (int64_t seg = 0; seg < c.nseg; ++seg) {
      const int64_t l0 = seg * kSeg, len = std::min(kSeg, L - l0);
      if (states_bk)
        for (int64_t n = 0; n < N; ++n) store_lanes(states_bk + (seg * N + n) * D, h + n * kLanes, cw);
      step_inputs(c, prm, order, l0, len, l0 + kSeg, u_b, dbl_b, cw, u, dl, dlu, nullptr);
      for (int64_t i = 0; i < len; ++i) {
        if (l0 + kSeg + i < L) prefetch(out_b + order[l0 + kSeg + i] * D, cw);
        const int64_t p = order[l0 + i];
        const float* ui = u + i * kLanes;
#pragma omp simd
        for (int64_t j = 0; j < kLanes; ++j) y[j] = prm.Dk[j] * ui[j];
        const float* Bl = dbl_b + p * c.KC + c.R;
        scan_step<kCoarseExp>(N, prm.A2, dl + i * kLanes, dlu + i * kLanes, Bl, Bl + N, h, h, nullptr, y);
        if (k == 0) {
          store_lanes(out_b + p * D, y, cw);
        } else {
          add_lanes(out_b + p * D, y, cw);
        }
      }
    }
  }
}

// Per-thread buffers of the backward block kernel.
struct BackwardScratch {
  int64_t nseg;  // checkpoints are kept here when the forward pass did not save them
  AlignedBuffer buf;
  float *params, *h, *dh, *dA, *dW, *ckpt, *hs, *decay, *sdl, *sdlu, *sgrad, *su, *P;

  BackwardScratch(int64_t N, int64_t R, int64_t L)
      : nseg((L + kSeg - 1) / kSeg),
        buf(BlockParams::scratch_floats(N, R) +
            kLanes * (3 * N + R + nseg * N + (2 * kSeg + 1) * N + 4 * kSeg + padded_rows(R + 2 * N))) {
    float* p = buf.data();
    auto take = [&](int64_t rows) { float* q = p; p += rows * kLanes; return q; };
    params = p;
    p += BlockParams::scratch_floats(N, R);
    h = take(N);                  // running state in pass 1
    dh = take(N);                 // gradient of the state, carried backwards
    dA = take(N);                 // Σ_l dL/d(Δ·A)·Δ per (n, lane)
    dW = take(R);                 // Σ_l dpre·dt_r: dt_projs_weight gradient per (r, lane)
    ckpt = take(nseg * N);        // state before each segment
    hs = take((kSeg + 1) * N);    // states of one segment: hs[0] = before, hs[i+1] = after step i
    decay = take(kSeg * N);       // exp(Δ·A) of one segment
    sdl = take(kSeg);             // Δ
    sdlu = take(kSeg);            // Δ·u
    sgrad = take(kSeg);           // softplus'(pre-activation)
    su = take(kSeg);              // u (padded)
    P = take(padded_rows(R + 2 * N));  // per-lane terms of d(dt, B, C) of one position
    std::fill(P, P + padded_rows(R + 2 * N) * kLanes, 0.0f);
  }
};

// Backward of channels [d0, d0+kLanes) of batch element b, all four directions.
//   dout, du: (B·L, D); du (+=) may be null.
//   ddbl:  (B·L, KC) this task's group buffer: d(dt, B, C) summed over these channels (+=).
//   pgrad: this batch element's parameter sums (+=): dA_logs (4D, N), dDs (4D), dbias (4D),
//          ddt_projs_weight (4D, R).
void backward_block(const ScanCtx& c, int64_t b, int64_t d0, const float* dout, float* du, float* ddbl,
                    float* pgrad, BackwardScratch& s) {
  const int64_t N = c.N, L = c.L, D = c.D, cw = std::min(kLanes, D - d0);
  const int64_t NL = N * kLanes;
  BlockParams prm(s.params, N);
  alignas(64) float dy_pad[kLanes];
  alignas(64) float ddl[kLanes], g[kLanes], dpre_l[kLanes], du_l[kLanes], dD[kLanes], dbias[kLanes];
  float* pg_A = pgrad;
  float* pg_D = pgrad + 4 * D * N;
  float* pg_bias = pg_D + 4 * D;
  float* pg_W = pg_bias + 4 * D;
  const float* u_b = c.u + b * L * D + d0;
  const float* dout_b = dout + b * L * D + d0;
  float* du_b = du ? du + b * L * D + d0 : nullptr;

  for (int k = 0; k < 4; ++k) {
    prm.load(c, k, d0, cw);
    const int32_t* order = c.prep->order.data() + k * L;
    const float* dbl_b = c.dbl + b * L * c.KC + k * c.RN;  // dt, B, C of direction k
    float* ddbl_b = ddbl + b * L * c.KC + k * c.RN;        // their gradients
    float* pB = s.P + c.R * kLanes;                          // rows of s.P: dt, B, C
    float* pC = pB + N * kLanes;

    // Pass 1: forward recurrence, keeping the state at the start of every segment (unless the
    // forward pass saved these states).
    const float* states_bk = c.states_in ? c.states_in + (b * 4 + k) * c.nseg * N * D + d0 : nullptr;
    if (!states_bk) {
      std::fill(s.h, s.h + NL, 0.0f);
      for (int64_t seg = 0; seg < s.nseg; ++seg) {
        const int64_t l0 = seg * kSeg, len = std::min(kSeg, L - l0);
        std::copy(s.h, s.h + NL, s.ckpt + seg * NL);
        step_inputs(c, prm, order, l0, len, l0 + kSeg, u_b, dbl_b, cw, s.su, s.sdl, s.sdlu, nullptr);
        for (int64_t i = 0; i < len; ++i)
          scan_step(N, prm.A2, s.sdl + i * kLanes, s.sdlu + i * kLanes, dbl_b + order[l0 + i] * c.KC + c.R,
                    nullptr, s.h, s.h, nullptr, nullptr);
      }
    }

    // Pass 2: segments from the last, each recomputed then walked backwards.
    std::fill(s.dh, s.dh + NL, 0.0f);
    std::fill(s.dA, s.dA + NL, 0.0f);
    std::fill(s.dW, s.dW + c.R * kLanes, 0.0f);
    std::fill(dD, dD + kLanes, 0.0f);
    std::fill(dbias, dbias + kLanes, 0.0f);
    for (int64_t seg = s.nseg - 1; seg >= 0; --seg) {
      const int64_t l0 = seg * kSeg, len = std::min(kSeg, L - l0);
      if (states_bk) {
        for (int64_t n = 0; n < N; ++n) load_padded(s.hs + n * kLanes, states_bk + (seg * N + n) * D, cw);
      } else {
        std::copy(s.ckpt + seg * NL, s.ckpt + (seg + 1) * NL, s.hs);
      }
      // Recompute the segment (its inputs first; they also prefetch the next segment's rows).
      step_inputs(c, prm, order, l0, len, seg > 0 ? l0 - kSeg : -1, u_b, dbl_b, cw, s.su, s.sdl, s.sdlu,
                  s.sgrad);
      for (int64_t i = 0; i < len; ++i) {
        if (seg > 0) {  // what the next segment (seg-1) writes or reads only in the reverse walk
          const int64_t q = order[l0 - kSeg + i];
          prefetch(dout_b + q * D, cw);
          if (du_b) prefetch(du_b + q * D, cw);
          prefetch(ddbl_b + q * c.KC, c.RN);
        }
        scan_step(N, prm.A2, s.sdl + i * kLanes, s.sdlu + i * kLanes, dbl_b + order[l0 + i] * c.KC + c.R,
                  nullptr, s.hs + i * NL, s.hs + (i + 1) * NL, s.decay + i * NL, nullptr);
      }

      for (int64_t i = len - 1; i >= 0; --i) {
        const int64_t p = order[l0 + i];
        const float* sdl = s.sdl + i * kLanes;
        const float* sdlu = s.sdlu + i * kLanes;
        const float* su = s.su + i * kLanes;
        const float* dt = dbl_b + p * c.KC;
        const float* Bl = dt + c.R;
        const float* Cl = Bl + N;
        const float* dy = lanes(dout_b + p * D, cw, dy_pad);
#pragma omp simd
        for (int64_t j = 0; j < kLanes; ++j) {
          ddl[j] = 0.0f;  // dL/dΔ
          g[j] = 0.0f;    // Σ_n dL/dh_n·B_n
        }
        for (int64_t n = 0; n < N; ++n) {
          const float Bn = Bl[n], Cn = Cl[n];
          const float* An = prm.A + n * kLanes;
          const float* h_prev = s.hs + i * NL + n * kLanes;
          const float* h_cur = h_prev + NL;
          const float* an = s.decay + i * NL + n * kLanes;
          float* dhn = s.dh + n * kLanes;
          float* dAn = s.dA + n * kLanes;
          float* pBn = pB + n * kLanes;
          float* pCn = pC + n * kLanes;
#pragma omp simd
          for (int64_t j = 0; j < kLanes; ++j) {
            pCn[j] = dy[j] * h_cur[j];                  // → dC_l[n]
            const float dhj = dhn[j] + dy[j] * Cn;      // dL/dh_l
            const float t = dhj * h_prev[j] * an[j];    // dL/d(Δ·A)
            ddl[j] += t * An[j];
            dAn[j] += t * sdl[j];
            g[j] += dhj * Bn;
            pBn[j] = dhj * sdlu[j];                     // → dB_l[n]
            dhn[j] = dhj * an[j];                       // dL/dh_{l-1} (its part through h_l)
          }
        }
        const float* sgrad = s.sgrad + i * kLanes;
#pragma omp simd
        for (int64_t j = 0; j < kLanes; ++j) {
          ddl[j] += g[j] * su[j];
          du_l[j] = g[j] * sdl[j] + prm.Dk[j] * dy[j];
          dD[j] += dy[j] * su[j];
          dpre_l[j] = ddl[j] * sgrad[j];
          dbias[j] += dpre_l[j];
        }
        // dt_proj: d dt_r = Σ_j dpre_j·W_rj (lane terms to s.P), dW_rj += dpre_j·dt_r.
        for (int64_t r = 0; r < c.R; ++r) {
          const float dtr = dt[r];
          const float* Wr = prm.W + r * kLanes;
          float* Pr = s.P + r * kLanes;
          float* dWr = s.dW + r * kLanes;
#pragma omp simd
          for (int64_t j = 0; j < kLanes; ++j) {
            Pr[j] = dpre_l[j] * Wr[j];
            dWr[j] += dpre_l[j] * dtr;
          }
        }
        add_row_sums(s.P, c.RN, ddbl_b + p * c.KC);
        if (du_b) add_lanes(du_b + p * D, du_l, cw);
      }
    }

    // dA_logs = dA · A (A = -exp(A_logs)).
    for (int64_t j = 0; j < cw; ++j) {
      const int64_t ch = k * D + d0 + j;
      for (int64_t n = 0; n < N; ++n) pg_A[ch * N + n] += s.dA[n * kLanes + j] * prm.A[n * kLanes + j];
      pg_D[ch] += dD[j];
      pg_bias[ch] += dbias[j];
      for (int64_t r = 0; r < c.R; ++r) pg_W[ch * c.R + r] += s.dW[r * kLanes + j];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Driver helpers.

Prepared prepare(const SS2DScanShape& s, const SS2DScanWeights& w) {
  const int64_t D = s.D, N = s.N, R = s.R, H = s.H, W = s.W, L = H * W;
  Prepared pr;
  pr.A.resize(size_t(4 * N * D));
  pr.dtw.resize(size_t(4 * R * D));
  // Parallel: 4·D·N exps (49k at MedMamba-T's last stage) would otherwise be a serial part of
  // every call, as long as the scan itself at 16 threads.
#pragma omp parallel for collapse(2) schedule(static) if (4 * D * N >= 4096)
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t n = 0; n < N; ++n) pr.A[(k * N + n) * D + d] = -std::exp(w.A_logs[(k * D + d) * N + n]);
      for (int64_t r = 0; r < R; ++r) pr.dtw[(k * R + r) * D + d] = w.dt_projs_weight[(k * D + d) * R + r];
    }
  pr.order.resize(size_t(4 * L));
  int32_t* o = pr.order.data();
  for (int64_t l = 0; l < L; ++l) {
    o[l] = int32_t(l);                                // k=0: l = h·W + w
    o[L + l] = int32_t((l % H) * W + l / H);          // k=1: l = w·H + h
  }
  for (int64_t l = 0; l < L; ++l) {
    o[2 * L + l] = o[L - 1 - l];                      // k=2: k=0 reversed
    o[3 * L + l] = o[L + L - 1 - l];                  // k=3: k=1 reversed
  }
  return pr;
}

void check_shape(const SS2DScanShape& s) {
  MM_CHECK(s.B > 0 && s.H > 0 && s.W > 0 && s.D > 0 && s.N > 0 && s.R > 0,
           "ss2d_scan: all sizes must be positive");
  MM_CHECK(s.H * s.W < (int64_t(1) << 31), "ss2d_scan: H*W too large");
}

int64_t channel_blocks(const SS2DScanShape& s) { return (s.D + kLanes - 1) / kLanes; }

// Backward: number of channel groups per batch element (each group has its own dB/dC buffer).
int64_t channel_groups(const SS2DScanShape& s) {
  return std::clamp((kTargetTasks + s.B - 1) / s.B, int64_t(1), channel_blocks(s));
}

ScanCtx make_ctx(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w, const Prepared& pr,
                 const float* dbl) {
  ScanCtx c;
  c.B = s.B; c.L = s.H * s.W; c.D = s.D; c.N = s.N; c.R = s.R;
  c.RN = s.R + 2 * s.N; c.KC = 4 * c.RN;
  c.u = u; c.dbl = dbl; c.bias = w.dt_projs_bias; c.Ds = w.Ds; c.prep = &pr;
  c.nseg = (c.L + kSeg - 1) / kSeg;
  c.states_out = nullptr;
  c.states_in = nullptr;
  return c;
}

// dbl (B·L, 4·(R+2N)) = u · x_proj_weightᵀ.
void x_proj(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w, float* dbl) {
  const int64_t BL = s.B * s.H * s.W, KC = 4 * (s.R + 2 * s.N);
  sgemm(false, true, BL, KC, s.D, 1.0f, u, s.D, w.x_proj_weight, s.D, 0.0f, dbl, KC);
}

}  // namespace

int64_t ss2d_scan_states_floats(const SS2DScanShape& s) {
  return s.B * 4 * ((s.H * s.W + kSeg - 1) / kSeg) * s.N * s.D;
}

int64_t ss2d_scan_forward_workspace_floats(const SS2DScanShape& s) {
  return s.B * s.H * s.W * 4 * (s.R + 2 * s.N);
}

int64_t ss2d_scan_backward_workspace_floats(const SS2DScanShape& s) {
  const int64_t BL = s.B * s.H * s.W, KC = 4 * (s.R + 2 * s.N);
  return BL * KC                             // dbl
         + channel_groups(s) * BL * KC       // ddbl per channel group
         + s.B * 4 * s.D * (s.N + 2 + s.R);  // per-batch parameter sums
}

void ss2d_scan_forward(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w, float* out,
                       float* workspace, float* states) {
  check_shape(s);
  std::unique_ptr<float[]> owned;
  if (!workspace) {
    owned.reset(new float[size_t(ss2d_scan_forward_workspace_floats(s))]);
    workspace = owned.get();
  }
  float* dbl = workspace;
  x_proj(s, u, w, dbl);
  ss2d_scan_forward_from_dbl(s, u, w, dbl, out, states);
}

void ss2d_scan_forward_from_dbl(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w,
                                const float* dbl, float* out, float* states, bool coarse_exp) {
  scan_detail::forward_from_dbl(s, u, w, dbl, out, states, coarse_exp, scan_detail::avx512_forward_available());
}

void scan_detail::forward_from_dbl(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w, const float* dbl,
                                   float* out, float* states, bool coarse_exp, bool use_avx512) {
  check_shape(s);
  const Prepared pr = prepare(s, w);
  ScanCtx c = make_ctx(s, u, w, pr, dbl);
  c.states_out = states;
  if (use_avx512) {
    const int64_t nblk = (s.D + kAvx512Lanes - 1) / kAvx512Lanes;
#pragma omp parallel
    {
      AlignedBuffer scratch(avx512_forward_scratch_floats(s.N, s.R));
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < s.B * nblk; ++t)
        avx512_forward_block(c, t / nblk, (t % nblk) * kAvx512Lanes, out, scratch.data(), coarse_exp);
    }
    return;
  }
  const int64_t nblk = channel_blocks(s);
#pragma omp parallel
  {
    AlignedBuffer scratch(forward_scratch_floats(s.N, s.R));
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < s.B * nblk; ++t) {
      if (coarse_exp) forward_block<true>(c, t / nblk, (t % nblk) * kLanes, out, scratch.data());
      else forward_block<false>(c, t / nblk, (t % nblk) * kLanes, out, scratch.data());
    }
  }
}

void ss2d_scan_backward(const SS2DScanShape& s, const float* u, const SS2DScanWeights& w, const float* dout,
                        float* du, const SS2DScanGrads& g, float* workspace, const float* states) {
  check_shape(s);
  const int64_t B = s.B, L = s.H * s.W, BL = B * L, D = s.D, N = s.N, R = s.R;
  const int64_t RN = R + 2 * N, KC = 4 * RN;
  const int64_t nblk = channel_blocks(s), G = channel_groups(s);
  const int64_t PG = 4 * D * (N + 2 + R);  // per-batch parameter sums
  std::unique_ptr<float[]> owned;
  if (!workspace) {
    owned.reset(new float[size_t(ss2d_scan_backward_workspace_floats(s))]);
    workspace = owned.get();
  }
  float* dbl = workspace;
  float* ddbl = dbl + BL * KC;         // (G, B·L, KC)
  float* pgrad = ddbl + G * BL * KC;   // (B, PG)
  x_proj(s, u, w, dbl);

  const Prepared pr = prepare(s, w);
  ScanCtx c = make_ctx(s, u, w, pr, dbl);
  c.states_in = states;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < G * BL; ++i) std::fill(ddbl + i * KC, ddbl + (i + 1) * KC, 0.0f);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) std::fill(pgrad + b * PG, pgrad + (b + 1) * PG, 0.0f);

    BackwardScratch scratch(N, R, L);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < B * G; ++t) {
      const int64_t b = t / G, grp = t % G;
      for (int64_t blk = grp * nblk / G; blk < (grp + 1) * nblk / G; ++blk)
        backward_block(c, b, blk * kLanes, dout, du, ddbl + grp * BL * KC, pgrad + b * PG, scratch);
    }

    // Sum the groups' partial ddbl into group 0.
#pragma omp for schedule(static)
    for (int64_t row = 0; row < BL; ++row)
      for (int64_t grp = 1; grp < G; ++grp) {
        const float* src = ddbl + grp * BL * KC + row * KC;
        float* dst = ddbl + row * KC;
        for (int64_t col = 0; col < KC; ++col) dst[col] += src[col];
      }
  }

  // Through x_proj: d x_proj_weight += ddblᵀ·u, du += ddbl·x_proj_weight.
  if (g.x_proj_weight) sgemm(true, false, KC, D, BL, 1.0f, ddbl, KC, u, D, 1.0f, g.x_proj_weight, D);
  if (du) sgemm(false, false, BL, D, KC, 1.0f, ddbl, KC, w.x_proj_weight, D, 1.0f, du, D);

  for (int64_t b = 0; b < B; ++b) {
    const float* pg = pgrad + b * PG;
    if (g.A_logs)
      for (int64_t i = 0; i < 4 * D * N; ++i) g.A_logs[i] += pg[i];
    if (g.Ds)
      for (int64_t i = 0; i < 4 * D; ++i) g.Ds[i] += pg[4 * D * N + i];
    if (g.dt_projs_bias)
      for (int64_t i = 0; i < 4 * D; ++i) g.dt_projs_bias[i] += pg[4 * D * N + 4 * D + i];
    if (g.dt_projs_weight)
      for (int64_t i = 0; i < 4 * D * R; ++i) g.dt_projs_weight[i] += pg[4 * D * (N + 2) + i];
  }
}

}  // namespace mm
