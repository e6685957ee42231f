// Backward of the SS2D training scan (overview at the top of scan_train_forward.cu).
#include <cuda_bf16.h>

#include "cuda_train_gemm_conv.h"
#include "scan_train_common.cuh"

namespace mm::cuda {
namespace scan_train {
namespace {

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


// The main backward kernel. A block is one 32-channel block of (b, k, segment), as the dB/dC
// partials are laid out: kBackwardWarps warps of kChannels channels each, a channel's 16
// states over kLanes lanes (kStates each), as forward's main kernel keeps them. B and C are
// then read once per step for all of a lane's states (16-byte loads that the lanes of a state
// group share), and the sums over states are in registers and two shuffles. (The first
// design kept a thread per state in blocks of 16 warps: its sums over states went through
// shared memory, about ten shared-memory accesses per state step, which kept the
// load/store pipe at ~70% while the SMs issued at 45-56%.) MedMamba-T's first stage, 384
// blocks for 32 images, leaves the H200 a block short of four per SM; 8 lanes a channel in
// blocks of 8 warps (twice the warps, three blocks an SM at 80 registers) measured slower
// there, 2.2 -> 2.3 ms a launch.
constexpr int kLanes = 4;                      // lanes per channel
constexpr int kStates = kN / kLanes;           // states per lane
constexpr int kChannels = kWarp / kLanes;      // channels per warp
constexpr int kBackwardWarps = kWarp / kChannels;
constexpr int kBackwardThreads = kBackwardWarps * kWarp;
// A lane keeps the states of a piece of kPiece steps in registers (kStates · (kPiece + 1)
// floats). The walk up a chunk to its last piece leaves a checkpoint at every piece's start
// in shared memory, so each earlier piece recomputes only its own steps.
constexpr int kPiece = 8;
constexpr int kPieces = kChunk / kPiece;
static_assert(kChunk % kPiece == 0 && kStates == 4, "checkpoints are float4, one per lane and piece");

// Shared memory of the main backward kernel (floats; 16-byte pieces first). What a chunk
// copies from global memory is double-buffered: the next chunk's copies are in flight while
// this one computes. The per-step results of a piece (the dB/dC partials of each warp, dΔ_pre
// and the direct du term of each channel) wait there for the block to write them as whole
// rows; they alternate between two buffers, so one barrier a piece is enough.
struct BackwardSmem {
  float4* checkpoint;  // (kPieces, kBackwardThreads): a lane's states before each piece
  float* rows[2];      // (kChunk, SR): a chunk's x_proj rows [B | C | dt | pad]
  float* u[2];         // (kChunk, kWarp) per step and channel of the block: u
  float* dy[2];        //   dout
  int* pos[2];         // (kChunk): the spatial position of each step
  float* delta;        // (kChunk, kWarp): Δ
  float* spg;          //   softplus' of Δ's pre-activation
  float* dbc[2];       // (kPiece, kBackwardWarps, kWarp): per step and warp, its lanes' [dB | dC] sums
  float* dpre[2];      // (kPiece, kWarp): dΔ_pre per step and channel
  float* du[2];        //   the direct du term
};
inline size_t backward_smem_floats(int SR) {
  return size_t(4) * kPieces * kBackwardThreads +
         2 * (size_t(kChunk) * SR + 2 * kChunk * kWarp + kChunk) + 2 * kChunk * kWarp +
         2 * (kPiece * kBackwardWarps * kWarp + 2 * kPiece * kWarp);
}
inline size_t backward_smem_bytes(int SR) { return sizeof(float) * backward_smem_floats(SR); }
__device__ __forceinline__ float* take_smem(float*& p, int n) {
  float* q = p;
  p += n;
  return q;
}
__device__ __forceinline__ BackwardSmem backward_smem(const Dims& s, float* p) {
  BackwardSmem m;
  m.checkpoint = reinterpret_cast<float4*>(take_smem(p, 4 * kPieces * kBackwardThreads));
  for (int i = 0; i < 2; ++i) m.rows[i] = take_smem(p, kChunk * s.SR);  // SR: a multiple of 4
  for (int i = 0; i < 2; ++i) {
    m.u[i] = take_smem(p, kChunk * kWarp);
    m.dy[i] = take_smem(p, kChunk * kWarp);
    m.pos[i] = reinterpret_cast<int*>(take_smem(p, kChunk));
  }
  m.delta = take_smem(p, kChunk * kWarp);
  m.spg = take_smem(p, kChunk * kWarp);
  for (int i = 0; i < 2; ++i) {
    m.dbc[i] = take_smem(p, kPiece * kBackwardWarps * kWarp);
    m.dpre[i] = take_smem(p, kPiece * kWarp);
    m.du[i] = take_smem(p, kPiece * kWarp);
  }
  return m;
}

// A thread as it stages a chunk: channel `lane` of the block (zeros past D), steps warp,
// warp + kBackwardWarps, ... .
struct StageThread {
  int warp, lane;
  bool active;
  float bias;
  const float *wrow, *u_b, *dout_b, *dbl_b;
};
__device__ __forceinline__ StageThread stage_thread(const Dims& s, const ScanTrainWeights& w, const float* u,
                                                    const float* dout, const float* dbl, int b, int k) {
  StageThread t;
  t.warp = threadIdx.x / kWarp, t.lane = threadIdx.x % kWarp;
  const int d = blockIdx.x * kWarp + t.lane;
  t.active = d < s.D;
  const int64_t kd = int64_t(k) * s.D + (t.active ? d : s.D - 1);
  t.bias = w.dt_projs_bias[kd];
  t.wrow = w.dt_projs_weight + kd * s.R;
  t.u_b = u + int64_t(b) * s.L * s.D + (t.active ? d : 0);
  t.dout_b = dout + int64_t(b) * s.L * s.D + (t.active ? d : 0);
  t.dbl_b = dbl + int64_t(b) * s.L * s.ldbl + int64_t(k) * s.RN;
  return t;
}

// Starts the copies of chunk `chunk` of direction k into buffer `buf`: its x_proj rows
// reordered as stage_chunk does, u and dout of each (step, channel), and each step's position
// (an integer division for the odd directions, once per step for the whole warp). Commits
// them as one group; a chunk outside [0, nseg) commits an empty group. The positions are
// visible after the caller's next __syncthreads.
__device__ __forceinline__ void start_chunk_copies(const Dims& s, int k, int chunk, int buf, const StageThread& t,
                                                   const BackwardSmem& m) {
  if (chunk >= 0 && chunk < s.nseg) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    float* rows = buf ? m.rows[1] : m.rows[0];  // selects, not a dynamic index into registers
    float* u = buf ? m.u[1] : m.u[0];
    float* dy = buf ? m.dy[1] : m.dy[0];
    int* pos = buf ? m.pos[1] : m.pos[0];
    for (int i = t.warp; i < len; i += kBackwardWarps) {
      const int64_t p = scan_position(k, l0 + i, s.H, s.W);
      if (t.lane == 0) pos[i] = int(p);
      const float* src = t.dbl_b + p * s.ldbl;
      float* dst = rows + i * s.SR;
      for (int j = t.lane; j < s.RN; j += kWarp) cp_async4(dst + (j < s.R ? 2 * kN + j : j - s.R), src + j, true);
      cp_async4(u + i * kWarp + t.lane, t.u_b + p * s.D, t.active);
      cp_async4(dy + i * kWarp + t.lane, t.dout_b + p * s.D, t.active);
    }
  }
  cp_async_commit();
}

// Δ and softplus' per (step, channel) of a staged chunk, with forward's arithmetic
// (delta_pre, softplus), so that backward's recomputed states are forward's bit for bit.
template <bool kFast>
__device__ __forceinline__ void stage_deltas(const Dims& s, int len, const float* rows, const StageThread& t,
                                             const BackwardSmem& m) {
  for (int i = t.warp; i < len; i += kBackwardWarps) {
    const float pre = delta_pre(t.wrow, t.bias, staged_dt(rows + i * s.SR), s.R);
    m.delta[i * kWarp + t.lane] = softplus<kFast>(pre);
    m.spg[i * kWarp + t.lane] = softplus_grad<kFast>(pre);
  }
}

// One step of a lane's states: forward's state_step on the staged values.
template <bool kFast>
__device__ __forceinline__ void walk_step(const float* row, float delta, float dlu, const float (&A2)[kStates],
                                          const float (&h)[kStates], float (&out)[kStates]) {
  const float4 b4 = *reinterpret_cast<const float4*>(row);
  const float bq[kStates] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
  for (int q = 0; q < kStates; ++q) out[q] = state_step(step_exp2<kFast>(delta * A2[q]), h[q], dlu, bq[q]);
}

// One butterfly stage of channel_sum and the stages after it: a lane keeps the half of its
// values that its lane bit kHalf·kLanes selects and sends the other half to its partner. A
// template, so that every loop has a constant trip count and v stays in registers.
template <int kHalf>
__device__ __forceinline__ void channel_sum_stage(float (&v)[2 * kStates], int lane) {
  constexpr int kMask = kHalf * kLanes;
  const bool upper = (lane & kMask) != 0;
#pragma unroll
  for (int i = 0; i < kHalf; ++i) {
    const float send = upper ? v[i] : v[i + kHalf];
    const float keep = upper ? v[i + kHalf] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kMask);
  }
  if constexpr (kHalf > 1) channel_sum_stage<kHalf / 2>(v, lane);
}
// Each lane holds v = [dB_n | dC_n] of its kStates states for one step; afterwards lane
// (channel c, state group g) returns value c of the 2·kStates values of group g, summed over
// the warp's kChannels channels: 7 shuffles, in a fixed order.
__device__ __forceinline__ float channel_sum(float (&v)[2 * kStates], int lane) {
  static_assert(2 * kStates == kChannels, "one value per lane");
  channel_sum_stage<kStates>(v, lane);
  return v[0];
}
// Where lane `lane`'s channel_sum lands in the 2N columns [dB | dC].
__device__ __forceinline__ int channel_sum_column(int lane) {
  const int c = lane / kLanes, g = lane % kLanes;
  return (c < kStates ? 0 : kN) + g * kStates + c % kStates;
}

// grid (ndblk, segments, 4·B), block kBackwardThreads: blockIdx.z = b·4 + k, blockIdx.y the
// segment. Dynamic shared memory: backward_smem_bytes(SR).
// Per chunk, from the last: stage it; walk up from the chunk's saved state to its last piece,
// leaving checkpoints; then per piece of kPiece steps, from the last, recompute its states
// from its checkpoint into registers, walk them back carrying dh, and write the piece's
// per-step results. Writes per (direction k, position): dpre_out (or, if not nullptr, its
// bf16 rounding to dpre16 instead), du_dir (4, B·L, D) and dbc_part (see Workspace); per
// (b, segment, k, d): pgrad.
// Four blocks to an SM (128 registers; at 224 px they fit the shared memory up to dt rank 16);
// allowing 151 registers for three measured no faster. Nor did keeping a piece's decays
// exp(Δ·A_n) in registers from its recomputation to its backward walk, which saves one exp
// of three per state and step but takes 164 registers, three blocks an SM (ncu, T bf16 at
// batch 64, H100s, µs a launch: stage 1 3,991 -> 3,886, stage 2 1,914 -> 2,030, stage 3
// 1,017 -> 1,083, which ran three an SM already, stage 4 811 -> 791; mm-bench 0.5-1% slower).
// The kernel issues from 66% of its cycles at stage 1, its ALU pipe the busiest (35%: the
// shuffles' selects and the index arithmetic), not its MUFU.
template <bool kFast>
__global__ void __launch_bounds__(kBackwardThreads, 4)
scan_backward_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, const float* dout,
                     const float* states, const float* seg_state, const float* seg_decay, float* dpre_out,
                     __nv_bfloat16* dpre16, float* du_dir, float* dbc_part, float* pgrad) {
  extern __shared__ __align__(16) float backward_smem_base[];
  const BackwardSmem m = backward_smem(s, backward_smem_base);
  const int seg = blockIdx.y, bk = blockIdx.z, b = bk / 4, k = bk % 4;
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const StageThread stg = stage_thread(s, w, u, dout, dbl, b, k);
  // This lane's channel (cw of the block) and states [n0, n0 + kStates); lanes past D take
  // channel D-1's parameters, walk zeros (their staged u and dout are zero) and write nothing.
  const int cw = warp * kChannels + lane / kLanes, n0 = lane % kLanes * kStates;
  const int d = blockIdx.x * kWarp + cw;
  const bool active = d < s.D;
  const int64_t kd = int64_t(k) * s.D + (active ? d : s.D - 1);
  float A[kStates], A2[kStates];
#pragma unroll
  for (int q = 0; q < kStates; ++q) decay_rates(w.A_logs[kd * kN + n0 + q], A[q], A2[q]);
  const float Dk = w.Ds[kd];
  const float* st = states + (int64_t(bk) * s.nseg * kN + n0) * s.D + d;  // + chunk·N·D + q·D
  auto load_state = [&](int chunk, float (&h)[kStates]) {
#pragma unroll
    for (int q = 0; q < kStates; ++q) h[q] = active ? st[int64_t(chunk) * kN * s.D + int64_t(q) * s.D] : 0.f;
  };
  const int64_t dir_row0 = (int64_t(k) * s.B + b) * s.L;  // row of (k, b, p=0) in (4, B·L)
  float* part = dbc_part + (int64_t(blockIdx.x) * s.BL + int64_t(b) * s.L) * 4 * (2 * kN) + k * (2 * kN);

  // dh: dL/dh_n carried backwards; dA: Σ over steps of dL/d(Δ·A_n)·Δ; dD and dbias: this
  // channel's sums over the segment's steps (the same in each of its lanes).
  float dh[kStates], dA[kStates];
#pragma unroll
  for (int q = 0; q < kStates; ++q) {
    dh[q] = active ? join_segments_state(s, seg_state, seg_decay, bk, seg, n0 + q, d, true) : 0.f;
    dA[q] = 0.f;
  }
  float dD = 0.f, dbias = 0.f;
  int first, end;
  segment_chunks(s, seg, first, end);
  start_chunk_copies(s, k, end - 1, 0, stg, m);
  // The saved state a chunk starts from is loaded a chunk ahead: read right before the walk
  // that needs it, its memory latency stalled the whole block once a chunk.
  float h_next[kStates];
  load_state(end - 1, h_next);
  for (int chunk = end - 1, buf = 0, par = 0; chunk >= first; --chunk, buf ^= 1) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    float h[kStates];
#pragma unroll
    for (int q = 0; q < kStates; ++q) h[q] = h_next[q];
    if (chunk > first) load_state(chunk - 1, h_next);
    cp_async_wait<0>();
    // This chunk's copies, from every thread, are visible; the other buffer, last read by the
    // previous chunk before its last piece's barrier, is free.
    __syncthreads();
    start_chunk_copies(s, k, chunk > first ? chunk - 1 : -1, buf ^ 1, stg, m);
    const float* rows = buf ? m.rows[1] : m.rows[0];
    const float* su = buf ? m.u[1] : m.u[0];
    const float* sdy = buf ? m.dy[1] : m.dy[0];
    const int* pos = buf ? m.pos[1] : m.pos[0];
    stage_deltas<kFast>(s, len, rows, stg, m);
    __syncthreads();

    const int last = (len - 1) / kPiece * kPiece;  // the last piece's first step
    for (int i = 0; i < last; ++i) {
      if (i % kPiece == 0) m.checkpoint[i / kPiece * kBackwardThreads + tid] = make_float4(h[0], h[1], h[2], h[3]);
      const int e = i * kWarp + cw;
      const float delta = m.delta[e];
      walk_step<kFast>(rows + i * s.SR + n0, delta, delta * su[e], A2, h, h);
    }
    m.checkpoint[last / kPiece * kBackwardThreads + tid] = make_float4(h[0], h[1], h[2], h[3]);

    for (int i0 = last; i0 >= 0; i0 -= kPiece, par ^= 1) {
      const int plen = min(kPiece, len - i0);
      float hs[kPiece + 1][kStates];  // hs[0] before the piece's first step, hs[j+1] after its step j
      const float4 c4 = m.checkpoint[i0 / kPiece * kBackwardThreads + tid];
      hs[0][0] = c4.x, hs[0][1] = c4.y, hs[0][2] = c4.z, hs[0][3] = c4.w;
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        if (j < plen) {
          const int e = (i0 + j) * kWarp + cw;
          const float delta = m.delta[e];
          walk_step<kFast>(rows + (i0 + j) * s.SR + n0, delta, delta * su[e], A2, hs[j], hs[j + 1]);
        } else {
#pragma unroll
          for (int q = 0; q < kStates; ++q) hs[j + 1][q] = 0.f;
        }
      }
      float* pdbc = par ? m.dbc[1] : m.dbc[0];
      float* pdpre = par ? m.dpre[1] : m.dpre[0];
      float* pdu = par ? m.du[1] : m.du[0];
#pragma unroll
      for (int j = kPiece - 1; j >= 0; --j) {
        if (j < plen) {
          const int i = i0 + j, e = i * kWarp + cw;
          const float* row = rows + i * s.SR + n0;
          const float4 b4 = *reinterpret_cast<const float4*>(row);
          const float4 c4s = *reinterpret_cast<const float4*>(row + kN);
          const float bq[kStates] = {b4.x, b4.y, b4.z, b4.w}, cq[kStates] = {c4s.x, c4s.y, c4s.z, c4s.w};
          const float delta = m.delta[e], ul = su[e], dy = sdy[e], dlu = delta * ul;
          float v[2 * kStates];  // [dB_n | dC_n] terms of this step and channel
          float ddA = 0.f, gB = 0.f;  // Σ_n dL/d(Δ·A_n)·A_n and Σ_n dL/dh_n·B_n over the lane's states
#pragma unroll
          for (int q = 0; q < kStates; ++q) {
            const float a = step_exp2<kFast>(delta * A2[q]);
            const float dhn = dh[q] + dy * cq[q];  // dL/dh_l
            const float tt = dhn * hs[j][q] * a;   // dL/d(Δ·A_n)
            v[q] = dhn * dlu;
            v[kStates + q] = dy * hs[j + 1][q];
            ddA = fmaf(tt, A[q], ddA);
            gB = fmaf(dhn, bq[q], gB);
            dA[q] = fmaf(tt, delta, dA[q]);
            dh[q] = dhn * a;  // dL/dh_{l-1} through h_l
          }
          // Over the channel's lanes: the same bits in each (a + b == b + a).
#pragma unroll
          for (int o = 1; o < kLanes; o <<= 1) {
            ddA += __shfl_xor_sync(0xffffffffu, ddA, o);
            gB += __shfl_xor_sync(0xffffffffu, gB, o);
          }
          const float dpre = (ddA + gB * ul) * m.spg[e];
          dD = fmaf(dy, ul, dD);
          dbias += dpre;
          if (lane % kLanes == 0) {
            pdpre[j * kWarp + cw] = dpre;
            pdu[j * kWarp + cw] = gB * delta + Dk * dy;
          }
          pdbc[(j * kBackwardWarps + warp) * kWarp + lane] = channel_sum(v, lane);
        }
      }
      __syncthreads();  // the piece's results are in shared memory
      // Whole rows out: per step, the block's [dB | dC] (its warps' sums added in order),
      // and dΔ_pre and the direct du term of its 32 channels.
      for (int x = tid; x < plen * kWarp; x += kBackwardThreads) {
        const int j = x / kWarp, c = x % kWarp, p = pos[i0 + j];
        float acc = pdbc[j * kBackwardWarps * kWarp + c];
#pragma unroll
        for (int wq = 1; wq < kBackwardWarps; ++wq) acc += pdbc[(j * kBackwardWarps + wq) * kWarp + c];
        part[int64_t(p) * 4 * (2 * kN) + channel_sum_column(c)] = acc;
        if (blockIdx.x * kWarp + c < s.D) {
          const int64_t o = (dir_row0 + p) * s.D + blockIdx.x * kWarp + c;
          if (dpre16) dpre16[o] = __float2bfloat16_rn(pdpre[x]);
          else dpre_out[o] = pdpre[x];
          du_dir[o] = pdu[x];
        }
      }
    }
  }
  if (active) {
    float* pg = pgrad + (((int64_t(b) * s.nsegs + seg) * 4 + k) * s.D + d) * (kN + 2);
#pragma unroll
    for (int q = 0; q < kStates; ++q) pg[n0 + q] = dA[q] * A[q];  // through A = -exp(A_logs): dA_logs = dA·A
    if (n0 == 0) {
      pg[kN] = dD;
      pg[kN + 1] = dbias;
    }
  }
}

// ddbl (B·L, ldbl: KC columns, then zeros), rows r0.. of one launch (n of its elements),
// whole rows at a time: per direction k, the dt columns from ddt (4, B·L, Rp), and [dB | dC]
// the sum over channel blocks, in order, of dbc_part[blk, row, k, ·]. T: float, or bf16 where
// only bf16 GEMMs read ddbl (the bits a rounding of the float32 sums would make).
template <class T>
__global__ void reduce_ddbl_kernel(Dims s, int64_t r0, uint32_t n, FastDivmod ldbl, FastDivmod RN, int Rp,
                                   const float* ddt, const float* dbc_part, T* ddbl) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t r = ldbl.div(i), col = ldbl.mod(i, r), k = RN.div(col), j = RN.mod(col, k);
  const int64_t row = r0 + r;
  float v;
  if (col >= uint32_t(s.KC)) {
    v = 0.f;
  } else if (j < uint32_t(s.R)) {
    v = ddt[(int64_t(k) * s.BL + row) * Rp + j];
  } else {
    const int64_t n_part = s.BL * 4 * (2 * kN), e = (row * 4 + k) * (2 * kN) + (j - s.R);
    v = dbc_part[e];
    for (int blk = 1; blk < s.ndblk; ++blk) v += dbc_part[int64_t(blk) * n_part + e];
  }
  ddbl[row * s.ldbl + col] = from_f32<T>(v);
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
                     const float* states, const Workspace& ws, __nv_bfloat16* dpre16, Stream st) {
  if (s.nsegs > 1) {
    const dim3 grid(unsigned(s.ndblk), unsigned(s.nsegs - 1), unsigned(4 * s.B));
    scan_backward_segment_kernel<kFast><<<grid, kWarp, stage_bytes(s), st>>>(s, u, ws.dbl, w, dout, ws.seg_state,
                                                                             ws.seg_decay);
    MM_CUDA_CHECK_LAUNCH("scan_train_backward segments");
  }
  static const bool opted_in = [] {  // above 48 KB a kernel must ask for its shared memory
    MM_CUDA_CHECK(cudaFuncSetAttribute(scan_backward_kernel<kFast>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(backward_smem_bytes(2 * kN + kMaxR))));
    // All of the SM's unified L1/shared memory as shared: the kernel reads global memory
    // through cp.async only, and its blocks per SM are bound by shared memory.
    MM_CUDA_CHECK(cudaFuncSetAttribute(scan_backward_kernel<kFast>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       int(cudaSharedmemCarveoutMaxShared)));
    return true;
  }();
  (void)opted_in;
  const dim3 grid(unsigned(s.ndblk), unsigned(s.nsegs), unsigned(4 * s.B));
  scan_backward_kernel<kFast><<<grid, kBackwardThreads, backward_smem_bytes(s.SR), st>>>(
      s, u, ws.dbl, w, dout, states, ws.seg_state, ws.seg_decay, ws.dir0, dpre16, ws.dir1, ws.dbc_part, ws.pgrad);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward scan");
}

}  // namespace
}  // namespace scan_train

using namespace scan_train;

// bf16 copies of GEMM operands inside the workspace, where the bf16 GEMMs would otherwise
// round the same float32 matrix once per GEMM: dΔ_pre (4, B·L, D), which the kernel writes as
// bf16 and only GEMMs read, in the first half of dir0; u (B·L, D) after it. nullptr where a
// copy does not fit (never with the bf16 workspace, whose dir0 is sized for both). ddbl needs
// no copy: under bf16 GEMMs its reduction writes bf16 in its own buffer.
struct Bf16Copies {
  uint16_t *dpre = nullptr, *u = nullptr;  // the bits of __nv_bfloat16, as GemmOperand holds them
};
static Bf16Copies bf16_copies(const Dims& s, const Workspace& ws) {
  Bf16Copies c;
  if (gemm_compute() != GemmCompute::BF16) return c;
  c.dpre = reinterpret_cast<uint16_t*>(ws.dir0);
  if (bf16_dir0_floats(s) <= ws.dir0_floats) c.u = reinterpret_cast<uint16_t*>(ws.dir0 + bf16_u_offset(s));
  return c;
}

static void scan_backward_slice(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w,
                                const float* dout, float* du, const ScanTrainGrads& g, const float* states,
                                float* workspace, Stream st, GradOut out, const uint16_t* u16) {
  const Dims s = make_dims(shape);
  const Workspace ws = carve(s, workspace);
  const Bf16Copies c = bf16_copies(s, ws);
  const GemmOperand u_op = u16   ? bf16_operand(u16, s.D)
                           : c.u ? bf16_operand_copy(u, s.BL, s.D, s.D, c.u, st)
                                 : f32_operand(u, s.D);
  const XProjWeight xw = x_proj_weight(s, w.x_proj_weight, ws, st);
  gemm(false, true, s.BL, xw.cols, s.D, 1.f, u_op, xw.w, 0.f, ws.dbl, s.ldbl, st);

  auto* dpre16 = reinterpret_cast<__nv_bfloat16*>(c.dpre);
  if (fast_step_math())
    launch_backward<true>(s, u, w, dout, states, ws, dpre16, st);
  else
    launch_backward<false>(s, u, w, dout, states, ws, dpre16, st);

  constexpr int kThreads = 256;
  const int64_t params = int64_t(4) * s.D * (kN + 2);
  reduce_params_kernel<<<grid_for(params, kThreads), kThreads, 0, st>>>(s, ws.pgrad, g);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward reduce parameters");
  // du = the direct terms (ddbl · x_proj_weight is added below); dir1 is free from here.
  if (du) sum_directions(du, ws.dir1, s.BL * s.D, out == GradOut::Accumulate, st);

  // Through dt_proj: d dt = dΔ_pre · W_k (padded, in dir1), d W_k += dΔ_preᵀ · dt; then ddbl
  // whole, its dt columns from d dt and [dB | dC] from the channel blocks' partials.
  const float* ddt = dt_proj_backward(s, ws.dir0, c.dpre, w.dt_projs_weight, ws.dbl, g.dt_projs_weight, ws.dir1, st);
  const bool ddbl16 = gemm_compute() == GemmCompute::BF16;
  auto* ddbl16_out = reinterpret_cast<__nv_bfloat16*>(ws.ddbl);
  for_row_chunks(s.BL, s.ldbl, [&](int64_t r0, int64_t rows) {
    const uint32_t n = uint32_t(rows * s.ldbl);
    const auto reduce_into = [&](auto* ddbl) {
      reduce_ddbl_kernel<<<grid_for(n, kThreads), kThreads, 0, st>>>(s, r0, n, FastDivmod(uint32_t(s.ldbl)),
                                                                     FastDivmod(uint32_t(s.RN)),
                                                                     dt_proj_padded_rank(s), ddt, ws.dbc_part, ddbl);
      MM_CUDA_CHECK_LAUNCH("scan_train_backward reduce ddbl");
    };
    if (ddbl16) reduce_into(ddbl16_out);
    else reduce_into(ws.ddbl);
  });
  // Through x_proj: du += ddbl · x_proj_weight; d x_proj_weight += ddblᵀ · u.
  const GemmOperand ddbl_op = ddbl16 ? bf16_operand(reinterpret_cast<const uint16_t*>(ddbl16_out), s.ldbl)
                                     : f32_operand(ws.ddbl, s.ldbl);
  if (g.x_proj_weight)
    gemm(true, false, s.KC, s.D, s.BL, 1.f, ddbl_op, u_op, 1.f, g.x_proj_weight, s.D, st);
  if (du) gemm(false, false, s.BL, s.D, xw.cols, 1.f, ddbl_op, xw.w, 1.f, du, s.D, st);
}

void scan_train_backward(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, const float* dout,
                         float* du, const ScanTrainGrads& g, const float* states, float* workspace, Stream st,
                         GradOut out, const uint16_t* u16) {
  MM_CHECK(states, "scan_train_backward: needs the states forward saved");
  MM_CHECK(!shape.bf16 || gemm_compute() == GemmCompute::BF16,
           "scan_train_backward: the bf16 workspace (ScanTrainShape::bf16) needs bf16 GEMMs");
  MM_CHECK(!u16 || gemm_compute() == GemmCompute::BF16, "scan_train_backward: u16 needs bf16 GEMMs");
  for_each_batch_slice(shape, scan_train_batch_slice(shape), [&](const ScanTrainShape& part, int64_t b0) {
    const int64_t rows = b0 * shape.H * shape.W * shape.D;
    scan_backward_slice(part, u + rows, w, dout + rows, du ? du + rows : nullptr, g,
                        states + scan_train_states_floats(with_batch(shape, b0)), workspace, st, out,
                        u16 ? u16 + rows : nullptr);
  });
}

}  // namespace mm::cuda
