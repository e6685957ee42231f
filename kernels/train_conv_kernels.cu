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
// Depthwise 3x3: a thread per V channels of a pixel column over a few image rows (forward and
// dx; the im2col and depthwise kernels are conv_layout.cuh's, shared with the inference
// engine); the weight
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

#include "conv_layout.cuh"
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

// dx (B,H,W,Cin) += the entries of dcol (P,K) that im2col copied from each input pixel:
// input row ih is read by kernel row kh of output row oh when oh·stride - pad + kh = ih.
// One thread per V channels of an input pixel. n = B·H·W·Cin/V.
template <class I, int V, class T>
__global__ void col2im_gather_kernel(float* __restrict__ dx, const T* __restrict__ dcol, ConvDimsT<I> d,
                                     int64_t n, bool overwrite) {
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
        float g[V];
        load_pack(dcol + ((b * d.OH + oh) * d.OW + ow) * d.K + (kh * d.KW + kw) * d.Cin + cv * V, g);
#pragma unroll
        for (int j = 0; j < V; ++j) sum.v[j] += g[j];
      }
    }
    Pack<float, V>& out = reinterpret_cast<Pack<float, V>*>(dx)[i];
    if (overwrite) {
      out = sum;
    } else {
      Pack<float, V> acc = out;
#pragma unroll
      for (int j = 0; j < V; ++j) acc.v[j] += sum.v[j];
      out = acc;
    }
  }
}

// The weight in PyTorch's order (Cout, Cin, KH·KW) and in im2col's column order (Cout, KH·KW, Cin):
// index i of the first is index column_index(i) of the second.
__device__ __forceinline__ int64_t column_index(int64_t i, int64_t Cin, int64_t KK) {
  const int64_t tap = i % KK, q = i / KK, ci = q % Cin, o = q / Cin;
  return (o * KK + tap) * Cin + ci;
}
// wt = w in column order, as T (float, or bf16 rounded to nearest even). n = Cout·K.
template <class T>
__global__ void to_column_order_kernel(T* __restrict__ wt, const float* __restrict__ w, int64_t Cin, int64_t KK,
                                       int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) wt[column_index(i, Cin, KK)] = from_f32<T>(w[i]);
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

// dcol float32, or bf16 (gemm_bf16_out's).
template <class T>
void col2im_gather(float* dx, const T* dcol, const ConvDims& d, bool overwrite, Stream s) {
  const int V = channel_vector(d, dx, dcol);
  const int64_t n = input_floats(d) / V;
  with_index_type(std::max(col_floats(d), input_floats(d)), [&](auto index) {
    using I = decltype(index);
    if (V == 4)
      col2im_gather_kernel<I, 4, T><<<capped_grid(n), kThreads, 0, s>>>(dx, dcol, narrowed<I>(d), n, overwrite);
    else
      col2im_gather_kernel<I, 1, T><<<capped_grid(n), kThreads, 0, s>>>(dx, dcol, narrowed<I>(d), n, overwrite);
  });
  MM_CUDA_CHECK_LAUNCH("col2im_gather_kernel");
}

// The weight in column order in wt's memory, as the GEMMs read it: under GemmCompute::BF16
// rounded to bf16 there (the bits a GEMM's own copy would hold), else float32.
GemmOperand to_column_order(float* wt, const float* w, const ConvShape& c, Stream s) {
  const int64_t n = c.Cout * c.col_k(), K = c.col_k();
  if (gemm_compute() == GemmCompute::BF16) {
    auto* wt16 = reinterpret_cast<__nv_bfloat16*>(wt);
    to_column_order_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(wt16, w, c.Cin, c.KH * c.KW, n);
    MM_CUDA_CHECK_LAUNCH("to_column_order_kernel (bf16)");
    return bf16_operand(reinterpret_cast<const uint16_t*>(wt16), K);
  }
  to_column_order_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(wt, w, c.Cin, c.KH * c.KW, n);
  MM_CUDA_CHECK_LAUNCH("to_column_order_kernel");
  return f32_operand(wt, K);
}

void add_from_column_order(float* w, const float* wt, const ConvShape& c, Stream s) {
  const int64_t n = c.Cout * c.col_k();
  add_from_column_order_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(w, wt, c.Cin, c.KH * c.KW, n);
  MM_CUDA_CHECK_LAUNCH("add_from_column_order_kernel");
}

// im2col of x (through in's map, if any) into col, as the GEMM operand that reads it: bf16
// for a bf16 GEMM (in the first half of col's floats), else float32.
GemmOperand im2col_operand(float* col, const float* x, const ConvDims& d, const ConvInputMap* in, Stream s) {
  const ConvInputMap m = in ? *in : ConvInputMap{};
  const int64_t ldx = m.ld ? m.ld : d.Cin;
  if (gemm_compute() != GemmCompute::BF16) {
    launch_im2col(col, x, ldx, m.scale, m.shift, d, s, m.relu, true);
    return f32_operand(col, d.K);
  }
  auto* col16 = reinterpret_cast<__nv_bfloat16*>(col);
  launch_im2col(col16, x, ldx, m.scale, m.shift, d, s, m.relu, true);
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

// Weight and bias gradient sums: 9 taps then the bias, per channel.
constexpr int kDwSums = 10, kDwCols = 32, kDwLanes = 8;
constexpr int64_t kMaxParts = 1024;

// Block (32 channels, 8 row lanes) per (channel tile, part of rows_per_part image rows (b, h)):
// partial (part, 10, C). A lane walks whole image rows, keeping the 3x3 window of x in
// registers as it moves along w: 4 loads a pixel (dout and the window's new column) instead of
// 10. (A lane per pixel, each tap loaded and bounds-checked, took 200 us at MedMamba-T's first
// stage, bound by its loads and index arithmetic, against 50 us for the bytes it reads.)
__global__ void dw3x3_grad_partials_kernel(float* __restrict__ partial, const float* __restrict__ dout,
                                           const float* __restrict__ x, int64_t BH, int H, int W, int64_t C,
                                           int64_t rows_per_part) {
  __shared__ float lane_sums[kDwLanes][kDwSums][kDwCols];
  const int64_t c = int64_t(blockIdx.x) * kDwCols + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_part, r1 = min(BH, r0 + rows_per_part);
  float acc[kDwSums];
#pragma unroll
  for (int k = 0; k < kDwSums; ++k) acc[k] = 0.f;
  if (c < C) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kDwLanes) {  // r = b·H + h
      const int h = int(r % H);
      // Row h + kh - 1 of the same image, at column 0; rows outside the image read as zeros.
      const float* xr[3];
      bool in[3];
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
        in[kh] = h + kh - 1 >= 0 && h + kh - 1 < H;
        xr[kh] = in[kh] ? x + (r + kh - 1) * W * C + c : x;
      }
      const float* g = dout + r * W * C + c;
      float win[3][3];  // win[kh][kw]: x at (h + kh - 1, w + kw - 1)
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
        win[kh][0] = 0.f;
        win[kh][1] = in[kh] ? xr[kh][0] : 0.f;
      }
      for (int w = 0; w < W; ++w) {
        const bool next = w + 1 < W;
#pragma unroll
        for (int kh = 0; kh < 3; ++kh) win[kh][2] = in[kh] && next ? xr[kh][int64_t(w + 1) * C] : 0.f;
        const float gv = g[int64_t(w) * C];
        acc[9] += gv;
#pragma unroll
        for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
          for (int kw = 0; kw < 3; ++kw) acc[kh * 3 + kw] += gv * win[kh][kw];
          win[kh][0] = win[kh][1];
          win[kh][1] = win[kh][2];
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

// out = bias + taps(x, weight) (forward), or out (+)= taps(dout, flipped weight) (backward dx).
void dw3x3(float* out, const float* in, const float* weight, const float* bias, int64_t B, int64_t H, int64_t W,
           int64_t C, bool backward, GradOut grad_out, Stream s) {
  const DwWeights wt{weight, 9, 1, backward};  // PyTorch's (C,1,3,3)
  if (backward && grad_out == GradOut::Accumulate)
    launch_dw3x3(out, C, in, C, wt, nullptr, B, H, W, C, DwAccumulate{}, s, "dw3x3_kernel (backward dx)");
  else if (backward)
    launch_dw3x3(out, C, in, C, wt, nullptr, B, H, W, C, DwStore{}, s, "dw3x3_kernel (backward dx, overwriting)");
  else
    launch_dw3x3(out, C, in, C, wt, bias, B, H, W, C, DwStore{}, s, "dw3x3_kernel (forward)");
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
                    float* workspace, Stream s, const ConvInputMap* in) {
  const ConvDims d = checked_dims(c);
  const int64_t P = d.B * d.OH * d.OW;
  if (is_pointwise(c)) {
    MM_CHECK(!in, "conv2d_forward: a 1x1 conv reads its input as it is (no ConvInputMap)");
    linear_forward(out, x, weight, bias, P, d.Cin, c.Cout, s);
    return;
  }
  const ConvWorkspace ws = carve(checked_workspace(workspace, c, "conv2d_forward"), c);
  const GemmOperand weight_t = to_column_order(ws.weight_t, weight, c, s);
  linear_forward(out, im2col_operand(ws.col, x, d, in, s), weight_t, bias, P, d.K, c.Cout, s);
}

void conv2d_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, const ConvShape& c, float* workspace, Stream s, GradOut out,
                     const ConvInputMap* in, const uint16_t* dout_bf16) {
  const ConvDims d = checked_dims(c);
  const int64_t P = d.B * d.OH * d.OW;
  if (is_pointwise(c)) {
    MM_CHECK(!in, "conv2d_backward: a 1x1 conv reads its input as it is (no ConvInputMap)");
    MM_CHECK(!dout_bf16, "conv2d_backward: a 1x1 conv rounds its own dout (no dout_bf16)");
    linear_backward(dx, dweight, dbias, dout, x, weight, P, d.Cin, c.Cout, s, out);
    return;
  }
  if (dbias) linear_backward(nullptr, nullptr, dbias, dout, nullptr, nullptr, P, d.K, c.Cout, s);
  if (!dweight && !dx) return;
  const ConvWorkspace ws = carve(checked_workspace(workspace, c, "conv2d_backward"), c);
  GemmOperand dout_op = dout_bf16 ? bf16_operand(dout_bf16, c.Cout) : f32_operand(dout, c.Cout);
  const GemmOperand weight_op = dx ? to_column_order(ws.weight_t, weight, c, s) : GemmOperand{};
  // Both GEMMs read dout: rounded to bf16 once, so that neither makes a copy of its own.
  if (gemm_compute() == GemmCompute::BF16) round_to_bf16({{&dout_op, P, c.Cout}}, s);
  if (dweight) {
    // dweight_t (Cout,K) = doutᵀ (Cout,P) · col (P,K), then added to dweight in PyTorch's order
    gemm(true, false, c.Cout, d.K, P, 1.f, dout_op, im2col_operand(ws.col, x, d, in, s), 0.f, ws.dweight_t, d.K, s);
    add_from_column_order(dweight, ws.dweight_t, c, s);
  }
  if (dx) {
    // dcol (P,K) = dout (P,Cout) · weight_t (Cout,K), over col: the stream orders it after
    // dweight's GEMM. Under bf16 GEMMs dcol is written in bf16 (half the bytes of the largest
    // matrix of the step, written once and read once), col2im summing it in float32.
    if (gemm_compute() == GemmCompute::BF16) {
      auto* dcol = reinterpret_cast<uint16_t*>(ws.col);
      gemm_bf16_out(false, false, P, d.K, c.Cout, dout_op, weight_op, dcol, d.K, s);
      col2im_gather(dx, reinterpret_cast<const __nv_bfloat16*>(dcol), d, out == GradOut::Overwrite, s);
    } else {
      gemm(false, false, P, d.K, c.Cout, 1.f, dout_op, weight_op, 0.f, ws.col, d.K, s);
      col2im_gather(dx, ws.col, d, out == GradOut::Overwrite, s);
    }
  }
}

void dwconv3x3_forward(float* out, const float* x, const float* weight, const float* bias, int64_t B, int64_t H,
                       int64_t W, int64_t C, Stream s, float* silu_out, uint16_t* silu_bf16) {
  check_dw_shape(B, H, W, C, "dwconv3x3_forward");
  MM_CHECK(!silu_bf16 || silu_out, "dwconv3x3_forward: silu_bf16 comes with silu_out");
  if (!silu_out) {
    dw3x3(out, x, weight, bias, B, H, W, C, false, GradOut::Overwrite, s);
    return;
  }
  MM_CHECK(reinterpret_cast<uintptr_t>(silu_out) % 16 == reinterpret_cast<uintptr_t>(out) % 16,
           "dwconv3x3_forward: silu_out must be aligned as out is (it is written in out's vector width)");
  MM_CHECK(!silu_bf16 || reinterpret_cast<uintptr_t>(silu_bf16) % 8 == 0,
           "dwconv3x3_forward: silu_bf16 must be 8-byte aligned (it is written in out's vector width)");
  launch_dw3x3(out, C, x, C, DwWeights{weight, 9, 1, false}, bias, B, H, W, C,
               DwStoreSilu{silu_out, reinterpret_cast<__nv_bfloat16*>(silu_bf16)}, s, "dw3x3_kernel (forward, with SiLU)");
}

void dwconv3x3_backward_dx_bf16(uint16_t* dx, const float* dout, const float* weight, int64_t B, int64_t H, int64_t W,
                                int64_t C, Stream s) {
  check_dw_shape(B, H, W, C, "dwconv3x3_backward_dx_bf16");
  launch_dw3x3(reinterpret_cast<__nv_bfloat16*>(dx), C, dout, C, DwWeights{weight, 9, 1, true}, nullptr, B, H, W, C,
               DwStore{}, s, "dw3x3_kernel (backward dx, bf16)");
}

void dwconv3x3_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, int64_t B, int64_t H, int64_t W, int64_t C, Stream s,
                        GradOut out) {
  check_dw_shape(B, H, W, C, "dwconv3x3_backward");
  if (dx) dw3x3(dx, dout, weight, nullptr, B, H, W, C, true, out, s);
  if (!dweight && !dbias) return;
  // Parts of whole image rows, a row per lane where that keeps within kMaxParts parts.
  const int64_t BH = B * H;
  const int64_t rows_per_part = kDwLanes * ((BH + kDwLanes * kMaxParts - 1) / (kDwLanes * kMaxParts));
  const int64_t parts = (BH + rows_per_part - 1) / rows_per_part;
  float* partial = static_cast<float*>(reduction_scratch(parts * kDwSums * C * int64_t(sizeof(float))));
  const dim3 block(kDwCols, kDwLanes), grid(grid_for(C, kDwCols), unsigned(parts));
  dw3x3_grad_partials_kernel<<<grid, block, 0, s>>>(partial, dout, x, BH, int(H), int(W), C, rows_per_part);
  MM_CUDA_CHECK_LAUNCH("dw3x3_grad_partials_kernel");
  dw3x3_grad_combine_kernel<<<grid_for(kDwSums * C * 32, kThreads), kThreads, 0, s>>>(dweight, dbias, partial, parts,
                                                                                     C);
  MM_CUDA_CHECK_LAUNCH("dw3x3_grad_combine_kernel");
}

}  // namespace mm::cuda
