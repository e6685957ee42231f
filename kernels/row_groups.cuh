#pragma once
// Rows in lane groups, for the LayerNorms of the training backend (train_layernorm_kernels.cu) and
// of the inference engine (norm_kernels.cu). A row of `packs` vectors (float4s, or 8 bf16s)
// takes G lanes, a power of two up to 32, and each lane holds K of its vectors (the row's
// vector j at lane j % G, slot j / G) in registers: the row is read once, with all its loads
// in flight. A warp per row left most of the warp idle on rows of 48 or 96 floats and
// passed over each row three times, at about 1 TB/s on the H200.
#include <cstdint>
#include <type_traits>

namespace mm::cuda {

constexpr int kMaxRowVectors = 8;

struct RowGroups {
  int G = 0, K = 0;  // K = 0: the row is too long for a group (the caller's warp-per-row kernel)
};
// G grows until a lane holds at most 4 vectors or the group is a whole warp.
inline RowGroups row_groups_for(int64_t packs) {
  RowGroups r;
  if (packs <= 0) return r;
  r.G = 1;
  while (r.G < 32 && (packs + r.G - 1) / r.G > 4) r.G *= 2;
  if ((packs + r.G - 1) / r.G <= kMaxRowVectors) r.K = int((packs + r.G - 1) / r.G);
  return r;
}

// Calls launch(std::integral_constant<int, K>{}) for K = 1..kMaxRowVectors.
template <class F>
void with_row_vectors(int K, F&& launch) {
  switch (K) {
    case 1: launch(std::integral_constant<int, 1>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    case 3: launch(std::integral_constant<int, 3>{}); break;
    case 4: launch(std::integral_constant<int, 4>{}); break;
    case 5: launch(std::integral_constant<int, 5>{}); break;
    case 6: launch(std::integral_constant<int, 6>{}); break;
    case 7: launch(std::integral_constant<int, 7>{}); break;
    default: launch(std::integral_constant<int, 8>{}); break;
  }
}

#ifdef __CUDACC__
// Sum over a group of G aligned lanes (G a power of two): the same bits in each of them.
__device__ __forceinline__ float group_sum(float v, int G) {
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Where thread t works: row t / G, lane t % G of its group. Threads past the last row
// (live false) take part in the shuffles only.
struct RowLane {
  int64_t row;
  int lane;
  bool live;
};
__device__ __forceinline__ RowLane row_lane(int64_t N, int G) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  RowLane r{t >> (__ffs(G) - 1), int(t & (G - 1)), true};  // G a power of two
  if (r.row >= N) r.row = 0, r.live = false;
  return r;
}
#endif

}  // namespace mm::cuda
