// Backward of the SS2D training scan (overview at the top of scan_train_forward.cu).
#include "cuda_train_gemm_conv.h"
#include "scan_train_common.cuh"

namespace mm::cuda {
namespace scan_train {
namespace {

// Each lane holds v[0..31]; afterwards lane j returns Σ over the 32 lanes of v[j]. Five
// butterfly stages: at each a lane keeps half of its values (the half its lane bit selects)
// and sends the other half to its partner, so 16+8+4+2+1 = 31 shuffles instead of 32·5.
// The order of additions is fixed, so the result is deterministic.
__device__ __forceinline__ float warp_transpose_sum(float (&v)[kWarp], int lane) {
#pragma unroll
  for (int stage = 4; stage >= 0; --stage) {
    const int half = 1 << stage;
    const bool upper = (lane & half) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float send = upper ? v[i] : v[i + half];
      const float keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, half);
    }
  }
  return v[0];
}

// grid (ndblk, segments - 1, 4·B), block kWarp: segment blockIdx.y + 1 (segment 0's result
// is never used) of (b, k) = blockIdx.z, walked backwards from a zero dh. Writes the dh that
// leaves its start, and its decay, to seg_state and seg_decay. Dynamic shared memory:
// stage_bytes(s).
template <bool kFast>
__global__ void __launch_bounds__(kWarp)
scan_backward_segment_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, const float* dout,
                             float* seg_state, float* seg_decay) {
  extern __shared__ float smem[];
  const StageSmem sm = stage_smem(s, smem);
  const WarpPlace wp = warp_place(s, 1);
  const int lane = wp.lane, d = wp.d, dc = wp.dc, seg = wp.seg, bk = wp.bk, b = wp.b, k = wp.k;
  const bool active = wp.active;
  float *srow = sm.rows, *su = sm.u, *sdy = sm.dy;
  const Channel c = load_channel(s, w, u, dbl, b, k, dc);
  const float* dout_b = dout + int64_t(b) * s.L * s.D + dc;
  float dh[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) dh[n] = 0.f;
  float dsum = 0.f;
  int first, end;
  segment_chunks(s, seg, first, end);
  for (int chunk = end - 1; chunk >= first; --chunk) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    stage_chunk(s, k, l0, len, c.dbl_b, c.u_b, dout_b, active, lane, srow, su, sdy);
    for (int i = len - 1; i >= 0; --i) {
      const float* row = srow + i * s.SR;
      float Bs[kN], Cs[kN];
      load_bc(row, Bs, Cs);
      const float dy = sdy[i * kWarp + lane];
      const float delta = softplus<kFast>(delta_pre(c.wrow, c.bias, staged_dt(row), s.R));
      dsum += delta;
#pragma unroll
      for (int n = 0; n < kN; ++n) dh[n] = (dh[n] + dy * Cs[n]) * step_exp2<kFast>(delta * c.A2[n]);
    }
  }
  if (active) {
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      seg_state[seg_index(s, bk, seg, n, d)] = dh[n];
      seg_decay[seg_index(s, bk, seg, n, d)] = step_exp2<kFast>(c.A2[n] * dsum);
    }
  }
}

// grid (ndblk, segments, 4·B), block kWarp: blockIdx.z = b·4 + k, blockIdx.y the segment,
// the warp is channels [32·blockIdx.x, +32) of (b, k). Lanes past D run the loop on zeros
// (the shuffles need all 32 lanes) and write nothing of their own.
// Dynamic shared memory: stage_bytes(s).
// Writes per (direction k, position): dpre_out, du_dir (4, B·L, D) and dbc_part (see
// Workspace); per (b, segment, k, d): pgrad.
// No minimum of resident blocks: forcing 16 per SM (128 registers instead of 167) made the
// step's backward scan 46% slower on the H200 (27.8 against 19.0 ms at batch 64, dims
// 48..384): hs[][] lives in local memory, and four more warps' shared memory leave the L1
// too little room for it.
// kSub: a chunk is walked back in pieces of kSub steps, each piece's states recomputed from
// the chunk's saved start state, so hs[][] holds kSub+1 states instead of kChunk+1: a smaller
// local-memory footprint per warp, for more recompute. The arithmetic and its order are the
// same for every kSub, so the results are bit-identical.
template <bool kFast, int kSub>
__global__ void __launch_bounds__(kWarp)
scan_backward_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, const float* dout,
                     const float* states, const float* seg_state, const float* seg_decay, float* dpre_out,
                     float* du_dir, float* dbc_part, float* pgrad) {
  extern __shared__ float smem[];
  const StageSmem sm = stage_smem(s, smem);
  const WarpPlace wp = warp_place(s, 0);
  const int lane = wp.lane, d = wp.d, dc = wp.dc, seg = wp.seg, bk = wp.bk, b = wp.b, k = wp.k;
  const bool active = wp.active;
  float *srow = sm.rows, *su = sm.u, *sdy = sm.dy;
  const Channel c = load_channel(s, w, u, dbl, b, k, dc);
  const float* dout_b = dout + int64_t(b) * s.L * s.D + dc;
  const float* st = states + int64_t(bk) * s.nseg * kN * s.D + dc;
  const int64_t dir_row0 = (int64_t(k) * s.B + b) * s.L;  // row of (k, b, p=0) in (4, B·L)
  float* part = dbc_part + (int64_t(blockIdx.x) * s.BL + int64_t(b) * s.L) * 4 * (2 * kN) + k * (2 * kN) + lane;

  float dh[kN], dA[kN];  // dL/dh carried backwards; Σ over steps of dL/d(Δ·A_n)·Δ
  join_segments(s, seg_state, seg_decay, bk, seg, dc, true, dh);
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    if (!active) dh[n] = 0.f;
    dA[n] = 0.f;
  }
  float dD = 0.f, dbias = 0.f;
  float hs[kSub + 1][kN];  // states of one piece: hs[0] before its first step, hs[j+1] after its step j

  int first, end;
  segment_chunks(s, seg, first, end);
  for (int chunk = end - 1; chunk >= first; --chunk) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    stage_chunk(s, k, l0, len, c.dbl_b, c.u_b, dout_b, active, lane, srow, su, sdy);
    for (int i0 = (len - 1) / kSub * kSub; i0 >= 0; i0 -= kSub) {
      const int i_end = min(i0 + kSub, len);
      // Recompute the chunk up to the piece's end as forward did: the steps before the piece
      // keep only the running state (in hs[0]), the piece's steps keep theirs.
#pragma unroll
      for (int n = 0; n < kN; ++n) hs[0][n] = active ? st[(int64_t(chunk) * kN + n) * s.D] : 0.f;
      for (int i = 0; i < i_end; ++i) {
        const float* row = srow + i * s.SR;
        float Bs[kN], Cs[kN];
        load_bc(row, Bs, Cs);
        const float delta = softplus<kFast>(delta_pre(c.wrow, c.bias, staged_dt(row), s.R));
        const float dlu = delta * su[i * kWarp + lane];
        const int from = i <= i0 ? 0 : i - i0, to = i < i0 ? 0 : i + 1 - i0;
#pragma unroll
        for (int n = 0; n < kN; ++n) hs[to][n] = step_exp2<kFast>(delta * c.A2[n]) * hs[from][n] + dlu * Bs[n];
      }
      for (int i = i_end - 1; i >= i0; --i) {
        const float(&h_before)[kN] = hs[i - i0];
        const float(&h_after)[kN] = hs[i - i0 + 1];
        const int p = scan_position(k, l0 + i, s.H, s.W);
        const float* row = srow + i * s.SR;
        float Bs[kN], Cs[kN];
        load_bc(row, Bs, Cs);
        const float ul = su[i * kWarp + lane];
        const float dy = sdy[i * kWarp + lane];
        const float pre = delta_pre(c.wrow, c.bias, staged_dt(row), s.R);
        const float delta = softplus<kFast>(pre);
        const float dlu = delta * ul;
        float v[2 * kN];     // this channel's terms of [dB_l | dC_l]
        float ddl = 0.f;     // dL/dΔ
        float gB = 0.f;      // Σ_n dL/dh_n · B_n
#pragma unroll
        for (int n = 0; n < kN; ++n) {
          const float a = step_exp2<kFast>(delta * c.A2[n]);
          const float dhn = dh[n] + dy * Cs[n];               // dL/dh_l
          const float t = dhn * h_before[n] * a;              // dL/d(Δ·A_n)
          v[kN + n] = dy * h_after[n];
          v[n] = dhn * dlu;
          ddl += t * c.A[n];
          dA[n] += t * delta;
          gB += dhn * Bs[n];
          dh[n] = dhn * a;                                    // dL/dh_{l-1} through h_l
        }
        ddl += gB * ul;
        const float dpre = ddl * softplus_grad<kFast>(pre);
        dD += dy * ul;
        dbias += dpre;
        if (active) {
          const int64_t o = (dir_row0 + p) * s.D + d;
          dpre_out[o] = dpre;
          du_dir[o] = gB * delta + c.Dk * dy;
        }
        part[int64_t(p) * 4 * (2 * kN)] = warp_transpose_sum(v, lane);
      }
    }
  }
  if (active) {
    float* pg = pgrad + (((int64_t(b) * s.nsegs + seg) * 4 + k) * s.D + d) * (kN + 2);
#pragma unroll
    for (int n = 0; n < kN; ++n) pg[n] = dA[n] * c.A[n];  // through A = -exp(A_logs): dA_logs = dA·A
    pg[kN] = dD;
    pg[kN + 1] = dbias;
  }
}

// ddbl[row, k·RN + R + j] = Σ over channel blocks (in order) of dbc_part[blk, row, k, j].
__global__ void reduce_dbc_kernel(Dims s, const float* dbc_part, float* ddbl) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (row, k, j)
  const int64_t n = s.BL * 4 * (2 * kN);
  if (i >= n) return;
  float acc = dbc_part[i];
  for (int blk = 1; blk < s.ndblk; ++blk) acc += dbc_part[int64_t(blk) * n + i];
  const int64_t row = i / (4 * 2 * kN);
  const int kj = int(i % (4 * 2 * kN)), k = kj / (2 * kN), j = kj % (2 * kN);
  ddbl[row * s.KC + k * s.RN + s.R + j] = acc;
}

// Adds the per-segment parameter sums to the gradients, b = 0, 1, ... in order (the CPU's
// order), the segments of each in order.
__global__ void reduce_params_kernel(Dims s, const float* pgrad, ScanTrainGrads g) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (k·D + d, j)
  const int64_t per_b = int64_t(4) * s.D * (kN + 2);
  if (i >= per_b) return;
  const int64_t kd = i / (kN + 2);
  const int j = int(i % (kN + 2));
  float* dst = j < kN ? (g.A_logs ? g.A_logs + kd * kN + j : nullptr)
               : j == kN ? (g.Ds ? g.Ds + kd : nullptr)
                         : (g.dt_projs_bias ? g.dt_projs_bias + kd : nullptr);
  if (!dst) return;
  float acc = *dst;
  for (int64_t bs = 0; bs < int64_t(s.B) * s.nsegs; ++bs) acc += pgrad[bs * per_b + i];
  *dst = acc;
}

template <bool kFast>
void launch_backward(const Dims& s, const float* u, const ScanTrainWeights& w, const float* dout,
                     const float* states, const Workspace& ws, Stream st) {
  if (s.nsegs > 1) {
    const dim3 grid(unsigned(s.ndblk), unsigned(s.nsegs - 1), unsigned(4 * s.B));
    scan_backward_segment_kernel<kFast><<<grid, kWarp, stage_bytes(s), st>>>(s, u, ws.dbl, w, dout, ws.seg_state,
                                                                             ws.seg_decay);
    MM_CUDA_CHECK_LAUNCH("scan_train_backward segments");
  }
  const dim3 grid(unsigned(s.ndblk), unsigned(s.nsegs), unsigned(4 * s.B));
  auto* kernel = s.backward_piece == 8    ? scan_backward_kernel<kFast, 8>
                 : s.backward_piece == 16 ? scan_backward_kernel<kFast, 16>
                                          : scan_backward_kernel<kFast, 32>;
  kernel<<<grid, kWarp, stage_bytes(s), st>>>(s, u, ws.dbl, w, dout, states, ws.seg_state, ws.seg_decay, ws.dir0,
                                              ws.dir1, ws.dbc_part, ws.pgrad);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward scan");
}

}  // namespace
}  // namespace scan_train

using namespace scan_train;

void scan_train_backward(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, const float* dout,
                         float* du, const ScanTrainGrads& g, const float* states, float* workspace, Stream st) {
  const Dims s = make_dims(shape);
  MM_CHECK(states, "scan_train_backward: needs the states forward saved");
  const Workspace ws = carve(s, workspace);
  gemm_f32(false, true, s.BL, s.KC, s.D, 1.f, u, s.D, w.x_proj_weight, s.D, 0.f, ws.dbl, s.KC, st);

  if (fast_step_math())
    launch_backward<true>(s, u, w, dout, states, ws, st);
  else
    launch_backward<false>(s, u, w, dout, states, ws, st);


  constexpr int kThreads = 256;
  const int64_t dbc = s.BL * 4 * (2 * kN);
  reduce_dbc_kernel<<<grid_for(dbc, kThreads), kThreads, 0, st>>>(s, ws.dbc_part, ws.ddbl);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward reduce dB/dC");
  const int64_t params = int64_t(4) * s.D * (kN + 2);
  reduce_params_kernel<<<grid_for(params, kThreads), kThreads, 0, st>>>(s, ws.pgrad, g);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward reduce parameters");

  // Through dt_proj, per direction: d dt = dΔ_pre · W_k into ddbl's dt columns, and
  // d W_k += dΔ_preᵀ · dt.
  const int64_t dir_floats = s.BL * s.D;
  for (int k = 0; k < 4; ++k) {
    const float* dpre_k = ws.dir0 + k * dir_floats;  // (B·L, D)
    gemm_f32(false, false, s.BL, s.R, s.D, 1.f, dpre_k, s.D, w.dt_projs_weight + int64_t(k) * s.D * s.R, s.R,
             0.f, ws.ddbl + k * s.RN, s.KC, st);
    if (g.dt_projs_weight)
      gemm_f32(true, false, s.D, s.R, s.BL, 1.f, dpre_k, s.D, ws.dbl + k * s.RN, s.KC, 1.f,
               g.dt_projs_weight + int64_t(k) * s.D * s.R, s.R, st);
  }
  // Through x_proj: d x_proj_weight += ddblᵀ · u; du += (direct terms) + ddbl · x_proj_weight.
  if (g.x_proj_weight)
    gemm_f32(true, false, s.KC, s.D, s.BL, 1.f, ws.ddbl, s.KC, u, s.D, 1.f, g.x_proj_weight, s.D, st);
  if (du) {
    sum_directions(du, ws.dir1, dir_floats, true, st);
    gemm_f32(false, false, s.BL, s.D, s.KC, 1.f, ws.ddbl, s.KC, w.x_proj_weight, s.D, 1.f, du, s.D, st);
  }
}

}  // namespace mm::cuda
