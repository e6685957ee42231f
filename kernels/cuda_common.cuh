#pragma once
// Shared by the .cu files: error checks that throw mm::Error, element-type
// conversions, and dispatch from mm::DType to a kernel's element type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "core/tensor.h"
#include "fast_divmod.h"

namespace mm::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  throw Error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
              "): " + cudaGetErrorString(e));
}

#define MM_CUDA_CHECK(call)                                                         \
  do {                                                                              \
    cudaError_t mm_err_ = (call);                                                   \
    if (mm_err_ != cudaSuccess) ::mm::cuda::throw_cuda(mm_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a launch: configuration errors surface here, asynchronous faults at the next sync.
#define MM_CUDA_CHECK_LAUNCH(name)                                                  \
  do {                                                                              \
    cudaError_t mm_err_ = cudaGetLastError();                                       \
    if (mm_err_ != cudaSuccess) ::mm::cuda::throw_cuda(mm_err_, name, __FILE__, __LINE__); \
  } while (0)

template <class T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }

template <class T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + __expf(-x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float silu_grad(float x, float s) { return s * (1.f + x * (1.f - s)); }
// The SS2D gate g = yn·SiLU(z), backward, at one element with sg = σ(z): one expression for
// gate_backward and the LayerNorm backward it is folded into, so that both give the same bits.
__device__ __forceinline__ float gate_dyn(float dg, float z, float sg) { return dg * z * sg; }
__device__ __forceinline__ float gate_dz(float dg, float yn, float z, float sg) { return dg * yn * silu_grad(z, sg); }
// The gate's forward, g = yn·SiLU(z), and the ReLU: one expression each for the plain kernels
// and the fused ones, so that a fused op gives the plain ops' bits by construction.
__device__ __forceinline__ float gate_g(float yn, float z) { return yn * silu_f(z); }
__device__ __forceinline__ float relu_f(float x) { return x > 0.f ? x : 0.f; }

// Calls f(T{}) with T the element type of dt (float, __nv_bfloat16 or __half).
template <class F>
void dispatch_dtype(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    case DType::F16: f(__half{}); return;
    default: throw Error(std::string(what) + ": activations must be F32, BF16 or F16, got " + dtype_name(dt));
  }
}

// Calls f(row0, rows) for consecutive chunks of the rows of a (N, C) matrix, each of fewer than
// 2^31 elements: a kernel over one chunk indexes in 32 bits and finds an element's column by a
// FastDivmod (a 64-bit i % C is about 70 instructions, and bound the per-channel kernels).
template <class F>
void for_row_chunks(int64_t N, int64_t C, F&& f) {
  if (N <= 0 || C <= 0) return;  // nothing to launch (a grid of 0 blocks is an error)
  const int64_t per = std::max<int64_t>(1, INT32_MAX / std::max<int64_t>(C, 1));
  for (int64_t r0 = 0; r0 < N; r0 += per) f(r0, std::min(per, N - r0));
}

// V consecutive elements moved as one 16-byte (or smaller) access.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// v = the V floats at p (16-byte loads where V is a multiple of 4: p then 16-byte aligned).
template <int V>
__device__ __forceinline__ void load_floats(const float* p, float (&v)[V]) {
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int k = 0; k < V; k += 4) {
      const float4 q = *reinterpret_cast<const float4*>(p + k);
      v[k] = q.x, v[k + 1] = q.y, v[k + 2] = q.z, v[k + 3] = q.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = p[k];
  }
}

// v = the V elements at p as floats (one load of V·sizeof(T) bytes, p aligned to it).
template <class T, int V>
__device__ __forceinline__ void load_pack(const T* p, float (&v)[V]) {
  if constexpr (std::is_same<T, float>::value) {
    load_floats(p, v);
  } else {
    const Pack<T, V> q = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = to_f32(q.v[k]);
  }
}
template <class T, int V>
__device__ __forceinline__ void store_pack(T* p, const float (&v)[V]) {
  Pack<T, V> q;
#pragma unroll
  for (int k = 0; k < V; ++k) q.v[k] = from_f32<T>(v[k]);
  *reinterpret_cast<Pack<T, V>*>(p) = q;
}

// Widest vector (in elements, 16 bytes at most) that divides every row length and offset given.
template <class T>
int vector_width(std::initializer_list<int64_t> lengths, std::initializer_list<const void*> pointers) {
  int v = int(16 / sizeof(T));
  auto fits = [&](int w) {
    for (int64_t n : lengths) if (n % w) return false;
    for (const void* p : pointers) if (reinterpret_cast<uintptr_t>(p) % (size_t(w) * sizeof(T))) return false;
    return true;
  };
  while (v > 1 && !fits(v)) v /= 2;
  return v;
}

// Global -> shared copies that complete asynchronously (cp.async), 16 bytes bypassing L1 or
// through it (_ca: data that other blocks of the SM read too), 4 bytes through it; !valid
// writes zeros and reads nothing. A thread's copies since the last commit form a group;
// cp_async_wait<N> returns once all but its N newest groups have landed (then a barrier makes
// them visible to the block).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async16_ca(void* smem, const void* gmem, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// The sum of values[k·stride], k < n, in double, returned on every lane of the calling warp:
// lane j adds k = j, j+32, ..., then a fixed shuffle tree. Deterministic (the order depends on
// n only), and n/32 dependent loads deep where one thread walking all n would be n deep.
__device__ __forceinline__ double warp_sum_strided(const float* values, int64_t n, int64_t stride) {
  const int lane = threadIdx.x % 32;
  double sum = 0.0;
  for (int64_t k = lane; k < n; k += 32) sum += values[k * stride];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  return sum;
}

// Spatial position p of sequence index l of the SS2D scan in direction k (see
// lib/ops/selective_scan.h), for the inference and the training scan kernels.
__device__ __forceinline__ int scan_position(int k, int l, int H, int W) {
  if (k >= 2) l = H * W - 1 - l;  // k=2,3 run k=0,1 backwards
  if (k % 2 == 0) return l;       // row-major: l = h·W + w
  const int w = l / H, h = l - w * H;  // column-major: l = w·H + h
  return h * W + w;
}

inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  MM_CHECK(blocks < (int64_t(1) << 31), "grid too large");
  return unsigned(blocks > 0 ? blocks : 1);
}

}  // namespace mm::cuda
