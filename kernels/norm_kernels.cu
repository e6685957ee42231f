// LayerNorm family of the inference engine, statistics in float32. What differs between the
// model's four LayerNorms is where a row comes from and where it goes, so the kernels take a
// loader and a storer, each moving V consecutive elements (a pack) of a row:
//   layernorm        strided rows (ln_1 reads the right half of the block input in place)
//   merge_layernorm  rows gathered from a 2x2 neighbourhood (patch merging)
//   layernorm_gate   float32 scan output, multiplied by SiLU(z) on the way out
// Rows of up to 32·kMaxRowVectors packs of 16 bytes take a lane group each (row_groups.cuh),
// holding the row in registers; longer or unaligned rows take a warp each, element by element.
#include <climits>
#include <string>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "row_groups.cuh"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

// Loaders and storers: pack j of a row is its elements [j·V, j·V + V).
template <class T>
struct StridedRows {
  const T* x;
  int64_t ldx;
  template <int V>
  __device__ void load(int64_t row, int j, float (&v)[V]) const { load_pack(x + row * ldx + j * V, v); }
};

// Row r = (b, oh, ow) of the merged map; element e = q·C + ch reads x0..x3 of the
// reference: q=0 (0,0), q=1 (1,0), q=2 (0,1), q=3 (1,1) as (row offset, column offset).
// A pack never straddles two quadrants (V divides C).
template <class T>
struct MergeRows {
  const T* x;
  int H, W, C;
  FastDivmod wo, ho;  // by W/2, H/2
  template <int V>
  __device__ void load(int64_t row, int j, float (&v)[V]) const {
    const uint32_t r = uint32_t(row), t = wo.div(r), ow = wo.mod(r, t), b = ho.div(t), oh = ho.mod(t, b);
    const int e = j * V, q = (e >= C) + (e >= 2 * C) + (e >= 3 * C), ch = e - q * C;
    const int h = 2 * int(oh) + (q & 1), w = 2 * int(ow) + (q >> 1);
    load_pack(x + (int64_t(b * H + h) * W + w) * C + ch, v);
  }
};

template <class T>
struct PlainStore {
  T* out;
  int64_t ldo;
  template <int V>
  __device__ void store(int64_t row, int j, const float (&v)[V]) const { store_pack(out + row * ldo + j * V, v); }
};

template <class T>
struct GateStore {
  T* out;
  const T* z;
  int64_t ldo, ldz;
  template <int V>
  __device__ void store(int64_t row, int j, const float (&v)[V]) const {
    float g[V];
    load_pack(z + row * ldz + j * V, g);
#pragma unroll
    for (int k = 0; k < V; ++k) g[k] = v[k] * silu_f(g[k]);
    store_pack(out + row * ldo + j * V, g);
  }
};

// A lane group of G lanes per row, each holding K packs of V elements (row_groups.cuh).
template <int V, int K, class Load, class Store>
__global__ void __launch_bounds__(kThreads)
    layernorm_groups_kernel(Load load, Store store, const float* __restrict__ w, const float* __restrict__ b,
                            int64_t rows, int C, int G, float eps) {
  const RowLane rl = row_lane(rows, G);
  const int packs = C / V;
  float v[K][V];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = rl.lane + k * G;
    if (j < packs) {
      load.template load<V>(rl.row, j, v[k]);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) v[k][e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < V; ++e) sum += v[k][e];
  }
  const float mean = group_sum(sum, G) / float(C);
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (rl.lane + k * G >= packs) continue;
#pragma unroll
    for (int e = 0; e < V; ++e) sq += (v[k][e] - mean) * (v[k][e] - mean);
  }
  const float rstd = rsqrtf(group_sum(sq, G) / float(C) + eps);
  if (!rl.live) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = rl.lane + k * G;
    if (j >= packs) continue;
    float wv[V], bv[V], o[V];
    load_floats(w + j * V, wv);
    load_floats(b + j * V, bv);
#pragma unroll
    for (int e = 0; e < V; ++e) o[e] = (v[k][e] - mean) * rstd * wv[e] + bv[e];
    store.template store<V>(rl.row, j, o);
  }
}

// A warp per row, element by element: rows too long for a group, or not in 16-byte packs.
// The row is read once into registers (kPerLane values a lane, lane-strided so the loads
// coalesce), then mean and variance are two warp reductions over them.
template <int kPerLane, class Load, class Store>
__global__ void __launch_bounds__(kThreads)
    layernorm_warp_kernel(Load load, Store store, const float* __restrict__ w, const float* __restrict__ b, int rows,
                          int C, float eps) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float v[kPerLane];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int j = i * 32 + lane;
    float e[1] = {0.f};
    if (j < C) load.template load<1>(row, j, e);
    v[i] = e[0];
    sum += v[i];
  }
  const float mean = group_sum(sum, 32) / float(C);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const float d = i * 32 + lane < C ? v[i] - mean : 0.f;
    sq += d * d;
  }
  const float rstd = rsqrtf(group_sum(sq, 32) / float(C) + eps);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int j = i * 32 + lane;
    if (j >= C) continue;
    const float o[1] = {(v[i] - mean) * rstd * w[j] + b[j]};
    store.template store<1>(row, j, o);
  }
}

// packs_fit: the caller's check that every row, stride and pointer allows packs of
// 16 / sizeof(T) elements (and 16-byte float loads of w, b and any float input).
template <class T, class Load, class Store>
void launch_layernorm(const Load& load, const Store& store, const float* w, const float* b, int64_t rows, int64_t C,
                      bool packs_fit, Stream s, const char* name) {
  if (rows == 0) return;
  MM_CHECK(C > 0 && C <= 128 * 32 && rows < INT_MAX, std::string(name) + ": row length " + std::to_string(C) +
                                                         " outside 1..4096 or too many rows");
  constexpr int V = int(16 / sizeof(T));
  constexpr float kEps = 1e-5f;
  const RowGroups rg = packs_fit ? row_groups_for(C / V) : RowGroups{};
  if (rg.K > 0) {
    with_row_vectors(rg.K, [&](auto k) {
      layernorm_groups_kernel<V, decltype(k)::value><<<grid_for(rows * rg.G, kThreads), kThreads, 0, s>>>(
          load, store, w, b, rows, int(C), rg.G, kEps);
    });
    MM_CUDA_CHECK_LAUNCH(name);
    return;
  }
  const unsigned grid = grid_for(rows, kWarpsPerBlock);
  const int per_lane = int((C + 31) / 32);
  auto go = [&](auto kernel) { kernel<<<grid, kThreads, 0, s>>>(load, store, w, b, int(rows), int(C), kEps); };
  if (per_lane <= 1) go(layernorm_warp_kernel<1, Load, Store>);
  else if (per_lane <= 2) go(layernorm_warp_kernel<2, Load, Store>);
  else if (per_lane <= 4) go(layernorm_warp_kernel<4, Load, Store>);
  else if (per_lane <= 8) go(layernorm_warp_kernel<8, Load, Store>);
  else if (per_lane <= 16) go(layernorm_warp_kernel<16, Load, Store>);
  else if (per_lane <= 32) go(layernorm_warp_kernel<32, Load, Store>);
  else if (per_lane <= 64) go(layernorm_warp_kernel<64, Load, Store>);
  else go(layernorm_warp_kernel<128, Load, Store>);
  MM_CUDA_CHECK_LAUNCH(name);
}

// Packs of 16 bytes fit: the T rows (lengths and strides in elements) and pointers, and the
// float vectors and pointers, all divide into them.
template <class T>
bool packs_fit(std::initializer_list<int64_t> t_lengths, std::initializer_list<const void*> t_pointers,
               std::initializer_list<int64_t> f_lengths, std::initializer_list<const void*> f_pointers) {
  constexpr int V = int(16 / sizeof(T));
  for (int64_t n : f_lengths)
    if (n % V) return false;
  return vector_width<T>(t_lengths, t_pointers) == V && vector_width<float>(f_lengths, f_pointers) == 4;
}

}  // namespace

void layernorm(DType dt, void* out, const void* x, int64_t ldx, const float* w, const float* b, int64_t rows,
               int64_t C, Stream s) {
  dispatch_dtype(dt, "layernorm", [&](auto t) {
    using T = decltype(t);
    launch_layernorm<T>(StridedRows<T>{static_cast<const T*>(x), ldx}, PlainStore<T>{static_cast<T*>(out), C}, w, b,
                        rows, C, packs_fit<T>({C, ldx}, {x, out}, {C}, {w, b}), s, "layernorm");
  });
}

void merge_layernorm(DType dt, void* out, const void* x, const float* w, const float* b, int64_t B, int64_t H,
                     int64_t W, int64_t C, Stream s) {
  MM_CHECK(H % 2 == 0 && W % 2 == 0, "merge_layernorm: H and W must be even");
  dispatch_dtype(dt, "merge_layernorm", [&](auto t) {
    using T = decltype(t);
    const MergeRows<T> load{static_cast<const T*>(x), int(H), int(W), int(C), FastDivmod(uint32_t(W / 2)),
                            FastDivmod(uint32_t(H / 2))};
    launch_layernorm<T>(load, PlainStore<T>{static_cast<T*>(out), 4 * C}, w, b, B * (H / 2) * (W / 2), 4 * C,
                        packs_fit<T>({C}, {x, out}, {4 * C}, {w, b}), s, "merge_layernorm");
  });
}

void layernorm_gate(DType dt, void* out, const float* y, const void* z, int64_t ldz, const float* w,
                    const float* b, int64_t P, int64_t D, Stream s) {
  dispatch_dtype(dt, "layernorm_gate", [&](auto t) {
    using T = decltype(t);
    launch_layernorm<T>(StridedRows<float>{y, D}, GateStore<T>{static_cast<T*>(out), static_cast<const T*>(z), D, ldz},
                        w, b, P, D, packs_fit<T>({D, ldz}, {out, z}, {D}, {w, b, y}), s, "layernorm_gate");
  });
}

}  // namespace mm::cuda
