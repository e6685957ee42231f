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
// Indices are int64 throughout: the im2col matrix of a large batch passes 2^31 elements.
#include <algorithm>
#include <string>

#include "cuda_common.cuh"
#include "cuda_scratch.h"
#include "cuda_train_gemm_conv.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;

// Grid-stride kernels: a bounded grid covers any n.
unsigned capped_grid(int64_t n) { return std::min<unsigned>(grid_for(n, kThreads), 1u << 20); }

// What the conv kernels need of a ConvShape, as plain data (its methods are host-only).
struct ConvDims {
  int64_t B, H, W, Cin, KH, KW, stride, pad, OH, OW, K;
};

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
__global__ void im2col_kernel(float* __restrict__ col, const float* __restrict__ x, ConvDims d) {
  const int64_t KK = d.KH * d.KW, n = d.B * d.OH * d.OW * d.K;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i / d.K, k = i - p * d.K;
    const int64_t ci = k / KK, tap = k - ci * KK, kh = tap / d.KW, kw = tap - kh * d.KW;
    const int64_t ow = p % d.OW, q = p / d.OW, oh = q % d.OH, b = q / d.OH;
    const int64_t ih = oh * d.stride - d.pad + kh, iw = ow * d.stride - d.pad + kw;
    col[i] = (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W) ? x[((b * d.H + ih) * d.W + iw) * d.Cin + ci] : 0.f;
  }
}

// dx (B,H,W,Cin) += the entries of dcol (P,K) that im2col copied from each input element:
// input row ih is read by kernel row kh of output row oh when oh·stride - pad + kh = ih.
__global__ void col2im_gather_kernel(float* __restrict__ dx, const float* __restrict__ dcol, ConvDims d) {
  const int64_t n = d.B * d.H * d.W * d.Cin;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ci = i % d.Cin, q = i / d.Cin, iw = q % d.W, r = q / d.W, ih = r % d.H, b = r / d.H;
    float sum = 0.f;
    for (int64_t kh = 0; kh < d.KH; ++kh) {
      const int64_t oh_s = ih + d.pad - kh;  // oh · stride
      if (oh_s < 0 || oh_s % d.stride != 0 || oh_s / d.stride >= d.OH) continue;
      const int64_t oh = oh_s / d.stride;
      for (int64_t kw = 0; kw < d.KW; ++kw) {
        const int64_t ow_s = iw + d.pad - kw;
        if (ow_s < 0 || ow_s % d.stride != 0 || ow_s / d.stride >= d.OW) continue;
        const int64_t ow = ow_s / d.stride;
        sum += dcol[((b * d.OH + oh) * d.OW + ow) * d.K + (ci * d.KH + kh) * d.KW + kw];
      }
    }
    dx[i] += sum;
  }
}

void im2col(float* col, const float* x, const ConvDims& d, Stream s) {
  im2col_kernel<<<capped_grid(d.B * d.OH * d.OW * d.K), kThreads, 0, s>>>(col, x, d);
  MM_CUDA_CHECK_LAUNCH("im2col_kernel");
}

// ---------------------------------------------------------------------------
// Depthwise 3x3

// acc + sum over the 9 taps of in (B,H,W,C) around pixel (b,h,w) times weight (C,1,3,3),
// tap k = kh·3+kw; flipped reads weight tap 8-k (the transposed conv of the backward pass).
__device__ __forceinline__ float dw3x3_taps(float acc, const float* __restrict__ in, const float* __restrict__ weight,
                                            int64_t b, int64_t h, int64_t w, int64_t c, int64_t H, int64_t W,
                                            int64_t C, bool flipped) {
#pragma unroll
  for (int kh = 0; kh < 3; ++kh) {
    const int64_t hh = h + kh - 1;
    if (hh < 0 || hh >= H) continue;
#pragma unroll
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t ww = w + kw - 1;
      if (ww < 0 || ww >= W) continue;
      const int k = kh * 3 + kw;
      acc += in[((b * H + hh) * W + ww) * C + c] * weight[c * 9 + (flipped ? 8 - k : k)];
    }
  }
  return acc;
}

// forward: out = bias + taps(x, weight); backward (accumulate): out += taps(dout, flipped weight).
__global__ void dw3x3_kernel(float* __restrict__ out, const float* __restrict__ in, const float* __restrict__ weight,
                             const float* __restrict__ bias, int64_t B, int64_t H, int64_t W, int64_t C,
                             bool backward) {
  const int64_t n = B * H * W * C;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, q = i / C, w = q % W, r = q / W, h = r % H, b = r / H;
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

void check_dw_shape(int64_t B, int64_t H, int64_t W, int64_t C, const char* op) {
  MM_CHECK(B > 0 && H > 0 && W > 0 && C > 0, std::string(op) + ": bad shape B=" + std::to_string(B) + " H=" +
                                                 std::to_string(H) + " W=" + std::to_string(W) +
                                                 " C=" + std::to_string(C));
}

}  // namespace

int64_t conv2d_workspace_floats(const ConvShape& c) {
  const ConvDims d = checked_dims(c);
  return is_pointwise(c) ? 0 : d.B * d.OH * d.OW * d.K;
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
    col2im_gather_kernel<<<capped_grid(d.B * d.H * d.W * d.Cin), kThreads, 0, s>>>(dx, workspace, d);
    MM_CUDA_CHECK_LAUNCH("col2im_gather_kernel");
  }
}

void dwconv3x3_forward(float* out, const float* x, const float* weight, const float* bias, int64_t B, int64_t H,
                       int64_t W, int64_t C, Stream s) {
  check_dw_shape(B, H, W, C, "dwconv3x3_forward");
  dw3x3_kernel<<<capped_grid(B * H * W * C), kThreads, 0, s>>>(out, x, weight, bias, B, H, W, C, false);
  MM_CUDA_CHECK_LAUNCH("dw3x3_kernel (forward)");
}

void dwconv3x3_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, int64_t B, int64_t H, int64_t W, int64_t C, Stream s) {
  check_dw_shape(B, H, W, C, "dwconv3x3_backward");
  if (dx) {
    dw3x3_kernel<<<capped_grid(B * H * W * C), kThreads, 0, s>>>(dx, dout, weight, nullptr, B, H, W, C, true);
    MM_CUDA_CHECK_LAUNCH("dw3x3_kernel (backward dx)");
  }
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
