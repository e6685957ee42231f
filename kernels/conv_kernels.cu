// Elementwise-style kernels around the GEMMs: depthwise conv + SiLU and the im2col gather
// feeding the 3x3 GEMMs (conv_layout.cuh's kernels, shared with training), the patch
// embedding's gather, the block's shuffle + residual, and global average pooling. Channels
// fastest, so neighbouring threads touch neighbouring addresses; index arithmetic by
// FastDivmod or none (a per-element 64-bit division costs more than the element's bytes).

#include "conv_layout.cuh"
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;

// col (P, Cin·k·k) of the patch embedding's k x k stride-k conv, columns in PyTorch's
// (ci, kh, kw) order, from NCHW float images: a thread per (pixel, ci, kh) copies the k values
// of one image row, V at a time. Indices by FastDivmods (by Cin·k, k, S/k), for pixels from p0 on.
template <class T, int V>
__global__ void patchify_kernel(T* __restrict__ col, const float* __restrict__ img, int Cin, int S, int k,
                                FastDivmod per_pixel, FastDivmod by_k, FastDivmod by_side, uint32_t n, int64_t p0) {
  const uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= n) return;
  const uint32_t pp = per_pixel.div(t), rem = per_pixel.mod(t, pp), ci = by_k.div(rem), kh = by_k.mod(rem, ci);
  const uint32_t p = uint32_t(p0) + pp, q = by_side.div(p), ow = by_side.mod(p, q), b = by_side.div(q),
                 oh = by_side.mod(q, b);
  const float* src = img + ((int64_t(b) * Cin + ci) * S + oh * k + kh) * S + ow * k;
  T* dst = col + int64_t(p) * Cin * k * k + (ci * k + kh) * k;
  for (int kw = 0; kw < k; kw += V) {
    const Pack<float, V> v = *reinterpret_cast<const Pack<float, V>*>(src + kw);
    Pack<T, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) o.v[e] = from_f32<T>(v.v[e]);
    *reinterpret_cast<Pack<T, V>*>(dst + kw) = o;
  }
}

// out (P,2c) = channel_shuffle(concat(l, sb)) + x: element i of l and sb (i = p·c + m) lands
// at 2i and 2i+1 of out, so no index needs a division. A thread takes V consecutive i.
template <class T, int V>
__global__ void shuffle_residual_kernel(T* __restrict__ out, const T* __restrict__ l, const T* __restrict__ sb,
                                        const T* __restrict__ x, int64_t n) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (i >= n) return;
  const Pack<T, V> lv = *reinterpret_cast<const Pack<T, V>*>(l + i), sv = *reinterpret_cast<const Pack<T, V>*>(sb + i);
  const Pack<T, 2 * V> xv = *reinterpret_cast<const Pack<T, 2 * V>*>(x + 2 * i);
  Pack<T, 2 * V> o;
#pragma unroll
  for (int e = 0; e < V; ++e) {
    o.v[2 * e] = from_f32<T>(to_f32(lv.v[e]) + to_f32(xv.v[2 * e]));
    o.v[2 * e + 1] = from_f32<T>(to_f32(sv.v[e]) + to_f32(xv.v[2 * e + 1]));
  }
  *reinterpret_cast<Pack<T, 2 * V>*>(out + 2 * i) = o;
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
                    int64_t H, int64_t W, int64_t C, Stream s, float* zero) {
  MM_CHECK(B > 0 && H > 0 && W > 0 && C > 0, "dwconv3x3_silu: empty shape");
  MM_CHECK(!zero || reinterpret_cast<uintptr_t>(zero) % 16 == 0, "dwconv3x3_silu: zero must be 16-byte aligned");
  dispatch_dtype(dt, "dwconv3x3_silu", [&](auto t) {
    using T = decltype(t);
    launch_dw3x3(static_cast<T*>(u), C, static_cast<const T*>(x), ldx, DwWeights{w, 1, C, false}, bias, B, H, W, C,
                 DwSilu{zero}, s, "dwconv3x3_silu");
  });
}

void im2col3x3(DType dt, void* col, const void* x, int64_t ldx, const float* scale, const float* shift, int64_t B,
               int64_t H, int64_t W, int64_t C, Stream s) {
  MM_CHECK((scale == nullptr) == (shift == nullptr), "im2col3x3: scale and shift come together");
  MM_CHECK(B > 0 && H > 0 && W > 0 && C > 0, "im2col3x3: empty shape");
  const ConvDims d{B, H, W, C, 3, 3, 1, 1, H, W, 9 * C};
  dispatch_dtype(dt, "im2col3x3", [&](auto t) {
    using T = decltype(t);
    launch_im2col(static_cast<T*>(col), static_cast<const T*>(x), ldx, scale, shift, d, s);
  });
}

void patchify(DType dt, void* col, const float* images, int64_t B, int64_t Cin, int64_t S, int64_t k, Stream s) {
  MM_CHECK(k > 0 && S % k == 0, "patchify: image side must be a multiple of the patch size");
  const int64_t side = S / k, pixels = B * side * side, per_pixel = Cin * k;
  MM_CHECK(pixels <= INT32_MAX && B * Cin * S * S <= INT64_MAX / 4, "patchify: too many pixels");
  dispatch_dtype(dt, "patchify", [&](auto t) {
    using T = decltype(t);
    // 4 values a copy where the image rows and the columns allow 16-byte loads and aligned stores
    const bool by4 = k % 4 == 0 && S % 4 == 0 && reinterpret_cast<uintptr_t>(images) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(col) % (4 * sizeof(T)) == 0;
    const FastDivmod by_pixel{uint32_t(per_pixel)}, by_k{uint32_t(k)}, by_side{uint32_t(side)};
    for_row_chunks(pixels, per_pixel, [&](int64_t p0, int64_t np) {
      const uint32_t n = uint32_t(np * per_pixel);
      auto* out = static_cast<T*>(col);
      if (by4)
        patchify_kernel<T, 4><<<grid_for(n, kThreads), kThreads, 0, s>>>(out, images, int(Cin), int(S), int(k), by_pixel,
                                                                         by_k, by_side, n, p0);
      else
        patchify_kernel<T, 1><<<grid_for(n, kThreads), kThreads, 0, s>>>(out, images, int(Cin), int(S), int(k), by_pixel,
                                                                         by_k, by_side, n, p0);
      MM_CUDA_CHECK_LAUNCH("patchify");
    });
  });
}

void shuffle_residual(DType dt, void* out, const void* l, const void* sb, const void* x, int64_t P, int64_t c,
                      Stream s) {
  const int64_t n = P * c;
  if (n <= 0) return;
  dispatch_dtype(dt, "shuffle_residual", [&](auto t) {
    using T = decltype(t);
    // V elements of l and sb, 2V of x and out: 8 and 16 bytes a thread where n and the pointers allow it
    constexpr int V = int(8 / sizeof(T));
    if (vector_width<T>({n}, {l, sb}) >= V && vector_width<T>({2 * n}, {x, out}) >= 2 * V)
      shuffle_residual_kernel<T, V><<<grid_for(n / V, kThreads), kThreads, 0, s>>>(
          static_cast<T*>(out), static_cast<const T*>(l), static_cast<const T*>(sb), static_cast<const T*>(x), n);
    else
      shuffle_residual_kernel<T, 1><<<grid_for(n, kThreads), kThreads, 0, s>>>(
          static_cast<T*>(out), static_cast<const T*>(l), static_cast<const T*>(sb), static_cast<const T*>(x), n);
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
