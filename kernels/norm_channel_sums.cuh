#pragma once
// The per-channel sums of the norm training kernels (train_layernorm_kernels.cu,
// train_batchnorm_kernels.cu): LayerNorm dweight/dbias, BatchNorm statistics and gradients.
// They are deterministic: stage one gives each thread one channel of one fixed chunk of
// kChunkRows rows and writes a double partial to the reduction scratch; stage two sums a
// channel's partials in a fixed order (one warp per channel). As on the CPU, runs of kRowBlock
// rows are summed in float before they are added into double, so accuracy does not degrade
// with N.
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

inline int64_t chunks_for(int64_t N) { return (N + kChunkRows - 1) / kChunkRows; }

// Stage one: thread (chunk, c) writes part[chunk*C + c] and part[chunks*C + chunk*C + c].
template <class Term>
__global__ void channel_partials_kernel(double* part, int64_t N, int64_t C, int64_t chunks, Term term) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= chunks * C) return;
  const int64_t chunk = idx / C, c = idx - chunk * C;
  const int64_t r_end = min(N, (chunk + 1) * kChunkRows);
  double p1 = 0.0, p2 = 0.0;
  for (int64_t r0 = chunk * kChunkRows; r0 < r_end; r0 += kRowBlock) {
    float a1 = 0.f, a2 = 0.f;
    const int64_t r1 = min(r_end, r0 + kRowBlock);
#pragma unroll 8
    for (int64_t r = r0; r < r1; ++r) term(r, c, a1, a2);
    p1 += a1;
    p2 += a2;
  }
  part[chunk * C + c] = p1;
  part[chunks * C + chunk * C + c] = p2;
}

// Stage two: warp c sums its channel's chunks, lane j taking chunks j, j+32, ..., then a fixed
// shuffle tree; lane 0 hands (c, s1, s2) to finish.
template <class Finish>
__global__ void channel_finish_kernel(const double* part, int64_t C, int64_t chunks, Finish finish) {
  const int64_t c = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (c >= C) return;
  double s1 = 0.0, s2 = 0.0;
  for (int64_t k = lane; k < chunks; k += 32) {
    s1 += part[k * C + c];
    s2 += part[chunks * C + k * C + c];
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
  int64_t chunks;
};

inline ChannelScratch take_scratch(int64_t N, int64_t C, int per_channel) {
  const int64_t chunks = chunks_for(N);
  const int64_t part_bytes = 2 * chunks * C * int64_t(sizeof(double));
  char* base = static_cast<char*>(reduction_scratch(part_bytes + per_channel * C * int64_t(sizeof(float))));
  return {reinterpret_cast<double*>(base), reinterpret_cast<float*>(base + part_bytes), chunks};
}

template <class Term, class Finish>
void channel_sums(const ChannelScratch& sc, int64_t N, int64_t C, Term term, Finish finish, Stream s) {
  channel_partials_kernel<<<grid_for(sc.chunks * C, kThreads), kThreads, 0, s>>>(sc.part, N, C, sc.chunks, term);
  MM_CUDA_CHECK_LAUNCH("channel_partials_kernel");
  channel_finish_kernel<<<grid_for(C, kWarpsPerBlock), kThreads, 0, s>>>(sc.part, C, sc.chunks, finish);
  MM_CUDA_CHECK_LAUNCH("channel_finish_kernel");
}

// The row stride of x (and dx) an op was given: ld, or C for 0 (packed rows).
inline int64_t row_stride(int64_t ld, int64_t C, const char* what) {
  MM_CHECK(ld == 0 || ld >= C, std::string(what) + ": a row stride shorter than the row");
  return ld ? ld : C;
}

}  // namespace
}  // namespace mm::cuda
