#pragma once
// The per-channel sums of the norm training kernels (train_layernorm_kernels.cu,
// train_batchnorm_kernels.cu): LayerNorm dweight/dbias, BatchNorm statistics and gradients.
// They are deterministic: stage one gives each thread one channel of one fixed chunk of
// kChunkRows rows, and each block adds its chunks in order into a double partial in the
// reduction scratch; stage two sums a channel's partials in a fixed order (one warp per
// channel). As on the CPU, runs of kRowBlock rows are summed in float before they are added
// into double, so accuracy does not degrade with N.
#include <climits>
#include <string>

#include "cuda_common.cuh"
#include "cuda_scratch.h"
#include "cuda_train_ops.h"

namespace mm::cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kRowBlock = 64;     // rows summed in float (as lib/ops/batchnorm.cpp)
// Rows per stage-one partial: one float run, so that a thread's loads can all be in flight
// at once (with 256 rows per thread, too few threads walked too long a dependent chain).
constexpr int64_t kChunkRows = kRowBlock;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------------------
// Per-channel sums s1[c] = sum_r term1(r,c), s2[c] = sum_r term2(r,c) in two stages.
//
// Stage one: a block of kThreads threads is a tile of `tile` channels (32, or 16 where C is
// not a multiple of 32, so that MedMamba's 48 channels keep every lane busy) by kThreads/tile
// consecutive chunks, a thread one (channel, chunk); the block adds its chunks' partials in
// order and writes one partial per (group of chunks, channel). Stage two then reads a
// sixteenth or an eighth of the chunks: with one partial per chunk, it read 3,136 of them per
// channel at MedMamba-T's first stage, with one warp per channel, at about 44 us a launch.
// Stage two stays a kernel of its own: run instead by the last block of each channel tile to
// finish stage one (an integer counter per tile), the same sums took 3.26 ms of an eager T
// bf16 step at batch 64 against 2.06 + 0.63 ms in two kernels (ncu, H100, 2026-12-06): one
// block finishing a tile's channels is a longer serial tail than a launch.

inline int64_t chunks_for(int64_t N) { return (N + kChunkRows - 1) / kChunkRows; }
inline int channel_tile(int64_t C) { return C % 32 == 0 ? 32 : 16; }
inline int64_t groups_for(int64_t N, int64_t C) {
  const int64_t per_group = kThreads / channel_tile(C);
  return (chunks_for(N) + per_group - 1) / per_group;
}

// grid (groups, channel tiles): writes part[group*C + c] and part[groups*C + group*C + c].
template <class Term>
__global__ void __launch_bounds__(kThreads)
channel_partials_kernel(double* part, int64_t N, int64_t C, int64_t groups, int tile, Term term) {
  __shared__ double sums[2][kThreads];
  const int tx = int(threadIdx.x) % tile, ty = int(threadIdx.x) / tile, per_group = kThreads / tile;
  const int64_t c = int64_t(blockIdx.y) * tile + tx;
  const int64_t r0 = (int64_t(blockIdx.x) * per_group + ty) * kChunkRows, r1 = min(N, r0 + kChunkRows);
  float a1 = 0.f, a2 = 0.f;  // one float run (kChunkRows == kRowBlock)
  if (c < C) {
#pragma unroll 8
    for (int64_t r = r0; r < r1; ++r) term(r, c, a1, a2);
  }
  sums[0][threadIdx.x] = a1;
  sums[1][threadIdx.x] = a2;
  __syncthreads();
  if (ty != 0 || c >= C) return;
  double p1 = 0.0, p2 = 0.0;
  for (int j = 0; j < per_group; ++j) {
    p1 += sums[0][j * tile + tx];
    p2 += sums[1][j * tile + tx];
  }
  part[int64_t(blockIdx.x) * C + c] = p1;
  part[groups * C + int64_t(blockIdx.x) * C + c] = p2;
}

// Stage two: warp c sums its channel's group partials, lane j taking groups j, j+32, ...,
// then a fixed shuffle tree; lane 0 hands (c, s1, s2) to finish.
template <class Finish>
__global__ void channel_finish_kernel(const double* part, int64_t C, int64_t groups, Finish finish) {
  const int64_t c = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (c >= C) return;
  double s1 = 0.0, s2 = 0.0;
  for (int64_t k = lane; k < groups; k += 32) {
    s1 += part[k * C + c];
    s2 += part[groups * C + k * C + c];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s1 += __shfl_xor_sync(0xffffffffu, s1, o);
    s2 += __shfl_xor_sync(0xffffffffu, s2, o);
  }
  if (lane == 0) finish(c, s1, s2);
}

// Scratch layout of one op: the partials, then `per_channel` float rows of C.
struct ChannelScratch {
  double* part;
  float* rows;
  int64_t groups;
};

inline ChannelScratch take_scratch(int64_t N, int64_t C, int per_channel) {
  const int64_t groups = groups_for(N, C);
  const int64_t part_bytes = 2 * groups * C * int64_t(sizeof(double));
  char* base = static_cast<char*>(reduction_scratch(part_bytes + per_channel * C * int64_t(sizeof(float))));
  return {reinterpret_cast<double*>(base), reinterpret_cast<float*>(base + part_bytes), groups};
}

template <class Term, class Finish>
void channel_sums(const ChannelScratch& sc, int64_t N, int64_t C, Term term, Finish finish, Stream s) {
  // Callers return early on an empty batch: an empty grid is a launch error, and a mean of none is 0/0.
  MM_CHECK(N > 0 && C > 0,
           "channel_sums: no rows or no channels (N=" + std::to_string(N) + ", C=" + std::to_string(C) + ")");
  const int tile = channel_tile(C);
  const int64_t tiles = (C + tile - 1) / tile;
  MM_CHECK(sc.groups <= INT_MAX && tiles <= 65535, "channel_sums: too many rows or channels for one grid");
  channel_partials_kernel<<<dim3(unsigned(sc.groups), unsigned(tiles)), kThreads, 0, s>>>(sc.part, N, C, sc.groups,
                                                                                          tile, term);
  MM_CUDA_CHECK_LAUNCH("channel_partials_kernel");
  channel_finish_kernel<<<grid_for(C, kWarpsPerBlock), kThreads, 0, s>>>(sc.part, C, sc.groups, finish);
  MM_CUDA_CHECK_LAUNCH("channel_finish_kernel");
}

// The row stride of x (and dx) an op was given: ld, or C for 0 (packed rows).
inline int64_t row_stride(int64_t ld, int64_t C, const char* what) {
  MM_CHECK(ld == 0 || ld >= C, std::string(what) + ": a row stride shorter than the row");
  return ld ? ld : C;
}

}  // namespace
}  // namespace mm::cuda
