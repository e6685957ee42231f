// Elementwise-style kernels around the GEMMs: depthwise conv + SiLU, the im2col
// gathers feeding the 3x3 and patch-embedding GEMMs, the block's shuffle + residual,
// and global average pooling. One thread per output element, channels fastest, so
// neighbouring threads touch neighbouring addresses.
#include <climits>
#include <type_traits>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;

// Calls f(std::integral_constant<int, V>) for V in {1, 2, 4, 8} (widths beyond 16 bytes never come).
template <class F>
void dispatch_width(int v, F&& f) {
  switch (v) {
    case 8: f(std::integral_constant<int, 8>{}); return;
    case 4: f(std::integral_constant<int, 4>{}); return;
    case 2: f(std::integral_constant<int, 2>{}); return;
    default: f(std::integral_constant<int, 1>{}); return;
  }
}

// Thread = (pixel, V channels). Weights are tap-major (9, C) so that V of them load together.
template <class T, int V>
__global__ void dwconv3x3_silu_kernel(T* __restrict__ u, const T* __restrict__ x, int ldx,
                                      const float* __restrict__ w, const float* __restrict__ bias, int B, int H,
                                      int W, int C) {
  const int CV = C / V;
  const unsigned n = unsigned(B) * H * W * CV;
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int cv = int(i % CV), p = int(i / CV);
  const int wi = p % W, q = p / W, hi = q % H, b = q / H;
  const int c0 = cv * V;
  float acc[V];
#pragma unroll
  for (int e = 0; e < V; ++e) acc[e] = bias[c0 + e];
#pragma unroll
  for (int kh = 0; kh < 3; ++kh) {
    const int h = hi + kh - 1;
    if (h < 0 || h >= H) continue;
#pragma unroll
    for (int kw = 0; kw < 3; ++kw) {
      const int ww = wi + kw - 1;
      if (ww < 0 || ww >= W) continue;
      const Pack<T, V> in = *reinterpret_cast<const Pack<T, V>*>(x + size_t((b * H + h) * W + ww) * ldx + c0);
      const float* wk = w + (kh * 3 + kw) * C + c0;
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] = fmaf(wk[e], to_f32(in.v[e]), acc[e]);
    }
  }
  Pack<T, V> out;
#pragma unroll
  for (int e = 0; e < V; ++e) out.v[e] = from_f32<T>(silu_f(acc[e]));
  *reinterpret_cast<Pack<T, V>*>(u + size_t(p) * C + c0) = out;
}

// Thread = (pixel, tap, V channels): one 16-byte store, one 16-byte load.
template <class T, int V>
__global__ void im2col3x3_kernel(T* __restrict__ col, const T* __restrict__ x, int ldx,
                                 const float* __restrict__ scale, const float* __restrict__ shift, int B, int H,
                                 int W, int C) {
  const int CV = C / V;
  const unsigned n = unsigned(B) * H * W * 9 * CV;
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int cv = int(i % CV);
  const unsigned t = i / CV;
  const int k = int(t % 9), p = int(t / 9);
  const int wi = p % W, q = p / W, hi = q % H, b = q / H;
  const int h = hi + k / 3 - 1, ww = wi + k % 3 - 1, c0 = cv * V;
  Pack<T, V> out;
  if (h >= 0 && h < H && ww >= 0 && ww < W) {
    const Pack<T, V> in = *reinterpret_cast<const Pack<T, V>*>(x + size_t((b * H + h) * W + ww) * ldx + c0);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      float v = to_f32(in.v[e]);
      if (scale) v = fmaf(v, scale[c0 + e], shift[c0 + e]);
      out.v[e] = from_f32<T>(v);
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out.v[e] = from_f32<T>(0.f);  // zero padding of the (normalized) input
  }
  *reinterpret_cast<Pack<T, V>*>(col + size_t(i) * V) = out;
}

template <class T>
__global__ void patchify_kernel(T* __restrict__ col, const float* __restrict__ img, int64_t B, int Cin, int S,
                                int k) {
  const int64_t K = int64_t(Cin) * k * k, So = S / k;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * So * So * K) return;
  const int64_t j = i % K, p = i / K;
  const int kw = int(j % k), kh = int((j / k) % k), ci = int(j / (int64_t(k) * k));
  const int64_t ow = p % So, oh = (p / So) % So, b = p / (So * So);
  col[i] = from_f32<T>(img[((b * Cin + ci) * S + oh * k + kh) * S + ow * k + kw]);
}

template <class T>
__global__ void shuffle_residual_kernel(T* __restrict__ out, const T* __restrict__ l, const T* __restrict__ sb,
                                        const T* __restrict__ x, int64_t P, int64_t c) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (p, m)
  if (i >= P * c) return;
  const int64_t m = i % c, p = i / c;
  const int64_t o = p * 2 * c + 2 * m;
  out[o] = from_f32<T>(to_f32(l[i]) + to_f32(x[o]));
  out[o + 1] = from_f32<T>(to_f32(sb[i]) + to_f32(x[o + 1]));
}

template <class T>
__global__ void avgpool_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t B, int64_t L, int64_t C) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (b, c)
  if (i >= B * C) return;
  const int64_t c = i % C, b = i / C;
  float acc = 0.f;
  for (int64_t l = 0; l < L; ++l) acc += to_f32(x[(b * L + l) * C + c]);
  out[i] = from_f32<T>(acc / float(L));
}

}  // namespace

void dwconv3x3_silu(DType dt, void* u, const void* x, int64_t ldx, const float* w, const float* bias, int64_t B,
                    int64_t H, int64_t W, int64_t C, Stream s) {
  MM_CHECK(B * H * W * C < INT_MAX && ldx * B * H * W < INT64_MAX / 2, "dwconv3x3_silu: shape too large");
  dispatch_dtype(dt, "dwconv3x3_silu", [&](auto t) {
    using T = decltype(t);
    dispatch_width(vector_width<T>({C, ldx}, {u, x}), [&](auto width) {
      constexpr int V = decltype(width)::value;
      dwconv3x3_silu_kernel<T, V><<<grid_for(B * H * W * C / V, kThreads), kThreads, 0, s>>>(
          static_cast<T*>(u), static_cast<const T*>(x), int(ldx), w, bias, int(B), int(H), int(W), int(C));
    });
    MM_CUDA_CHECK_LAUNCH("dwconv3x3_silu");
  });
}

void im2col3x3(DType dt, void* col, const void* x, int64_t ldx, const float* scale, const float* shift, int64_t B,
               int64_t H, int64_t W, int64_t C, Stream s) {
  MM_CHECK((scale == nullptr) == (shift == nullptr), "im2col3x3: scale and shift come together");
  MM_CHECK(B * H * W * 9 * C < UINT_MAX, "im2col3x3: shape too large for 32-bit indexing");
  dispatch_dtype(dt, "im2col3x3", [&](auto t) {
    using T = decltype(t);
    dispatch_width(vector_width<T>({C, ldx}, {col, x}), [&](auto width) {
      constexpr int V = decltype(width)::value;
      im2col3x3_kernel<T, V><<<grid_for(B * H * W * 9 * C / V, kThreads), kThreads, 0, s>>>(
          static_cast<T*>(col), static_cast<const T*>(x), int(ldx), scale, shift, int(B), int(H), int(W), int(C));
    });
    MM_CUDA_CHECK_LAUNCH("im2col3x3");
  });
}

void patchify(DType dt, void* col, const float* images, int64_t B, int64_t Cin, int64_t S, int64_t k, Stream s) {
  MM_CHECK(S % k == 0, "patchify: image side must be a multiple of the patch size");
  dispatch_dtype(dt, "patchify", [&](auto t) {
    using T = decltype(t);
    const int64_t n = B * (S / k) * (S / k) * Cin * k * k;
    patchify_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(col), images, B, int(Cin), int(S),
                                                                   int(k));
    MM_CUDA_CHECK_LAUNCH("patchify");
  });
}

void shuffle_residual(DType dt, void* out, const void* l, const void* sb, const void* x, int64_t P, int64_t c,
                      Stream s) {
  dispatch_dtype(dt, "shuffle_residual", [&](auto t) {
    using T = decltype(t);
    shuffle_residual_kernel<T><<<grid_for(P * c, kThreads), kThreads, 0, s>>>(
        static_cast<T*>(out), static_cast<const T*>(l), static_cast<const T*>(sb), static_cast<const T*>(x), P, c);
    MM_CUDA_CHECK_LAUNCH("shuffle_residual");
  });
}

void avgpool(DType dt, void* out, const void* x, int64_t B, int64_t L, int64_t C, Stream s) {
  dispatch_dtype(dt, "avgpool", [&](auto t) {
    using T = decltype(t);
    avgpool_kernel<T><<<grid_for(B * C, kThreads), kThreads, 0, s>>>(static_cast<T*>(out),
                                                                      static_cast<const T*>(x), B, L, C);
    MM_CUDA_CHECK_LAUNCH("avgpool");
  });
}

}  // namespace mm::cuda
