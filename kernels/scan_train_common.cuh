#pragma once
// Shared by scan_train_forward.cu and scan_train_backward.cu (the SS2D training scan; the
// overview is at the top of scan_train_forward.cu): sizes, the workspace layout and the
// per-step maths both passes must compute identically.
#include <algorithm>
#include <cstdint>

#include "cuda_common.cuh"
#include "cuda_train_gemm_conv.h"
#include "cuda_train_scan.h"
#include "ops/vector_math.h"  // exp2_fraction

namespace mm::cuda::scan_train {

constexpr int kN = 16;  // d_state: the warp transpose-reduction of 2N values needs 2N == 32
constexpr int kChunk = int(kScanChunk);
constexpr int kWarp = 32;  // threads per block of both scan kernels: one warp of 32 channels
constexpr int kMaxR = 256;  // keeps the staged rows of a chunk in 48 KB of shared memory
static_assert(2 * kN == kWarp, "dB/dC reduction gives one value per lane");

struct Dims {
  int B, H, W, L, D, R, RN, KC, nseg, ndblk;  // RN = R+2N, KC = 4·RN, ndblk = ceil(D/32)
  int ldbl;  // the row stride of dbl and ddbl: KC rounded up to 8 (see XProjWeight)
  int seg_chunks, nsegs;  // chunks per segment, segments per direction (ceil(nseg/seg_chunks))
  int forward_lanes;      // ScanTrainShape::forward_lanes (0: automatic)
  bool bf16;              // ScanTrainShape::bf16: backward's dir0 holds bf16 copies only
  int SR;                 // floats per staged step in shared memory: [B | C | dt | pad], a multiple of 4
  int64_t BL;
};
// Checks the shape. Unless the shape (or, for experiments, the environment's
// MM_SCAN_SEGMENT_CHUNKS) sets segment_chunks, the steps are cut into segments only when the
// batch is too small to fill the GPU otherwise; forward and backward use the same segments.
Dims make_dims(const ScanTrainShape& s);

// Floats n rounded up to a multiple of 64 (256 bytes, for cuBLAS): where workspace pieces start.
inline int64_t aligned64(int64_t n) { return (n + 63) / 64 * 64; }
// Consecutive workspace pieces from base, each at a multiple of 64 floats; with base nullptr
// it only counts (floats: what the pieces so far take).
struct WorkspaceCarver {
  float* base;
  int64_t floats = 0;
  float* take(int64_t n) {
    float* p = base ? base + floats : nullptr;
    floats += aligned64(n);
    return p;
  }
};

// Workspace pieces, each starting at a multiple of 64 floats (WorkspaceCarver).
struct Workspace {
  float *dbl, *ddbl;  // (B·L, KC), rows ldbl apart: x_proj output [dt | B | C] per direction, and its gradient
                      // (in bf16 under bf16 GEMMs, the half of its floats that Dims::bf16 carves)
  float *dir0;        // (4, B·L, D): forward ys, backward dΔ_pre; with Dims::bf16, backward's
                      // holds only bf16 copies of dΔ_pre (4, B·L, D) and u (B·L, D): dir0_floats
  float *dir1;        // (4, B·L, D): backward direct du terms per direction; once they are
                      // added up, dt_proj's scratch (at least dt_proj_backward_scratch_floats)
  float *dbc_part;    // (ndblk, B·L, 4, 2N): [dB | dC] summed over one 32-channel block
  float *pgrad;       // (B, nsegs, 4·D, N+2): per segment [dA_logs (N) | dDs | d dt_projs_bias]
  float *seg_state;   // (B·4, nsegs, N, D): a segment's local end state, then its start state
                      // (forward); its local dh, then the dh entering its end (backward)
  float *seg_decay;   // (B·4, nsegs, N, D): a segment's decay of its start, exp(A_n·ΣΔ)
  float *x_proj_pad;  // (ldbl, D) bf16 where ldbl > KC: x_proj_weight padded (XProjWeight)
  int64_t dir0_floats;
  int64_t total;      // floats
};
// When dir0 holds bf16 copies (see Workspace): the floats from dir0 to the copy of u, and
// the floats both copies take.
inline int64_t bf16_u_offset(const Dims& d) { return aligned64(2 * d.BL * d.D); }
inline int64_t bf16_dir0_floats(const Dims& d) { return bf16_u_offset(d) + (d.BL * d.D + 1) / 2; }
// base nullptr: sizes only. !backward: forward's pieces alone (dbl, dir0, seg_state,
// seg_decay; the others nullptr), which hold more images in the same workspace.
Workspace carve(const Dims& d, float* base, bool backward = true);

// x_proj_weight (KC, D) as the x_proj GEMMs read it, and their extent over dbl's columns.
// Under bf16 GEMMs with KC not a multiple of 8 (140 at MedMamba-T's first stage), a bf16 copy
// with ldbl rows, the last ones zero, so that dbl = u·Wᵀ and du += ddbl·W run over ldbl
// columns: with an extent of 140, cuBLAS ran them in sm80 align2 kernels. (ddbl's padding
// columns are written as zeros; dbl's hold zeros from the zero rows.)
struct XProjWeight {
  GemmOperand w;
  int64_t cols;
};
XProjWeight x_proj_weight(const Dims& s, const float* weight, const Workspace& ws, Stream st);

inline ScanTrainShape with_batch(ScanTrainShape s, int64_t B) {
  s.B = B;
  return s;
}

// Calls f(part, b0) for consecutive slices of the batch, images [b0, b0 + part.B), of `per`
// images each (scan_train_batch_slice for backward): the workspace holds one slice.
template <class F>
void for_each_batch_slice(const ScanTrainShape& s, int64_t per, F&& f) {
  for (int64_t b0 = 0; b0 < s.B; b0 += per) f(with_batch(s, std::min(per, s.B - b0)), b0);
}

// dst[i] (= or +=) ((src[i] + src[n+i]) + src[2n+i]) + src[3n+i]: the four directions of a
// (4, n) buffer in the CPU's order.
void sum_directions(float* dst, const float* src, int64_t n, bool accumulate, Stream st);

// Δ's pre-activation, dt_projs_bias + dt_projs_weight[k,d,:]·dt, summed in the CPU's order.
__device__ __forceinline__ float delta_pre(const float* wrow, float bias, const float* dt, int R) {
  float pre = bias;
  for (int r = 0; r < R; ++r) pre = fmaf(dt[r], wrow[r], pre);
  return pre;
}

// exp(x) for x <= 0 by the CPU scan's method (exp2_nonpos in lib/ops/vector_math.h: a
// degree-6 polynomial on [-0.5, 0.5] and an exponent shift), ~1e-7 relative, rounding-only
// error. Not __expf (ex2.approx: 2 ulp plus ~1 per unit of |x|, of unknown bias): the decay
// exp(Δ·A) multiplies into the state every step, and with Δ ~ 1e-3 a state remembers ~1000
// steps, so a systematic 1e-7 would grow to ~1e-4 in it.
__device__ __forceinline__ float pow2_nonpos(float y) {
  const float n = rintf(y);
  const float f = y - n;  // exact, in [-0.5, 0.5]
  const float p = exp2_fraction(f);
  // p·2^n by adding n to the exponent field; n >= -125 keeps the result normal (~1e-38 is 0 here)
  return __int_as_float(__float_as_int(p) + max(int(n), -125) * (1 << 23));
}
__device__ __forceinline__ float exp_nonpos(float x) { return pow2_nonpos(x * 1.44269504088896341f); }

// exp of the steps. kFast (the tensor-core GEMM modes, whose bf16 or TF32 operands already
// differ from float32 by 1e-3 or 1e-4): the hardware's ex2.approx through __expf, one
// instruction on the special-function unit instead of a dozen (the scan is bound by
// instruction issue); its ~2e-7 relative error is not unbiased, which is why the float32
// mode keeps exp_nonpos.
template <bool kFast>
__device__ __forceinline__ float step_exp(float x) {
  return kFast ? __expf(x) : exp_nonpos(x);
}
// 2^y for y <= 0, the same two ways: the decays exp(Δ·A_n) = 2^(Δ·A_n·log2 e) take y from
// Channel::A2, which saves the scaling multiply per state and step.
template <bool kFast>
__device__ __forceinline__ float step_exp2(float y) {
  if (!kFast) return pow2_nonpos(y);
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(y));
  return r;
}

// One step of a state: h' = exp(Δ·A_n)·h + (Δ·u)·B_n, with the rounding written out, so that
// every kernel that walks a state (forward, and backward's recomputation from the saved
// states) computes the same bits.
__device__ __forceinline__ float state_step(float decay, float h, float dlu, float b) {
  return fmaf(decay, h, dlu * b);
}

// PyTorch softplus (threshold 20) and its derivative (exactly 1 above the threshold).
// Without a branch, so that the scan kernels can overlap consecutive steps.
template <bool kFast>
__device__ __forceinline__ float softplus(float x) {
  const float e = step_exp<kFast>(-fabsf(x));
  const float y = fmaxf(x, 0.f) + (kFast ? __logf(1.f + e) : log1pf(e));
  return x > 20.f ? x : y;
}
template <bool kFast>
__device__ __forceinline__ float softplus_grad(float x) {
  if (x > 20.f) return 1.f;
  const float e = step_exp<kFast>(-fabsf(x));
  const float inv = 1.f / (1.f + e);
  return x >= 0.f ? inv : e * inv;
}

// A = -exp(A_log), and A·log2(e) (step_exp2's argument per unit Δ), in double: as accurate
// as the CPU's std::exp.
__device__ __forceinline__ void decay_rates(float a_log, float& A, float& A2) {
  const double a = -exp(double(a_log));
  A = float(a);
  A2 = float(a * 1.4426950408889634);
}

// What a (b, k, d) thread reads once: its channel's parameters and base pointers.
struct Channel {
  float A[kN];         // -exp(A_logs)
  float A2[kN];        // A·log2(e)
  float Dk, bias;
  const float* wrow;   // dt_projs_weight[k, d, :]
  const float* u_b;    // u[b, :, d]  (stride D per position)
  const float* dbl_b;  // dbl[b·L, k·RN]  (stride KC per position)
};

__device__ __forceinline__ Channel load_channel(const Dims& s, const ScanTrainWeights& w, const float* u,
                                                const float* dbl, int b, int k, int d) {
  Channel c;
  const int64_t kd = int64_t(k) * s.D + d;
#pragma unroll
  for (int n = 0; n < kN; ++n) decay_rates(w.A_logs[kd * kN + n], c.A[n], c.A2[n]);
  c.Dk = w.Ds[kd];
  c.bias = w.dt_projs_bias[kd];
  c.wrow = w.dt_projs_weight + kd * s.R;
  c.u_b = u + int64_t(b) * s.L * s.D + d;
  c.dbl_b = dbl + int64_t(b) * s.L * s.ldbl + int64_t(k) * s.RN;
  return c;
}

// Shared memory of a scan block: a chunk's x_proj rows (kChunk, SR) and two per-channel
// inputs (kChunk, kWarp) each (u, and dout in backward).
inline size_t stage_bytes(const Dims& s) { return sizeof(float) * kChunk * size_t(s.SR + 2 * kWarp); }

// A staged step's B and C into registers, four at a time: every lane reads the same
// addresses (a broadcast), and B and C lead the row so that they are 16-byte aligned.
__device__ __forceinline__ void load_bc(const float* row, float (&B)[kN], float (&C)[kN]) {
  const float4* v = reinterpret_cast<const float4*>(row);
#pragma unroll
  for (int q = 0; q < kN / 4; ++q) {
    const float4 b = v[q], c = v[kN / 4 + q];
    B[4 * q] = b.x, B[4 * q + 1] = b.y, B[4 * q + 2] = b.z, B[4 * q + 3] = b.w;
    C[4 * q] = c.x, C[4 * q + 1] = c.y, C[4 * q + 2] = c.z, C[4 * q + 3] = c.w;
  }
}
__device__ __forceinline__ const float* staged_dt(const float* row) { return row + 2 * kN; }

// Stages steps [l0, l0+len) of direction k for one warp, so that the recurrence then waits on
// shared memory instead of one global load round trip per step: the rows [dt | B | C] of dbl
// (the same for all the warp's channels) into rows (len, SR) reordered [B | C | dt], and the
// lane's channel of u_b and
// (if not nullptr) dout_b into su / sdy (len, kWarp), zero for lanes past D. The __syncwarp
// before makes sure no lane still reads the previous chunk; the one after publishes this one.
__device__ __forceinline__ void stage_chunk(const Dims& s, int k, int l0, int len, const float* dbl_b,
                                            const float* u_b, const float* dout_b, bool active, int lane,
                                            float* rows, float* su, float* sdy) {
  __syncwarp();
  for (int idx = lane; idx < len * s.RN; idx += kWarp) {
    const int i = idx / s.RN, j = idx - i * s.RN;
    rows[i * s.SR + (j < s.R ? 2 * kN + j : j - s.R)] = dbl_b[int64_t(scan_position(k, l0 + i, s.H, s.W)) * s.ldbl + j];
  }
  for (int i = 0; i < len; ++i) {
    const int64_t p = scan_position(k, l0 + i, s.H, s.W);
    su[i * kWarp + lane] = active ? u_b[p * s.D] : 0.f;
    if (dout_b) sdy[i * kWarp + lane] = active ? dout_b[p * s.D] : 0.f;
  }
  __syncwarp();
}

// Where a scan block's warp works: grid (ndblk, segments, 4·B), block kWarp. blockIdx.z is
// b·4 + k, blockIdx.y + seg_offset the segment, and the lanes are channels
// [32·blockIdx.x, +32); lanes past D (inactive) read channel D-1's parameters (dc) and
// write nothing of their own.
struct WarpPlace {
  int lane, d, dc, seg, bk, b, k;
  bool active;
};
__device__ __forceinline__ WarpPlace warp_place(const Dims& s, int seg_offset) {
  WarpPlace p;
  p.lane = threadIdx.x;
  p.d = blockIdx.x * kWarp + p.lane;
  p.active = p.d < s.D;
  p.dc = p.active ? p.d : s.D - 1;
  p.seg = blockIdx.y + seg_offset;
  p.bk = blockIdx.z, p.b = p.bk / 4, p.k = p.bk % 4;
  return p;
}

// The dynamic shared memory of a scan block (stage_bytes): a chunk's staged rows
// (kChunk, SR), then u and dout (kChunk, kWarp) each.
struct StageSmem {
  float *rows, *u, *dy;
};
__device__ __forceinline__ StageSmem stage_smem(const Dims& s, float* smem) {
  return {smem, smem + kChunk * s.SR, smem + kChunk * s.SR + kChunk * kWarp};
}

// The warp's chunk range [first, end) of segment `seg`.
__device__ __forceinline__ void segment_chunks(const Dims& s, int seg, int& first, int& end) {
  first = seg * s.seg_chunks;
  end = min(first + s.seg_chunks, s.nseg);
}

// Index of (bk, seg, n, d) in seg_state and seg_decay.
__device__ __forceinline__ int64_t seg_index(const Dims& s, int bk, int seg, int n, int d) {
  return ((int64_t(bk) * s.nsegs + seg) * kN + n) * s.D + d;
}

// What enters segment `seg` of (bk, channel d) in state n: the segments' local results
// (seg_state: end states from a zero start, or in reverse dh from a zero dh) joined through
// their decays, from segment 0 up to seg-1, or with `reverse` from the last down to seg+1,
// as dh flows. Each thread joins for itself: up to nsegs-1 multiply-adds, no extra kernel.
__device__ __forceinline__ float join_segments_state(const Dims& s, const float* seg_state, const float* seg_decay,
                                                     int bk, int seg, int n, int d, bool reverse) {
  float carry = 0.f;
  const int from = reverse ? s.nsegs - 1 : 0, step = reverse ? -1 : 1;
  for (int j = from; j != seg; j += step) {
    const int64_t i = seg_index(s, bk, j, n, d);
    carry = seg_decay[i] * carry + seg_state[i];
  }
  return carry;
}

// Host side: the step maths of the scan kernels follows this thread's GEMM compute.
bool fast_step_math();

// dt_proj's backward (scan_train_dt_backward.cu), from dΔ_pre (4, B·L, D) in float32 (dpre)
// or bf16 (dpre16, when not nullptr): when dweight is not nullptr, dt_projs_weight's gradient
// is added into it; returns d dt (4, B·L, dt_proj_padded_rank(s)), its first R columns the
// values, inside `scratch` (dt_proj_backward_scratch_floats(s) floats).
int dt_proj_padded_rank(const Dims& s);
int64_t dt_proj_backward_scratch_floats(const Dims& s);
const float* dt_proj_backward(const Dims& s, const float* dpre, const uint16_t* dpre16, const float* weight,
                              const float* dbl, float* dweight, float* scratch, Stream st);

}  // namespace mm::cuda::scan_train
