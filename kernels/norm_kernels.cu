// LayerNorm family: one warp per row, statistics in float32 (two passes over the row,
// the second and third reads come from L1). What differs between the model's four
// LayerNorms is where a row comes from and where it goes, so the kernel takes a
// loader and a storer:
//   layernorm        strided rows (ln_1 reads the right half of the block input in place)
//   merge_layernorm  rows gathered from a 2x2 neighbourhood (patch merging)
//   layernorm_gate   float32 scan output, multiplied by SiLU(z) on the way out
#include <climits>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;

template <class T>
struct StridedRows {
  const T* x;
  int64_t ldx;
  __device__ float operator()(int row, int j) const { return to_f32(x[size_t(row) * ldx + j]); }
};

// Row r = (b, oh, ow) of the merged map; element j = q·C + ch reads x0..x3 of the
// reference: q=0 (0,0), q=1 (1,0), q=2 (0,1), q=3 (1,1) as (row offset, column offset).
template <class T>
struct MergeRows {
  const T* x;
  int H, W, C;
  __device__ float operator()(int row, int j) const {
    const int Wo = W / 2, Ho = H / 2;
    const int ow = row % Wo, oh = (row / Wo) % Ho, b = row / (Wo * Ho);
    const int q = j / C, ch = j - q * C;
    const int h = 2 * oh + (q & 1), w = 2 * ow + (q >> 1);
    return to_f32(x[size_t((b * H + h) * W + w) * C + ch]);
  }
};

template <class T>
struct PlainStore {
  T* out;
  int64_t ldo;
  __device__ void operator()(int row, int j, float v) const { out[size_t(row) * ldo + j] = from_f32<T>(v); }
};

template <class T>
struct GateStore {
  T* out;
  const T* z;
  int64_t ldo, ldz;
  __device__ void operator()(int row, int j, float v) const {
    out[size_t(row) * ldo + j] = from_f32<T>(v * silu_f(to_f32(z[size_t(row) * ldz + j])));
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The row is read once into registers (kPerLane values a lane, lane-strided so the
// loads coalesce), then mean and variance are two warp reductions over them.
template <int kPerLane, class Load, class Store>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    layernorm_kernel(Load load, Store store, const float* __restrict__ w, const float* __restrict__ b, int rows,
                     int C, float eps) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float v[kPerLane];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int j = i * 32 + lane;
    v[i] = j < C ? load(row, j) : 0.f;
    sum += v[i];
  }
  const float mean = warp_sum(sum) / float(C);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const float d = i * 32 + lane < C ? v[i] - mean : 0.f;
    sq += d * d;
  }
  const float rstd = rsqrtf(warp_sum(sq) / float(C) + eps);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int j = i * 32 + lane;
    if (j < C) store(row, j, (v[i] - mean) * rstd * w[j] + b[j]);
  }
}

template <class Load, class Store>
void launch_layernorm(const Load& load, const Store& store, const float* w, const float* b, int64_t rows,
                      int64_t C, Stream s, const char* name) {
  if (rows == 0) return;
  MM_CHECK(C > 0 && C <= 128 * 32 && rows < INT_MAX, std::string(name) + ": row length " + std::to_string(C) +
                                                         " outside 1..4096 or too many rows");
  const unsigned grid = grid_for(rows, kWarpsPerBlock);
  const int per_lane = int((C + 31) / 32);
  auto go = [&](auto kernel) {
    kernel<<<grid, kWarpsPerBlock * 32, 0, s>>>(load, store, w, b, int(rows), int(C), 1e-5f);
  };
  if (per_lane <= 1) go(layernorm_kernel<1, Load, Store>);
  else if (per_lane <= 2) go(layernorm_kernel<2, Load, Store>);
  else if (per_lane <= 4) go(layernorm_kernel<4, Load, Store>);
  else if (per_lane <= 8) go(layernorm_kernel<8, Load, Store>);
  else if (per_lane <= 16) go(layernorm_kernel<16, Load, Store>);
  else if (per_lane <= 32) go(layernorm_kernel<32, Load, Store>);
  else if (per_lane <= 64) go(layernorm_kernel<64, Load, Store>);
  else go(layernorm_kernel<128, Load, Store>);
  MM_CUDA_CHECK_LAUNCH(name);
}

}  // namespace

void layernorm(DType dt, void* out, const void* x, int64_t ldx, const float* w, const float* b, int64_t rows,
               int64_t C, Stream s) {
  dispatch_dtype(dt, "layernorm", [&](auto t) {
    using T = decltype(t);
    launch_layernorm(StridedRows<T>{static_cast<const T*>(x), ldx}, PlainStore<T>{static_cast<T*>(out), C}, w, b,
                     rows, C, s, "layernorm");
  });
}

void merge_layernorm(DType dt, void* out, const void* x, const float* w, const float* b, int64_t B, int64_t H,
                     int64_t W, int64_t C, Stream s) {
  MM_CHECK(H % 2 == 0 && W % 2 == 0, "merge_layernorm: H and W must be even");
  dispatch_dtype(dt, "merge_layernorm", [&](auto t) {
    using T = decltype(t);
    launch_layernorm(MergeRows<T>{static_cast<const T*>(x), int(H), int(W), int(C)}, PlainStore<T>{static_cast<T*>(out), 4 * C},
                     w, b, B * (H / 2) * (W / 2), 4 * C, s, "merge_layernorm");
  });
}

void layernorm_gate(DType dt, void* out, const float* y, const void* z, int64_t ldz, const float* w,
                    const float* b, int64_t P, int64_t D, Stream s) {
  dispatch_dtype(dt, "layernorm_gate", [&](auto t) {
    using T = decltype(t);
    launch_layernorm(StridedRows<float>{y, D}, GateStore<T>{static_cast<T*>(out), static_cast<const T*>(z), D, ldz},
                     w, b, P, D, s, "layernorm_gate");
  });
}

}  // namespace mm::cuda
