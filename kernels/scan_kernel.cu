// SS2D selective scan in one kernel: cross-scan, the four directional recurrences and
// cross-merge (see lib/ops/selective_scan.h for the maths).
//
// Work split: a warp owns one (batch b, direction k, tile of channels) and walks the
// whole sequence of that direction. Each channel's 16-float state lives in registers,
// split over kLanes lanes (1, 2 or 4: more lanes per channel means more warps, which
// small batches need to fill the GPU). No 4x copies of the activations: the direction
// only changes which position p(l) a step reads, and each step adds its y into the
// float32 output at p(l) with one coalesced atomic add per warp (the four directions
// of a position are summed in L2; the caller zeroes y).
//
// Per chunk of kChunk steps the warp stages in shared memory what it reads: the
// positions, the rows [dt (padded to kRMax) | B | C] of x_proj's output (shared by all its
// channels) and its channels' u. Staging is double-buffered with cp.async, so the next
// chunk's loads are in flight while this one computes (a warp is otherwise latency-bound
// on them: one HBM round trip per chunk). The dt projection (R multiply-adds per channel
// and step) is done here from the staged row, so Δ never exists in memory.
// exp(Δ·A) is exp2(Δ·A·log2 e) on the SFU: one per (position, direction, channel, state),
// the kernel's floor. Indices are 32-bit (checked at launch).
//
// Segmented scan (small batches). At batch 1 there are too few (b, k, tile) warps to fill
// the GPU (48 in MedMamba-T's first stage, each walking 3,136 steps alone: latency-bound),
// so the sequence is also cut into S segments of seg_len steps (a multiple of kChunk), each
// walked by its own warp, in three launches:
//   1. kLocal: segments 0..S-2 run from a zero state and store their end state h_s and their
//      decay sum Σ Δ·A·log2(e) per (channel, state) (the log2 of the product of their
//      exp(Δ·A)); no y, and only [dt | B] of each row is staged.
//   2. combine: one thread per (b, k, channel, state) folds the segments in order,
//      h_init(s+1) = exp2(decay_s)·h_init(s) + h_s, and stores h_init(s+1) over h_s.
//   3. kEmit: every segment reruns from its true initial state and emits y (this is the
//      whole-sequence kernel when S = 1).
// Twice the exps, but S times the warps; the state stays float32 throughout.
#include <algorithm>
#include <climits>
#include <cstdlib>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

namespace {

constexpr int kN = kScanStates;
constexpr int kMaxWarps = 4;  // per block; warps are independent (no block barrier)
constexpr int kChunk = 16;

enum Pass { kWhole = 0, kLocal = 1, kEmit = 2 };  // kWhole: kEmit of one segment, as its own code

// How a launch splits each (b, k, tile) sequence (kWhole ignores it: one segment).
struct SegPlan {
  int seg_len = 0;            // steps per segment, a multiple of kChunk
  int launched = 1;           // segments per sequence in this launch (S-1 for kLocal, S for kEmit)
  float* hstate = nullptr;    // (S-1, B·4·D, N): kLocal's end states; after the combine,
                              // entry s holds the initial state of segment s+1
  float* decay = nullptr;     // (S-1, B·4·D, N): Σ Δ·A·log2(e) over each segment
};

// softplus(x) = max(x,0) + log1p(e^-|x|), log1p(t) = 2·atanh(s) with s = t/(2+t) <= 1/3:
// the series to s^15 is accurate to ~1e-8 relative (log1pf costs twice the instructions).
// PyTorch returns x itself above 20; so does this, with no branch: there the second term is
// below 2.1e-9, under half an ulp of 20. (A branch here split the step loop into a basic
// block per step, so no step's softplus could overlap another's state updates.)
__device__ __forceinline__ float softplus_f(float x) {
  const float t = __expf(-fabsf(x));
  const float s = __fdividef(t, 2.f + t), s2 = s * s;
  float q = 1.f / 15;
  q = fmaf(q, s2, 1.f / 13);
  q = fmaf(q, s2, 1.f / 11);
  q = fmaf(q, s2, 1.f / 9);
  q = fmaf(q, s2, 1.f / 7);
  q = fmaf(q, s2, 1.f / 5);
  q = fmaf(q, s2, 1.f / 3);
  q = fmaf(q, s2, 1.f);
  return fmaxf(x, 0.f) + 2.f * s * q;
}

template <class T, int kLanes, int kRMax, int kPass>
struct ScanTile {
  static constexpr int kStates = kN / kLanes;                // per lane
  static constexpr int kChannels = 32 / kLanes;              // per warp
  static constexpr int kRow = kRMax + 2 * kN;                // a direction's row: dt (zero padded), B, C
  static constexpr int kRowVecs = kRow / 4;                  // in 16-byte words
  static constexpr int kStagedVecs = (kPass == kLocal ? kRMax + kN : kRow) / 4;  // kLocal needs no C
  static constexpr int kUVecs = kChannels * int(sizeof(T)) / 16;  // u of one position, in 16-byte words
  static_assert(kUVecs >= 1, "a warp's channels must fill a 16-byte word");
  struct Buffer {
    float4 rows[kChunk][kStagedVecs];
    uint4 u[kChunk][kUVecs];
    int pos[kChunk];  // b·L + position, or -1 past the end
  };
};

template <class T, int kLanes, int kRMax, int kPass>
__global__ void __launch_bounds__(kMaxWarps * 32) ss2d_scan_kernel(ScanArgs a, SegPlan sp) {
  using Tile = ScanTile<T, kLanes, kRMax, kPass>;
  constexpr int kStates = Tile::kStates, kChannels = Tile::kChannels, kRowVecs = Tile::kRowVecs;
  constexpr int kStagedVecs = Tile::kStagedVecs, kUVecs = Tile::kUVecs;
  extern __shared__ __align__(16) unsigned char smem_raw[];  // 2 buffers per warp

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int D = int(a.D), R = int(a.R), H = int(a.H), W = int(a.W), L = H * W;
  const int tiles = (D + kChannels - 1) / kChannels;
  const int task = blockIdx.x * (blockDim.x / 32) + warp;  // ((b·4 + k)·tiles + tile)·launched + seg
  const int launched = kPass == kWhole ? 1 : sp.launched;
  if (task >= int(a.B) * 4 * tiles * launched) return;  // whole warp leaves together
  const int seg = kPass == kWhole ? 0 : task % launched, seq = kPass == kWhole ? task : task / launched;
  const int tile = seq % tiles, k = (seq / tiles) % 4, b = seq / (tiles * 4);

  const int ch = lane / kLanes, sg = lane % kLanes;  // channel in tile, state group
  const int d0 = tile * kChannels, d = d0 + ch;
  const bool valid = d < D;
  // Each step, lane i adds the y of channel d0 + i (i < kChannels) at column ycol of the
  // step's row, and the other lanes add 0 at distinct columns of the same row: an add with
  // no predicate. ptxas puts a predicated add (or an `if`) in a branch, and the branches
  // split the step loop into blocks that the scheduler cannot overlap.
  const int ycol = (d0 + lane) % D;  // distinct over the warp when D >= 32
  const bool yown = lane < kChannels && d0 + lane < D;
  const int kd = k * D + (valid ? d : 0);
  // This lane's states in the segment buffers: ((b·4 + k)·D + d)·N + sg·kStates (< 2^31: checked at launch).
  const int E = int(a.B) * 4 * D * kN, sidx = ((b * 4 + k) * D + (valid ? d : 0)) * kN + sg * kStates;

  float A2[kStates], h[kStates], wdt[kRMax];
#pragma unroll
  for (int n = 0; n < kStates; ++n) {
    A2[n] = -__expf(a.A_logs[kd * kN + sg * kStates + n]) * 1.4426950408889634f;  // A·log2(e)
    h[n] = 0.f;
  }
  if (kPass == kEmit && seg > 0) {  // the combine pass left this segment's initial state here
    const float4* h0 = reinterpret_cast<const float4*>(sp.hstate + size_t(seg - 1) * E + sidx);
#pragma unroll
    for (int n = 0; n < kStates / 4; ++n) {
      const float4 v = h0[n];
      h[4 * n] = v.x; h[4 * n + 1] = v.y; h[4 * n + 2] = v.z; h[4 * n + 3] = v.w;
    }
  }
  float decay[kPass == kLocal ? kStates : 1];
#pragma unroll
  for (int n = 0; n < (kPass == kLocal ? kStates : 1); ++n) decay[n] = 0.f;
#pragma unroll
  for (int r = 0; r < kRMax; ++r) wdt[r] = r < R ? a.dt_w[kd * R + r] : 0.f;
  const float dt_bias = a.dt_b[kd], Dk = a.Ds[kd];

  const float4* dbl_k = reinterpret_cast<const float4*>(a.dbl) + k * kRowVecs;  // direction k's row part
  const uint4* u_vecs = static_cast<const uint4*>(a.u);
  const int u_vecs_per_row = D * int(sizeof(T)) / 16, u_vec0 = d0 * int(sizeof(T)) / 16;

  // Issue the 16-byte copies of chunk c into buf (positions past the end or channels
  // past D are filled with zeros).
  auto stage = [&](int c, typename Tile::Buffer& buf) {
    const int l0 = c * kChunk;
    if (lane < kChunk) buf.pos[lane] = l0 + lane < L ? b * L + scan_position(k, l0 + lane, H, W) : -1;
    __syncwarp();
#pragma unroll
    for (int it = 0; it < (kChunk * kStagedVecs + 31) / 32; ++it) {
      const int q = it * 32 + lane;
      if (q < kChunk * kStagedVecs) {
        const int i = q / kStagedVecs, part = q % kStagedVecs, p = buf.pos[i];
        cp_async16(&buf.rows[i][part], p >= 0 ? dbl_k + size_t(p) * 4 * kRowVecs + part : dbl_k, p >= 0);
      }
    }
#pragma unroll
    for (int it = 0; it < (kChunk * kUVecs + 31) / 32; ++it) {
      const int q = it * 32 + lane;
      if (q < kChunk * kUVecs) {
        const int i = q / kUVecs, part = q % kUVecs, p = buf.pos[i];
        const bool ok = p >= 0 && u_vec0 + part < u_vecs_per_row;
        cp_async16(&buf.u[i][part], ok ? u_vecs + size_t(p) * u_vecs_per_row + u_vec0 + part : u_vecs, ok);
      }
    }
    cp_async_commit();
  };

  typename Tile::Buffer* bufs = reinterpret_cast<typename Tile::Buffer*>(smem_raw) + 2 * warp;
  // This segment's chunks [c0, c1). kLocal never runs the last segment, so its chunks are
  // all whole and inside the sequence.
  const int chunks = (L + kChunk - 1) / kChunk, seg_chunks = kPass == kWhole ? chunks : sp.seg_len / kChunk;
  const int c0 = kPass == kWhole ? 0 : seg * seg_chunks, c1 = kPass == kWhole ? chunks : min(chunks, c0 + seg_chunks);
  stage(c0, bufs[0]);
  for (int c = c0; c < c1; ++c) {
    if (c + 1 < c1) stage(c + 1, bufs[(c - c0 + 1) & 1]);
    else cp_async_commit();  // an empty group keeps the wait below uniform
    cp_async_wait<1>();  // all but the newest group
    __syncwarp();
    const typename Tile::Buffer& buf = bufs[(c - c0) & 1];
    const T* us = reinterpret_cast<const T*>(&buf.u[0][0]);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      // Past the end (p < 0) the staged row and u are zeros: the step only decays h, which
      // is no longer used, and stores nothing. No branch, so the compiler can overlap the
      // steps' softplus and exps (only h is carried from step to step).
      const int p = buf.pos[i];
      const float* row = reinterpret_cast<const float*>(buf.rows[i]);
      const float uv = to_f32(us[i * kChannels + ch]);
      float dt = dt_bias;
#pragma unroll
      for (int r = 0; r < kRMax; ++r) dt = fmaf(wdt[r], row[r], dt);
      const float delta = softplus_f(dt);
      const float du = delta * uv;
      const float* Bv = row + kRMax + sg * kStates;
      if constexpr (kPass == kLocal) {
#pragma unroll
        for (int n = 0; n < kStates; ++n) {
          const float dA = delta * A2[n];
          decay[n] += dA;
          h[n] = fmaf(exp2f(dA), h[n], du * Bv[n]);
        }
      } else {
        const float* Cv = row + kRMax + kN + sg * kStates;
        float y = 0.f;
#pragma unroll
        for (int n = 0; n < kStates; ++n) {
          h[n] = fmaf(exp2f(delta * A2[n]), h[n], du * Bv[n]);
          y = fmaf(Cv[n], h[n], y);
        }
#pragma unroll
        for (int o = kLanes / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
        float v = fmaf(Dk, uv, y);
        if constexpr (kLanes > 1) v = __shfl_sync(0xffffffffu, v, (lane % kChannels) * kLanes);
        atomicAdd(a.y + (max(p, 0) * D + ycol), yown && p >= 0 ? v : 0.f);  // p·D < 2^31: checked at launch
      }
    }
    __syncwarp();  // buffer (c-c0)&1 is restaged two chunks later
  }
  if constexpr (kPass == kLocal) {
    if (valid) {
      float4* hs = reinterpret_cast<float4*>(sp.hstate + size_t(seg) * E + sidx);
      float4* ds = reinterpret_cast<float4*>(sp.decay + size_t(seg) * E + sidx);
#pragma unroll
      for (int n = 0; n < kStates / 4; ++n) {
        hs[n] = make_float4(h[4 * n], h[4 * n + 1], h[4 * n + 2], h[4 * n + 3]);
        ds[n] = make_float4(decay[4 * n], decay[4 * n + 1], decay[4 * n + 2], decay[4 * n + 3]);
      }
    }
  }
}

// Pass 2 of the segmented scan: one thread per (b, k, channel, state) walks the S-1 stored
// segments in order. Loads are issued kAhead segments at a time, so that only the fold
// (one exp2 and one fma per segment) is sequential.
__global__ void ss2d_scan_combine_kernel(float* __restrict__ hstate, const float* __restrict__ decay, int E,
                                         int stored) {
  constexpr int kAhead = 8;
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  float h = 0.f;
  for (int s0 = 0; s0 < stored; s0 += kAhead) {
    float hs[kAhead], ds[kAhead];
#pragma unroll
    for (int j = 0; j < kAhead; ++j) {
      const bool in = s0 + j < stored;
      hs[j] = in ? hstate[size_t(s0 + j) * E + e] : 0.f;
      ds[j] = in ? decay[size_t(s0 + j) * E + e] : 0.f;
    }
#pragma unroll
    for (int j = 0; j < kAhead; ++j) {
      h = fmaf(exp2f(ds[j]), h, hs[j]);
      if (s0 + j < stored) hstate[size_t(s0 + j) * E + e] = h;  // initial state of segment s0+j+1
    }
  }
}

// How ss2d_scan splits the work: lanes per channel, and segments per sequence (1 = whole).
struct Plan {
  int lanes = 4;
  int segments = 1;
  int seg_len = 0;  // multiple of kChunk
};

template <class T, int kLanes, int kRMax, int kPass>
void launch_pass(const ScanArgs& a, const SegPlan& sp, Stream s) {
  constexpr int kChannels = 32 / kLanes;
  const int64_t warps = a.B * 4 * ((a.D + kChannels - 1) / kChannels) * sp.launched;
  // Few warps (small batches): one per block, so that they spread over the SMs instead of
  // sharing the issue slots of a few.
  static const int sms = sm_count();
  const int per_block = warps >= 4 * int64_t(sms) ? kMaxWarps : 1;
  const size_t buffer = sizeof(typename ScanTile<T, kLanes, kRMax, kPass>::Buffer);
  static const bool opted_in = [&] {  // above 48 KB a kernel must ask for its shared memory
    MM_CUDA_CHECK(cudaFuncSetAttribute(ss2d_scan_kernel<T, kLanes, kRMax, kPass>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(buffer * 2 * kMaxWarps)));
    return true;
  }();
  (void)opted_in;
  ss2d_scan_kernel<T, kLanes, kRMax, kPass>
      <<<grid_for(warps, per_block), per_block * 32, buffer * 2 * per_block, s>>>(a, sp);
  MM_CUDA_CHECK_LAUNCH(kPass == kLocal ? "ss2d_scan (segment states)" : "ss2d_scan");
}

template <class T, int kLanes, int kRMax>
void launch_scan(const ScanArgs& a, const Plan& plan, Stream s) {
  SegPlan sp;
  sp.seg_len = plan.seg_len;
  if (plan.segments > 1) {
    const int64_t E = a.B * 4 * a.D * kN;
    sp.hstate = a.workspace;
    sp.decay = a.workspace + (plan.segments - 1) * E;
    sp.launched = plan.segments - 1;
    launch_pass<T, kLanes, kRMax, kLocal>(a, sp, s);
    ss2d_scan_combine_kernel<<<grid_for(E, 256), 256, 0, s>>>(sp.hstate, sp.decay, int(E), plan.segments - 1);
    MM_CUDA_CHECK_LAUNCH("ss2d_scan (segment combine)");
  }
  sp.launched = plan.segments;
  if (plan.segments > 1) launch_pass<T, kLanes, kRMax, kEmit>(a, sp, s);
  else launch_pass<T, kLanes, kRMax, kWhole>(a, sp, s);
}

template <class T, int kLanes>
void launch_lanes(const ScanArgs& a, const Plan& p, Stream s) {
  if (a.R <= 4) launch_scan<T, kLanes, 4>(a, p, s);
  else if (a.R <= 8) launch_scan<T, kLanes, 8>(a, p, s);
  else if (a.R <= 16) launch_scan<T, kLanes, 16>(a, p, s);
  else if (a.R <= 32) launch_scan<T, kLanes, 32>(a, p, s);
  else throw Error("ss2d_scan: dt_rank " + std::to_string(a.R) + " > 32 is not supported");
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

int64_t warps_for(const ScanArgs& a, int lanes) { return a.B * 4 * ((a.D + 32 / lanes - 1) / (32 / lanes)); }

// Fewest lanes per channel (least duplicated work) that still gives every SM
// enough warps: measured on an H100, one lane per channel wins from 8 warps per SM up.
int choose_lanes(const ScanArgs& a) {
  static const int forced = env_int("MM_SCAN_LANES", 0);  // tuning experiments: 1, 2 or 4
  if (forced) return forced;
  static const int sms = sm_count();
  const int64_t target = int64_t(sms) * 8;
  for (int lanes : {1, 2})
    if (warps_for(a, lanes) >= target) return lanes;
  return 4;
}

// Tuning knobs of the segmented path (defaults measured on an H100, see docs/benchmarks-gpu.md):
// lanes per channel when segmenting, the warps per SM to aim for, the shortest segment.
struct SegTuning {
  int lanes = env_int("MM_SCAN_SEG_LANES", 2);
  int warps_per_sm = env_int("MM_SCAN_SEG_WPS", 16);
  int min_len = env_int("MM_SCAN_MIN_SEG", 32);
};

Plan make_plan(const ScanArgs& a) {
  const int64_t L = a.H * a.W;
  Plan whole;
  whole.lanes = a.lanes_per_channel ? a.lanes_per_channel : choose_lanes(a);
  whole.seg_len = int((L + kChunk - 1) / kChunk * kChunk);
  static const int forced = env_int("MM_SCAN_SEGMENTS", 0);  // tuning experiments: 1 = never segment
  Plan p = whole;
  int64_t want = a.segments ? a.segments : forced;
  if (want == 0) {
    // Segment only when the whole-sequence scan leaves the GPU short of warps (fewer than
    // choose_lanes' 8 per SM even at 4 lanes a channel: small batches), into enough segments
    // for t.warps_per_sm warps per SM, none shorter than t.min_len steps.
    static const int sms = sm_count();
    static const SegTuning t;
    if (warps_for(a, whole.lanes) >= int64_t(sms) * 8) return whole;
    if (!a.lanes_per_channel) p.lanes = t.lanes;
    const int64_t warps = warps_for(a, p.lanes), target = int64_t(sms) * t.warps_per_sm;
    want = std::min<int64_t>((target + warps - 1) / warps, L / std::max(t.min_len, 1));
  }
  if (want <= 1) return whole;
  const int64_t len = ((L + want - 1) / want + kChunk - 1) / kChunk * kChunk;
  if (len >= L) return whole;
  p.segments = int((L + len - 1) / len);
  p.seg_len = int(len);
  return p;
}

int64_t plan_workspace(const ScanArgs& a, const Plan& p) {
  return p.segments > 1 ? 2 * int64_t(p.segments - 1) * a.B * 4 * a.D * kN : 0;
}

}  // namespace

int64_t scan_padded_rank(int64_t R) {
  MM_CHECK(R >= 1 && R <= 32, "ss2d_scan: dt_rank " + std::to_string(R) + " outside 1..32");
  return R <= 4 ? 4 : R <= 8 ? 8 : R <= 16 ? 16 : 32;
}

int64_t ss2d_scan_workspace_floats(const ScanArgs& a) { return plan_workspace(a, make_plan(a)); }

void ss2d_scan(const ScanArgs& a, Stream s) {
  MM_CHECK(a.B > 0 && a.H > 0 && a.W > 0 && a.D > 0 && a.R > 0, "ss2d_scan: empty or negative shape");
  const int64_t P = a.B * a.H * a.W;
  MM_CHECK(P * std::max<int64_t>(a.D, 4 * (32 + 2 * kN)) < INT_MAX && a.B * 4 * a.D < INT_MAX,
           "ss2d_scan: shape too large for 32-bit indexing (B=" + std::to_string(a.B) + ")");
  MM_CHECK(a.D * int64_t(dtype_size(a.u_type)) % 16 == 0 && reinterpret_cast<uintptr_t>(a.u) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(a.dbl) % 16 == 0,
           "ss2d_scan: u rows must be whole 16-byte words (D=" + std::to_string(a.D) + ") and u, dbl 16-byte aligned");
  MM_CHECK(a.segments >= 0, "ss2d_scan: negative segment count");
  Plan plan = make_plan(a);
  if (plan.segments > 1 && !a.workspace) {
    // No workspace: an explicit request is an error, the automatic choice falls back to
    // the whole-sequence scan.
    MM_CHECK(a.segments <= 1, "ss2d_scan: " + std::to_string(a.segments) +
                                  " segments need a workspace of ss2d_scan_workspace_floats() floats");
    ScanArgs whole = a;
    whole.segments = 1;
    plan = make_plan(whole);
  }
  MM_CHECK(plan.segments <= 1 || (reinterpret_cast<uintptr_t>(a.workspace) % 16 == 0 &&
                                   a.B * 4 * a.D * kN * plan.segments < INT_MAX),
           "ss2d_scan: the workspace must be 16-byte aligned, and B·4·D·16·segments < 2^31");
  dispatch_dtype(a.u_type, "ss2d_scan", [&](auto t) {
    using T = decltype(t);
    switch (plan.lanes) {
      case 1: launch_lanes<T, 1>(a, plan, s); break;
      case 2: launch_lanes<T, 2>(a, plan, s); break;
      case 4: launch_lanes<T, 4>(a, plan, s); break;
      default: throw Error("ss2d_scan: lanes_per_channel must be 1, 2 or 4");
    }
  });
}

}  // namespace mm::cuda
