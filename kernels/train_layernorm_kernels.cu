// LayerNorm training kernels (float32), mirroring lib/ops/layernorm.cpp: forward (also
// writing bf16, or with the SS2D gate after it), backward (also with the gate's backward
// folded in). Per-row work (statistics and dx) takes a group of lanes per row
// (row_groups.cuh; one warp for long rows); dweight and dbias are norm_channel_sums.cuh's
// deterministic per-channel sums.
#include <cuda_bf16.h>

#include "cuda_train_gemm_conv.h"
#include "norm_channel_sums.cuh"
#include "row_groups.cuh"

namespace mm::cuda {

namespace {

// What a LayerNorm forward writes, each part optional: its output y in float32 (f32) or
// rounded to bf16 (bf16, nearest even: the bits to_bf16 makes of f32), and the SS2D gate
// after it, g = y ⊙ SiLU(z), the product of gate_forward (GateForward) on f32's values, in
// float32 (gated) or rounded to bf16 (gated_bf16).
struct LayerNormOut {
  float* f32 = nullptr;
  __nv_bfloat16* bf16 = nullptr;
  const float* z = nullptr;
  float* gated = nullptr;
  __nv_bfloat16* gated_bf16 = nullptr;
  __device__ __forceinline__ void put(int64_t i, float y) const {
    if (f32) f32[i] = y;
    if (bf16) bf16[i] = __float2bfloat16_rn(y);
    if (!z) return;
    const float g = gate_g(y, z[i]);
    if (gated) gated[i] = g;
    if (gated_bf16) gated_bf16[i] = __float2bfloat16_rn(g);
  }
  // Elements i..i+3, i a multiple of 4 (16-byte aligned rows).
  __device__ __forceinline__ void put4(int64_t i, float4 y) const {
    if (f32) *reinterpret_cast<float4*>(f32 + i) = y;
    if (bf16) {
      reinterpret_cast<__nv_bfloat162*>(bf16 + i)[0] = __floats2bfloat162_rn(y.x, y.y);
      reinterpret_cast<__nv_bfloat162*>(bf16 + i)[1] = __floats2bfloat162_rn(y.z, y.w);
    }
    if (z) {
      const float4 zz = *reinterpret_cast<const float4*>(z + i);
      const float4 g = make_float4(gate_g(y.x, zz.x), gate_g(y.y, zz.y), gate_g(y.z, zz.z), gate_g(y.w, zz.w));
      if (gated) *reinterpret_cast<float4*>(gated + i) = g;
      if (gated_bf16) {
        reinterpret_cast<__nv_bfloat162*>(gated_bf16 + i)[0] = __floats2bfloat162_rn(g.x, g.y);
        reinterpret_cast<__nv_bfloat162*>(gated_bf16 + i)[1] = __floats2bfloat162_rn(g.z, g.w);
      }
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
// dz16 instead of dz: dz rounded to bf16, for the bf16 GEMMs that alone read it.
struct LayerNormDout {
  const float* dout;
  const float* z = nullptr;
  const float* bias = nullptr;
  float* dz = nullptr;
  __nv_bfloat16* dz16 = nullptr;

  __device__ __forceinline__ float at(int64_t i, int64_t c, float xhat, float w, bool write_dz) const {
    const float g = dout[i];
    if (!z) return g;
    const float zz = z[i], sg = sigmoid_f(zz);
    if (write_dz) {
      const float v = gate_dz(g, xhat * w + bias[c], zz, sg);
      if (dz16) dz16[i] = from_f32<__nv_bfloat16>(v);
      else dz[i] = v;
    }
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
      const float4 v =
          make_float4(gate_dz(g.x, xhat.x * w.x + b.x, zz.x, sg.x), gate_dz(g.y, xhat.y * w.y + b.y, zz.y, sg.y),
                      gate_dz(g.z, xhat.z * w.z + b.z, zz.z, sg.z), gate_dz(g.w, xhat.w * w.w + b.w, zz.w, sg.w));
      if (dz16) {
        const float o[4] = {v.x, v.y, v.z, v.w};
        store_pack(dz16 + i, o);
      } else {
        *reinterpret_cast<float4*>(dz + i) = v;
      }
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

}  // namespace

static void launch_layernorm_forward(const LayerNormOut& out, float* mean, float* rstd, const float* x,
                                     const float* weight, const float* bias, int64_t N, int64_t C, int64_t ld,
                                     Stream s) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "layernorm_forward");
  const RowGroups rg = row_groups(C, ldx, {out.f32, out.bf16, out.z, out.gated, out.gated_bf16, x, weight, bias});
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

GemmOperand layernorm_forward_operand(float* buf, float* mean, float* rstd, const float* x, const float* weight,
                                      const float* bias, int64_t N, int64_t C, Stream s, int64_t ld) {
  if (gemm_compute() == GemmCompute::BF16) {
    auto* rounded = reinterpret_cast<uint16_t*>(buf);
    layernorm_forward_bf16(rounded, mean, rstd, x, weight, bias, N, C, s, ld);
    return bf16_operand(rounded, C);
  }
  layernorm_forward(buf, mean, rstd, x, weight, bias, N, C, s, ld);
  return f32_operand(buf, C);
}

void layernorm_gate_forward(float* out, float* gated, float* mean, float* rstd, const float* x, const float* z,
                            const float* weight, const float* bias, int64_t N, int64_t C, Stream s) {
  launch_layernorm_forward(LayerNormOut{out, nullptr, z, gated}, mean, rstd, x, weight, bias, N, C, 0, s);
}

void layernorm_gate_forward_bf16(float* out, uint16_t* gated, float* mean, float* rstd, const float* x,
                                 const float* z, const float* weight, const float* bias, int64_t N, int64_t C,
                                 Stream s) {
  launch_layernorm_forward(LayerNormOut{out, nullptr, z, nullptr, reinterpret_cast<__nv_bfloat16*>(gated)}, mean,
                           rstd, x, weight, bias, N, C, 0, s);
}

static void launch_layernorm_backward(float* dx, float* dweight, float* dbias, const LayerNormDout& dout,
                                      const float* x, const float* weight, const float* mean, const float* rstd,
                                      int64_t N, int64_t C, Stream s, GradOut out, int64_t ld) {
  if (N <= 0) return;
  const int64_t ldx = row_stride(ld, C, "layernorm_backward");
  if (dx) {
    const bool overwrite = out == GradOut::Overwrite;
    const RowGroups rg = row_groups(C, ldx, {dx, dout.dout, dout.z, dout.bias, dout.dz, dout.dz16, x, weight});
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

void layernorm_gate_backward_bf16(float* dx, float* dweight, float* dbias, uint16_t* dz, const float* dg,
                                  const float* z, const float* x, const float* weight, const float* bias,
                                  const float* mean, const float* rstd, int64_t N, int64_t C, Stream s, GradOut out) {
  MM_CHECK(dx && dz && z && bias, "layernorm_gate_backward_bf16: needs dx, dz, z and the LayerNorm's bias");
  launch_layernorm_backward(dx, dweight, dbias,
                            LayerNormDout{dg, z, bias, nullptr, reinterpret_cast<__nv_bfloat16*>(dz)}, x, weight,
                            mean, rstd, N, C, s, out, 0);
}
}  // namespace mm::cuda
