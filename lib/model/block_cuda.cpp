// The CUDA twin of block.cpp: same ops, same order, same scratch plan.
#ifdef MM_HAVE_CUDA
#include "model/block_cuda.h"

#include <algorithm>

#include "cuda_ops.h"
#include "cuda_train_gemm_conv.h"
#include "cuda_train_ops.h"
#include "cuda_train_scan.h"

namespace mm {

namespace c = cuda;

// One list of the buffers and their sizes, for allocating and for counting.
template <class Alloc>
static void block_buffers(BlockActsCuda& a, const BlockDims& d, bool keep, Alloc&& alloc) {
  const int64_t P = d.P(), ch = d.c(), D = d.C;
  for (Tensor* t : {&a.left, &a.right, &a.ln1, &a.s, &a.a0, &a.a1, &a.a2, &a.a3, &a.a4, &a.a5, &a.a6, &a.a7, &a.l})
    *t = alloc(P * ch);
  for (Tensor* t : {&a.xin, &a.z, &a.xconv, &a.u, &a.y, &a.yn, &a.g}) *t = alloc(P * D);
  for (Tensor* t : {&a.ln1_mean, &a.ln1_rstd, &a.on_mean, &a.on_rstd}) *t = alloc(P);
  a.bn_mean = alloc(3 * ch);
  a.bn_rstd = alloc(3 * ch);
  const c::ScanTrainShape ss{d.B, d.H, d.W, d.C, d.N, d.R};
  a.scan_states = keep ? alloc(c::scan_train_states_floats(ss)) : Tensor();
}

int64_t BlockActsCuda::floats(const BlockDims& d, bool keep) {
  BlockActsCuda dry;
  int64_t n = 0;
  block_buffers(dry, d, keep, [&n](int64_t k) { n += k; return Tensor(); });
  return n;
}

void BlockActsCuda::ensure(const BlockDims& d, bool keep) {
  if (capacity >= d.P() * d.C && (kept || !keep)) return;
  block_buffers(*this, d, keep, [](int64_t n) { return Tensor::empty({n}, DType::F32, Device::CUDA); });
  capacity = d.P() * d.C;
  kept = keep;
}

static c::ConvShape conv_shape(const BlockDims& d, int64_t k) {
  c::ConvShape s;
  s.B = d.B; s.H = d.H; s.W = d.W; s.Cin = d.c(); s.Cout = d.c();
  s.KH = s.KW = k; s.pad = k / 2;
  return s;
}

static c::ScanTrainShape scan_shape(const BlockDims& d) { return c::ScanTrainShape{d.B, d.H, d.W, d.C, d.N, d.R}; }

static c::ScanTrainWeights scan_weights(const BlockWeights& w) {
  return c::ScanTrainWeights{w.x_proj, w.dt_projs_w, w.dt_projs_b, w.A_logs, w.Ds};
}

int64_t block_cuda_conv_workspace_floats(const BlockDims& d) {
  return std::max(c::conv2d_workspace_floats(conv_shape(d, 3)), c::conv2d_workspace_floats(conv_shape(d, 1)));
}

int64_t block_cuda_scan_workspace_floats(const BlockDims& d) { return c::scan_train_workspace_floats(scan_shape(d)); }

int64_t block_cuda_scratch_floats(const BlockDims& d) { return d.P() * 5 * d.C; }

static void batchnorm_fwd(float* out, const float* x, const BatchNormWeights& w, float* mean, float* rstd, int64_t P,
                          int64_t ch, bool train, c::Stream s) {
  if (train)
    c::batchnorm_forward_train(out, mean, rstd, w.running_mean, w.running_var, x, w.weight, w.bias, P, ch, s);
  else
    c::batchnorm_forward_eval(out, x, w.running_mean, w.running_var, w.weight, w.bias, P, ch, s);
}

static void batchnorm_bwd(float* dx, const BatchNormWeights& g, const float* dout, const float* x,
                          const BatchNormWeights& w, const float* mean, const float* rstd, int64_t P, int64_t ch,
                          bool train, c::Stream s) {
  if (train)
    c::batchnorm_backward_train(dx, g.weight, g.bias, dout, x, w.weight, mean, rstd, P, ch, s);
  else
    c::batchnorm_backward_eval(dx, g.weight, g.bias, dout, x, w.running_mean, w.running_var, w.weight, P, ch, s);
}

void block_forward_cuda(float* out, const float* x, const BlockWeights& w, BlockActsCuda& a, const BlockDims& d,
                        const BlockContextCuda& ctx) {
  a.ensure(d, ctx.keep);
  const int64_t P = d.P(), ch = d.c(), D = d.C;
  c::Stream s = ctx.stream;
  auto F = [](Tensor& t) { return t.as<float>(); };
  c::split_halves_forward(F(a.left), F(a.right), x, P, ch, s);

  // SS2D branch: (P,c) -> (P,c)
  c::layernorm_forward(F(a.ln1), F(a.ln1_mean), F(a.ln1_rstd), F(a.right), w.ln1_w, w.ln1_b, P, ch, s);
  float* xz = ctx.scratch;  // (P,2D)
  c::linear_forward(xz, F(a.ln1), w.in_proj, nullptr, P, ch, 2 * D, s);
  c::split_halves_forward(F(a.xin), F(a.z), xz, P, D, s);
  c::dwconv3x3_forward(F(a.xconv), F(a.xin), w.dwconv_w, w.dwconv_b, d.B, d.H, d.W, D, s);
  c::silu_forward(F(a.u), F(a.xconv), P * D, s);
  c::scan_train_forward(scan_shape(d), F(a.u), scan_weights(w), F(a.y), ctx.keep ? F(a.scan_states) : nullptr,
                        ctx.scan_workspace, s);
  c::layernorm_forward(F(a.yn), F(a.on_mean), F(a.on_rstd), F(a.y), w.out_norm_w, w.out_norm_b, P, D, s);
  c::gate_forward(F(a.g), F(a.yn), F(a.z), P * D, s);
  c::linear_forward(F(a.s), F(a.g), w.out_proj, nullptr, P, D, ch, s);
  if (ctx.train && ctx.drop_scale) c::scale_rows(F(a.s), ctx.drop_scale, d.B, d.H * d.W * ch, s);

  // Convolution branch: (P,c) -> (P,c)
  float *bm = F(a.bn_mean), *br = F(a.bn_rstd);
  batchnorm_fwd(F(a.a0), F(a.left), w.bn0, bm, br, P, ch, ctx.train, s);
  c::conv2d_forward(F(a.a1), F(a.a0), w.conv1_w, w.conv1_b, conv_shape(d, 3), ctx.conv_workspace, s);
  batchnorm_fwd(F(a.a2), F(a.a1), w.bn2, bm + ch, br + ch, P, ch, ctx.train, s);
  c::relu_forward(F(a.a3), F(a.a2), P * ch, s);
  c::conv2d_forward(F(a.a4), F(a.a3), w.conv4_w, w.conv4_b, conv_shape(d, 3), ctx.conv_workspace, s);
  batchnorm_fwd(F(a.a5), F(a.a4), w.bn5, bm + 2 * ch, br + 2 * ch, P, ch, ctx.train, s);
  c::relu_forward(F(a.a6), F(a.a5), P * ch, s);
  c::conv2d_forward(F(a.a7), F(a.a6), w.conv7_w, w.conv7_b, conv_shape(d, 1), ctx.conv_workspace, s);
  c::relu_forward(F(a.l), F(a.a7), P * ch, s);

  c::concat_shuffle_forward(out, F(a.l), F(a.s), P, ch, s);
  c::add_inplace(out, x, P * D, s);
}

void block_backward_cuda(float* dx, const float* dout, const BlockWeights& w, const BlockWeights& g,
                         BlockActsCuda& a, const BlockDims& d, const BlockContextCuda& ctx) {
  const int64_t P = d.P(), ch = d.c(), D = d.C;
  c::Stream s = ctx.stream;
  auto F = [](Tensor& t) { return t.as<float>(); };
  float* S = ctx.scratch;
  // Five (P,D) scratch regions; a (P,c) buffer is half of one (the CPU block's plan).
  float *T0 = S, *T1 = S + P * D, *T2 = S + 2 * P * D, *T3 = S + 3 * P * D, *T4 = S + 4 * P * D;
  auto zero = [s](float* p, int64_t n) { c::memset_zero_async(p, size_t(n) * sizeof(float), s); };

  c::add_inplace(dx, dout, P * D, s);  // residual
  float *dl = T4, *ds = T4 + P * ch;
  zero(T4, P * D);
  c::concat_shuffle_backward(dl, ds, dout, P, ch, s);

  // Convolution branch, ping-ponging between the halves of T0.
  const float *bm = F(a.bn_mean), *br = F(a.bn_rstd);
  float *pa = T0, *pb = T0 + P * ch;
  zero(pa, P * ch);
  c::relu_backward(pa, dl, F(a.a7), P * ch, s);
  zero(pb, P * ch);
  c::conv2d_backward(pb, g.conv7_w, g.conv7_b, pa, F(a.a6), w.conv7_w, conv_shape(d, 1), ctx.conv_workspace, s);
  zero(pa, P * ch);
  c::relu_backward(pa, pb, F(a.a5), P * ch, s);
  zero(pb, P * ch);
  batchnorm_bwd(pb, g.bn5, pa, F(a.a4), w.bn5, bm + 2 * ch, br + 2 * ch, P, ch, ctx.train, s);
  zero(pa, P * ch);
  c::conv2d_backward(pa, g.conv4_w, g.conv4_b, pb, F(a.a3), w.conv4_w, conv_shape(d, 3), ctx.conv_workspace, s);
  zero(pb, P * ch);
  c::relu_backward(pb, pa, F(a.a2), P * ch, s);
  zero(pa, P * ch);
  batchnorm_bwd(pa, g.bn2, pb, F(a.a1), w.bn2, bm + ch, br + ch, P, ch, ctx.train, s);
  zero(pb, P * ch);
  c::conv2d_backward(pb, g.conv1_w, g.conv1_b, pa, F(a.a0), w.conv1_w, conv_shape(d, 3), ctx.conv_workspace, s);
  zero(pa, P * ch);
  batchnorm_bwd(pa, g.bn0, pb, F(a.left), w.bn0, bm, br, P, ch, ctx.train, s);
  c::split_halves_backward(dx, pa, nullptr, P, ch, s);

  // SS2D branch.
  if (ctx.train && ctx.drop_scale) c::scale_rows(ds, ctx.drop_scale, d.B, d.H * d.W * ch, s);
  float* dg = T1;
  zero(dg, P * D);
  c::linear_backward(dg, g.out_proj, nullptr, ds, F(a.g), w.out_proj, P, D, ch, s);
  float *dyn = T2, *dz = T3;
  zero(dyn, P * D);
  zero(dz, P * D);
  c::gate_backward(dyn, dz, dg, F(a.yn), F(a.z), P * D, s);
  float* dy = T1;
  zero(dy, P * D);
  c::layernorm_backward(dy, g.out_norm_w, g.out_norm_b, dyn, F(a.y), w.out_norm_w, F(a.on_mean), F(a.on_rstd), P, D,
                        s);
  float* du = T2;
  zero(du, P * D);
  c::scan_train_backward(scan_shape(d), F(a.u), scan_weights(w), dy, du,
                         c::ScanTrainGrads{g.x_proj, g.dt_projs_w, g.dt_projs_b, g.A_logs, g.Ds}, F(a.scan_states),
                         ctx.scan_workspace, s);
  float* dxconv = T1;
  zero(dxconv, P * D);
  c::silu_backward(dxconv, du, F(a.xconv), P * D, s);
  float* dxin = T2;
  zero(dxin, P * D);
  c::dwconv3x3_backward(dxin, g.dwconv_w, g.dwconv_b, dxconv, F(a.xin), w.dwconv_w, d.B, d.H, d.W, D, s);
  float* dxz = T0;  // (P,2D) spans T0 and T1
  zero(dxz, 2 * P * D);
  c::split_halves_backward(dxz, dxin, dz, P, D, s);
  float* dln1 = T2;
  zero(dln1, P * ch);
  c::linear_backward(dln1, g.in_proj, nullptr, dxz, F(a.ln1), w.in_proj, P, ch, 2 * D, s);
  float* dright = T3;
  zero(dright, P * ch);
  c::layernorm_backward(dright, g.ln1_w, g.ln1_b, dln1, F(a.right), w.ln1_w, F(a.ln1_mean), F(a.ln1_rstd), P, ch, s);
  c::split_halves_backward(dx, nullptr, dright, P, ch, s);
}

}  // namespace mm
#endif  // MM_HAVE_CUDA
