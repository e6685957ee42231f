#pragma once
// The layout kernels of the convolutions, shared by the inference engine (conv_kernels.cu:
// bf16/fp16/float activations, BatchNorm folded into the gather) and the training backend
// (train_conv_kernels.cu: float32 activations, bf16 or float32 columns):
//   im2col            (B,H,W,Cin) pixels -> (P, KH·KW·Cin) columns in (kh,kw,ci) order
//   depthwise 3x3     a thread per 4 channels of a pixel column over up to kDwRows image rows
// Both find their indices by FastDivmods of a launch's invariant sizes: the first versions'
// five 32- or 64-bit divisions per element held them at a quarter to a fifth of the H200's
// memory speed.
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda_common.cuh"
#include "cuda_ops.h"  // sm_count
#include "fast_divmod.h"

namespace mm::cuda {

// What the conv kernels need of a convolution's shape, as plain data.
template <class I>
struct ConvDimsT {
  I B, H, W, Cin, KH, KW, stride, pad, OH, OW, K;  // K = KH·KW·Cin
};
using ConvDims = ConvDimsT<int64_t>;

// d in index type I, for a launch whose indices all fit in it (the caller checks).
template <class I>
ConvDimsT<I> narrowed(const ConvDims& d) {
  return {I(d.B), I(d.H), I(d.W), I(d.Cin), I(d.KH), I(d.KW), I(d.stride), I(d.pad), I(d.OH), I(d.OW), I(d.K)};
}

// A BatchNorm's map (and the ReLU after it) on a pixel's V channels, as im2col applies it.
template <int V>
__device__ __forceinline__ void map_input(float (&v)[V], const float (&sc)[V], const float (&sh)[V], bool relu) {
#pragma unroll
  for (int e = 0; e < V; ++e) v[e] = fmaf(v[e], sc[e], sh[e]);
  if (relu) {
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = relu_f(v[e]);
  }
}

// ---------------------------------------------------------------------------
// im2col: col (P,K), P = B·OH·OW pixels. Row p is KH·KW runs of Cin channels, each a copy of
// one input pixel (zeros outside the image), so warps read and write contiguous memory, V
// channels per thread. Input pixels are ldx elements apart (a block reads the left half of
// its input in place). With scale/shift set, the copied (inside) values become
// x·scale + shift per channel, then max(0, ·) with relu: the BatchNorm (and ReLU) before a
// zero-padded conv (the padding stays 0).
// A launch covers the output rows r = b·OH + oh from r0 on, in fewer than 2^31 packs; a
// thread's index splits into (row, ow, tap, channel group) by FastDivmods. (A 2D grid over
// rows, with one thread per row and column pack, ran 10-30% slower on the H200.)
struct Im2colDivs {
  FastDivmod row, tap_cv, cv, kw, oh;  // by OW·KH·KW·Cin/V, KH·KW·Cin/V, Cin/V, KW, OH
};
template <class TIn, class TOut, int V>
__global__ void im2col_kernel(TOut* __restrict__ col, const TIn* __restrict__ x, int64_t ldx,
                              const float* __restrict__ scale, const float* __restrict__ shift, bool relu,
                              ConvDimsT<int> d, Im2colDivs q, uint32_t n, int64_t r0) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t rr = q.row.div(i), j = q.row.mod(i, rr);
  const uint32_t ow = q.tap_cv.div(j);
  const uint32_t rem = q.tap_cv.mod(j, ow), tap = q.cv.div(rem), cv = q.cv.mod(rem, tap);
  const uint32_t kh = q.kw.div(tap), kw = q.kw.mod(tap, kh);
  const uint32_t r = uint32_t(r0) + rr;
  const uint32_t b = q.oh.div(r), oh = q.oh.mod(r, b);
  const int ih = int(oh) * d.stride - d.pad + int(kh), iw = int(ow) * d.stride - d.pad + int(kw);
  const int c0 = int(cv) * V;
  float v[V] = {};  // zero padding outside the image
  if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W) {
    load_pack(x + int64_t((int(b) * d.H + ih) * d.W + iw) * ldx + c0, v);
    if (scale) {
      float sc[V], sh[V];
      load_floats(scale + c0, sc);
      load_floats(shift + c0, sh);
      map_input(v, sc, sh, relu);
    }
  }
  store_pack(col + (int64_t(r0) * (d.OW * (d.K / V)) + i) * V, v);
}

// The 3x3 convs' im2col by pixel: a thread per (output pixel, channel group) writes the
// group's nine taps, so that its index arithmetic, and the map's scale and shift, are done
// once per pixel instead of once per tap (a thread per tap took ~35% longer with the map than
// without it, loading 64 bytes of scale and shift for 16 bytes of output). The same values as
// im2col_kernel's. n = rows·OW·Cin/V of a launch from output row r0. The training backend
// takes it (its batches fill the GPU); the inference engine, whose batch-1 latency was
// measured with a thread per tap (nine times the threads), keeps im2col_kernel.
template <class TIn, class TOut, int V>
__global__ void im2col3x3_kernel(TOut* __restrict__ col, const TIn* __restrict__ x, int64_t ldx,
                                 const float* __restrict__ scale, const float* __restrict__ shift, bool relu,
                                 ConvDimsT<int> d, FastDivmod cvs, FastDivmod ows, FastDivmod ohs, uint32_t n,
                                 int64_t r0) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t pix = cvs.div(i), cv = cvs.mod(i, pix);  // pixel of the launch, channel group
  const uint32_t rr = ows.div(pix), ow = ows.mod(pix, rr);
  const uint32_t r = uint32_t(r0) + rr;
  const uint32_t b = ohs.div(r), oh = ohs.mod(r, b);
  const int c0 = int(cv) * V;
  float sc[V], sh[V];
  if (scale) {
    load_floats(scale + c0, sc);
    load_floats(shift + c0, sh);
  }
  TOut* out = col + (int64_t(r0) * d.OW + pix) * d.K + c0;
  const int ih0 = int(oh) * d.stride - d.pad, iw0 = int(ow) * d.stride - d.pad;
#pragma unroll
  for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
    for (int kw = 0; kw < 3; ++kw) {
      const int ih = ih0 + kh, iw = iw0 + kw;
      float v[V] = {};  // zero padding outside the image
      if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W) {
        load_pack(x + int64_t((int(b) * d.H + ih) * d.W + iw) * ldx + c0, v);
        if (scale) map_input(v, sc, sh, relu);
      }
      store_pack(out + (kh * 3 + kw) * d.Cin, v);
    }
  }
}

// Channels per thread: 8, 4 or 1, the widest that divides Cin and ldx, keeps the column
// stores within 16 bytes, and that every pointer is aligned to (scale and shift to 16 bytes).
template <class TIn, class TOut>
int im2col_width(const ConvDims& d, int64_t ldx, const void* col, const void* x, const float* scale,
                 const float* shift) {
  for (int V : {8, 4}) {
    if (V * sizeof(TOut) > 16 || d.Cin % V || ldx % V) continue;
    if (reinterpret_cast<uintptr_t>(x) % (V * sizeof(TIn)) || reinterpret_cast<uintptr_t>(col) % (V * sizeof(TOut)) ||
        reinterpret_cast<uintptr_t>(scale) % 16 || reinterpret_cast<uintptr_t>(shift) % 16)
      continue;
    return V;
  }
  return 1;
}

// f(std::integral_constant<int, V>) for an im2col_width V of 8, 4 or 1: one launch line a kernel.
template <class F>
void with_width(int V, F&& f) {
  if (V == 8)
    f(std::integral_constant<int, 8>{});
  else if (V == 4)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 1>{});
}

template <class TIn, class TOut>
void launch_im2col(TOut* col, const TIn* x, int64_t ldx, const float* scale, const float* shift, const ConvDims& d,
                   cudaStream_t s, bool relu = false, bool by_pixel = false) {
  constexpr int kThreads = 256;
  const int V = im2col_width<TIn, TOut>(d, ldx, col, x, scale, shift);
  const int64_t per_row = d.OW * (d.K / V), rows = d.B * d.OH;
  MM_CHECK(per_row <= INT32_MAX && rows <= INT32_MAX && d.B * d.H * d.W <= INT32_MAX,
           "im2col: too large, B=" + std::to_string(d.B) + " H=" + std::to_string(d.H) + " W=" + std::to_string(d.W) +
               " OH=" + std::to_string(d.OH) + " OW=" + std::to_string(d.OW) + " K=" + std::to_string(d.K));
  const ConvDimsT<int> di = narrowed<int>(d);
  if (by_pixel && d.KH == 3 && d.KW == 3) {
    const int64_t per_row3 = d.OW * (d.Cin / V);
    const FastDivmod cvs(uint32_t(d.Cin / V)), ows(uint32_t(d.OW)), ohs(uint32_t(d.OH));
    for_row_chunks(rows, per_row3, [&](int64_t r0, int64_t nr) {
      const uint32_t n = uint32_t(nr * per_row3);
      with_width(V, [&](auto v) {
        im2col3x3_kernel<TIn, TOut, decltype(v)::value>
            <<<grid_for(n, kThreads), kThreads, 0, s>>>(col, x, ldx, scale, shift, relu, di, cvs, ows, ohs, n, r0);
      });
      MM_CUDA_CHECK_LAUNCH("im2col3x3_kernel");
    });
    return;
  }
  const Im2colDivs q{FastDivmod(uint32_t(per_row)), FastDivmod(uint32_t(d.KH * d.KW * (d.Cin / V))),
                     FastDivmod(uint32_t(d.Cin / V)), FastDivmod(uint32_t(d.KW)), FastDivmod(uint32_t(d.OH))};
  for_row_chunks(rows, per_row, [&](int64_t r0, int64_t nr) {
    const uint32_t n = uint32_t(nr * per_row);
    with_width(V, [&](auto v) {
      im2col_kernel<TIn, TOut, decltype(v)::value>
          <<<grid_for(n, kThreads), kThreads, 0, s>>>(col, x, ldx, scale, shift, relu, di, q, n, r0);
    });
    MM_CUDA_CHECK_LAUNCH("im2col_kernel");
  });
}

// ---------------------------------------------------------------------------
// Depthwise 3x3 over (B,H,W,C) rows b·H + h. A thread takes V channels of one pixel column of
// rows_per consecutive rows: it loads its channels' taps once (tap 8-k where flip is set: the
// transposed conv of the backward pass), then per row sums the 9 taps in the order kh, kw and
// hands the V sums to the epilogue. Input pixels are ldi elements apart, output pixels ldo.
// The weight of channel c, tap k is at w[c·channel_stride + k·tap_stride]: PyTorch's (C,9)
// for training, (9,C) for the inference engine.
constexpr int kDwRows = 8;  // rows a thread walks, where the grid still fills the GPU
struct DwWeights {
  const float* w;
  int64_t channel_stride, tap_stride;
  bool flip;
};

// Epilogues, called with out and the offset i of a pixel's V channels in it:
// out = bias + taps (Store), out += taps (Accumulate), out = SiLU(bias + taps) (Silu).
struct DwStore {
  template <class T, int V>
  __device__ void operator()(T* out, int64_t i, const float (&acc)[V]) const { store_pack(out + i, acc); }
};
struct DwAccumulate {
  template <class T, int V>
  __device__ void operator()(T* out, int64_t i, const float (&acc)[V]) const {
    float o[V];
    load_pack(out + i, o);
#pragma unroll
    for (int v = 0; v < V; ++v) o[v] += acc[v];
    store_pack(out + i, o);
  }
};
// zero: nullptr, or float32 of out's layout to be zeroed at the same offsets (the scan's y,
// which the scan adds into: one launch fewer than a memset, which at batch 1 costs more than it moves).
struct DwSilu {
  float* zero = nullptr;
  template <class T, int V>
  __device__ void operator()(T* out, int64_t i, const float (&acc)[V]) const {
    float o[V];
#pragma unroll
    for (int v = 0; v < V; ++v) o[v] = silu_f(acc[v]);
    store_pack(out + i, o);
    if (zero) {
      const float z[V] = {};
      store_pack(zero + i, z);
    }
  }
};

// out = bias + taps, and silu = SiLU(out) at the same offsets (a float32 buffer of out's layout):
// training keeps both, the conv's output for SiLU's backward and its SiLU for the scan; and,
// if silu16 is set, SiLU(out) rounded to bf16 there too (the scan's bf16 GEMMs read that).
struct DwStoreSilu {
  float* silu;
  __nv_bfloat16* silu16 = nullptr;
  template <class T, int V>
  __device__ void operator()(T* out, int64_t i, const float (&acc)[V]) const {
    store_pack(out + i, acc);
    float o[V];
#pragma unroll
    for (int v = 0; v < V; ++v) o[v] = silu_f(to_f32(from_f32<T>(acc[v])));
    store_pack(silu + i, o);
    if (silu16) store_pack(silu16 + i, o);
  }
};

template <class TIn, class TOut, int V, class Epilogue>
__global__ void dw3x3_kernel(TOut* __restrict__ out, int64_t ldo, const TIn* __restrict__ in, int64_t ldi,
                             DwWeights wt, const float* __restrict__ bias, int64_t rows, int rows_per, int H, int W,
                             FastDivmod cv, Epilogue epilogue) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;  // (w, channel group)
  const uint32_t w = cv.div(j);
  if (w >= uint32_t(W)) return;
  const int c = int(cv.mod(j, w)) * V;
  float tap[9][V];
#pragma unroll
  for (int k = 0; k < 9; ++k)
#pragma unroll
    for (int v = 0; v < V; ++v) tap[k][v] = wt.w[(c + v) * wt.channel_stride + (wt.flip ? 8 - k : k) * wt.tap_stride];
  float b[V];
#pragma unroll
  for (int v = 0; v < V; ++v) b[v] = bias ? bias[c + v] : 0.f;
  for (int64_t r0 = int64_t(blockIdx.y) * rows_per; r0 < rows; r0 += int64_t(gridDim.y) * rows_per) {
    int h = int(r0 % H) - 1;  // the image row of r, stepped with it
    for (int64_t r = r0; r < min(rows, r0 + rows_per); ++r) {
      h = h + 1 == H ? 0 : h + 1;
      float acc[V];
#pragma unroll
      for (int v = 0; v < V; ++v) acc[v] = b[v];
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
        if (h + kh - 1 < 0 || h + kh - 1 >= H) continue;
        const TIn* row = in + ((r + kh - 1) * W) * ldi + c;
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
          const int ww = int(w) + kw - 1;
          if (ww < 0 || ww >= W) continue;
          const Pack<TIn, V> x = *reinterpret_cast<const Pack<TIn, V>*>(row + int64_t(ww) * ldi);
#pragma unroll
          for (int v = 0; v < V; ++v) acc[v] += to_f32(x.v[v]) * tap[kh * 3 + kw][v];
        }
      }
      epilogue(out, (r * W + w) * ldo + c, acc);
    }
  }
}

// Launches dw3x3_kernel over B·H rows of W pixels of C channels, 4 channels a thread where C,
// the strides and the pointers allow it, else 1. Not 8 for 16-bit types, although that would
// make 16-byte loads: 72 taps in registers left too few warps per SM (MedMamba-T at batch 128
// on the H200, the depthwise convs of a bf16 pass: 1.27 ms with 8, 0.64 ms with 4).
template <class TIn, class TOut, class Epilogue>
void launch_dw3x3(TOut* out, int64_t ldo, const TIn* in, int64_t ldi, const DwWeights& wt, const float* bias,
                  int64_t B, int64_t H, int64_t W, int64_t C, Epilogue epilogue, cudaStream_t s, const char* what) {
  constexpr int kDwThreads = 128;
  const bool by4 = C % 4 == 0 && ldi % 4 == 0 && ldo % 4 == 0 && reinterpret_cast<uintptr_t>(in) % (4 * sizeof(TIn)) == 0 &&
                   reinterpret_cast<uintptr_t>(out) % (4 * sizeof(TOut)) == 0;
  const int V = by4 ? 4 : 1;
  const int64_t columns = W * (C / V), rows = B * H;  // threads per image row, image rows
  MM_CHECK(columns <= INT32_MAX && H <= INT32_MAX, std::string(what) + ": an image row of " + std::to_string(W) +
                                                       " x " + std::to_string(C) + " is too large");
  // Fewer rows a thread where kDwRows would leave the SMs short of blocks: at batch 1,
  // MedMamba-T's depthwise convs got 11-77 blocks for 132 SMs, each thread walking its rows
  // one after another. Each pixel's sum is the same either way.
  static const int64_t enough_blocks = 4 * int64_t(sm_count());
  const int64_t xblocks = grid_for(columns, kDwThreads);
  int rows_per = kDwRows;
  while (rows_per > 1 && xblocks * ((rows + rows_per - 1) / rows_per) < enough_blocks) rows_per /= 2;
  const dim3 grid(unsigned(xblocks), unsigned(std::min<int64_t>((rows + rows_per - 1) / rows_per, 65535)));
  const FastDivmod cv(uint32_t(C / V));
  if (V == 4)
    dw3x3_kernel<TIn, TOut, 4><<<grid, kDwThreads, 0, s>>>(out, ldo, in, ldi, wt, bias, rows, rows_per, int(H), int(W),
                                                           cv, epilogue);
  else
    dw3x3_kernel<TIn, TOut, 1><<<grid, kDwThreads, 0, s>>>(out, ldo, in, ldi, wt, bias, rows, rows_per, int(H), int(W),
                                                           cv, epilogue);
  MM_CUDA_CHECK_LAUNCH(what);
}

}  // namespace mm::cuda
