// SS2D selective scan for training, float32: forward saving chunk states, and backward
// (the maths is in lib/ops/selective_scan.h; the CPU version, selective_scan.cpp, is the
// reference the tests compare against).
//
// Forward
//   1. dbl (B·L, 4·(R+2N)) = u · x_proj_weightᵀ, one GEMM (rows are spatial positions
//      p = h·W + w; every direction reads the same rows in its own order).
//   2. scan: a block of 16 warps per (b, k, 32 channels): warp n carries state n, lane c
//      channel c, walking the positions of direction k. Per chunk of kScanChunk steps the
//      block stages the x_proj rows and u in shared memory (the next chunk's copies in
//      flight, cp.async) and Δ, Δ·u per (step, channel) from dt (R multiply-adds each); each
//      thread then walks its state, keeping C_n·h_n per step, and warp n adds up steps n and
//      n+16 over the states into y.
//      Small batches leave the GPU idle with one block walking all L steps, so the steps are
//      cut into segments of seg_chunks chunks, scanned in parallel (none at batch 64 and
//      224 px). The state is linear in its start, h_end = exp(A·ΣΔ)·h_start + (h_end from a
//      zero start), so:
//        a. each segment but the last is scanned from a zero state, keeping its end state
//           and its decay exp(A·ΣΔ) (scan_forward_segment_kernel, one warp per block, a
//           thread per channel with its 16 states);
//        b. each segment is scanned again from its start state, which its threads first
//           join from the earlier segments' results (join_segments_state), writing y into its
//           direction's slice of ys (4, B·L, D), and the state BEFORE every chunk of
//           kScanChunk steps into `states` (B, 4, ceil(L/kScanChunk), N, D): the layout and
//           meaning of the CPU's optional states buffer.
//   3. out = ((ys[0] + ys[1]) + ys[2]) + ys[3], the CPU's order of adding the directions.
//
// Backward (dbl is recomputed; nothing is kept from forward except `states`)
//   1. scan, in segments as forward: dh flows backwards linearly too (dh_start =
//      exp(A·ΣΔ)·dh_end + local), so a pass from a zero dh per segment (one thread per
//      channel), joined in reverse, gives each segment the dh entering its end. Then blocks
//      of 16 warps as forward's: per chunk, from the last, each stages the x_proj rows and
//      per (step, channel) Δ, Δ·u, u, dout and softplus'; per piece of 16 steps, from the
//      last, each thread recomputes its state's values over the piece into registers (from
//      the chunk's saved state) and walks them back carrying dh. The sums over states go
//      through shared memory: one thread per (step, channel) then writes dΔ_pre (the
//      gradient of Δ's pre-activation) and its channel's direct du terms to (4, B·L, D)
//      buffers; a transpose-reduction per warp gives the block's dB_l and dC_l (summed over
//      its 32 channels), written as a partial per 32-channel block. Sums over positions
//      (dA, dD, dt bias) stay in registers and are written per (b, segment, k, d).
//   2. fixed-order reductions: the dB/dC partials over channel blocks into ddbl, the
//      per-segment parameter sums over b and segments into the gradients, the direct du terms over k.
//   3. GEMMs: ddbl's dt columns = dΔ_pre · dt_projs_weight[k]; d dt_projs_weight[k] +=
//      dΔ_preᵀ · dt; d x_proj_weight += ddblᵀ · u; du += ddbl · x_proj_weight.
//
// Error against the CPU: exp(Δ·A) and softplus use the CPU's exp polynomial (exp_nonpos),
// softplus log1pf where the CPU has a series (both ~1e-7 relative); the rest is summation
// order (GEMMs, the dB/dC warp reduction, the segment joins). With TF32 or bf16 GEMMs the
// kernels take exp from the hardware instead (step_exp2<true>): every kernel is templated
// on kFast. A = -exp(A_logs) is computed in double once per
// thread, as accurate as the CPU's std::exp.
//
// Memory: the workspace (layout in scan_train_common.cuh) is about (2·KC + 8·D + 4·2N·⌈D/32⌉)
// floats per position scanned at once, of one batch slice (kScanBatchSlice images): 0.58 GB
// for MedMamba-T's first stage (32 images, B·L = 100,352, D = 96, R = 6); the saved states
// are D·N·4/32 = 192 floats per position of the whole batch.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda_train_gemm_conv.h"
#include "scan_train_common.cuh"

namespace mm::cuda {
namespace scan_train {

// Warps the main scan kernels want in flight: about two waves (132 SMs x 16 warps x 2); fewer
// and make_dims cuts the steps into segments, which costs a second scan.
constexpr int64_t kTargetWarps = 4224;

static int64_t warps_per_image(const ScanTrainShape& s) { return (s.D + kWarp - 1) / kWarp * 4 * kN; }

Dims make_dims(const ScanTrainShape& s) {
  MM_CHECK(s.B > 0 && s.H > 0 && s.W > 0 && s.D > 0 && s.R > 0, "scan_train: all sizes must be positive");
  MM_CHECK(s.N == kN, "scan_train: only d_state N = 16 is supported, got " + std::to_string(s.N));
  MM_CHECK(s.H * s.W < (int64_t(1) << 30) && s.D < (int64_t(1) << 30), "scan_train: H·W or D too large");
  MM_CHECK(s.R <= kMaxR, "scan_train: dt rank " + std::to_string(s.R) + " above " + std::to_string(kMaxR));
  MM_CHECK(4 * s.B <= 65535, "scan_train: batch too large for one grid (4·B > 65535)");
  Dims d;
  d.B = int(s.B); d.H = int(s.H); d.W = int(s.W); d.L = d.H * d.W; d.D = int(s.D); d.R = int(s.R);
  d.RN = d.R + 2 * kN; d.KC = 4 * d.RN;
  d.nseg = (d.L + kChunk - 1) / kChunk;
  d.ndblk = (d.D + kWarp - 1) / kWarp;
  d.BL = s.B * d.L;
  int64_t chunks = s.segment_chunks;
  if (chunks <= 0) {  // enough segments for the target, none shorter than one chunk
    // The main kernels' blocks of kN warps fill an SM alone (backward) or two to an SM
    // (forward), so about two waves' worth (132 SMs x 16 warps x 2) is enough, and batch 64
    // runs unsegmented.
    const int64_t warps_per_segment = warps_per_image(s) * s.B;
    const int64_t wanted = std::min<int64_t>(d.nseg, (kTargetWarps + warps_per_segment - 1) / warps_per_segment);
    chunks = (d.nseg + wanted - 1) / wanted;
  }
  d.seg_chunks = int(std::min<int64_t>(chunks, d.nseg));
  d.SR = 2 * kN + (d.R + 3) / 4 * 4;
  d.nsegs = (d.nseg + d.seg_chunks - 1) / d.seg_chunks;
  MM_CHECK(d.nsegs <= 65535, "scan_train: too many segments for one grid");
  return d;
}


Workspace carve(const Dims& d, float* base) {
  Workspace w;
  int64_t off = 0;
  auto take = [&](int64_t n) {
    float* p = base ? base + off : nullptr;
    off += (n + 63) / 64 * 64;
    return p;
  };
  const int64_t dirs = 4 * d.BL * d.D;
  w.dbl = take(d.BL * d.KC);
  w.ddbl = take(d.BL * d.KC);
  w.dir0 = take(dirs);
  w.dir1 = take(dirs);
  w.dbc_part = take(int64_t(d.ndblk) * d.BL * 4 * 2 * kN);
  w.pgrad = take(int64_t(d.B) * d.nsegs * 4 * d.D * (kN + 2));
  w.seg_state = take(int64_t(d.B) * 4 * d.nsegs * kN * d.D);
  w.seg_decay = take(int64_t(d.B) * 4 * d.nsegs * kN * d.D);
  w.total = off;
  return w;
}

namespace {

// Pass a. grid (ndblk, segments - 1, 4·B), block kWarp: blockIdx.z = b·4 + k, blockIdx.y the
// segment, the warp is channels [32·blockIdx.x, +32) of (b, k), a thread keeping all 16
// states of its channel; lanes past D stage and wait with the others, nothing more. From a
// zero state, writes the segment's end state and decay to seg_state and seg_decay. Dynamic
// shared memory: stage_bytes(s).
// Occupancy: 20 one-warp blocks per SM caps the registers at 96 without spilling (left to
// itself the compiler took 128, for 16 warps: too few to hide the steps' latency chains).
template <bool kFast>
__global__ void __launch_bounds__(kWarp, 20)
scan_forward_segment_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, float* seg_state,
                            float* seg_decay) {
  extern __shared__ float smem[];
  const StageSmem sm = stage_smem(s, smem);
  const WarpPlace wp = warp_place(s, 0);
  const int lane = wp.lane, d = wp.d, dc = wp.dc, seg = wp.seg, bk = wp.bk, b = wp.b, k = wp.k;
  const bool active = wp.active;
  float *srow = sm.rows, *su = sm.u;
  const Channel c = load_channel(s, w, u, dbl, b, k, dc);
  float h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) h[n] = 0.f;
  float dsum = 0.f;
  int first, end;
  segment_chunks(s, seg, first, end);
  for (int chunk = first; chunk < end; ++chunk) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    stage_chunk(s, k, l0, len, c.dbl_b, c.u_b, nullptr, active, lane, srow, su, nullptr);
    for (int i = 0; i < len; ++i) {
      const float* row = srow + i * s.SR;
      float Bs[kN], Cs[kN];
      load_bc(row, Bs, Cs);
      const float delta = softplus<kFast>(delta_pre(c.wrow, c.bias, staged_dt(row), s.R));
      const float dlu = delta * su[i * kWarp + lane];
      dsum += delta;
#pragma unroll
      for (int n = 0; n < kN; ++n) h[n] = step_exp2<kFast>(delta * c.A2[n]) * h[n] + dlu * Bs[n];
    }
  }
  if (active) {
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      seg_state[seg_index(s, bk, seg, n, d)] = h[n];
      seg_decay[seg_index(s, bk, seg, n, d)] = step_exp2<kFast>(c.A2[n] * dsum);
    }
  }
}

// Shared memory of the main forward kernel: the staged chunk, then C_n·h_n per (state n, step,
// channel), (kN, kChunk, kWarp).
inline size_t forward_smem_bytes(int SR) {
  return sizeof(float) * (chunk_smem_floats<false>(SR) + size_t(kN) * kChunk * kWarp);
}

// Pass b, a block of kN warps (see kStateBlockThreads). grid (ndblk, segments, 4·B). From the
// segment's joined start state, writes ys and `states`. Per chunk: stage it (the next one's
// copies in flight), walk its steps, each thread its state, keeping C_n·h_n per step in shared
// memory; then warp n adds up the states of steps n and n + kN: y = D·u + Σ_n C_n·h_n.
// Dynamic shared memory: forward_smem_bytes(SR). Two blocks to an SM: 64 registers and about
// 92 KB of shared memory each (dt rank 12).
template <bool kFast>
__global__ void __launch_bounds__(kStateBlockThreads, 2)
scan_forward_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, const float* seg_state,
                    const float* seg_decay, float* ys, float* states) {
  extern __shared__ float smem[];
  float* p = smem;
  const ChunkSmem cm = carve_chunk_smem<false>(s, p);
  float* ch = take_smem(p, kN * kChunk * kWarp);
  const int seg = blockIdx.y, bk = blockIdx.z, b = bk / 4, k = bk % 4;
  const StateThread t = state_thread(s, w, u, nullptr, dbl, b, k);
  const int lane = t.lane, n = t.n;
  float* ys_bk = ys + (int64_t(k) * s.B + b) * s.L * s.D + t.d;
  float* st = states ? states + (int64_t(bk) * s.nseg * kN + n) * s.D + t.d : nullptr;  // + chunk·N·D
  float h = t.active ? join_segments_state(s, seg_state, seg_decay, bk, seg, n, t.d, false) : 0.f;
  int first, end;
  segment_chunks(s, seg, first, end);
  start_chunk_copies<false>(s, k, first, 0, t, cm);
  for (int chunk = first, buf = 0; chunk < end; ++chunk, buf ^= 1) {
    const int l0 = chunk * kChunk, len = min(kChunk, s.L - l0);
    // The other buffer was last read before the previous chunk's closing barrier.
    start_chunk_copies<false>(s, k, chunk + 1 < end ? chunk + 1 : -1, buf ^ 1, t, cm);
    cp_async_wait_all_but_newest();
    __syncthreads();  // this chunk's copies, from every thread, are visible
    const float* rows = buf ? cm.rows[1] : cm.rows[0];
    const float* su = buf ? cm.u[1] : cm.u[0];
    const int* pos = buf ? cm.pos[1] : cm.pos[0];
    stage_deltas<false, kFast>(s, len, rows, su, t, cm);
    if (st && t.active) st[int64_t(chunk) * kN * s.D] = h;
    __syncthreads();
#pragma unroll 8
    for (int i = 0; i < len; ++i) {
      const int e = i * kWarp + lane;
      const float* row = rows + i * s.SR;
      h = step_exp2<kFast>(cm.delta[e] * t.A2) * h + cm.dlu[e] * row[n];
      ch[(n * kChunk + i) * kWarp + lane] = row[kN + n] * h;
    }
    __syncthreads();
    for (int i = n; i < len; i += kN) {
      float y = t.Dk * su[i * kWarp + lane];
#pragma unroll
      for (int q = 0; q < kN; ++q) y += ch[(q * kChunk + i) * kWarp + lane];
      if (t.active) ys_bk[int64_t(pos[i]) * s.D] = y;
    }
    __syncthreads();  // the chunk's shared memory is read; the next chunk may write
  }
}

template <bool kFast>
void launch_forward(const Dims& s, const float* u, const ScanTrainWeights& w, const Workspace& ws, float* states,
                    Stream st) {
  if (s.nsegs > 1) {  // the last segment's end state is never used
    const dim3 grid(unsigned(s.ndblk), unsigned(s.nsegs - 1), unsigned(4 * s.B));
    scan_forward_segment_kernel<kFast><<<grid, kWarp, stage_bytes(s), st>>>(s, u, ws.dbl, w, ws.seg_state,
                                                                            ws.seg_decay);
    MM_CUDA_CHECK_LAUNCH("scan_train_forward segments");
  }
  static const bool opted_in = [] {  // above 48 KB a kernel must ask for its shared memory
    MM_CUDA_CHECK(cudaFuncSetAttribute(scan_forward_kernel<kFast>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(forward_smem_bytes(2 * kN + kMaxR))));
    return true;
  }();
  (void)opted_in;
  const dim3 grid(unsigned(s.ndblk), unsigned(s.nsegs), unsigned(4 * s.B));
  scan_forward_kernel<kFast><<<grid, kStateBlockThreads, forward_smem_bytes(s.SR), st>>>(
      s, u, ws.dbl, w, ws.seg_state, ws.seg_decay, ws.dir0, states);
  MM_CUDA_CHECK_LAUNCH("scan_train_forward");
}

// dst[i] (= or +=) ((src[i] + src[n+i]) + src[2n+i]) + src[3n+i]: the four directions.
__global__ void sum_directions_kernel(float* dst, const float* src, int64_t n, bool accumulate) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = ((src[i] + src[n + i]) + src[2 * n + i]) + src[3 * n + i];
  dst[i] = accumulate ? dst[i] + v : v;
}

}  // namespace

bool fast_step_math() { return gemm_compute() != GemmCompute::F32; }

void sum_directions(float* dst, const float* src, int64_t n, bool accumulate, Stream st) {
  constexpr int kThreads = 256;
  sum_directions_kernel<<<grid_for(n, kThreads), kThreads, 0, st>>>(dst, src, n, accumulate);
  MM_CUDA_CHECK_LAUNCH("scan_train sum_directions");
}

}  // namespace scan_train

using namespace scan_train;

int64_t scan_train_states_floats(const ScanTrainShape& s) {
  return s.B * 4 * ((s.H * s.W + kScanChunk - 1) / kScanChunk) * s.N * s.D;
}

int64_t scan_train_batch_slice(const ScanTrainShape& s) {
  static const int64_t env_slice = [] {
    const char* env = std::getenv("MM_SCAN_BATCH_SLICE");  // for experiments; sizes the workspace too
    const long v = env ? std::atol(env) : 0;
    return v > 0 ? int64_t(v) : int64_t(0);
  }();
  if (env_slice > 0) return std::min(s.B, env_slice);
  // Equal slices of at least kScanBatchSlice images, and never so few that they need segments.
  const int64_t least = std::max(kScanBatchSlice, (kTargetWarps + warps_per_image(s) - 1) / warps_per_image(s));
  const int64_t slices = std::max<int64_t>(1, s.B / least);
  return (s.B + slices - 1) / slices;
}

int64_t scan_train_workspace_floats(const ScanTrainShape& s) {
  ScanTrainShape slice = s;
  slice.B = scan_train_batch_slice(s);
  return carve(make_dims(slice), nullptr).total;
}

static void scan_forward_slice(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, float* out,
                               float* states, float* workspace, Stream st) {
  const Dims s = make_dims(shape);
  const Workspace ws = carve(s, workspace);
  gemm_f32(false, true, s.BL, s.KC, s.D, 1.f, u, s.D, w.x_proj_weight, s.D, 0.f, ws.dbl, s.KC, st);
  if (fast_step_math())
    launch_forward<true>(s, u, w, ws, states, st);
  else
    launch_forward<false>(s, u, w, ws, states, st);
  sum_directions(out, ws.dir0, s.BL * s.D, false, st);
}

void scan_train_forward(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, float* out,
                        float* states, float* workspace, Stream st) {
  for_each_batch_slice(shape, [&](const ScanTrainShape& part, int64_t b0) {
    const int64_t rows = b0 * shape.H * shape.W * shape.D;
    float* part_states = states ? states + scan_train_states_floats(with_batch(shape, b0)) : nullptr;
    scan_forward_slice(part, u + rows, w, out + rows, part_states, workspace, st);
  });
}

}  // namespace mm::cuda
