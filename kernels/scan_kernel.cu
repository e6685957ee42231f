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

__device__ __forceinline__ int scan_position(int k, int l, int H, int W) {
  if (k >= 2) l = H * W - 1 - l;  // k=2,3 run k=0,1 backwards
  if (k % 2 == 0) return l;       // row-major: l = h·W + w
  const int w = l / H, h = l - w * H;  // column-major: l = w·H + h
  return h * W + w;
}

// 16-byte global -> shared copy that completes asynchronously (bypassing L1); !valid writes zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all_but_newest() { asm volatile("cp.async.wait_group 1;\n" ::); }

// softplus(x) = max(x,0) + log1p(e^-|x|), log1p(t) = 2·atanh(s) with s = t/(2+t) <= 1/3:
// the series to s^15 is accurate to ~1e-8 relative (log1pf costs twice the instructions).
// PyTorch returns x itself above 20.
__device__ __forceinline__ float softplus_f(float x) {
  if (x > 20.f) return x;
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

template <class T, int kLanes, int kRMax>
struct ScanTile {
  static constexpr int kStates = kN / kLanes;                // per lane
  static constexpr int kChannels = 32 / kLanes;              // per warp
  static constexpr int kRow = kRMax + 2 * kN;                // staged row: dt (zero padded), B, C
  static constexpr int kRowVecs = kRow / 4;                  // in 16-byte words
  static constexpr int kUVecs = kChannels * int(sizeof(T)) / 16;  // u of one position, in 16-byte words
  static_assert(kUVecs >= 1, "a warp's channels must fill a 16-byte word");
  struct Buffer {
    float4 rows[kChunk][kRowVecs];
    uint4 u[kChunk][kUVecs];
    int pos[kChunk];  // b·L + position, or -1 past the end
  };
};

template <class T, int kLanes, int kRMax>
__global__ void __launch_bounds__(kMaxWarps * 32) ss2d_scan_kernel(ScanArgs a) {
  using Tile = ScanTile<T, kLanes, kRMax>;
  constexpr int kStates = Tile::kStates, kChannels = Tile::kChannels, kRowVecs = Tile::kRowVecs;
  constexpr int kUVecs = Tile::kUVecs;
  extern __shared__ __align__(16) unsigned char smem_raw[];  // 2 buffers per warp

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int D = int(a.D), R = int(a.R), H = int(a.H), W = int(a.W), L = H * W;
  const int tiles = (D + kChannels - 1) / kChannels;
  const int task = blockIdx.x * (blockDim.x / 32) + warp;  // ((b·4 + k)·tiles + tile)
  if (task >= int(a.B) * 4 * tiles) return;     // whole warp leaves together
  const int tile = task % tiles, k = (task / tiles) % 4, b = task / (tiles * 4);

  const int ch = lane / kLanes, sg = lane % kLanes;  // channel in tile, state group
  const int d0 = tile * kChannels, d = d0 + ch;
  const bool valid = d < D;
  const int kd = k * D + (valid ? d : 0);

  float A2[kStates], h[kStates], wdt[kRMax];
#pragma unroll
  for (int n = 0; n < kStates; ++n) {
    A2[n] = -__expf(a.A_logs[kd * kN + sg * kStates + n]) * 1.4426950408889634f;  // A·log2(e)
    h[n] = 0.f;
  }
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
    for (int it = 0; it < (kChunk * kRowVecs + 31) / 32; ++it) {
      const int q = it * 32 + lane;
      if (q < kChunk * kRowVecs) {
        const int i = q / kRowVecs, part = q % kRowVecs, p = buf.pos[i];
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
  const int chunks = (L + kChunk - 1) / kChunk;
  stage(0, bufs[0]);
  for (int c = 0; c < chunks; ++c) {
    if (c + 1 < chunks) stage(c + 1, bufs[(c + 1) & 1]);
    else cp_async_commit();  // an empty group keeps the wait below uniform
    cp_async_wait_all_but_newest();
    __syncwarp();
    const typename Tile::Buffer& buf = bufs[c & 1];
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
      const float* Cv = row + kRMax + kN + sg * kStates;
      float y = 0.f;
#pragma unroll
      for (int n = 0; n < kStates; ++n) {
        h[n] = fmaf(exp2f(delta * A2[n]), h[n], du * Bv[n]);
        y = fmaf(Cv[n], h[n], y);
      }
#pragma unroll
      for (int o = kLanes / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
      if (sg == 0 && valid && p >= 0) atomicAdd(a.y + (p * D + d), fmaf(Dk, uv, y));  // p·D < 2^31: checked at launch
    }
    __syncwarp();  // buffer c&1 is restaged two chunks later
  }
}

template <class T, int kLanes, int kRMax>
void launch_scan(const ScanArgs& a, Stream s) {
  constexpr int kChannels = 32 / kLanes;
  const int64_t warps = a.B * 4 * ((a.D + kChannels - 1) / kChannels);
  // Few warps (small batches): one per block, so that they spread over the SMs instead of
  // sharing the issue slots of a few.
  static const int sms = sm_count();
  const int per_block = warps >= 4 * int64_t(sms) ? kMaxWarps : 1;
  const size_t buffer = sizeof(typename ScanTile<T, kLanes, kRMax>::Buffer);
  static const bool opted_in = [&] {  // above 48 KB a kernel must ask for its shared memory
    MM_CUDA_CHECK(cudaFuncSetAttribute(ss2d_scan_kernel<T, kLanes, kRMax>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(buffer * 2 * kMaxWarps)));
    return true;
  }();
  (void)opted_in;
  ss2d_scan_kernel<T, kLanes, kRMax><<<grid_for(warps, per_block), per_block * 32, buffer * 2 * per_block, s>>>(a);
  MM_CUDA_CHECK_LAUNCH("ss2d_scan");
}

template <class T, int kLanes>
void launch_lanes(const ScanArgs& a, Stream s) {
  if (a.R <= 4) launch_scan<T, kLanes, 4>(a, s);
  else if (a.R <= 8) launch_scan<T, kLanes, 8>(a, s);
  else if (a.R <= 16) launch_scan<T, kLanes, 16>(a, s);
  else if (a.R <= 32) launch_scan<T, kLanes, 32>(a, s);
  else throw Error("ss2d_scan: dt_rank " + std::to_string(a.R) + " > 32 is not supported");
}

// Fewest lanes per channel (least duplicated work) that still gives every SM
// enough warps: measured on an H100, one lane per channel wins from 8 warps per SM up.
int choose_lanes(const ScanArgs& a) {
  static const char* forced = std::getenv("MM_SCAN_LANES");  // tuning experiments: 1, 2 or 4
  if (forced) return std::atoi(forced);
  static const int sms = sm_count();
  const int64_t target = int64_t(sms) * 8;
  for (int lanes : {1, 2}) {
    const int64_t warps = a.B * 4 * ((a.D + 32 / lanes - 1) / (32 / lanes));
    if (warps >= target) return lanes;
  }
  return 4;
}

}  // namespace

int64_t scan_padded_rank(int64_t R) {
  MM_CHECK(R >= 1 && R <= 32, "ss2d_scan: dt_rank " + std::to_string(R) + " outside 1..32");
  return R <= 4 ? 4 : R <= 8 ? 8 : R <= 16 ? 16 : 32;
}

void ss2d_scan(const ScanArgs& a, Stream s) {
  MM_CHECK(a.B > 0 && a.H > 0 && a.W > 0 && a.D > 0 && a.R > 0, "ss2d_scan: empty or negative shape");
  const int64_t P = a.B * a.H * a.W;
  MM_CHECK(P * std::max<int64_t>(a.D, 4 * (32 + 2 * kN)) < INT_MAX && a.B * 4 * a.D < INT_MAX,
           "ss2d_scan: shape too large for 32-bit indexing (B=" + std::to_string(a.B) + ")");
  MM_CHECK(a.D * int64_t(dtype_size(a.u_type)) % 16 == 0 && reinterpret_cast<uintptr_t>(a.u) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(a.dbl) % 16 == 0,
           "ss2d_scan: u rows must be whole 16-byte words (D=" + std::to_string(a.D) + ") and u, dbl 16-byte aligned");
  const int lanes = a.lanes_per_channel ? a.lanes_per_channel : choose_lanes(a);
  dispatch_dtype(a.u_type, "ss2d_scan", [&](auto t) {
    using T = decltype(t);
    switch (lanes) {
      case 1: launch_lanes<T, 1>(a, s); break;
      case 2: launch_lanes<T, 2>(a, s); break;
      case 4: launch_lanes<T, 4>(a, s); break;
      default: throw Error("ss2d_scan: lanes_per_channel must be 1, 2 or 4");
    }
  });
}

}  // namespace mm::cuda
