// Backward of the SS2D training scan (overview at the top of scan_train_forward.cu).
#include "cuda_train_gemm_conv.h"
#include "scan_train_common.cuh"

namespace mm::cuda {
namespace scan_train {
namespace {

// Blocks of kN warps (backward's main kernel): warp n carries state n and lane
// c channel 32·blockIdx.x + c, so a thread keeps one state in registers; grid (ndblk,
// segments, 4·B) as for the one-warp kernels. What depends on the channel only (Δ, Δ·u,
// softplus') is computed once per (step, channel) when a chunk is staged.
constexpr int kStateBlockThreads = kN * kWarp;  // 512

// A staged chunk in shared memory. What it reads from global memory (rows, u and dout) is
// double-buffered: the copies for the next chunk are in flight while this one
// computes, since a block of kN warps fills its SM alone and no other block would hide their
// latency.
struct ChunkSmem {
  float* rows[2];  // (kChunk, SR): a chunk's x_proj rows [B | C | dt | pad]
  float* u[2];     // (kChunk, kWarp) per step and channel: u
  float* dy[2];    //   dout
  float* delta;    // (kChunk, kWarp) per step and channel: Δ
  float* dlu;      //   Δ·u
  float* spg;      //   softplus' of Δ's pre-activation
  int* pos[2];     // (kChunk): the spatial position of each step, for the per-step writes
};
// An even count, so that what follows it may hold 8-byte values.
inline size_t chunk_smem_floats(int SR) {
  return 2 * (size_t(kChunk) * SR + 2 * kChunk * kWarp + kChunk) + 3 * kChunk * kWarp;
}
__device__ __forceinline__ float* take_smem(float*& p, int n) {
  float* q = p;
  p += n;
  return q;
}
__device__ __forceinline__ ChunkSmem carve_chunk_smem(const Dims& s, float*& p) {
  ChunkSmem m{};
  for (int i = 0; i < 2; ++i) {
    m.rows[i] = take_smem(p, kChunk * s.SR);
    m.u[i] = take_smem(p, kChunk * kWarp);
    m.dy[i] = take_smem(p, kChunk * kWarp);
    m.pos[i] = reinterpret_cast<int*>(take_smem(p, kChunk));
  }
  m.delta = take_smem(p, kChunk * kWarp);
  m.dlu = take_smem(p, kChunk * kWarp);
  m.spg = take_smem(p, kChunk * kWarp);
  return m;
}

// What a (state n, channel) thread of a kN-warp block reads once.
struct StateThread {
  int tid, lane, n, d;  // d: the channel
  bool active;          // d < D: lanes past D read channel D-1's parameters, work on zeros
                        // and write nothing of their own
  float A, A2, Dk, bias;
  const float *wrow, *u_b, *dout_b, *dbl_b;
};
__device__ __forceinline__ StateThread state_thread(const Dims& s, const ScanTrainWeights& w, const float* u,
                                                    const float* dout, const float* dbl, int b, int k) {
  StateThread t;
  t.tid = threadIdx.x, t.lane = t.tid % kWarp, t.n = t.tid / kWarp;
  t.d = blockIdx.x * kWarp + t.lane;
  t.active = t.d < s.D;
  const int dc = t.active ? t.d : s.D - 1;
  const int64_t kd = int64_t(k) * s.D + dc;
  decay_rates(w.A_logs[kd * kN + t.n], t.A, t.A2);
  t.Dk = w.Ds[kd];
  t.bias = w.dt_projs_bias[kd];
  t.wrow = w.dt_projs_weight + kd * s.R;
  t.u_b = u + int64_t(b) * s.L * s.D + dc;
  t.dout_b = dout + int64_t(b) * s.L * s.D + dc;
  t.dbl_b = dbl + int64_t(b) * s.L * s.KC + int64_t(k) * s.RN;
  return t;
}

// Starts the copies of chunk `chunk` of direction k into buffer `buf`: its x_proj rows
// reordered as stage_chunk does, and u and dout of each (step, channel), zero for lanes
// past D (thread (n, c) takes steps n, n+kN, ... of channel c); and stores each step's
// position (an integer division for the odd directions) for the per-step writes. Commits the
// copies as one group; a chunk outside [0, nseg) commits an empty group, which keeps the
// caller's wait uniform. The positions are visible after the caller's next __syncthreads.
__device__ __forceinline__ void start_chunk_copies(const Dims& s, int k, int chunk, int buf, const StateThread& t,
                                                   const ChunkSmem& m) {
  if (chunk >= 0 && chunk < s.nseg) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    float* rows = buf ? m.rows[1] : m.rows[0];  // selects, not a dynamic index into registers
    float* u = buf ? m.u[1] : m.u[0];
    float* dy = buf ? m.dy[1] : m.dy[0];
    int* pos = buf ? m.pos[1] : m.pos[0];
    // Warp n takes steps n, n+kN, ...: one position per step for the whole warp (its lanes
    // copy the row's columns, then their channels), so no thread divides per element: integer
    // work was the busiest pipe when each element found its step by dividing its index.
    for (int i = t.n; i < len; i += kN) {
      const int64_t p = scan_position(k, l0 + i, s.H, s.W);
      if (t.lane == 0) pos[i] = int(p);
      const float* src = t.dbl_b + p * s.KC;
      float* dst = rows + i * s.SR;
      for (int j = t.lane; j < s.RN; j += kWarp) cp_async4(dst + (j < s.R ? 2 * kN + j : j - s.R), src + j, true);
      cp_async4(u + i * kWarp + t.lane, t.u_b + p * s.D, t.active);
      cp_async4(dy + i * kWarp + t.lane, t.dout_b + p * s.D, t.active);
    }
  }
  cp_async_commit();
}

// Per (step, channel) of a staged chunk: Δ, Δ·u and softplus', by the threads of that
// channel with forward's arithmetic (delta_pre, softplus, state_step), so that backward's
// recomputed states are forward's bit for bit.
template <bool kFast>
__device__ __forceinline__ void stage_deltas(const Dims& s, int len, const float* rows, const float* u,
                                             const StateThread& t, const ChunkSmem& m) {
  for (int i = t.n; i < len; i += kN) {
    const float pre = delta_pre(t.wrow, t.bias, staged_dt(rows + i * s.SR), s.R);
    const float delta = softplus<kFast>(pre);
    const int e = i * kWarp + t.lane;
    m.delta[e] = delta;
    m.dlu[e] = delta * u[e];
    m.spg[e] = softplus_grad<kFast>(pre);
  }
}


// One butterfly stage of warp_transpose_sum and the stages after it: a lane keeps the half of
// its values that its lane bit kHalf selects and sends the other half to its partner. A
// template, so that every loop has a constant trip count: with the stage a loop variable the
// compiler kept v in local memory.
template <int kHalf>
__device__ __forceinline__ void transpose_sum_stage(float (&v)[kWarp], int lane) {
  const bool upper = (lane & kHalf) != 0;
#pragma unroll
  for (int i = 0; i < kHalf; ++i) {
    const float send = upper ? v[i] : v[i + kHalf];
    const float keep = upper ? v[i + kHalf] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kHalf);
  }
  if constexpr (kHalf > 1) transpose_sum_stage<kHalf / 2>(v, lane);
}

// Each lane holds v[0..31]; afterwards lane j returns Σ over the 32 lanes of v[j]. Five
// butterfly stages, 16+8+4+2+1 = 31 shuffles instead of 32·5. The order of additions is
// fixed, so the result is deterministic.
__device__ __forceinline__ float warp_transpose_sum(float (&v)[kWarp], int lane) {
  transpose_sum_stage<kWarp / 2>(v, lane);
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

// The main backward kernel, a block of kN warps (see kStateBlockThreads): a thread keeps one
// state, and the states of a piece of kPiece steps fit in its registers. (The first design
// had a thread per channel with all 16 states, one warp per block: a chunk's states lived in
// local memory, ~35 KB a warp, which spilled from L1 to L2, and at ~167 registers a thread
// too few warps were resident to hide that: it issued at a sixth of the SMs' rate.) The sums
// over states (dL/dΔ, the du term) go through shared memory to one thread per (step, channel).
constexpr int kPiece = 16;  // = kN: in the per-step phase warp j takes step j of the piece
static_assert(kPiece == kN && kChunk == 2 * kPiece && 2 * kPiece == kWarp,
              "the phases map warps to states, then to steps; the transpose-sum takes 2·kPiece values; "
              "a chunk is two pieces, the first reusing the states the second's walk computed");
constexpr int kDbcStride = 2 * kN + 1;  // a warp's 32 stores of one state's column fall in 32 banks

// Shared memory of the main backward kernel: the staged chunk (ChunkSmem), then the piece's
// sums over states and channels, then the states a chunk's first piece reuses.
struct BackwardSmem {
  ChunkSmem chunk;
  float2* tg;   // (kN, kPiece, kWarp) per state, step of the piece and channel: (dL/d(Δ·A_n)·A_n,
                // dL/dh_n·B_n), one 8-byte store and load where two 4-byte ones were
  float* dbc;   // (kPiece, kDbcStride): the block's [dB | dC] per step of the piece, summed over its channels
  float* hkeep;  // (kPiece, kStateBlockThreads): per thread, its state after each of a chunk's first
                 // kPiece steps, which the second piece's walk to its start computes anyway
};
inline size_t backward_smem_bytes(int SR) {
  return sizeof(float) * (chunk_smem_floats(SR) + 2 * kN * kPiece * kWarp + kPiece * kDbcStride +
                          kPiece * kStateBlockThreads);
}
__device__ __forceinline__ BackwardSmem backward_smem(const Dims& s, float* p) {
  BackwardSmem m;
  m.chunk = carve_chunk_smem(s, p);
  m.tg = reinterpret_cast<float2*>(take_smem(p, 2 * kN * kPiece * kWarp));  // chunk_smem_floats is even
  m.dbc = take_smem(p, kPiece * kDbcStride);
  m.hkeep = take_smem(p, kPiece * kStateBlockThreads);
  return m;
}

// grid (ndblk, segments, 4·B), block kStateBlockThreads: blockIdx.z = b·4 + k, blockIdx.y the
// segment. Dynamic shared memory: backward_smem_bytes(SR).
// Per chunk, from the last: stage it; then per piece of kPiece steps, from the last, recompute
// the states from the chunk's saved start state (the steps before the piece keep only the
// running state), walk the piece backwards carrying dh, and finish its steps in the per-step
// phase. Writes per (direction k, position): dpre_out, du_dir (4, B·L, D) and dbc_part (see
// Workspace); per (b, segment, k, d): pgrad.
template <bool kFast>
__global__ void __launch_bounds__(kStateBlockThreads, 1)
scan_backward_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, const float* dout,
                     const float* states, const float* seg_state, const float* seg_decay, float* dpre_out,
                     float* du_dir, float* dbc_part, float* pgrad) {
  extern __shared__ float smem[];
  const BackwardSmem m = backward_smem(s, smem);
  const int seg = blockIdx.y, bk = blockIdx.z, b = bk / 4, k = bk % 4;
  const StateThread t = state_thread(s, w, u, dout, dbl, b, k);
  const int lane = t.lane, n = t.n;
  const float* st = states + (int64_t(bk) * s.nseg * kN + n) * s.D + t.d;  // + chunk·N·D
  const int64_t dir_row0 = (int64_t(k) * s.B + b) * s.L;  // row of (k, b, p=0) in (4, B·L)
  float* part = dbc_part + (int64_t(blockIdx.x) * s.BL + int64_t(b) * s.L) * 4 * (2 * kN) + k * (2 * kN) + lane;

  // dh: dL/dh_n carried backwards; dA: Σ over steps of dL/d(Δ·A_n)·Δ. dD and dbias: sums over
  // this thread's steps of the per-step phase (step n of every piece), added up at the end.
  float dh = t.active ? join_segments_state(s, seg_state, seg_decay, bk, seg, n, t.d, true) : 0.f;
  float dA = 0.f, dD = 0.f, dbias = 0.f;
  int first, end;
  segment_chunks(s, seg, first, end);
  const ChunkSmem& cm = m.chunk;
  start_chunk_copies(s, k, end - 1, 0, t, cm);
  // The saved state a chunk starts from is loaded a chunk ahead: read right before the
  // recomputation that needs it, its memory latency stalled the whole block once a chunk.
  float h_next = t.active ? st[int64_t(end - 1) * kN * s.D] : 0.f;
  for (int chunk = end - 1, buf = 0; chunk >= first; --chunk, buf ^= 1) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    const float h_chunk = h_next;
    if (chunk > first && t.active) h_next = st[int64_t(chunk - 1) * kN * s.D];
    // The other buffer was last read before the previous chunk's closing barrier.
    start_chunk_copies(s, k, chunk > first ? chunk - 1 : -1, buf ^ 1, t, cm);
    cp_async_wait_all_but_newest();
    __syncthreads();  // this chunk's copies, from every thread, are visible
    const float* rows = buf ? cm.rows[1] : cm.rows[0];
    const float* su = buf ? cm.u[1] : cm.u[0];
    const float* sdy = buf ? cm.dy[1] : cm.dy[0];
    const int* pos = buf ? cm.pos[1] : cm.pos[0];
    stage_deltas<kFast>(s, len, rows, su, t, cm);
    __syncthreads();
    // A chunk of more than kPiece steps is two pieces: the second's walk to its start passes
    // through the first piece's states and keeps them in hkeep, so the first piece reads them
    // back (each thread its own) instead of recomputing them (16 of 48 state steps a chunk).
    float* hkeep = m.hkeep + t.tid;
    for (int i0 = (len - 1) / kPiece * kPiece; i0 >= 0; i0 -= kPiece) {
      const int plen = min(kPiece, len - i0);
      float hs[kPiece + 1];  // hs[0] before the piece's first step, hs[j+1] after its step j
      hs[0] = h_chunk;
      if (i0 == 0 && len > kPiece) {
#pragma unroll
        for (int j = 0; j < kPiece; ++j) hs[j + 1] = hkeep[j * kStateBlockThreads];
      } else {
#pragma unroll 4
        for (int i = 0; i < i0; ++i) {  // i0 is kPiece or 0
          const int e = i * kWarp + lane;
          hs[0] = state_step(step_exp2<kFast>(cm.delta[e] * t.A2), hs[0], cm.dlu[e], rows[i * s.SR + n]);
          hkeep[i * kStateBlockThreads] = hs[0];
        }
#pragma unroll
        for (int j = 0; j < kPiece; ++j) {
          const int e = (i0 + j) * kWarp + lane;
          const float decay = step_exp2<kFast>(cm.delta[e] * t.A2);
          hs[j + 1] = j < plen ? state_step(decay, hs[j], cm.dlu[e], rows[(i0 + j) * s.SR + n]) : 0.f;
        }
      }
      float v[2 * kPiece];  // this channel's [dB_n | dC_n] terms of each step of the piece
#pragma unroll
      for (int j = 0; j < 2 * kPiece; ++j) v[j] = 0.f;
#pragma unroll
      for (int j = kPiece - 1; j >= 0; --j) {
        if (j < plen) {
          const int i = i0 + j, e = i * kWarp + lane;
          const float* row = rows + i * s.SR;
          const float delta = cm.delta[e], dy = sdy[e];
          const float a = step_exp2<kFast>(delta * t.A2);
          const float dhn = dh + dy * row[kN + n];  // dL/dh_l
          const float tt = dhn * hs[j] * a;          // dL/d(Δ·A_n)
          v[kPiece + j] = dy * hs[j + 1];
          v[j] = dhn * cm.dlu[e];
          m.tg[(n * kPiece + j) * kWarp + lane] = make_float2(tt * t.A, dhn * row[n]);
          dA += tt * delta;
          dh = dhn * a;  // dL/dh_{l-1} through h_l
        }
      }
      // Lane j < kPiece holds dB_n of step j summed over the 32 channels, lane kPiece + j dC_n.
      m.dbc[(lane % kPiece) * kDbcStride + (lane < kPiece ? n : kN + n)] = warp_transpose_sum(v, lane);
      __syncthreads();
      // Per-step phase: warp n finishes step n of the piece for channel `lane`.
      if (n < plen) {
        const int i = i0 + n, e = i * kWarp + lane;
        float ddl = 0.f, gB = 0.f;  // dL/dΔ, Σ_n dL/dh_n·B_n
#pragma unroll
        for (int q = 0; q < kN; ++q) {
          const float2 tg = m.tg[(q * kPiece + n) * kWarp + lane];
          ddl += tg.x;
          gB += tg.y;
        }
        const float ul = su[e], dy = sdy[e];
        ddl += gB * ul;
        const float dpre = ddl * cm.spg[e];
        dD += dy * ul;
        dbias += dpre;
        const int p = pos[i];
        if (t.active) {
          const int64_t o = (dir_row0 + p) * s.D + t.d;
          dpre_out[o] = dpre;
          du_dir[o] = gB * cm.delta[e] + t.Dk * dy;
        }
        part[int64_t(p) * 4 * (2 * kN)] = m.dbc[n * kDbcStride + lane];  // lane = j of [dB | dC]
      }
      __syncthreads();  // the piece's shared memory is read; the next piece or chunk may write
    }
  }
  // dD and dbias over the block's warps (each summed its steps), in warp order.
  m.tg[n * kWarp + lane] = make_float2(dD, dbias);
  __syncthreads();
  if (t.active) {
    float* pg = pgrad + (((int64_t(b) * s.nsegs + seg) * 4 + k) * s.D + t.d) * (kN + 2);
    pg[n] = dA * t.A;  // through A = -exp(A_logs): dA_logs = dA·A
    if (n == 0) {
      float sD = 0.f, sb = 0.f;
      for (int q = 0; q < kN; ++q) sD += m.tg[q * kWarp + lane].x, sb += m.tg[q * kWarp + lane].y;
      pg[kN] = sD;
      pg[kN + 1] = sb;
    }
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
  static const bool opted_in = [] {  // above 48 KB a kernel must ask for its shared memory
    MM_CUDA_CHECK(cudaFuncSetAttribute(scan_backward_kernel<kFast>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(backward_smem_bytes(2 * kN + kMaxR))));
    return true;
  }();
  (void)opted_in;
  const dim3 grid(unsigned(s.ndblk), unsigned(s.nsegs), unsigned(4 * s.B));
  scan_backward_kernel<kFast><<<grid, kStateBlockThreads, backward_smem_bytes(s.SR), st>>>(
      s, u, ws.dbl, w, dout, states, ws.seg_state, ws.seg_decay, ws.dir0, ws.dir1, ws.dbc_part, ws.pgrad);
  MM_CUDA_CHECK_LAUNCH("scan_train_backward scan");
}

}  // namespace
}  // namespace scan_train

using namespace scan_train;

static void scan_backward_slice(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w,
                                const float* dout, float* du, const ScanTrainGrads& g, const float* states,
                                float* workspace, Stream st) {
  const Dims s = make_dims(shape);
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

void scan_train_backward(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, const float* dout,
                         float* du, const ScanTrainGrads& g, const float* states, float* workspace, Stream st) {
  MM_CHECK(states, "scan_train_backward: needs the states forward saved");
  for_each_batch_slice(shape, scan_train_batch_slice(shape), [&](const ScanTrainShape& part, int64_t b0) {
    const int64_t rows = b0 * shape.H * shape.W * shape.D;
    scan_backward_slice(part, u + rows, w, dout + rows, du ? du + rows : nullptr, g,
                        states + scan_train_states_floats(with_batch(shape, b0)), workspace, st);
  });
}

}  // namespace mm::cuda
