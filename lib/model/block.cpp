#include "model/block.h"

#include <algorithm>
#include <cstring>

#include "model/cpu_fp32_block.h"
#include "ops/activations.h"
#include "ops/batchnorm.h"
#include "ops/conv2d.h"
#include "ops/depthwise_conv.h"
#include "ops/layernorm.h"
#include "ops/layout.h"
#include "ops/linear.h"
#include "ops/selective_scan.h"
#include "ops/vector_math.h"

namespace mm {

BlockWeights block_weights(float* base, const ParamTable& t, const std::string& prefix) {
  auto P = [&](const std::string& name) { return base + t.at(prefix + name).offset; };
  auto bn = [&](const std::string& n) {
    const std::string b = "conv33conv33conv11." + n + ".";
    return BatchNormWeights{P(b + "weight"), P(b + "bias"), P(b + "running_mean"), P(b + "running_var")};
  };
  BlockWeights w{};
  w.ln1_w = P("ln_1.weight");
  w.ln1_b = P("ln_1.bias");
  w.x_proj = P("self_attention.x_proj_weight");
  w.dt_projs_w = P("self_attention.dt_projs_weight");
  w.dt_projs_b = P("self_attention.dt_projs_bias");
  w.A_logs = P("self_attention.A_logs");
  w.Ds = P("self_attention.Ds");
  w.in_proj = P("self_attention.in_proj.weight");
  w.dwconv_w = P("self_attention.conv2d.weight");
  w.dwconv_b = P("self_attention.conv2d.bias");
  w.out_norm_w = P("self_attention.out_norm.weight");
  w.out_norm_b = P("self_attention.out_norm.bias");
  w.out_proj = P("self_attention.out_proj.weight");
  w.bn0 = bn("0");
  w.bn2 = bn("2");
  w.bn5 = bn("5");
  w.conv1_w = P("conv33conv33conv11.1.weight");
  w.conv1_b = P("conv33conv33conv11.1.bias");
  w.conv4_w = P("conv33conv33conv11.4.weight");
  w.conv4_b = P("conv33conv33conv11.4.bias");
  w.conv7_w = P("conv33conv33conv11.7.weight");
  w.conv7_b = P("conv33conv33conv11.7.bias");
  return w;
}

int64_t block_scratch_floats(const BlockDims& d) { return d.P() * 5 * d.C; }

int64_t block_scan_workspace_floats(const BlockDims& d, bool keep) {
  const SS2DScanShape ss{d.B, d.H, d.W, d.C, d.N, d.R};
  return std::max(ss2d_scan_forward_workspace_floats(ss), keep ? ss2d_scan_backward_workspace_floats(ss) : int64_t(0));
}

void BlockActs::ensure(const BlockDims& d, bool keep) {
  const int64_t P = d.P(), c = d.c(), D = d.C;
  if (capacity >= P * D && (kept || !keep)) return;
  for (Tensor* t : {&left, &right, &ln1, &s, &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &l})
    *t = Tensor::empty({P * c});
  for (Tensor* t : {&xin, &z, &xconv, &u, &y, &yn, &g}) *t = Tensor::empty({P * D});
  for (Tensor* t : {&ln1_mean, &ln1_rstd, &on_mean, &on_rstd}) *t = Tensor::empty({P});
  bn_mean = Tensor::empty({3 * c});
  bn_rstd = Tensor::empty({3 * c});
  // Saved checkpoints spare backward one of its three passes over the sequence.
  scan_states = keep ? Tensor::empty({ss2d_scan_states_floats(SS2DScanShape{d.B, d.H, d.W, d.C, d.N, d.R})})
                     : Tensor();
  capacity = P * D;
  kept = keep;
}

static void batchnorm_fwd(float* out, const float* x, const BatchNormWeights& w, float* mean,
                          float* rstd, int64_t P, int64_t c, bool train, const BatchNormSync* sync) {
  if (train)
    batchnorm_forward_train(out, mean, rstd, w.running_mean, w.running_var, x, w.weight, w.bias, P, c, 1e-5f, 0.1f,
                            sync);
  else
    batchnorm_forward_eval(out, x, w.running_mean, w.running_var, w.weight, w.bias, P, c);
}

static SS2DScanWeights scan_weights(const BlockWeights& w) {
  return SS2DScanWeights{w.x_proj, w.dt_projs_w, w.dt_projs_b, w.A_logs, w.Ds};
}

static SS2DScanShape scan_shape(const BlockDims& d) { return SS2DScanShape{d.B, d.H, d.W, d.C, d.N, d.R}; }

static void apply_drop_path(float* s, const float* scale, const BlockDims& d) {
  const int64_t per = d.H * d.W * d.c();
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t i = 0; i < per; ++i) s[b * per + i] *= scale[b];
}

void block_forward(float* out, const float* x, const BlockWeights& w, BlockActs& a,
                   const BlockDims& d, const BlockContext& ctx) {
  if (!ctx.train && !ctx.keep) {  // nothing kept: the fused inference forward
    block_forward_inference(out, x, w, a, d, ctx.conv_workspace, ctx.scan_workspace, ctx.conv3x3_caches);
    return;
  }
  a.ensure(d, ctx.keep);
  const int64_t P = d.P(), c = d.c(), D = d.C;
  split_halves_forward(a.left.f32(), a.right.f32(), x, P, c);

  // SS2D branch: (P,c) -> (P,c)
  layernorm_forward(a.ln1.f32(), a.ln1_mean.f32(), a.ln1_rstd.f32(), a.right.f32(), w.ln1_w, w.ln1_b, P, c);
  // in_proj as two GEMMs of D outputs, as block_forward_inference has it: a GEMM library may
  // round one GEMM of 2D outputs differently (oneDNN's AVX2 sgemm does), and eval logits must
  // not depend on whether activations are kept.
  linear_forward(a.xin.f32(), a.ln1.f32(), w.in_proj, nullptr, P, c, D);        // in_proj rows [0, D)
  linear_forward(a.z.f32(), a.ln1.f32(), w.in_proj + D * c, nullptr, P, c, D);  // rows [D, 2D)
  dwconv3x3_forward(a.xconv.f32(), a.xin.f32(), w.dwconv_w, w.dwconv_b, d.B, d.H, d.W, D);
  {
    // The vectorised SiLU (within 2e-7 of silu()), as block_forward_inference's fused ops
    // have it: eval logits then do not depend on whether activations are kept.
    float* u = a.u.f32();
    const float* xconv = a.xconv.f32();
#pragma omp parallel for simd
    for (int64_t i = 0; i < P * D; ++i) u[i] = silu_vectorisable(xconv[i]);
  }
  ss2d_scan_forward(scan_shape(d), a.u.f32(), scan_weights(w), a.y.f32(), ctx.scan_workspace,
                    ctx.keep ? a.scan_states.f32() : nullptr);
  layernorm_forward(a.yn.f32(), a.on_mean.f32(), a.on_rstd.f32(), a.y.f32(), w.out_norm_w, w.out_norm_b, P, D);
  {
    float* g = a.g.f32();
    const float *yn = a.yn.f32(), *z = a.z.f32();
#pragma omp parallel for simd
    for (int64_t i = 0; i < P * D; ++i) g[i] = yn[i] * silu_vectorisable(z[i]);
  }
  linear_forward(a.s.f32(), a.g.f32(), w.out_proj, nullptr, P, D, c);
  if (ctx.train && ctx.drop_scale) apply_drop_path(a.s.f32(), ctx.drop_scale, d);

  // Convolution branch: (P,c) -> (P,c)
  float *bm = a.bn_mean.f32(), *br = a.bn_rstd.f32();
  batchnorm_fwd(a.a0.f32(), a.left.f32(), w.bn0, bm, br, P, c, ctx.train, ctx.batchnorm_sync);
  conv2d_forward(a.a1.f32(), a.a0.f32(), w.conv1_w, w.conv1_b, block_conv_shape(d, 3), ctx.conv_workspace);
  batchnorm_fwd(a.a2.f32(), a.a1.f32(), w.bn2, bm + c, br + c, P, c, ctx.train, ctx.batchnorm_sync);
  relu_forward(a.a3.f32(), a.a2.f32(), P * c);
  conv2d_forward(a.a4.f32(), a.a3.f32(), w.conv4_w, w.conv4_b, block_conv_shape(d, 3), ctx.conv_workspace);
  batchnorm_fwd(a.a5.f32(), a.a4.f32(), w.bn5, bm + 2 * c, br + 2 * c, P, c, ctx.train, ctx.batchnorm_sync);
  relu_forward(a.a6.f32(), a.a5.f32(), P * c);
  conv2d_forward(a.a7.f32(), a.a6.f32(), w.conv7_w, w.conv7_b, block_conv_shape(d, 1), ctx.conv_workspace);
  relu_forward(a.l.f32(), a.a7.f32(), P * c);

  concat_shuffle_forward(out, a.l.f32(), a.s.f32(), P, c);
#pragma omp parallel for simd
  for (int64_t i = 0; i < P * D; ++i) out[i] += x[i];
}

static void batchnorm_bwd(float* dx, const BatchNormWeights& g, const float* dout, const float* x,
                          const BatchNormWeights& w, const float* mean, const float* rstd, int64_t P,
                          int64_t c, bool train, const BatchNormSync* sync) {
  if (train)
    batchnorm_backward_train(dx, g.weight, g.bias, dout, x, w.weight, mean, rstd, P, c, sync);
  else
    batchnorm_backward_eval(dx, g.weight, g.bias, dout, x, w.running_mean, w.running_var, w.weight, P, c);
}

void block_backward(float* dx, const float* dout, const BlockWeights& w, const BlockWeights& g,
                    BlockActs& a, const BlockDims& d, const BlockContext& ctx) {
  const int64_t P = d.P(), c = d.c(), D = d.C;
  float* S = ctx.scratch;
  // Five (P,D) scratch regions; a (P,c) buffer is half of one.
  float *T0 = S, *T1 = S + P * D, *T2 = S + 2 * P * D, *T3 = S + 3 * P * D, *T4 = S + 4 * P * D;
  auto zero = [](float* p, int64_t n) { std::memset(p, 0, size_t(n) * sizeof(float)); };

#pragma omp parallel for simd
  for (int64_t i = 0; i < P * D; ++i) dx[i] += dout[i];  // residual
  float *dl = T4, *ds = T4 + P * c;
  zero(T4, P * D);
  concat_shuffle_backward(dl, ds, dout, P, c);

  // Convolution branch, ping-ponging between the halves of T0.
  const float *bm = a.bn_mean.f32(), *br = a.bn_rstd.f32();
  float *pa = T0, *pb = T0 + P * c;
  zero(pa, P * c);
  relu_backward(pa, dl, a.a7.f32(), P * c);
  zero(pb, P * c);
  conv2d_backward(pb, g.conv7_w, g.conv7_b, pa, a.a6.f32(), w.conv7_w, block_conv_shape(d, 1), ctx.conv_workspace);
  zero(pa, P * c);
  relu_backward(pa, pb, a.a5.f32(), P * c);
  zero(pb, P * c);
  batchnorm_bwd(pb, g.bn5, pa, a.a4.f32(), w.bn5, bm + 2 * c, br + 2 * c, P, c, ctx.train, ctx.batchnorm_sync);
  zero(pa, P * c);
  conv2d_backward(pa, g.conv4_w, g.conv4_b, pb, a.a3.f32(), w.conv4_w, block_conv_shape(d, 3), ctx.conv_workspace);
  zero(pb, P * c);
  relu_backward(pb, pa, a.a2.f32(), P * c);
  zero(pa, P * c);
  batchnorm_bwd(pa, g.bn2, pb, a.a1.f32(), w.bn2, bm + c, br + c, P, c, ctx.train, ctx.batchnorm_sync);
  zero(pb, P * c);
  conv2d_backward(pb, g.conv1_w, g.conv1_b, pa, a.a0.f32(), w.conv1_w, block_conv_shape(d, 3), ctx.conv_workspace);
  zero(pa, P * c);
  batchnorm_bwd(pa, g.bn0, pb, a.left.f32(), w.bn0, bm, br, P, c, ctx.train, ctx.batchnorm_sync);
  split_halves_backward(dx, pa, nullptr, P, c);

  // SS2D branch.
  if (ctx.train && ctx.drop_scale) apply_drop_path(ds, ctx.drop_scale, d);
  float* dg = T1;
  zero(dg, P * D);
  linear_backward(dg, g.out_proj, nullptr, ds, a.g.f32(), w.out_proj, P, D, c);
  float *dyn = T2, *dz = T3;
  {
    const float *yn = a.yn.f32(), *z = a.z.f32();
#pragma omp parallel for simd
    for (int64_t i = 0; i < P * D; ++i) {
      const float sg = sigmoid_vectorisable(z[i]);  // of the forward's silu_vectorisable(z)
      dyn[i] = dg[i] * z[i] * sg;
      dz[i] = dg[i] * yn[i] * sg * (1.f + z[i] * (1.f - sg));
    }
  }
  float* dy = T1;
  zero(dy, P * D);
  layernorm_backward(dy, g.out_norm_w, g.out_norm_b, dyn, a.y.f32(), w.out_norm_w, a.on_mean.f32(),
                     a.on_rstd.f32(), P, D);
  float* du = T2;
  zero(du, P * D);
  ss2d_scan_backward(scan_shape(d), a.u.f32(), scan_weights(w), dy, du,
                     SS2DScanGrads{g.x_proj, g.dt_projs_w, g.dt_projs_b, g.A_logs, g.Ds}, ctx.scan_workspace,
                     a.scan_states.f32());
  float* dxconv = T1;
  zero(dxconv, P * D);
  silu_backward(dxconv, du, a.xconv.f32(), P * D);
  float* dxin = T2;
  zero(dxin, P * D);
  dwconv3x3_backward(dxin, g.dwconv_w, g.dwconv_b, dxconv, a.xin.f32(), w.dwconv_w, d.B, d.H, d.W, D);
  float* dxz = T0;  // (P,2D) spans T0 and T1
  zero(dxz, 2 * P * D);
  split_halves_backward(dxz, dxin, dz, P, D);
  float* dln1 = T2;
  zero(dln1, P * c);
  linear_backward(dln1, g.in_proj, nullptr, dxz, a.ln1.f32(), w.in_proj, P, c, 2 * D);
  float* dright = T3;
  zero(dright, P * c);
  layernorm_backward(dright, g.ln1_w, g.ln1_b, dln1, a.right.f32(), w.ln1_w, a.ln1_mean.f32(),
                     a.ln1_rstd.f32(), P, c);
  split_halves_backward(dx, nullptr, dright, P, c);
}

}  // namespace mm
