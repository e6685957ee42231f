// Dense and depthwise convolutions of the CUDA training backend, forward and backward, on
// channels-last activations with PyTorch weight layouts (as lib/ops/conv2d.cpp and
// depthwise_conv.cpp).
//
// Dense: im2col with columns in (kh,kw,ci) order, so that each row is KH·KW contiguous copies
// of input pixels (PyTorch's (ci,kh,kw) order made every write a stride-K scatter: im2col
// was 15% of a training step). The weight (Cout,Cin,KH,KW) is permuted into the same column
// order, Wt (Cout, K), a small copy per call, and is then a Linear layer's weight over the
// im2col rows:
//   forward   out (P,Cout) = col (P,K) · Wtᵀ + bias
//   backward  dWt = doutᵀ · col -> permuted back and added to dW,  dbias += column sums of
//             dout,  dcol = dout · Wt -> dx.
// dcol goes back to dx as a gather: one thread per input pixel and channel group sums the
// (kh,kw) taps that read it, in a fixed order, so there are no atomics and reruns are
// bit-identical.
// A 1x1 stride-1 pad-0 conv is a Linear layer on x itself.
//
// Depthwise 3x3: a thread per V channels of a pixel column over a few image rows; the weight
// and bias gradients are per-part partial sums over a partition of the pixels that depends
// only on the shape, added up part by part in order (again no atomics).
//
// Indices are int64 wherever a buffer may pass 2^31 elements (a large batch's im2col matrix),
// int32 in a launch whose buffers are all smaller.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda_common.cuh"
#include "cuda_scratch.h"
#include "cuda_train_gemm_conv.h"
#include "fast_divmod.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;

// Grid-stride kernels: a bounded grid covers any n.
unsigned capped_grid(int64_t n) { return std::min<unsigned>(grid_for(n, kThreads), 1u << 20); }

// 64-bit division costs the GPU several times what 32-bit division does, so the index math
// of a launch runs in int32 when the largest index of its buffers fits: f(int32_t{}) or f(int64_t{}).
template <class F>
void with_index_type(int64_t largest, F&& f) {
  if (largest <= INT32_MAX) f(int32_t{});
  else f(int64_t{});
}

// What the conv kernels need of a ConvShape, as plain data (its methods are host-only).
template <class I>
struct ConvDimsT {
  I B, H, W, Cin, KH, KW, stride, pad, OH, OW, K;
};
using ConvDims = ConvDimsT<int64_t>;

template <class I>
ConvDimsT<I> narrowed(const ConvDims& d) {
  return {I(d.B), I(d.H), I(d.W), I(d.Cin), I(d.KH), I(d.KW), I(d.stride), I(d.pad), I(d.OH), I(d.OW), I(d.K)};
}

std::string describe(const ConvShape& c) {
  return "B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) + " W=" + std::to_string(c.W) +
         " Cin=" + std::to_string(c.Cin) + " Cout=" + std::to_string(c.Cout) + " kernel " + std::to_string(c.KH) +
         "x" + std::to_string(c.KW) + " stride " + std::to_string(c.stride) + " pad " + std::to_string(c.pad);
}

ConvDims checked_dims(const ConvShape& c) {
  MM_CHECK(c.B > 0 && c.H > 0 && c.W > 0 && c.Cin > 0 && c.Cout > 0 && c.KH > 0 && c.KW > 0 && c.stride > 0 &&
               c.pad >= 0 && c.H + 2 * c.pad >= c.KH && c.W + 2 * c.pad >= c.KW,
           "conv2d: bad shape, " + describe(c));
  return {c.B, c.H, c.W, c.Cin, c.KH, c.KW, c.stride, c.pad, c.out_h(), c.out_w(), c.col_k()};
}

bool is_pointwise(const ConvShape& c) { return c.KH == 1 && c.KW == 1 && c.stride == 1 && c.pad == 0; }

float* checked_workspace(float* workspace, const ConvShape& c, const char* op) {
  MM_CHECK(workspace != nullptr, std::string(op) + ": needs a workspace of " +
                                     std::to_string(conv2d_workspace_floats(c)) + " floats, " + describe(c));
  return workspace;
}

// col (P,K), P = B·OH·OW pixels, K = KH·KW·Cin columns ordered (kh,kw,ci): row p is KH·KW
// runs of Cin channels, each a copy of one input pixel (zeros outside the image), so warps
// read and write contiguous memory, V channels per thread. T is float, or __nv_bfloat16 for
// a bf16 GEMM, which then reads it without a copy of its own.
// grid.y walks the output image rows r = b·OH + oh; a thread's index within the row splits
// into (ow, tap, channel group) by FastDivmods, once: the flat version's five divisions per
// element held it to a fifth of the H200's memory speed.
struct Im2colDivs {
  FastDivmod tap_cv, cv, kw, oh;  // by KH·KW·Cin/V, Cin/V, KW, OH
};
template <class T, int V>
__global__ void im2col_kernel(T* __restrict__ col, const float* __restrict__ x, ConvDims d, Im2colDivs q) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t ow = q.tap_cv.div(j);
  if (ow >= uint32_t(d.OW)) return;
  const uint32_t rem = q.tap_cv.mod(j, ow), tap = q.cv.div(rem), cv = q.cv.mod(rem, tap);
  const uint32_t kh = q.kw.div(tap), kw = q.kw.mod(tap, kh);
  const int64_t rows = d.B * d.OH, row_packs = d.OW * (d.K / V);
  const int64_t iw = int64_t(ow) * d.stride - d.pad + kw;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const uint32_t b = q.oh.div(uint32_t(r)), oh = q.oh.mod(uint32_t(r), b);
    const int64_t ih = int64_t(oh) * d.stride - d.pad + kh;
    Pack<float, V> v{};
    if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W)
      v = reinterpret_cast<const Pack<float, V>*>(x + ((b * d.H + ih) * d.W + iw) * d.Cin)[cv];
    Pack<T, V> out;
#pragma unroll
    for (int i = 0; i < V; ++i) out.v[i] = from_f32<T>(v.v[i]);
    reinterpret_cast<Pack<T, V>*>(col)[r * row_packs + j] = out;
  }
}

// dx (B,H,W,Cin) += the entries of dcol (P,K) that im2col copied from each input pixel:
// input row ih is read by kernel row kh of output row oh when oh·stride - pad + kh = ih.
// One thread per V channels of an input pixel. n = B·H·W·Cin/V.
template <class I, int V>
__global__ void col2im_gather_kernel(float* __restrict__ dx, const float* __restrict__ dcol, ConvDimsT<I> d,
                                     int64_t n) {
  const I CV = d.Cin / V;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const I idx = I(i), q = idx / CV, cv = idx - q * CV, iw = q % d.W, r = q / d.W, ih = r % d.H, b = r / d.H;
    Pack<float, V> sum{};
    for (I kh = 0; kh < d.KH; ++kh) {
      const I oh_s = ih + d.pad - kh;  // oh · stride
      if (oh_s < 0 || oh_s % d.stride != 0 || oh_s / d.stride >= d.OH) continue;
      const I oh = oh_s / d.stride;
      for (I kw = 0; kw < d.KW; ++kw) {
        const I ow_s = iw + d.pad - kw;
        if (ow_s < 0 || ow_s % d.stride != 0 || ow_s / d.stride >= d.OW) continue;
        const I ow = ow_s / d.stride;
        const Pack<float, V> g = reinterpret_cast<const Pack<float, V>*>(
            dcol + ((b * d.OH + oh) * d.OW + ow) * d.K + (kh * d.KW + kw) * d.Cin)[cv];
#pragma unroll
        for (int j = 0; j < V; ++j) sum.v[j] += g.v[j];
      }
    }
    Pack<float, V>& out = reinterpret_cast<Pack<float, V>*>(dx)[i];
    Pack<float, V> acc = out;
#pragma unroll
    for (int j = 0; j < V; ++j) acc.v[j] += sum.v[j];
    out = acc;
  }
}

// The weight in PyTorch's order (Cout, Cin, KH·KW) and in im2col's column order (Cout, KH·KW, Cin):
// index i of the first is index column_index(i) of the second.
__device__ __forceinline__ int64_t column_index(int64_t i, int64_t Cin, int64_t KK) {
  const int64_t tap = i % KK, q = i / KK, ci = q % Cin, o = q / Cin;
  return (o * KK + tap) * Cin + ci;
}
// wt = w in column order. n = Cout·K.
__global__ void to_column_order_kernel(float* __restrict__ wt, const float* __restrict__ w, int64_t Cin, int64_t KK,
                                       int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) wt[column_index(i, Cin, KK)] = w[i];
}
// w += wt taken back to PyTorch's order (the weight gradient). n = Cout·K.
__global__ void add_from_column_order_kernel(float* __restrict__ w, const float* __restrict__ wt, int64_t Cin,
                                             int64_t KK, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) w[i] += wt[column_index(i, Cin, KK)];
}

int64_t input_floats(const ConvDims& d) { return d.B * d.H * d.W * d.Cin; }
int64_t col_floats(const ConvDims& d) { return d.B * d.OH * d.OW * d.K; }

// Vector width over the channels: 4 where Cin allows (x and dx rows then start 16-byte aligned).
int channel_vector(const ConvDims& d, const void* a, const void* b) {
  return vector_width<float>({d.Cin}, {a, b}) >= 4 ? 4 : 1;
}

template <class T>
void im2col(T* col, const float* x, const ConvDims& d, Stream s) {
  int V = channel_vector(d, x, col);
  // 8 channels (a 16-byte store) where the output is bf16 and the alignment allows it
  if (std::is_same<T, __nv_bfloat16>::value && V == 4 && d.Cin % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 32 == 0 &&
      reinterpret_cast<uintptr_t>(col) % 16 == 0)
    V = 8;
  const int64_t per_row = d.OW * (d.K / V), rows = d.B * d.OH;
  MM_CHECK(per_row <= INT32_MAX && rows <= INT32_MAX, "im2col: too large, B=" + std::to_string(d.B) +
                                                          " OH=" + std::to_string(d.OH) + " OW=" + std::to_string(d.OW) +
                                                          " K=" + std::to_string(d.K));
  const Im2colDivs q{FastDivmod(uint32_t(d.KH * d.KW * (d.Cin / V))), FastDivmod(uint32_t(d.Cin / V)),
                     FastDivmod(uint32_t(d.KW)), FastDivmod(uint32_t(d.OH))};
  const dim3 grid(grid_for(per_row, kThreads), unsigned(std::min<int64_t>(rows, 65535)));
  if (V == 8)
    im2col_kernel<T, 8><<<grid, kThreads, 0, s>>>(col, x, d, q);
  else if (V == 4)
    im2col_kernel<T, 4><<<grid, kThreads, 0, s>>>(col, x, d, q);
  else
    im2col_kernel<T, 1><<<grid, kThreads, 0, s>>>(col, x, d, q);
  MM_CUDA_CHECK_LAUNCH("im2col_kernel");
}

void col2im_gather(float* dx, const float* dcol, const ConvDims& d, Stream s) {
  const int V = channel_vector(d, dx, dcol);
  const int64_t n = input_floats(d) / V;
  with_index_type(std::max(col_floats(d), input_floats(d)), [&](auto index) {
    using I = decltype(index);
    if (V == 4)
      col2im_gather_kernel<I, 4><<<capped_grid(n), kThreads, 0, s>>>(dx, dcol, narrowed<I>(d), n);
    else
      col2im_gather_kernel<I, 1><<<capped_grid(n), kThreads, 0, s>>>(dx, dcol, narrowed<I>(d), n);
  });
  MM_CUDA_CHECK_LAUNCH("col2im_gather_kernel");
}

void to_column_order(float* wt, const float* w, const ConvShape& c, Stream s) {
  const int64_t n = c.Cout * c.col_k();
  to_column_order_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(wt, w, c.Cin, c.KH * c.KW, n);
  MM_CUDA_CHECK_LAUNCH("to_column_order_kernel");
}

void add_from_column_order(float* w, const float* wt, const ConvShape& c, Stream s) {
  const int64_t n = c.Cout * c.col_k();
  add_from_column_order_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(w, wt, c.Cin, c.KH * c.KW, n);
  MM_CUDA_CHECK_LAUNCH("add_from_column_order_kernel");
}

// im2col of x into col, as the GEMM operand that reads it: bf16 for a bf16 GEMM (in the
// first half of col's floats), else float32.
GemmOperand im2col_operand(float* col, const float* x, const ConvDims& d, Stream s) {
  if (gemm_compute() != GemmCompute::BF16) {
    im2col(col, x, d, s);
    return f32_operand(col, d.K);
  }
  auto* col16 = reinterpret_cast<__nv_bfloat16*>(col);
  im2col(col16, x, d, s);
  return bf16_operand(reinterpret_cast<const uint16_t*>(col16), d.K);
}

// The workspace of a conv that is not pointwise: the weight in column order, its gradient
// in column order, then the im2col matrix (float32, or bf16 in its first half), each
// starting 256-byte aligned.
struct ConvWorkspace {
  float* weight_t;
  float* dweight_t;
  float* col;
};
int64_t aligned_floats(int64_t n) { return (n + 63) / 64 * 64; }
ConvWorkspace carve(float* workspace, const ConvShape& c) {
  const int64_t w = aligned_floats(c.Cout * c.col_k());
  return {workspace, workspace + w, workspace + 2 * w};
}

// ---------------------------------------------------------------------------
// Depthwise 3x3

// One thread per V channels of one pixel column of kDwRows consecutive image rows (rows are
// b·H + h): it loads its channels' taps once (tap 8-k for the flipped weight of the backward
// pass, the transposed conv), then per row sums the 9 taps of in in the order kh, kw.
// forward: out = bias + taps(x, weight); backward (accumulate): out += taps(dout, flipped).
// The column and channel come from the thread index by one FastDivmod (cv = C/V), the image
// row from the grid, so no per-element division remains (the flat version, one thread per
// element with five divisions, moved memory at a quarter of the H200's speed).
constexpr int kDwRows = 8;
template <int V>
__global__ void dw3x3_kernel(float* __restrict__ out, const float* __restrict__ in, const float* __restrict__ weight,
                             const float* __restrict__ bias, int64_t rows, int H, int W, int C, FastDivmod cv,
                             bool backward) {
  const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;  // (w, channel group)
  const uint32_t w = cv.div(j);
  if (w >= uint32_t(W)) return;
  const int c = int(cv.mod(j, w)) * V;
  float tap[9][V];
#pragma unroll
  for (int k = 0; k < 9; ++k)
#pragma unroll
    for (int v = 0; v < V; ++v) tap[k][v] = weight[(c + v) * 9 + (backward ? 8 - k : k)];
  float b[V];
#pragma unroll
  for (int v = 0; v < V; ++v) b[v] = !backward && bias ? bias[c + v] : 0.f;
  for (int64_t r0 = int64_t(blockIdx.y) * kDwRows; r0 < rows; r0 += int64_t(gridDim.y) * kDwRows) {
    for (int64_t r = r0; r < min(rows, r0 + kDwRows); ++r) {
      const int h = int(r % H);
      Pack<float, V> acc;
#pragma unroll
      for (int v = 0; v < V; ++v) acc.v[v] = b[v];
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
        if (h + kh - 1 < 0 || h + kh - 1 >= H) continue;
        const float* row = in + ((r + kh - 1) * W) * C + c;
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
          const int ww = int(w) + kw - 1;
          if (ww < 0 || ww >= W) continue;
          const Pack<float, V> x = *reinterpret_cast<const Pack<float, V>*>(row + int64_t(ww) * C);
#pragma unroll
          for (int v = 0; v < V; ++v) acc.v[v] += x.v[v] * tap[kh * 3 + kw][v];
        }
      }
      auto* dst = reinterpret_cast<Pack<float, V>*>(out + (r * W + w) * C + c);
      if (backward) {
        Pack<float, V> o = *dst;
#pragma unroll
        for (int v = 0; v < V; ++v) o.v[v] += acc.v[v];
        *dst = o;
      } else {
        *dst = acc;
      }
    }
  }
}

// Weight and bias gradient sums: 9 taps then the bias, per channel.
constexpr int kDwSums = 10, kDwCols = 32, kDwLanes = 8;
constexpr int64_t kPixelsPerPart = 256, kMaxParts = 1024;

// Block (32 channels, 8 pixel lanes) per (channel tile, pixel part): partial (part, 10, C).
__global__ void dw3x3_grad_partials_kernel(float* __restrict__ partial, const float* __restrict__ dout,
                                           const float* __restrict__ x, int64_t B, int64_t H, int64_t W, int64_t C,
                                           int64_t pixels_per_part) {
  __shared__ float lane_sums[kDwLanes][kDwSums][kDwCols];
  const int64_t c = int64_t(blockIdx.x) * kDwCols + threadIdx.x, P = B * H * W;
  const int64_t p0 = int64_t(blockIdx.y) * pixels_per_part, p1 = min(P, p0 + pixels_per_part);
  float acc[kDwSums];
#pragma unroll
  for (int k = 0; k < kDwSums; ++k) acc[k] = 0.f;
  if (c < C) {
    // p = (b·H + h)·W + w, so the pixel (h+dh, w+dw) of the same image is p + dh·W + dw.
    // (w, h) advance with p instead of two 64-bit divisions per pixel.
    int64_t w = (p0 + threadIdx.y) % W, h = ((p0 + threadIdx.y) / W) % H;
    for (int64_t p = p0 + threadIdx.y; p < p1; p += kDwLanes) {
      const float g = dout[p * C + c];
      acc[9] += g;
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
        if (h + kh - 1 < 0 || h + kh - 1 >= H) continue;
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
          if (w + kw - 1 < 0 || w + kw - 1 >= W) continue;
          acc[kh * 3 + kw] += g * x[(p + (kh - 1) * W + (kw - 1)) * C + c];
        }
      }
      for (w += kDwLanes; w >= W; w -= W) h = h + 1 == H ? 0 : h + 1;  // this lane's next pixel
    }
  }
#pragma unroll
  for (int k = 0; k < kDwSums; ++k) lane_sums[threadIdx.y][k][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int k = 0; k < kDwSums; ++k) {
      float total = 0.f;
      for (int l = 0; l < kDwLanes; ++l) total += lane_sums[l][k][threadIdx.x];
      partial[(int64_t(blockIdx.y) * kDwSums + k) * C + c] = total;
    }
  }
}

// One warp per (sum k, channel c): the parts added in a fixed order.
__global__ void dw3x3_grad_combine_kernel(float* __restrict__ dweight, float* __restrict__ dbias,
                                          const float* __restrict__ partial, int64_t parts, int64_t C) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (i >= kDwSums * C) return;
  const int64_t k = i / C, c = i % C;
  const double sum = warp_sum_strided(partial + k * C + c, parts, kDwSums * C);
  if (threadIdx.x % 32 != 0) return;
  if (k < 9) {
    if (dweight) dweight[c * 9 + k] += float(sum);
  } else if (dbias) {
    dbias[c] += float(sum);
  }
}

void dw3x3(float* out, const float* in, const float* weight, const float* bias, int64_t B, int64_t H, int64_t W,
           int64_t C, bool backward, Stream s) {
  constexpr int kDwThreads = 128;
  const int V = vector_width<float>({C}, {out, in}) >= 4 ? 4 : 1;
  const int64_t columns = W * (C / V), rows = B * H;  // threads per image row, image rows
  MM_CHECK(columns <= INT32_MAX && H <= INT32_MAX, "dwconv3x3: an image row of " + std::to_string(W) + " x " +
                                                         std::to_string(C) + " is too large");
  const dim3 grid(grid_for(columns, kDwThreads), unsigned(std::min<int64_t>((rows + kDwRows - 1) / kDwRows, 65535)));
  const FastDivmod cv(uint32_t(C / V));
  if (V == 4)
    dw3x3_kernel<4><<<grid, kDwThreads, 0, s>>>(out, in, weight, bias, rows, int(H), int(W), int(C), cv, backward);
  else
    dw3x3_kernel<1><<<grid, kDwThreads, 0, s>>>(out, in, weight, bias, rows, int(H), int(W), int(C), cv, backward);
  MM_CUDA_CHECK_LAUNCH(backward ? "dw3x3_kernel (backward dx)" : "dw3x3_kernel (forward)");
}

void check_dw_shape(int64_t B, int64_t H, int64_t W, int64_t C, const char* op) {
  MM_CHECK(B > 0 && H > 0 && W > 0 && C > 0, std::string(op) + ": bad shape B=" + std::to_string(B) + " H=" +
                                                 std::to_string(H) + " W=" + std::to_string(W) +
                                                 " C=" + std::to_string(C));
}

}  // namespace

int64_t conv2d_workspace_floats(const ConvShape& c) {
  const ConvDims d = checked_dims(c);
  return is_pointwise(c) ? 0 : 2 * aligned_floats(c.Cout * d.K) + col_floats(d);
}

void conv2d_forward(float* out, const float* x, const float* weight, const float* bias, const ConvShape& c,
                    float* workspace, Stream s) {
  const ConvDims d = checked_dims(c);
  const int64_t P = d.B * d.OH * d.OW;
  if (is_pointwise(c)) {
    linear_forward(out, x, weight, bias, P, d.Cin, c.Cout, s);
    return;
  }
  const ConvWorkspace ws = carve(checked_workspace(workspace, c, "conv2d_forward"), c);
  to_column_order(ws.weight_t, weight, c, s);
  linear_forward(out, im2col_operand(ws.col, x, d, s), ws.weight_t, bias, P, d.K, c.Cout, s);
}

void conv2d_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, const ConvShape& c, float* workspace, Stream s) {
  const ConvDims d = checked_dims(c);
  const int64_t P = d.B * d.OH * d.OW;
  if (is_pointwise(c)) {
    linear_backward(dx, dweight, dbias, dout, x, weight, P, d.Cin, c.Cout, s);
    return;
  }
  if (dbias) linear_backward(nullptr, nullptr, dbias, dout, nullptr, nullptr, P, d.K, c.Cout, s);
  if (!dweight && !dx) return;
  const ConvWorkspace ws = carve(checked_workspace(workspace, c, "conv2d_backward"), c);
  if (dweight) {
    // dweight_t (Cout,K) = doutᵀ (Cout,P) · col (P,K), then added to dweight in PyTorch's order
    gemm(true, false, c.Cout, d.K, P, 1.f, f32_operand(dout, c.Cout), im2col_operand(ws.col, x, d, s), 0.f,
         ws.dweight_t, d.K, s);
    add_from_column_order(dweight, ws.dweight_t, c, s);
  }
  if (dx) {
    // dcol (P,K) = dout (P,Cout) · weight_t (Cout,K), over col: the stream orders it after dweight's GEMM.
    to_column_order(ws.weight_t, weight, c, s);
    gemm_f32(false, false, P, d.K, c.Cout, 1.f, dout, c.Cout, ws.weight_t, d.K, 0.f, ws.col, d.K, s);
    col2im_gather(dx, ws.col, d, s);
  }
}

void dwconv3x3_forward(float* out, const float* x, const float* weight, const float* bias, int64_t B, int64_t H,
                       int64_t W, int64_t C, Stream s) {
  check_dw_shape(B, H, W, C, "dwconv3x3_forward");
  dw3x3(out, x, weight, bias, B, H, W, C, false, s);
}

void dwconv3x3_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, int64_t B, int64_t H, int64_t W, int64_t C, Stream s) {
  check_dw_shape(B, H, W, C, "dwconv3x3_backward");
  if (dx) dw3x3(dx, dout, weight, nullptr, B, H, W, C, true, s);
  if (!dweight && !dbias) return;
  const int64_t P = B * H * W;
  const int64_t parts = std::min<int64_t>((P + kPixelsPerPart - 1) / kPixelsPerPart, kMaxParts);
  const int64_t pixels_per_part = (P + parts - 1) / parts;
  float* partial = static_cast<float*>(reduction_scratch(parts * kDwSums * C * int64_t(sizeof(float))));
  const dim3 block(kDwCols, kDwLanes), grid(grid_for(C, kDwCols), unsigned(parts));
  dw3x3_grad_partials_kernel<<<grid, block, 0, s>>>(partial, dout, x, B, H, W, C, pixels_per_part);
  MM_CUDA_CHECK_LAUNCH("dw3x3_grad_partials_kernel");
  dw3x3_grad_combine_kernel<<<grid_for(kDwSums * C * 32, kThreads), kThreads, 0, s>>>(dweight, dbias, partial, parts,
                                                                                     C);
  MM_CUDA_CHECK_LAUNCH("dw3x3_grad_combine_kernel");
}

}  // namespace mm::cuda
