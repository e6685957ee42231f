// Elementwise and data-movement training kernels (float32), mirroring lib/ops/activations.cpp,
// lib/ops/layout.cpp and the SS2D gate of lib/model/block.cpp. Every kernel here gives one
// thread one output element, and every backward element has exactly one writer, so the
// accumulations need no atomics.
#include "cuda_common.cuh"
#include "cuda_train_ops.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float silu_grad(float x, float s) { return s * (1.f + x * (1.f - s)); }

// Calls f(i) for i in [0, n).
template <class F>
__global__ void for_each_kernel(int64_t n, F f) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}

template <class F>
void for_each(int64_t n, Stream s, const char* what, F f) {
  if (n <= 0) return;
  for_each_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(n, f);
  MM_CUDA_CHECK_LAUNCH(what);
}

// Source row/column offsets of the four quadrant samples, in the reference's x0..x3 order.
__device__ __forceinline__ int quad_dh(int q) { return q & 1; }
__device__ __forceinline__ int quad_dw(int q) { return q >> 1; }

// Output element i of patch_gather (B,H/2,W/2,4C) -> the index of its source in x (B,H,W,C).
struct PatchGatherIndex {
  int64_t H, W, C;
  __device__ int64_t operator()(int64_t i) const {
    const int64_t Ho = H / 2, Wo = W / 2, C4 = 4 * C;
    const int64_t ch = i % C4, pix = i / C4;
    const int64_t j = pix % Wo, oi = (pix / Wo) % Ho, b = pix / (Wo * Ho);
    const int q = int(ch / C);
    const int64_t c = ch - q * C;
    return ((b * H + 2 * oi + quad_dh(q)) * W + 2 * j + quad_dw(q)) * C + c;
  }
};

// One functor per op: f(i) handles element i (nvcc here builds without --extended-lambda).
struct ReluForward {
  float* out; const float* x;
  __device__ void operator()(int64_t i) const { out[i] = x[i] > 0.f ? x[i] : 0.f; }
};
struct SiluForward {
  float* out; const float* x;
  __device__ void operator()(int64_t i) const { out[i] = x[i] / (1.f + expf(-x[i])); }
};
struct ReluBackward {
  float* dx; const float *dout, *x;
  __device__ void operator()(int64_t i) const { dx[i] += x[i] > 0.f ? dout[i] : 0.f; }
};
struct SiluBackward {
  float* dx; const float *dout, *x;
  __device__ void operator()(int64_t i) const { dx[i] += dout[i] * silu_grad(x[i], sigmoid_f(x[i])); }
};
struct GateForward {
  float* g; const float *yn, *z;
  __device__ void operator()(int64_t i) const { g[i] = yn[i] * (z[i] / (1.f + expf(-z[i]))); }
};
struct GateBackward {  // as lib/model/block.cpp: dyn = dg·z·σ(z), dz = dg·yn·SiLU'(z)
  float *dyn, *dz; const float *dg, *yn, *z;
  __device__ void operator()(int64_t i) const {
    const float sg = sigmoid_f(z[i]);
    if (dyn) dyn[i] += dg[i] * z[i] * sg;
    if (dz) dz[i] += dg[i] * yn[i] * silu_grad(z[i], sg);
  }
};
struct AddInplace {
  float* out; const float* x;
  __device__ void operator()(int64_t i) const { out[i] += x[i]; }
};
struct ScaleRows {
  float* x; const float* scale; int64_t per;
  __device__ void operator()(int64_t i) const { x[i] *= scale[i / per]; }
};
// i runs over the (P,c) halves; x is (P,2c).
struct SplitHalvesForward {
  float *left, *right; const float* x; int64_t c;
  __device__ void operator()(int64_t i) const {
    const int64_t p = i / c, m = i - p * c;
    left[i] = x[p * 2 * c + m];
    right[i] = x[p * 2 * c + c + m];
  }
};
struct SplitHalvesBackward {
  float* dx; const float *dleft, *dright; int64_t c;
  __device__ void operator()(int64_t i) const {
    const int64_t p = i / c, m = i - p * c;
    if (dleft) dx[p * 2 * c + m] += dleft[i];
    if (dright) dx[p * 2 * c + c + m] += dright[i];
  }
};
// i runs over the (P,c) inputs: out[p, 2m] = l[p, m] and out[p, 2m+1] = sb[p, m] are out[2i], out[2i+1].
struct ConcatShuffleForward {
  float* out; const float *l, *sb;
  __device__ void operator()(int64_t i) const {
    out[2 * i] = l[i];
    out[2 * i + 1] = sb[i];
  }
};
struct ConcatShuffleBackward {
  float *dl, *dsb; const float* dout;
  __device__ void operator()(int64_t i) const {
    if (dl) dl[i] += dout[2 * i];
    if (dsb) dsb[i] += dout[2 * i + 1];
  }
};
struct PatchGatherForward {
  float* out; const float* x; PatchGatherIndex src;
  __device__ void operator()(int64_t i) const { out[i] = x[src(i)]; }
};
struct PatchGatherBackward {  // each x element feeds at most one output element: one writer
  float* dx; const float* dout; PatchGatherIndex src;
  __device__ void operator()(int64_t i) const { dx[src(i)] += dout[i]; }
};
struct AvgpoolForward {  // i = (b, c); the P rows summed in order, as on the CPU
  float* out; const float* x; int64_t P, C;
  __device__ void operator()(int64_t i) const {
    const int64_t b = i / C, c = i - b * C;
    float acc = 0.f;
    for (int64_t p = 0; p < P; ++p) acc += x[(b * P + p) * C + c];
    out[i] = acc / float(P);
  }
};
struct AvgpoolBackward {
  float* dx; const float* dout; int64_t P, C;
  __device__ void operator()(int64_t i) const { dx[i] += dout[i / (P * C) * C + i % C] / float(P); }
};
struct NchwToNhwc {  // i indexes out (B,H,W,C)
  float* out; const float* x; int64_t C, HW;
  __device__ void operator()(int64_t i) const {
    const int64_t c = i % C, hw = (i / C) % HW, b = i / (C * HW);
    out[i] = x[(b * C + c) * HW + hw];
  }
};
struct NhwcToNchw {  // i indexes out (B,C,H,W)
  float* out; const float* x; int64_t C, HW;
  __device__ void operator()(int64_t i) const {
    const int64_t hw = i % HW, c = (i / HW) % C, b = i / (C * HW);
    out[i] = x[(b * HW + hw) * C + c];
  }
};

}  // namespace

void relu_forward(float* out, const float* x, int64_t n, Stream s) {
  for_each(n, s, "relu_forward", ReluForward{out, x});
}
void silu_forward(float* out, const float* x, int64_t n, Stream s) {
  for_each(n, s, "silu_forward", SiluForward{out, x});
}
void relu_backward(float* dx, const float* dout, const float* x, int64_t n, Stream s) {
  for_each(n, s, "relu_backward", ReluBackward{dx, dout, x});
}
void silu_backward(float* dx, const float* dout, const float* x, int64_t n, Stream s) {
  for_each(n, s, "silu_backward", SiluBackward{dx, dout, x});
}
void gate_forward(float* g, const float* yn, const float* z, int64_t n, Stream s) {
  for_each(n, s, "gate_forward", GateForward{g, yn, z});
}
void gate_backward(float* dyn, float* dz, const float* dg, const float* yn, const float* z, int64_t n, Stream s) {
  if (dyn || dz) for_each(n, s, "gate_backward", GateBackward{dyn, dz, dg, yn, z});
}
void add_inplace(float* out, const float* x, int64_t n, Stream s) {
  for_each(n, s, "add_inplace", AddInplace{out, x});
}
void scale_rows(float* x, const float* scale, int64_t B, int64_t per, Stream s) {
  for_each(B * per, s, "scale_rows", ScaleRows{x, scale, per});
}
void split_halves_forward(float* left, float* right, const float* x, int64_t P, int64_t c, Stream s) {
  for_each(P * c, s, "split_halves_forward", SplitHalvesForward{left, right, x, c});
}
void split_halves_backward(float* dx, const float* dleft, const float* dright, int64_t P, int64_t c, Stream s) {
  for_each(P * c, s, "split_halves_backward", SplitHalvesBackward{dx, dleft, dright, c});
}
void concat_shuffle_forward(float* out, const float* l, const float* sb, int64_t P, int64_t c, Stream s) {
  for_each(P * c, s, "concat_shuffle_forward", ConcatShuffleForward{out, l, sb});
}
void concat_shuffle_backward(float* dl, float* dsb, const float* dout, int64_t P, int64_t c, Stream s) {
  for_each(P * c, s, "concat_shuffle_backward", ConcatShuffleBackward{dl, dsb, dout});
}
void patch_gather_forward(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C, Stream s) {
  for_each(B * (H / 2) * (W / 2) * 4 * C, s, "patch_gather_forward", PatchGatherForward{out, x, {H, W, C}});
}
void patch_gather_backward(float* dx, const float* dout, int64_t B, int64_t H, int64_t W, int64_t C, Stream s) {
  for_each(B * (H / 2) * (W / 2) * 4 * C, s, "patch_gather_backward", PatchGatherBackward{dx, dout, {H, W, C}});
}
void avgpool_forward(float* out, const float* x, int64_t B, int64_t P, int64_t C, Stream s) {
  for_each(B * C, s, "avgpool_forward", AvgpoolForward{out, x, P, C});
}
void avgpool_backward(float* dx, const float* dout, int64_t B, int64_t P, int64_t C, Stream s) {
  for_each(B * P * C, s, "avgpool_backward", AvgpoolBackward{dx, dout, P, C});
}
void nchw_to_nhwc(float* out, const float* x, int64_t B, int64_t C, int64_t H, int64_t W, Stream s) {
  for_each(B * H * W * C, s, "nchw_to_nhwc", NchwToNhwc{out, x, C, H * W});
}
void nhwc_to_nchw(float* out, const float* x, int64_t B, int64_t H, int64_t W, int64_t C, Stream s) {
  for_each(B * C * H * W, s, "nhwc_to_nchw", NhwcToNchw{out, x, C, H * W});
}

}  // namespace mm::cuda
