// LayerNorm and BatchNorm training kernels (float32), mirroring lib/ops/layernorm.cpp and
// lib/ops/batchnorm.cpp. Per-row work (LayerNorm statistics and dx) takes a group of lanes
// per row (one warp for long rows).
// Per-channel sums over the rows (LayerNorm dweight/dbias, BatchNorm statistics and
// gradients) are deterministic: stage one gives each thread one channel of one fixed chunk of
// kChunkRows rows and writes a double partial to the reduction scratch; stage two sums a
// channel's partials in a fixed order (one warp per channel). As on the CPU, runs of kRowBlock rows are summed in
// float before they are added into double, so accuracy does not degrade with N.
#include <cuda_bf16.h>

#include <string>
#include <type_traits>

#include "cuda_common.cuh"
#include "cuda_scratch.h"
#include "cuda_train_ops.h"
#include "row_groups.cuh"

namespace mm::cuda {

namespace {

constexpr float kEps = 1e-5f;
constexpr float kMomentum = 0.1f;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kRowBlock = 64;     // rows summed in float (as lib/ops/batchnorm.cpp)
// Rows per stage-one partial: one float run, so that a thread's loads can all be in flight
// at once (with 256 rows per thread, too few threads walked too long a dependent chain).
constexpr int64_t kChunkRows = kRowBlock;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float gamma_of(const float* weight, int64_t c) { return weight ? weight[c] : 1.f; }

// ---------------------------------------------------------------------------
// Per-channel sums s1[c] = sum_r term1(r,c), s2[c] = sum_r term2(r,c) in two stages.

int64_t chunks_for(int64_t N) { return (N + kChunkRows - 1) / kChunkRows; }

// Stage one: thread (chunk, c) writes part[chunk*C + c] and part[chunks*C + chunk*C + c].
template <class Term>
__global__ void channel_partials_kernel(double* part, int64_t N, int64_t C, int64_t chunks, Term term) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= chunks * C) return;
  const int64_t chunk = idx / C, c = idx - chunk * C;
  const int64_t r_end = min(N, (chunk + 1) * kChunkRows);
  double p1 = 0.0, p2 = 0.0;
  for (int64_t r0 = chunk * kChunkRows; r0 < r_end; r0 += kRowBlock) {
    float a1 = 0.f, a2 = 0.f;
    const int64_t r1 = min(r_end, r0 + kRowBlock);
#pragma unroll 8
    for (int64_t r = r0; r < r1; ++r) term(r, c, a1, a2);
    p1 += a1;
    p2 += a2;
  }
  part[chunk * C + c] = p1;
  part[chunks * C + chunk * C + c] = p2;
}

// Stage two: warp c sums its channel's chunks, lane j taking chunks j, j+32, ..., then a fixed
// shuffle tree; lane 0 hands (c, s1, s2) to finish.
template <class Finish>
__global__ void channel_finish_kernel(const double* part, int64_t C, int64_t chunks, Finish finish) {
  const int64_t c = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (c >= C) return;
  double s1 = 0.0, s2 = 0.0;
  for (int64_t k = lane; k < chunks; k += 32) {
    s1 += part[k * C + c];
    s2 += part[chunks * C + k * C + c];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s1 += __shfl_xor_sync(0xffffffffu, s1, o);
    s2 += __shfl_xor_sync(0xffffffffu, s2, o);
  }
  if (lane == 0) finish(c, s1, s2);
}

// Scratch layout of one op: the partials, then `per_channel` float rows of C.
struct ChannelScratch {
  double* part;
  float* rows;
  int64_t chunks;
};

ChannelScratch take_scratch(int64_t N, int64_t C, int per_channel) {
  const int64_t chunks = chunks_for(N);
  const int64_t part_bytes = 2 * chunks * C * int64_t(sizeof(double));
  char* base = static_cast<char*>(reduction_scratch(part_bytes + per_channel * C * int64_t(sizeof(float))));
  return {reinterpret_cast<double*>(base), reinterpret_cast<float*>(base + part_bytes), chunks};
}

template <class Term, class Finish>
void channel_sums(const ChannelScratch& sc, int64_t N, int64_t C, Term term, Finish finish, Stream s) {
  channel_partials_kernel<<<grid_for(sc.chunks * C, kThreads), kThreads, 0, s>>>(sc.part, N, C, sc.chunks, term);
  MM_CUDA_CHECK_LAUNCH("channel_partials_kernel");
  channel_finish_kernel<<<grid_for(C, kWarpsPerBlock), kThreads, 0, s>>>(sc.part, C, sc.chunks, finish);
  MM_CUDA_CHECK_LAUNCH("channel_finish_kernel");
}

// ---------------------------------------------------------------------------
// LayerNorm

// What a LayerNorm forward writes, each part optional: its output y in float32 (f32) or
// rounded to bf16 (bf16, nearest even: the bits to_bf16 makes of f32), and the SS2D gate
// after it, gated = y ⊙ SiLU(z), the product of gate_forward (GateForward) on f32's values.
struct LayerNormOut {
  float* f32 = nullptr;
  __nv_bfloat16* bf16 = nullptr;
  const float* z = nullptr;
  float* gated = nullptr;
  __device__ __forceinline__ void put(int64_t i, float y) const {
    if (f32) f32[i] = y;
    if (bf16) bf16[i] = __float2bfloat16_rn(y);
    if (z) gated[i] = y * silu_f(z[i]);
  }
  // Elements i..i+3, i a multiple of 4 (16-byte aligned rows).
  __device__ __forceinline__ void put4(int64_t i, float4 y) const {
    if (f32) *reinterpret_cast<float4*>(f32 + i) = y;
    if (bf16) {
      reinterpret_cast<__nv_bfloat162*>(bf16 + i)[0] = __floats2bfloat162_rn(y.x, y.y);
      reinterpret_cast<__nv_bfloat162*>(bf16 + i)[1] = __floats2bfloat162_rn(y.z, y.w);
    }
    if (z) {
      const float4 g = *reinterpret_cast<const float4*>(z + i);
      *reinterpret_cast<float4*>(gated + i) =
          make_float4(y.x * silu_f(g.x), y.y * silu_f(g.y), y.z * silu_f(g.z), y.w * silu_f(g.w));
    }
  }
};

// x's rows are ldx floats apart, the outputs' C.
__global__ void layernorm_forward_kernel(LayerNormOut out, float* mean, float* rstd, const float* x, int64_t ldx,
                                         const float* weight, const float* bias, int64_t N, int64_t C) {
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (n >= N) return;
  const float* xr = x + n * ldx;
  float m = 0.f;
  for (int64_t c = lane; c < C; c += 32) m += xr[c];
  m = warp_sum(m) / float(C);
  float v = 0.f;
  for (int64_t c = lane; c < C; c += 32) v += (xr[c] - m) * (xr[c] - m);
  v = warp_sum(v);
  const float r = 1.f / sqrtf(v / float(C) + kEps);
  for (int64_t c = lane; c < C; c += 32) out.put(n * C + c, (xr[c] - m) * r * weight[c] + bias[c]);
  if (lane == 0) {
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
  }
}

// The gradient a LayerNorm backward reads at packed index i (channel c): dout[i], or, with the
// SS2D gate after the LayerNorm folded in (z set; dout is then the gate's dg), gate_backward's
// dyn = gate_dyn(dg, z). With write_dz it also writes the gate's dz[i] = gate_dz(dg, y, z)
// (overwriting), y = xhat·w + b the LayerNorm's output: the forward's expression, so its bits.
struct LayerNormDout {
  const float* dout;
  const float* z = nullptr;
  const float* bias = nullptr;
  float* dz = nullptr;

  __device__ __forceinline__ float at(int64_t i, int64_t c, float xhat, float w, bool write_dz) const {
    const float g = dout[i];
    if (!z) return g;
    const float zz = z[i], sg = sigmoid_f(zz);
    if (write_dz) dz[i] = gate_dz(g, xhat * w + bias[c], zz, sg);
    return gate_dyn(g, zz, sg);
  }
  // Elements i..i+3 (channels c..c+3), i and c multiples of 4.
  __device__ __forceinline__ float4 at4(int64_t i, int64_t c, float4 xhat, float4 w, bool write_dz) const {
    const float4 g = *reinterpret_cast<const float4*>(dout + i);
    if (!z) return g;
    const float4 zz = *reinterpret_cast<const float4*>(z + i);
    const float4 sg = make_float4(sigmoid_f(zz.x), sigmoid_f(zz.y), sigmoid_f(zz.z), sigmoid_f(zz.w));
    if (write_dz) {
      const float4 b = *reinterpret_cast<const float4*>(bias + c);
      *reinterpret_cast<float4*>(dz + i) =
          make_float4(gate_dz(g.x, xhat.x * w.x + b.x, zz.x, sg.x), gate_dz(g.y, xhat.y * w.y + b.y, zz.y, sg.y),
                      gate_dz(g.z, xhat.z * w.z + b.z, zz.z, sg.z), gate_dz(g.w, xhat.w * w.w + b.w, zz.w, sg.w));
    }
    return make_float4(gate_dyn(g.x, zz.x, sg.x), gate_dyn(g.y, zz.y, sg.y), gate_dyn(g.z, zz.z, sg.z),
                       gate_dyn(g.w, zz.w, sg.w));
  }
};

// A LayerNorm's dx at one element, r·(dxhat − (sum_g + xhat·sum_gx)/C), added to acc unless
// overwrite, each step rounded on its own (the __*_rn intrinsics): ptxas may otherwise fuse a
// product into the next sum differently in different copies of a loop, and the backward with
// the gate folded in must give the plain one's bits.
__device__ __forceinline__ float layernorm_dx_at(float acc, bool overwrite, float dxhat, float xhat, float r,
                                                 float inv_c, float sum_g, float sum_gx) {
  const float v = __fmul_rn(r, __fsub_rn(dxhat, __fmul_rn(inv_c, __fmaf_rn(xhat, sum_gx, sum_g))));
  return overwrite ? v : __fadd_rn(acc, v);
}

// x's and dx's rows are ld floats apart, dout's C.
__global__ void layernorm_dx_kernel(float* dx, LayerNormDout dout, const float* x, int64_t ld, const float* weight,
                                    const float* mean, const float* rstd, int64_t N, int64_t C, bool overwrite) {
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (n >= N) return;
  const float* xr = x + n * ld;
  const float m = mean[n], r = rstd[n];
  float sum_g = 0.f, sum_gx = 0.f;  // sums of dxhat and dxhat*xhat
  // dxhat = dout·weight rounded on its own (__fmul_rn): how the compiler would fuse it into
  // the sums below must not depend on whether dout was read or computed (the gate).
  for (int64_t c = lane; c < C; c += 32) {
    const float xhat = (xr[c] - m) * r;
    const float dxhat = __fmul_rn(dout.at(n * C + c, c, xhat, weight[c], true), weight[c]);
    sum_g += dxhat;
    sum_gx += dxhat * xhat;
  }
  sum_g = warp_sum(sum_g);
  sum_gx = warp_sum(sum_gx);
  const float inv_c = 1.f / float(C);
  for (int64_t c = lane; c < C; c += 32) {
    const float xhat = (xr[c] - m) * r;
    const float dxhat = __fmul_rn(dout.at(n * C + c, c, xhat, weight[c], false), weight[c]);
    float& out = dx[n * ld + c];
    out = layernorm_dx_at(overwrite ? 0.f : out, overwrite, dxhat, xhat, r, inv_c, sum_g, sum_gx);
  }
}

// Rows of up to 32·kMaxRowVectors float4s (every LayerNorm of MedMamba but the patch
// mergings' at the last stages) take a lane group each (row_groups.cuh).
RowGroups row_groups(int64_t C, int64_t ld, std::initializer_list<const void*> rows) {
  if (vector_width<float>({C, ld}, rows) < 4) return {};
  return row_groups_for(C / 4);
}

__device__ __forceinline__ float sum4(float4 v) { return ((v.x + v.y) + v.z) + v.w; }

template <int K>
__global__ void layernorm_forward_rows_kernel(LayerNormOut out, float* mean, float* rstd, const float* x, int64_t ldx,
                                              const float* weight, const float* bias, int64_t N, int64_t C, int G) {
  const RowLane rl = row_lane(N, G);
  const int nv = int(C / 4);
  const float4* xr = reinterpret_cast<const float4*>(x + rl.row * ldx);
  float4 v[K];
  float m = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = rl.lane + k * G;
    v[k] = j < nv ? xr[j] : make_float4(0.f, 0.f, 0.f, 0.f);
    m += sum4(v[k]);
  }
  m = group_sum(m, G) / float(C);
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (rl.lane + k * G >= nv) continue;
    const float4 d = make_float4(v[k].x - m, v[k].y - m, v[k].z - m, v[k].w - m);
    var += sum4(make_float4(d.x * d.x, d.y * d.y, d.z * d.z, d.w * d.w));
  }
  const float r = 1.f / sqrtf(group_sum(var, G) / float(C) + kEps);
  if (!rl.live) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = rl.lane + k * G;
    if (j >= nv) continue;
    const float4 w = reinterpret_cast<const float4*>(weight)[j], b = reinterpret_cast<const float4*>(bias)[j];
    out.put4(rl.row * C + 4 * j, make_float4((v[k].x - m) * r * w.x + b.x, (v[k].y - m) * r * w.y + b.y,
                                             (v[k].z - m) * r * w.z + b.z, (v[k].w - m) * r * w.w + b.w));
  }
  if (rl.lane == 0) {
    if (mean) mean[rl.row] = m;
    if (rstd) rstd[rl.row] = r;
  }
}

template <int K>
__global__ void layernorm_dx_rows_kernel(float* dx, LayerNormDout dout, const float* x, int64_t ld, const float* weight,
                                         const float* mean, const float* rstd, int64_t N, int64_t C, int G,
                                         bool overwrite) {
  const RowLane rl = row_lane(N, G);
  const int nv = int(C / 4);
  const float4* xr = reinterpret_cast<const float4*>(x + rl.row * ld);
  const float m = mean[rl.row], r = rstd[rl.row];
  float4 xhat[K], gw[K];  // (x - mean)·rstd and dout·weight
  float sum_g = 0.f, sum_gx = 0.f;  // sums of dxhat and dxhat*xhat
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = rl.lane + k * G;
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 xv = j < nv ? xr[j] : zero;
    const float4 w = j < nv ? reinterpret_cast<const float4*>(weight)[j] : zero;
    xhat[k] = make_float4((xv.x - m) * r, (xv.y - m) * r, (xv.z - m) * r, (xv.w - m) * r);
    const float4 g = j < nv ? dout.at4(rl.row * C + 4 * j, 4 * j, xhat[k], w, rl.live) : zero;
    gw[k] = make_float4(__fmul_rn(g.x, w.x), __fmul_rn(g.y, w.y), __fmul_rn(g.z, w.z), __fmul_rn(g.w, w.w));
    sum_g += sum4(gw[k]);
    sum_gx += sum4(make_float4(gw[k].x * xhat[k].x, gw[k].y * xhat[k].y, gw[k].z * xhat[k].z, gw[k].w * xhat[k].w));
  }
  sum_g = group_sum(sum_g, G);
  sum_gx = group_sum(sum_gx, G);
  if (!rl.live) return;
  const float inv_c = 1.f / float(C);
  float4* d = reinterpret_cast<float4*>(dx + rl.row * ld);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = rl.lane + k * G;
    if (j >= nv) continue;
    float4 o = overwrite ? make_float4(0.f, 0.f, 0.f, 0.f) : d[j];
    o.x = layernorm_dx_at(o.x, overwrite, gw[k].x, xhat[k].x, r, inv_c, sum_g, sum_gx);
    o.y = layernorm_dx_at(o.y, overwrite, gw[k].y, xhat[k].y, r, inv_c, sum_g, sum_gx);
    o.z = layernorm_dx_at(o.z, overwrite, gw[k].z, xhat[k].z, r, inv_c, sum_g, sum_gx);
    o.w = layernorm_dx_at(o.w, overwrite, gw[k].w, xhat[k].w, r, inv_c, sum_g, sum_gx);
    d[j] = o;
  }
}

struct LayerNormParamTerm {  // a1 += dout*xhat, a2 += dout; x's rows ldx apart
  LayerNormDout dout;
  const float *x, *mean, *rstd;
  int64_t C, ldx;
  __device__ void operator()(int64_t r, int64_t c, float& a1, float& a2) const {
    const float g = dout.at(r * C + c, c, 0.f, 0.f, false);
    a1 += g * ((x[r * ldx + c] - mean[r]) * rstd[r]);
    a2 += g;
  }
};

// Adds the sums into dweight / dbias (either may be nullptr). scale: (C) or nullptr (1).
struct AddParamGrads {
  float *dweight, *dbias;
  const float* scale;
  __device__ void operator()(int64_t c, double s1, double s2) const {
    if (dweight) dweight[c] += float(scale ? s1 * double(scale[c]) : s1);
    if (dbias) dbias[c] += float(s2);
  }
};

// ---------------------------------------------------------------------------
// BatchNorm

// In the BatchNorm terms x's rows are ldx floats apart, dout's C.
struct SumTerm {  // a1 += x
  const float* x;
  int64_t ldx;
  __device__ void operator()(int64_t r, int64_t c, float& a1, float&) const { a1 += x[r * ldx + c]; }
};

struct CentredSquareTerm {  // a1 += (x - mean)^2
  const float *x, *mean;
  int64_t ldx;
  __device__ void operator()(int64_t r, int64_t c, float& a1, float&) const {
    const float d = x[r * ldx + c] - mean[c];
    a1 += d * d;
  }
};

// The ReLU after a BatchNorm, in its backward: dout passes where the forward's output
// x·scale + shift (the expression of scale_shift_kernel, so the same bits) was positive, as
// relu_backward on that output would pass it. scale nullptr: no ReLU.
struct ReluMask {
  const float *scale = nullptr, *shift = nullptr;
  __device__ __forceinline__ float operator()(float g, float x, int64_t c) const {
    if (!scale) return g;
    const float v = x * scale[c] + shift[c];
    return v > 0.f ? g : 0.f;
  }
};

struct GradTerm {  // a1 += dout, a2 += dout*(x - centre), dout through the ReLU mask
  const float *dout, *x, *centre;
  int64_t C, ldx;
  ReluMask relu;
  __device__ void operator()(int64_t r, int64_t c, float& a1, float& a2) const {
    const float xv = x[r * ldx + c];
    const float g = relu(dout[r * C + c], xv, c);
    a1 += g;
    a2 += g * (xv - centre[c]);
  }
};

struct StoreMean {
  float* mean;
  int64_t N;
  __device__ void operator()(int64_t c, double s1, double) const { mean[c] = float(s1 / double(N)); }
};

// From the centred squares: rstd, the affine scale/shift of the output, the running statistics.
// The affine map of a train-mode BatchNorm from its batch statistics; one expression for the
// forward and for batchnorm_forward_saved, so that a recomputed output has the same bits.
__device__ __forceinline__ void train_scale_shift(float* scale, float* shift, const float* weight, const float* bias,
                                                  const float* mean, const float* rstd, int64_t c) {
  scale[c] = gamma_of(weight, c) * rstd[c];
  shift[c] = (bias ? bias[c] : 0.f) - mean[c] * scale[c];
}

struct FinishTrainStats {
  float *rstd, *scale, *shift, *running_mean, *running_var;
  const float *mean, *weight, *bias;
  int64_t N;
  __device__ void operator()(int64_t c, double sq, double) const {
    const double var = sq / double(N);  // biased: used to normalise
    rstd[c] = float(1.0 / sqrt(var + double(kEps)));
    train_scale_shift(scale, shift, weight, bias, mean, rstd, c);
    if (running_mean && running_var) {
      const double unbiased = sq / double(N - 1);
      running_mean[c] = float((1.0 - kMomentum) * running_mean[c] + kMomentum * double(mean[c]));
      running_var[c] = float((1.0 - kMomentum) * running_var[c] + kMomentum * unbiased);
    }
  }
};

__device__ __forceinline__ float eval_rstd(const float* running_var, int64_t c) {
  return float(1.0 / sqrt(double(running_var[c]) + double(kEps)));
}

__global__ void saved_scale_shift_kernel(float* scale, float* shift, const float* mean, const float* rstd,
                                         const float* weight, const float* bias, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) train_scale_shift(scale, shift, weight, bias, mean, rstd, c);
}

__global__ void eval_scale_shift_kernel(float* scale, float* shift, const float* running_mean,
                                        const float* running_var, const float* weight, const float* bias,
                                        int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  scale[c] = gamma_of(weight, c) * eval_rstd(running_var, c);
  shift[c] = (bias ? bias[c] : 0.f) - running_mean[c] * scale[c];
}

// out (n / C, C) = x * scale[c] + shift[c], then max(0, ·) with kRelu; x's rows ldx floats
// apart; n < 2^31 (for_row_chunks).
template <bool kRelu>
__global__ void scale_shift_kernel(float* out, const float* x, int64_t ldx, const float* scale, const float* shift,
                                   uint32_t n, FastDivmod C) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t r = C.div(i), c = C.mod(i, r);
  const float v = x[int64_t(r) * ldx + c] * scale[c] + shift[c];
  out[i] = kRelu ? (v > 0.f ? v : 0.f) : v;
}
void scale_shift(float* out, const float* x, int64_t ldx, const float* scale, const float* shift, int64_t N,
                 int64_t C, bool relu, Stream s) {
  for_row_chunks(N, C, [&](int64_t r0, int64_t rows) {
    const uint32_t n = uint32_t(rows * C);
    auto* kernel = relu ? scale_shift_kernel<true> : scale_shift_kernel<false>;
    kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(out + r0 * C, x + r0 * ldx, ldx, scale, shift, n,
                                                      FastDivmod(uint32_t(C)));
    MM_CUDA_CHECK_LAUNCH("scale_shift_kernel");
  });
}

// dx (n / C, C) += g * a[c] + x * b[c] + d[c], g = dout through the ReLU mask; b, d nullptr
// for zero; dx's and x's rows ld floats apart, dout's C; n < 2^31.
__global__ void add_affine2_kernel(float* dx, const float* dout, const float* x, int64_t ld, const float* a,
                                   const float* b, const float* d, ReluMask relu, uint32_t n, FastDivmod C,
                                   bool overwrite) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t r = C.div(i), c = C.mod(i, r);
  const int64_t j = int64_t(r) * ld + c;
  const float xv = b || relu.scale ? x[j] : 0.f, g = relu(dout[i], xv, c);
  const float v = b ? g * a[c] + xv * b[c] + d[c] : g * a[c];
  dx[j] = overwrite ? v : dx[j] + v;
}

// With xhat = (x-mean)*rstd: dx = a*dout + b*x + d, a = gamma*rstd, b = -gamma*rstd^3*sum_gx/N,
// d = -a*sum_g/N - b*mean; also the parameter gradients.
struct FinishTrainBackward {
  float *dweight, *dbias, *a, *b, *d;  // a, b, d nullptr when dx is not wanted
  const float *weight, *mean, *rstd;
  int64_t N;
  __device__ void operator()(int64_t c, double sum_g, double sum_gx) const {
    if (dbias) dbias[c] += float(sum_g);
    if (dweight) dweight[c] += float(sum_gx * rstd[c]);
    if (!a) return;
    const double rs = rstd[c], ga = double(gamma_of(weight, c)) * rs;
    const double gb = -double(gamma_of(weight, c)) * rs * rs * rs * sum_gx / double(N);
    a[c] = float(ga);
    b[c] = float(gb);
    d[c] = float(-ga * sum_g / double(N) - gb * double(mean[c]));
  }
};

__global__ void eval_dx_scale_kernel(float* a, const float* running_var, const float* weight, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) a[c] = gamma_of(weight, c) * eval_rstd(running_var, c);
}

struct FinishEvalParamGrads {
  float *dweight, *dbias;
  const float* running_var;
  __device__ void operator()(int64_t c, double sum_g, double sum_gx) const {
    if (dbias) dbias[c] += float(sum_g);
    if (dweight) dweight[c] += float(sum_gx * double(eval_rstd(running_var, c)));
  }
};

void launch_add_affine2(float* dx, const float* dout, const float* x, int64_t ld, const float* a, const float* b,
                        const float* d, ReluMask relu, int64_t N, int64_t C, GradOut out, Stream s) {
  for_row_chunks(N, C, [&](int64_t r0, int64_t rows) {
    const uint32_t n = uint32_t(rows * C);
    add_affine2_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(dx + r0 * ld, dout + r0 * C, x + r0 * ld, ld, a, b,
                                                                   d, relu, n, FastDivmod(uint32_t(C)),
                                                                   out == GradOut::Overwrite);
    MM_CUDA_CHECK_LAUNCH("add_affine2_kernel");
  });
}

// The row stride of x (and dx) an op was given: ld, or C for 0 (packed rows).
int64_t row_stride(int64_t ld, int64_t C, const char* what) {
  MM_CHECK(ld == 0 || ld >= C, std::string(what) + ": a row stride shorter than the row");
  return ld ? ld : C;
}

}  // namespace

static void launch_layernorm_forward(const LayerNormOut& out, float* mean, float* rstd, const float* x,
                                     const float* weight, const float* bias, int64_t N, int64_t C, int64_t ld,
                                     Stream s) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "layernorm_forward");
  const RowGroups rg = row_groups(C, ldx, {out.f32, out.bf16, out.z, out.gated, x, weight, bias});
  if (rg.K > 0) {
    with_row_vectors(rg.K, [&](auto k) {
      layernorm_forward_rows_kernel<decltype(k)::value>
          <<<grid_for(N * rg.G, kThreads), kThreads, 0, s>>>(out, mean, rstd, x, ldx, weight, bias, N, C, rg.G);
    });
  } else {
    layernorm_forward_kernel<<<grid_for(N, kWarpsPerBlock), kThreads, 0, s>>>(out, mean, rstd, x, ldx, weight, bias,
                                                                              N, C);
  }
  MM_CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight, const float* bias,
                       int64_t N, int64_t C, Stream s, int64_t ld) {
  launch_layernorm_forward(LayerNormOut{out}, mean, rstd, x, weight, bias, N, C, ld, s);
}

void layernorm_forward_bf16(uint16_t* out, float* mean, float* rstd, const float* x, const float* weight,
                            const float* bias, int64_t N, int64_t C, Stream s, int64_t ld) {
  launch_layernorm_forward(LayerNormOut{nullptr, reinterpret_cast<__nv_bfloat16*>(out)}, mean, rstd, x, weight, bias,
                           N, C, ld, s);
}

void layernorm_gate_forward(float* out, float* gated, float* mean, float* rstd, const float* x, const float* z,
                            const float* weight, const float* bias, int64_t N, int64_t C, Stream s) {
  launch_layernorm_forward(LayerNormOut{out, nullptr, z, gated}, mean, rstd, x, weight, bias, N, C, 0, s);
}

static void launch_layernorm_backward(float* dx, float* dweight, float* dbias, const LayerNormDout& dout,
                                      const float* x, const float* weight, const float* mean, const float* rstd,
                                      int64_t N, int64_t C, Stream s, GradOut out, int64_t ld) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "layernorm_backward");
  if (dx) {
    const bool overwrite = out == GradOut::Overwrite;
    const RowGroups rg = row_groups(C, ldx, {dx, dout.dout, dout.z, dout.bias, dout.dz, x, weight});
    if (rg.K > 0) {
      with_row_vectors(rg.K, [&](auto k) {
        layernorm_dx_rows_kernel<decltype(k)::value>
            <<<grid_for(N * rg.G, kThreads), kThreads, 0, s>>>(dx, dout, x, ldx, weight, mean, rstd, N, C, rg.G,
                                                               overwrite);
      });
    } else {
      layernorm_dx_kernel<<<grid_for(N, kWarpsPerBlock), kThreads, 0, s>>>(dx, dout, x, ldx, weight, mean, rstd, N,
                                                                           C, overwrite);
    }
    MM_CUDA_CHECK_LAUNCH("layernorm_dx_kernel");
  }
  if (dweight || dbias)
    channel_sums(take_scratch(N, C, 0), N, C, LayerNormParamTerm{dout, x, mean, rstd, C, ldx},
                 AddParamGrads{dweight, dbias, nullptr}, s);
}

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C, Stream s,
                        GradOut out, int64_t ld) {
  launch_layernorm_backward(dx, dweight, dbias, LayerNormDout{dout}, x, weight, mean, rstd, N, C, s, out, ld);
}

void layernorm_gate_backward(float* dx, float* dweight, float* dbias, float* dz, const float* dg, const float* z,
                             const float* x, const float* weight, const float* bias, const float* mean,
                             const float* rstd, int64_t N, int64_t C, Stream s, GradOut out) {
  MM_CHECK(dx && dz && z && bias, "layernorm_gate_backward: needs dx, dz, z and the LayerNorm's bias");
  launch_layernorm_backward(dx, dweight, dbias, LayerNormDout{dg, z, bias, dz}, x, weight, mean, rstd, N, C, s, out,
                            0);
}

void batchnorm_forward_train(float* out, float* mean, float* rstd, float* running_mean, float* running_var,
                             const float* x, const float* weight, const float* bias, int64_t N, int64_t C, Stream s,
                             bool relu, int64_t ld) {
  MM_CHECK(N > 1, "cuda batchnorm_forward_train: need more than one value per channel");
  const int64_t ldx = row_stride(ld, C, "batchnorm_forward_train");
  // Two passes (mean, then centred squares) for a variance free of cancellation.
  const ChannelScratch sc = take_scratch(N, C, 2);
  float *scale = sc.rows, *shift = sc.rows + C;
  channel_sums(sc, N, C, SumTerm{x, ldx}, StoreMean{mean, N}, s);
  channel_sums(sc, N, C, CentredSquareTerm{x, mean, ldx},
               FinishTrainStats{rstd, scale, shift, running_mean, running_var, mean, weight, bias, N}, s);
  scale_shift(out, x, ldx, scale, shift, N, C, relu, s);
}

void batchnorm_forward_saved(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                             const float* bias, int64_t N, int64_t C, Stream s, bool relu, int64_t ld) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "batchnorm_forward_saved");
  const ChannelScratch sc = take_scratch(0, C, 2);
  float *scale = sc.rows, *shift = sc.rows + C;
  saved_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, mean, rstd, weight, bias, C);
  MM_CUDA_CHECK_LAUNCH("saved_scale_shift_kernel");
  scale_shift(out, x, ldx, scale, shift, N, C, relu, s);
}

void batchnorm_forward_eval(float* out, const float* x, const float* running_mean, const float* running_var,
                            const float* weight, const float* bias, int64_t N, int64_t C, Stream s, bool relu,
                            int64_t ld) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "batchnorm_forward_eval");
  const ChannelScratch sc = take_scratch(0, C, 2);
  float *scale = sc.rows, *shift = sc.rows + C;
  eval_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, running_mean, running_var,
                                                                      weight, bias, C);
  MM_CUDA_CHECK_LAUNCH("eval_scale_shift_kernel");
  scale_shift(out, x, ldx, scale, shift, N, C, relu, s);
}

void batchnorm_backward_train(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                              Stream s, GradOut out, const BatchNormRelu& relu, int64_t ld) {
  if (N <= 0 || (!dx && !dweight && !dbias)) return;
  const int64_t ldx = row_stride(ld, C, "batchnorm_backward_train");
  const ChannelScratch sc = take_scratch(N, C, 5);
  float *a = dx ? sc.rows : nullptr, *b = sc.rows + C, *d = sc.rows + 2 * C;
  ReluMask mask;
  if (relu.on) {  // the forward's affine map, as batchnorm_forward_saved makes it
    float *scale = sc.rows + 3 * C, *shift = sc.rows + 4 * C;
    saved_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, mean, rstd, weight, relu.bias, C);
    MM_CUDA_CHECK_LAUNCH("saved_scale_shift_kernel");
    mask = ReluMask{scale, shift};
  }
  channel_sums(sc, N, C, GradTerm{dout, x, mean, C, ldx, mask},
               FinishTrainBackward{dweight, dbias, a, b, d, weight, mean, rstd, N}, s);
  if (dx) launch_add_affine2(dx, dout, x, ldx, a, b, d, mask, N, C, out, s);
}

void batchnorm_backward_eval(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                             const float* running_mean, const float* running_var, const float* weight, int64_t N,
                             int64_t C, Stream s, GradOut out, const BatchNormRelu& relu, int64_t ld) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "batchnorm_backward_eval");
  const ChannelScratch sc = take_scratch(N, C, 3);
  ReluMask mask;
  if (relu.on) {
    float *scale = sc.rows + C, *shift = sc.rows + 2 * C;
    eval_scale_shift_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(scale, shift, running_mean, running_var,
                                                                        weight, relu.bias, C);
    MM_CUDA_CHECK_LAUNCH("eval_scale_shift_kernel");
    mask = ReluMask{scale, shift};
  }
  if (dweight || dbias)
    channel_sums(sc, N, C, GradTerm{dout, x, running_mean, C, ldx, mask},
                 FinishEvalParamGrads{dweight, dbias, running_var}, s);
  if (!dx) return;
  eval_dx_scale_kernel<<<grid_for(C, kThreads), kThreads, 0, s>>>(sc.rows, running_var, weight, C);
  MM_CUDA_CHECK_LAUNCH("eval_dx_scale_kernel");
  launch_add_affine2(dx, dout, x, ldx, sc.rows, nullptr, nullptr, mask, N, C, out, s);
}

}  // namespace mm::cuda
