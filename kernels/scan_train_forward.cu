// SS2D selective scan for training, float32: forward saving chunk states, and backward
// (the maths is in lib/ops/selective_scan.h; the CPU version, selective_scan.cpp, is the
// reference the tests compare against).
//
// Forward
//   1. dbl (B·L, 4·(R+2N)) = u · x_proj_weightᵀ, one GEMM (rows are spatial positions
//      p = h·W + w; every direction reads the same rows in its own order).
//   2. scan: a warp per (b, k, tile of channels) walks the positions of direction k, each
//      channel's 16 states in the registers of its 1, 2 or 4 lanes (the fewest that fill the
//      GPU). Per 16 steps the warp stages the x_proj rows and its channels' u in shared memory
//      (the next 16 steps' copies in flight, cp.async); per step each lane computes Δ from dt
//      (R multiply-adds), walks its states and adds up C_n·h_n, and a shuffle or two sums y
//      over the channel's lanes.
//      Small batches leave the GPU idle with one warp walking all L steps, so the steps are
//      cut into segments of seg_chunks chunks (none for slices of 32 images at 224 px),
//      scanned in parallel.
//      The state is linear in its start, h_end = exp(A·ΣΔ)·h_start + (h_end from a zero
//      start), so:
//        a. each segment but the last is scanned from a zero state, keeping its end state
//           and its decay exp(A·ΣΔ) (scan_forward_segment_kernel, one warp per block, a
//           thread per channel with its 16 states);
//        b. each segment is scanned again from its start state, which its lanes first
//           join from the earlier segments' results (join_segments_state), writing y into its
//           direction's slice of ys (4, B·L, D), and the state BEFORE every chunk of
//           kScanChunk steps into `states` (B, 4, ceil(L/kScanChunk), N, D): the layout and
//           meaning of the CPU's optional states buffer.
//   3. out = ((ys[0] + ys[1]) + ys[2]) + ys[3], the CPU's order of adding the directions.
//
// Backward (dbl is recomputed; nothing is kept from forward except `states`)
//   1. scan, in segments as forward: dh flows backwards linearly too (dh_start =
//      exp(A·ΣΔ)·dh_end + local), so a pass from a zero dh per segment (one thread per
//      channel), joined in reverse, gives each segment the dh entering its end. Then a block
//      of 4 warps per 32 channels, a channel's 16 states over 4 lanes as in forward: per
//      chunk, from the last, the block stages the x_proj rows, u and dout, and per (step,
//      channel) Δ and softplus'; each lane walks up from the chunk's saved state, leaving a
//      checkpoint every 8 steps, then per piece of 8 steps, from the last, recomputes the
//      piece's states into registers and walks them back carrying dh. Per step the sums over
//      a channel's states take two shuffles, and a transpose-reduction per warp gives the
//      dB_l and dC_l of its 8 channels; per piece the block adds its warps' sums and writes
//      them as a partial per 32-channel block, with dΔ_pre (the gradient of Δ's
//      pre-activation) and each channel's direct du terms in (4, B·L, D) buffers. Sums over
//      positions (dA, dD, dt bias) stay in registers and are written per (b, segment, k, d).
//   2. fixed-order reductions: the dB/dC partials over channel blocks into ddbl, the
//      per-segment parameter sums over b and segments into the gradients, the direct du terms over k.
//   3. GEMMs: ddbl's dt columns = dΔ_pre · dt_projs_weight[k]; d dt_projs_weight[k] +=
//      dΔ_preᵀ · dt (on copies of W and dt padded to 16-byte rows, scan_train_dt_backward.cu);
//      d x_proj_weight += ddblᵀ · u; du += ddbl · x_proj_weight.
//
// Error against the CPU: exp(Δ·A) and softplus use the CPU's exp polynomial (exp_nonpos),
// softplus log1pf where the CPU has a series (both ~1e-7 relative); the rest is summation
// order (GEMMs, the dB/dC warp reduction, the segment joins). With TF32 or bf16 GEMMs the
// kernels take exp from the hardware instead (step_exp2<true>): every kernel is templated
// on kFast. A = -exp(A_logs) is computed in double once per
// thread, as accurate as the CPU's std::exp.
//
// Memory: the workspace (layout in scan_train_common.cuh) is about (2·KC + 8·D + 4·2N·⌈D/32⌉)
// floats per position scanned at once, of one batch slice (kScanBatchSlice images): 1.17 GB
// for MedMamba-T's first stage (64 images, B·L = 200,704, D = 96, R = 6), 1.05 GB with the
// bf16 workspace (6.5·D instead of 8·D: dΔ_pre and u kept as bf16 only); the saved states
// are D·N·4/32 = 192 floats per position of the whole batch.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda_train_gemm_conv.h"
#include "scan_train_common.cuh"

namespace mm::cuda {
namespace scan_train {

// The parallelism below which make_dims cuts the steps into segments, in (state, 32-channel
// block, direction, image) units: 4224 units, 2 images of MedMamba-T's first stage. (Counted
// as warps when backward ran a warp per state: about two waves of 132 SMs x 16 warps.)
// Segments cost a second, slower pass: MedMamba-T at batch 64 trained 7-12% slower with its
// first stage cut into 3 or 6 of them, though the unsegmented backward fills the H200 with
// only 3 of its 4 blocks per SM there.
constexpr int64_t kTargetWarps = 4224;

static int64_t warps_per_image(const ScanTrainShape& s) { return (s.D + kWarp - 1) / kWarp * 4 * kN; }

// A positive count from the environment (the experiment knobs MM_SCAN_BATCH_SLICE and
// MM_SCAN_SEGMENT_CHUNKS), or 0 when unset or not positive.
static int64_t env_count(const char* name) {
  const char* env = std::getenv(name);
  const long v = env ? std::atol(env) : 0;
  return v > 0 ? int64_t(v) : int64_t(0);
}

Dims make_dims(const ScanTrainShape& s) {
  MM_CHECK(s.B > 0 && s.H > 0 && s.W > 0 && s.D > 0 && s.R > 0, "scan_train: all sizes must be positive");
  MM_CHECK(s.N == kN, "scan_train: only d_state N = 16 is supported, got " + std::to_string(s.N));
  MM_CHECK(s.H * s.W < (int64_t(1) << 30) && s.D < (int64_t(1) << 30), "scan_train: H·W or D too large");
  MM_CHECK(s.R <= kMaxR, "scan_train: dt rank " + std::to_string(s.R) + " above " + std::to_string(kMaxR));
  MM_CHECK(4 * s.B <= 65535, "scan_train: batch too large for one grid (4·B > 65535)");
  Dims d;
  d.B = int(s.B); d.H = int(s.H); d.W = int(s.W); d.L = d.H * d.W; d.D = int(s.D); d.R = int(s.R);
  d.RN = d.R + 2 * kN; d.KC = 4 * d.RN; d.ldbl = (d.KC + 7) / 8 * 8;
  d.nseg = (d.L + kChunk - 1) / kChunk;
  d.ndblk = (d.D + kWarp - 1) / kWarp;
  d.BL = s.B * d.L;
  static const int64_t env_chunks = env_count("MM_SCAN_SEGMENT_CHUNKS");
  int64_t chunks = s.segment_chunks > 0 ? s.segment_chunks : env_chunks;
  if (chunks <= 0) {  // enough segments for the target, none shorter than one chunk
    // Slices of 32 or more images at 224 px run unsegmented.
    const int64_t warps_per_segment = warps_per_image(s) * s.B;
    const int64_t wanted = std::min<int64_t>(d.nseg, (kTargetWarps + warps_per_segment - 1) / warps_per_segment);
    chunks = (d.nseg + wanted - 1) / wanted;
  }
  d.seg_chunks = int(std::min<int64_t>(chunks, d.nseg));
  MM_CHECK(s.forward_lanes == 0 || s.forward_lanes == 1 || s.forward_lanes == 2 || s.forward_lanes == 4,
           "scan_train: forward_lanes must be 0, 1, 2 or 4");
  d.forward_lanes = int(s.forward_lanes);
  d.bf16 = s.bf16;
  d.SR = 2 * kN + (d.R + 3) / 4 * 4;
  d.nsegs = (d.nseg + d.seg_chunks - 1) / d.seg_chunks;
  MM_CHECK(d.nsegs <= 65535, "scan_train: too many segments for one grid");
  return d;
}


Workspace carve(const Dims& d, float* base, bool backward) {
  Workspace w{};
  WorkspaceCarver carver{base};
  const int64_t dirs = 4 * d.BL * d.D;
  w.dbl = carver.take(d.BL * d.ldbl);
  w.dir0_floats = backward && d.bf16 ? bf16_dir0_floats(d) : dirs;
  w.dir0 = carver.take(w.dir0_floats);
  if (backward) {
    w.ddbl = carver.take(d.bf16 ? (d.BL * d.ldbl + 1) / 2 : d.BL * d.ldbl);  // bf16: written so (backward)
    w.dir1 = carver.take(std::max(dirs, dt_proj_backward_scratch_floats(d)));
    w.dbc_part = carver.take(int64_t(d.ndblk) * d.BL * 4 * 2 * kN);
    w.pgrad = carver.take(int64_t(d.B) * d.nsegs * 4 * d.D * (kN + 2));
  }
  w.seg_state = carver.take(int64_t(d.B) * 4 * d.nsegs * kN * d.D);
  w.seg_decay = carver.take(int64_t(d.B) * 4 * d.nsegs * kN * d.D);
  w.x_proj_pad = d.ldbl > d.KC ? carver.take((int64_t(d.ldbl) * d.D + 1) / 2) : nullptr;
  w.total = carver.floats;
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
      for (int n = 0; n < kN; ++n) h[n] = state_step(step_exp2<kFast>(delta * c.A2[n]), h[n], dlu, Bs[n]);
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

// Pass b: a warp per (b, k, segment, tile of 32/kLanes channels), a channel's 16 states in
// the registers of its kLanes lanes (kN/kLanes each), as in the inference scan
// (scan_kernel.cu): B and C are read once per step for all of a lane's states, and the sum
// over states is in registers and a shuffle or two. (A thread per state, in blocks of kN
// warps, had to add up y over warps through shared memory: five shared-memory accesses per
// state step, which bound it at three times the special-function unit's rate.)
// From the segment's joined start state, writes ys and the state before every chunk of
// kScanChunk steps into `states`. Each warp stages its steps kStageSteps at a time, the next
// group's copies in flight (cp.async, double-buffered); the warps of a block are independent.
constexpr int kStageSteps = 16;      // kScanChunk is a multiple
constexpr int kForwardWarps = 4;     // per block
static_assert(kChunk % kStageSteps == 0, "a saved state falls on a staging boundary");

// Per warp and buffer: rows (kStageSteps, row) [B | C | dt | zeros], u (kStageSteps,
// channels), positions (kStageSteps). A row holds kRMax dt values (R rounded up to 4 when
// kRMax is 0), zeros past R: every step then runs the same multiply-adds with no branch.
__host__ __device__ inline int forward_row_floats(int R, int kRMax) {
  return 2 * kN + (kRMax > 0 ? kRMax : (R + 3) / 4 * 4);
}
__host__ __device__ inline int forward_buffer_floats(int row, int lanes) {
  return kStageSteps * (row + kWarp / lanes + 1);
}

// kRMax: dt rank padded (the dt_proj weights of the lane's channel in registers), or 0: read
// from global memory (L1) every step, for ranks above 32.
template <bool kFast, int kLanes, int kRMax>
// Four blocks to an SM (128 registers) unless a lane keeps 16 states and 32 dt weights.
__global__ void __launch_bounds__(kForwardWarps * kWarp, kLanes == 1 && kRMax > 16 ? 3 : 4)
scan_forward_kernel(Dims s, const float* u, const float* dbl, ScanTrainWeights w, const float* seg_state,
                    const float* seg_decay, float* ys, float* states) {
  constexpr int kStates = kN / kLanes, kChannels = kWarp / kLanes;
  extern __shared__ __align__(16) float forward_smem[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int tiles = (s.D + kChannels - 1) / kChannels;
  const int task = blockIdx.x * kForwardWarps + warp;  // ((b·4 + k)·nsegs + seg)·tiles + tile
  if (task >= s.B * 4 * s.nsegs * tiles) return;       // the whole warp leaves
  const int tile = task % tiles, seg = task / tiles % s.nsegs, bk = task / (tiles * s.nsegs);
  const int b = bk / 4, k = bk % 4;
  const int ch = lane / kLanes, sg = lane % kLanes, n0 = sg * kStates;  // channel in tile, first state
  const int d = tile * kChannels + ch;
  const bool active = d < s.D;
  const int dc = active ? d : s.D - 1;  // lanes past D take channel D-1's parameters
  const Channel c = load_channel(s, w, u, dbl, b, k, dc);  // its A and A2 (all 16 states) unused
  float A2[kStates];  // this lane's states only
#pragma unroll
  for (int q = 0; q < kStates; ++q) {
    float A;
    decay_rates(w.A_logs[(int64_t(k) * s.D + dc) * kN + n0 + q], A, A2[q]);
  }
  float wdt[kRMax > 0 ? kRMax : 1];
#pragma unroll
  for (int r = 0; r < (kRMax > 0 ? kRMax : 1); ++r) wdt[r] = kRMax > 0 && r < s.R ? c.wrow[r] : 0.f;
  float h[kStates];
#pragma unroll
  for (int q = 0; q < kStates; ++q)
    h[q] = active ? join_segments_state(s, seg_state, seg_decay, bk, seg, n0 + q, d, false) : 0.f;
  float* ys_bk = ys + (int64_t(k) * s.B + b) * s.L * s.D + d;
  float* st = states ? states + int64_t(bk) * s.nseg * kN * s.D + int64_t(n0) * s.D + d : nullptr;  // + chunk·N·D

  const int SR = forward_row_floats(s.R, kRMax), buffer = forward_buffer_floats(SR, kLanes);
  float* bufs = forward_smem + 2 * warp * buffer;  // buffer: a multiple of 4 floats
  const float* u_tile = u + int64_t(b) * s.L * s.D + tile * kChannels;
  // Starts the copies of steps [l0, l0 + kStageSteps) into buffer `which`; steps past L and
  // channels past D are zeros, and their position -1.
  auto stage = [&](int l0, int which) {
    float* rows = bufs + which * buffer;
    float* su = rows + kStageSteps * SR;
    int* pos = reinterpret_cast<int*>(su + kStageSteps * kChannels);
    __syncwarp();  // every lane is done reading this buffer's previous steps
    if (lane < kStageSteps) pos[lane] = l0 + lane < s.L ? scan_position(k, l0 + lane, s.H, s.W) : -1;
    __syncwarp();
    for (int i = 0; i < kStageSteps; ++i) {
      const int p = pos[i];
      const float* src = c.dbl_b + int64_t(max(p, 0)) * s.ldbl;
      // Row columns j: dt (j < R), then B and C; then zeros up to the row's end.
      for (int j = lane; j < SR; j += kWarp)
        cp_async4(rows + i * SR + (j < s.R ? 2 * kN + j : j < s.RN ? j - s.R : j), src + min(j, s.RN - 1),
                  p >= 0 && j < s.RN);
    }
    for (int q = lane; q < kStageSteps * kChannels; q += kWarp) {
      const int i = q / kChannels, cq = q % kChannels, p = pos[i];
      const bool ok = p >= 0 && tile * kChannels + cq < s.D;
      cp_async4(su + q, ok ? u_tile + int64_t(p) * s.D + cq : u, ok);
    }
    cp_async_commit();
  };

  int first, end;
  segment_chunks(s, seg, first, end);
  const int l_first = first * kChunk, l_end = min(end * kChunk, s.L);
  stage(l_first, 0);
  for (int l0 = l_first, which = 0; l0 < l_end; l0 += kStageSteps, which ^= 1) {
    if (l0 + kStageSteps < l_end) stage(l0 + kStageSteps, which ^ 1);
    else cp_async_commit();  // an empty group keeps the wait uniform
    cp_async_wait<1>();  // all but the newest group
    __syncwarp();
    if (st && active && l0 % kChunk == 0) {
#pragma unroll
      for (int q = 0; q < kStates; ++q) st[int64_t(l0 / kChunk) * kN * s.D + int64_t(q) * s.D] = h[q];
    }
    const float* rows = bufs + which * buffer;
    const float* su = rows + kStageSteps * SR;
    const int* pos = reinterpret_cast<const int*>(su + kStageSteps * kChannels);
    constexpr int kUnroll = kLanes == 1 ? 4 : 8 / kLanes;  // steps in flight: 4 with 16 states a lane, else 8
#pragma unroll kUnroll
    for (int i0 = 0; i0 < kStageSteps; i0 += kLanes) {
      // Δ of step i0 + sg by this lane, the channel's lanes sharing theirs through shuffles:
      // each computes one Δ per kLanes steps instead of every step's.
      const float* own = rows + (i0 + sg) * SR;
      float pre;
      if constexpr (kRMax > 0) {
        pre = c.bias;
#pragma unroll
        for (int r = 0; r < kRMax; ++r) pre = fmaf(staged_dt(own)[r], wdt[r], pre);  // zeros past R add +0
      } else {
        pre = delta_pre(c.wrow, c.bias, staged_dt(own), s.R);
      }
      const float own_delta = softplus<kFast>(pre);
#pragma unroll
      for (int j = 0; j < kLanes; ++j) {
        const int i = i0 + j;
        const float* row = rows + i * SR;
        const float delta = kLanes > 1 ? __shfl_sync(0xffffffffu, own_delta, (lane & ~(kLanes - 1)) | j) : own_delta;
        const float uv = su[i * kChannels + ch];
        const float dlu = delta * uv;
        float y4[4] = {0.f, 0.f, 0.f, 0.f};  // partial sums, a shorter dependency chain
#pragma unroll
        for (int q4 = 0; q4 < kStates / 4; ++q4) {  // B and C four at a time (16-byte loads)
          const float4 b4 = reinterpret_cast<const float4*>(row + n0)[q4];
          const float4 c4 = reinterpret_cast<const float4*>(row + kN + n0)[q4];
          const float bq[4] = {b4.x, b4.y, b4.z, b4.w}, cq[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            const int q = 4 * q4 + jj;
            h[q] = state_step(step_exp2<kFast>(delta * A2[q]), h[q], dlu, bq[jj]);
            y4[jj] = fmaf(cq[jj], h[q], y4[jj]);
          }
        }
        float y = (y4[0] + y4[1]) + (y4[2] + y4[3]);
#pragma unroll
        for (int o = kLanes / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
        const int p = pos[i];
        if (sg == 0 && active && p >= 0) ys_bk[int64_t(p) * s.D] = fmaf(c.Dk, uv, y);
      }
    }
  }
}

// Lanes per channel: the fewest that still give every SM kMinWarpsPerSM warps (more lanes
// repeat each step's Δ on every lane of the channel). 16 would give MedMamba-T's first stage
// 4 lanes and twice the warps instead of 2: measured, 1.6 -> 2.6 ms a launch. 1 lane there
// (half the warps, 5.8 an SM on the H100 at batch 64) measured 1.51 -> 1.57-1.60 ms.
constexpr int kMinWarpsPerSM = 8;
static int64_t forward_warps(const Dims& s, int lanes) {
  return int64_t(s.B) * 4 * s.nsegs * ((s.D + kWarp / lanes - 1) / (kWarp / lanes));
}

template <bool kFast, int kLanes, int kRMax>
void launch_forward_main(const Dims& s, const float* u, const ScanTrainWeights& w, const Workspace& ws,
                         float* states, Stream st) {
  auto smem_bytes = [](int R) {  // two buffers per warp
    return sizeof(float) * 2 * kForwardWarps * size_t(forward_buffer_floats(forward_row_floats(R, kRMax), kLanes));
  };
  const size_t smem = smem_bytes(s.R);
  static const bool opted_in = [&] {  // above 48 KB a kernel must ask for its shared memory
    MM_CUDA_CHECK(cudaFuncSetAttribute(scan_forward_kernel<kFast, kLanes, kRMax>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes(kMaxR))));
    return true;
  }();
  (void)opted_in;
  scan_forward_kernel<kFast, kLanes, kRMax><<<grid_for(forward_warps(s, kLanes), kForwardWarps),
                                              kForwardWarps * kWarp, smem, st>>>(s, u, ws.dbl, w, ws.seg_state,
                                                                                 ws.seg_decay, ws.dir0, states);
  MM_CUDA_CHECK_LAUNCH("scan_train_forward");
}

template <bool kFast, int kLanes>
void launch_forward_lanes(const Dims& s, const float* u, const ScanTrainWeights& w, const Workspace& ws,
                          float* states, Stream st) {
  if (s.R <= 8) launch_forward_main<kFast, kLanes, 8>(s, u, w, ws, states, st);
  else if (s.R <= 16) launch_forward_main<kFast, kLanes, 16>(s, u, w, ws, states, st);
  else if (s.R <= 32) launch_forward_main<kFast, kLanes, 32>(s, u, w, ws, states, st);
  else launch_forward_main<kFast, kLanes, 0>(s, u, w, ws, states, st);
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
  static const int64_t enough = int64_t(sm_count()) * kMinWarpsPerSM;
  const int lanes = s.forward_lanes                   ? s.forward_lanes
                    : forward_warps(s, 1) >= enough ? 1
                    : forward_warps(s, 2) >= enough ? 2
                                                    : 4;
  if (lanes == 1) launch_forward_lanes<kFast, 1>(s, u, w, ws, states, st);
  else if (lanes == 2) launch_forward_lanes<kFast, 2>(s, u, w, ws, states, st);
  else launch_forward_lanes<kFast, 4>(s, u, w, ws, states, st);
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

XProjWeight x_proj_weight(const Dims& s, const float* weight, const Workspace& ws, Stream st) {
  if (!ws.x_proj_pad || gemm_compute() != GemmCompute::BF16) return {f32_operand(weight, s.D), s.KC};
  auto* pad = reinterpret_cast<uint16_t*>(ws.x_proj_pad);
  const GemmOperand w = bf16_packed_copy(weight, s.KC, s.D, s.D, pad, st);
  MM_CUDA_CHECK(cudaMemsetAsync(pad + int64_t(s.KC) * s.D, 0, sizeof(uint16_t) * (s.ldbl - s.KC) * s.D, st));
  return {w, s.ldbl};
}

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
  static const int64_t env_slice = env_count("MM_SCAN_BATCH_SLICE");  // sizes the workspace too
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

// Images per forward slice: whole multiples of backward's slice, as many as forward's own
// pieces of the workspace (carve without backward's) fit in the workspace sized for
// backward's slice (twice as many at 224 px): fewer launches, and more warps in each.
static int64_t forward_batch_slice(const ScanTrainShape& s) {
  const int64_t per = scan_train_batch_slice(s), room = scan_train_workspace_floats(s);
  int64_t best = per;
  for (int64_t b = 2 * per; b - per < s.B; b += per) {
    const int64_t n = std::min(b, s.B);
    if (4 * n > 65535 || carve(make_dims(with_batch(s, n)), nullptr, false).total > room) break;
    best = n;
  }
  return best;
}

static void scan_forward_slice(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, float* out,
                               float* states, float* workspace, Stream st, const uint16_t* u16) {
  const Dims s = make_dims(shape);
  const Workspace ws = carve(s, workspace, false);
  const XProjWeight xw = x_proj_weight(s, w.x_proj_weight, ws, st);
  const GemmOperand u_op = u16 ? bf16_operand(u16, s.D) : f32_operand(u, s.D);
  gemm(false, true, s.BL, xw.cols, s.D, 1.f, u_op, xw.w, 0.f, ws.dbl, s.ldbl, st);
  if (fast_step_math())
    launch_forward<true>(s, u, w, ws, states, st);
  else
    launch_forward<false>(s, u, w, ws, states, st);
  sum_directions(out, ws.dir0, s.BL * s.D, false, st);
}

void scan_train_forward(const ScanTrainShape& shape, const float* u, const ScanTrainWeights& w, float* out,
                        float* states, float* workspace, Stream st, const uint16_t* u16) {
  for_each_batch_slice(shape, forward_batch_slice(shape), [&](const ScanTrainShape& part, int64_t b0) {
    const int64_t rows = b0 * shape.H * shape.W * shape.D;
    float* part_states = states ? states + scan_train_states_floats(with_batch(shape, b0)) : nullptr;
    scan_forward_slice(part, u + rows, w, out + rows, part_states, workspace, st, u16 ? u16 + rows : nullptr);
  });
}

}  // namespace mm::cuda
