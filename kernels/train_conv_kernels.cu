// Dense and depthwise convolutions of the CUDA training backend, forward and backward, on
// channels-last activations with PyTorch weight layouts (as lib/ops/conv2d.cpp and
// depthwise_conv.cpp).
//
// Dense: im2col with columns in PyTorch's (ci,kh,kw) order, so the weight (Cout,Cin,KH,KW)
// is the (Cout, K) matrix of a Linear layer over the im2col rows and the GEMM, bias and
// bias gradient all come from linear_forward / linear_backward:
//   forward   out (P,Cout) = col (P,K) · Wᵀ + bias
//   backward  dW += doutᵀ · col,  dbias += column sums of dout,  dcol = dout · W -> dx.
// dcol goes back to dx as a gather: one thread per input element sums the (kh,kw) taps
// that read it, in a fixed order, so there are no atomics and reruns are bit-identical.
// A 1x1 stride-1 pad-0 conv is a Linear layer on x itself.
//
// Depthwise 3x3: one thread per output element; the weight and bias gradients are per-part
// partial sums over a partition of the pixels that depends only on the shape, added up
// part by part in order (again no atomics).
//
// Indices are int64 wherever a buffer may pass 2^31 elements (a large batch's im2col matrix),
// int32 in a launch whose buffers are all smaller.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda_common.cuh"
#include "cuda_scratch.h"
#include "cuda_train_gemm_conv.h"

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

// col (P,K), P = B·OH·OW pixels, K = Cin·KH·KW columns ordered (ci,kh,kw); zero outside the image.
// n = P·K. The loop counter stays int64 (i + stride must not wrap); I holds every index below.
template <class I>
__global__ void im2col_kernel(float* __restrict__ col, const float* __restrict__ x, ConvDimsT<I> d, int64_t n) {
  const I KK = d.KH * d.KW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const I idx = I(i), p = idx / d.K, k = idx - p * d.K;
    const I ci = k / KK, tap = k - ci * KK, kh = tap / d.KW, kw = tap - kh * d.KW;
    const I ow = p % d.OW, q = p / d.OW, oh = q % d.OH, b = q / d.OH;
    const I ih = oh * d.stride - d.pad + kh, iw = ow * d.stride - d.pad + kw;
    col[i] = (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W) ? x[((b * d.H + ih) * d.W + iw) * d.Cin + ci] : 0.f;
  }
}

// dx (B,H,W,Cin) += the entries of dcol (P,K) that im2col copied from each input element:
// input row ih is read by kernel row kh of output row oh when oh·stride - pad + kh = ih.
// n = B·H·W·Cin.
template <class I>
__global__ void col2im_gather_kernel(float* __restrict__ dx, const float* __restrict__ dcol, ConvDimsT<I> d,
                                     int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const I idx = I(i), ci = idx % d.Cin, q = idx / d.Cin, iw = q % d.W, r = q / d.W, ih = r % d.H, b = r / d.H;
    float sum = 0.f;
    for (I kh = 0; kh < d.KH; ++kh) {
      const I oh_s = ih + d.pad - kh;  // oh · stride
      if (oh_s < 0 || oh_s % d.stride != 0 || oh_s / d.stride >= d.OH) continue;
      const I oh = oh_s / d.stride;
      for (I kw = 0; kw < d.KW; ++kw) {
        const I ow_s = iw + d.pad - kw;
        if (ow_s < 0 || ow_s % d.stride != 0 || ow_s / d.stride >= d.OW) continue;
        const I ow = ow_s / d.stride;
        sum += dcol[((b * d.OH + oh) * d.OW + ow) * d.K + (ci * d.KH + kh) * d.KW + kw];
      }
    }
    dx[i] += sum;
  }
}

int64_t input_floats(const ConvDims& d) { return d.B * d.H * d.W * d.Cin; }
int64_t col_floats(const ConvDims& d) { return d.B * d.OH * d.OW * d.K; }

void im2col(float* col, const float* x, const ConvDims& d, Stream s) {
  const int64_t n = col_floats(d);
  with_index_type(std::max(n, input_floats(d)), [&](auto index) {
    using I = decltype(index);
    im2col_kernel<I><<<capped_grid(n), kThreads, 0, s>>>(col, x, narrowed<I>(d), n);
  });
  MM_CUDA_CHECK_LAUNCH("im2col_kernel");
}

void col2im_gather(float* dx, const float* dcol, const ConvDims& d, Stream s) {
  const int64_t n = input_floats(d);
  with_index_type(std::max(n, col_floats(d)), [&](auto index) {
    using I = decltype(index);
    col2im_gather_kernel<I><<<capped_grid(n), kThreads, 0, s>>>(dx, dcol, narrowed<I>(d), n);
  });
  MM_CUDA_CHECK_LAUNCH("col2im_gather_kernel");
}

// ---------------------------------------------------------------------------
// Depthwise 3x3

// acc + sum over the 9 taps of in (B,H,W,C) around pixel (b,h,w) times weight (C,1,3,3),
// tap k = kh·3+kw; flipped reads weight tap 8-k (the transposed conv of the backward pass).
template <class I>
__device__ __forceinline__ float dw3x3_taps(float acc, const float* __restrict__ in, const float* __restrict__ weight,
                                            I b, I h, I w, I c, I H, I W, I C, bool flipped) {
#pragma unroll
  for (int kh = 0; kh < 3; ++kh) {
    const I hh = h + kh - 1;
    if (hh < 0 || hh >= H) continue;
#pragma unroll
    for (int kw = 0; kw < 3; ++kw) {
      const I ww = w + kw - 1;
      if (ww < 0 || ww >= W) continue;
      const int k = kh * 3 + kw;
      acc += in[((b * H + hh) * W + ww) * C + c] * weight[c * 9 + (flipped ? 8 - k : k)];
    }
  }
  return acc;
}

// forward: out = bias + taps(x, weight); backward (accumulate): out += taps(dout, flipped weight).
// n = B·H·W·C.
template <class I>
__global__ void dw3x3_kernel(float* __restrict__ out, const float* __restrict__ in, const float* __restrict__ weight,
                             const float* __restrict__ bias, I H, I W, I C, int64_t n, bool backward) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const I idx = I(i), c = idx % C, q = idx / C, w = q % W, r = q / W, h = r % H, b = r / H;
    if (backward) {
      out[i] += dw3x3_taps(0.f, in, weight, b, h, w, c, H, W, C, true);
    } else {
      out[i] = dw3x3_taps(bias ? bias[c] : 0.f, in, weight, b, h, w, c, H, W, C, false);
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
    for (int64_t p = p0 + threadIdx.y; p < p1; p += kDwLanes) {
      // p = (b·H + h)·W + w, so the pixel (h+dh, w+dw) of the same image is p + dh·W + dw.
      const int64_t w = p % W, h = (p / W) % H;
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

// One thread per (sum k, channel c): the parts added in order.
__global__ void dw3x3_grad_combine_kernel(float* __restrict__ dweight, float* __restrict__ dbias,
                                          const float* __restrict__ partial, int64_t parts, int64_t C) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= kDwSums * C) return;
  const int64_t k = i / C, c = i % C;
  double sum = 0.0;
  for (int64_t part = 0; part < parts; ++part) sum += partial[(part * kDwSums + k) * C + c];
  if (k < 9) {
    if (dweight) dweight[c * 9 + k] += float(sum);
  } else if (dbias) {
    dbias[c] += float(sum);
  }
}

void dw3x3(float* out, const float* in, const float* weight, const float* bias, int64_t B, int64_t H, int64_t W,
           int64_t C, bool backward, Stream s) {
  const int64_t n = B * H * W * C;
  with_index_type(n, [&](auto index) {
    using I = decltype(index);
    dw3x3_kernel<I><<<capped_grid(n), kThreads, 0, s>>>(out, in, weight, bias, I(H), I(W), I(C), n, backward);
  });
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
  return is_pointwise(c) ? 0 : col_floats(d);
}

void conv2d_forward(float* out, const float* x, const float* weight, const float* bias, const ConvShape& c,
                    float* workspace, Stream s) {
  const ConvDims d = checked_dims(c);
  const int64_t P = d.B * d.OH * d.OW;
  if (is_pointwise(c)) {
    linear_forward(out, x, weight, bias, P, d.Cin, c.Cout, s);
    return;
  }
  float* col = checked_workspace(workspace, c, "conv2d_forward");
  im2col(col, x, d, s);
  linear_forward(out, col, weight, bias, P, d.K, c.Cout, s);
}

void conv2d_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, const ConvShape& c, float* workspace, Stream s) {
  const ConvDims d = checked_dims(c);
  const int64_t P = d.B * d.OH * d.OW;
  if (is_pointwise(c)) {
    linear_backward(dx, dweight, dbias, dout, x, weight, P, d.Cin, c.Cout, s);
    return;
  }
  if (dweight || dx) checked_workspace(workspace, c, "conv2d_backward");
  if (dweight) im2col(workspace, x, d, s);
  // dweight (Cout,K) += doutᵀ · col, dbias += column sums of dout (col is read only for dweight)
  linear_backward(nullptr, dweight, dbias, dout, dweight ? workspace : nullptr, weight, P, d.K, c.Cout, s);
  if (dx) {
    // dcol (P,K) = dout (P,Cout) · weight (Cout,K), over col: the stream orders it after dweight's GEMM.
    gemm_f32(false, false, P, d.K, c.Cout, 1.f, dout, c.Cout, weight, d.K, 0.f, workspace, d.K, s);
    col2im_gather(dx, workspace, d, s);
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
  dw3x3_grad_combine_kernel<<<grid_for(kDwSums * C, kThreads), kThreads, 0, s>>>(dweight, dbias, partial, parts, C);
  MM_CUDA_CHECK_LAUNCH("dw3x3_grad_combine_kernel");
}

}  // namespace mm::cuda
