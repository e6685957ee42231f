// The CUDA twin of block.cpp: the same ops in the same order; what backward needs it mostly
// recomputes instead of keeping (block_cuda.h says what is kept).
#ifdef MM_HAVE_CUDA
#include "model/block_cuda.h"

#include <algorithm>

#include "cuda_ops.h"
#include "cuda_train_gemm_conv.h"
#include "cuda_train_ops.h"
#include "cuda_train_scan.h"

namespace mm {

namespace c = cuda;

// Backward writes each activation gradient with its one producing op instead of zeroing a
// buffer for that op to add into (at T's stage 1 and batch 64, 20 memsets of up to 77 MB a
// block). Only dx, which both branches and the residual feed, is added into.
constexpr c::GradOut kWrite = c::GradOut::Overwrite;

// One list of the buffers and their sizes, for allocating and for counting.
template <class Alloc>
static void block_buffers(BlockActsCuda& a, const BlockDims& d, bool keep, Alloc&& alloc) {
  const int64_t P = d.P(), ch = d.c(), D = d.C;
  for (Tensor* t : {&a.a1, &a.a4}) *t = alloc(P * ch);
  a.y = alloc(P * D);
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

// bf16: the workspace layout, given explicitly both where model_buffers sizes the workspace
// and where the scan runs (an implicit one, read from the GEMM scope, once sized it for float32).
static c::ScanTrainShape scan_shape(const BlockDims& d, bool bf16) {
  c::ScanTrainShape s{d.B, d.H, d.W, d.C, d.N, d.R};
  s.bf16 = bf16;
  return s;
}

static c::ScanTrainWeights scan_weights(const BlockWeights& w) {
  return c::ScanTrainWeights{w.x_proj, w.dt_projs_w, w.dt_projs_b, w.A_logs, w.Ds};
}

int64_t block_cuda_conv_workspace_floats(const BlockDims& d) {
  return std::max(c::conv2d_workspace_floats(conv_shape(d, 3)), c::conv2d_workspace_floats(conv_shape(d, 1)));
}

int64_t block_cuda_scan_workspace_floats(const BlockDims& d, bool bf16) {
  return c::scan_train_workspace_floats(scan_shape(d, bf16));
}

int64_t block_cuda_scratch_floats(const BlockDims& d) { return d.P() * 6 * d.C + d.P() * d.c(); }

// relu: the ReLU after it in the same pass. ld: x's row stride (0: packed).
static void batchnorm_fwd(float* out, const float* x, const BatchNormWeights& w, float* mean, float* rstd, int64_t P,
                          int64_t ch, bool train, bool relu, c::Stream s, int64_t ld = 0) {
  if (train)
    c::batchnorm_forward_train(out, mean, rstd, w.running_mean, w.running_var, x, w.weight, w.bias, P, ch, s, relu,
                               ld);
  else
    c::batchnorm_forward_eval(out, x, w.running_mean, w.running_var, w.weight, w.bias, P, ch, s, relu, ld);
}

// batchnorm_fwd's output again, from the statistics it saved (train) or the running ones.
static void batchnorm_recompute(float* out, const float* x, const BatchNormWeights& w, const float* mean,
                                const float* rstd, int64_t P, int64_t ch, bool train, bool relu, c::Stream s,
                                int64_t ld = 0) {
  if (train)
    c::batchnorm_forward_saved(out, x, mean, rstd, w.weight, w.bias, P, ch, s, relu, ld);
  else
    c::batchnorm_forward_eval(out, x, w.running_mean, w.running_var, w.weight, w.bias, P, ch, s, relu, ld);
}

// A BatchNorm (and the ReLU after it, with relu) that the 3x3 conv after it applies as its
// im2col reads x (rows ld floats apart, 0: packed), so that its output is never written: its
// map into map[0, 2·ch), from the batch statistics, saved to mean/rstd (train), or the running
// ones. batchnorm_map_saved: the same map again in backward, from the saved statistics.
static c::ConvInputMap batchnorm_map(float* map, const float* x, const BatchNormWeights& w, float* mean, float* rstd,
                                     int64_t P, int64_t ch, bool train, bool relu, c::Stream s, int64_t ld = 0) {
  if (train)
    c::batchnorm_train_map(map, map + ch, mean, rstd, w.running_mean, w.running_var, x, w.weight, w.bias, P, ch, s,
                           ld);
  else
    c::batchnorm_eval_map(map, map + ch, w.running_mean, w.running_var, w.weight, w.bias, ch, s);
  return c::ConvInputMap{map, map + ch, relu, ld};
}
static c::ConvInputMap batchnorm_map_saved(float* map, const BatchNormWeights& w, const float* mean, const float* rstd,
                                           int64_t ch, bool train, bool relu, c::Stream s, int64_t ld = 0) {
  if (train)
    c::batchnorm_saved_map(map, map + ch, mean, rstd, w.weight, w.bias, ch, s);
  else
    c::batchnorm_eval_map(map, map + ch, w.running_mean, w.running_var, w.weight, w.bias, ch, s);
  return c::ConvInputMap{map, map + ch, relu, ld};
}

// Writes dx (or adds to it with GradOut::Accumulate); accumulates the parameter gradients.
// relu: dout is the gradient of the ReLU after the BatchNorm, as batchnorm_fwd's relu. ld:
// x's and dx's row stride (0: packed). dx_bf16: nullptr, or where dx's bf16 rounding goes too.
static void batchnorm_bwd(float* dx, const BatchNormWeights& g, const float* dout, const float* x,
                          const BatchNormWeights& w, const float* mean, const float* rstd, int64_t P, int64_t ch,
                          bool train, bool relu, c::Stream s, c::GradOut out = kWrite, int64_t ld = 0,
                          uint16_t* dx_bf16 = nullptr) {
  const c::BatchNormRelu after{relu, w.bias};
  if (train)
    c::batchnorm_backward_train(dx, g.weight, g.bias, dout, x, w.weight, mean, rstd, P, ch, s, out, after, ld,
                                dx_bf16);
  else
    c::batchnorm_backward_eval(dx, g.weight, g.bias, dout, x, w.running_mean, w.running_var, w.weight, P, ch, s, out,
                               after, ld, dx_bf16);
}

// ln1 (P,c) = LayerNorm(right) into buf, right's rows 2c apart (the block input's right
// half). It feeds nothing but in_proj's GEMMs, so under GemmCompute::BF16 it is written
// rounded to bf16, the bits those GEMMs would round it to, and they read it without copies
// of their own (three of them in backward).
static c::GemmOperand ln1_forward(float* buf, float* mean, float* rstd, const float* right, const BlockWeights& w,
                                  int64_t P, int64_t ch, c::Stream s) {
  return c::layernorm_forward_operand(buf, mean, rstd, right, w.ln1_w, w.ln1_b, P, ch, s, 2 * ch);
}

// gated (P,D) = LayerNorm(y) ⊙ SiLU(z) into buf. It feeds nothing but out_proj's GEMMs, so
// under GemmCompute::BF16 it is written rounded to bf16, as ln1 is (ln1_forward).
static c::GemmOperand out_norm_gate(float* buf, float* mean, float* rstd, const float* y, const float* z,
                                    const BlockWeights& w, int64_t P, int64_t D, c::Stream s) {
  if (c::gemm_compute() == c::GemmCompute::BF16) {
    auto* rounded = reinterpret_cast<uint16_t*>(buf);
    c::layernorm_gate_forward_bf16(nullptr, rounded, mean, rstd, y, z, w.out_norm_w, w.out_norm_b, P, D, s);
    return c::bf16_operand(rounded, D);
  }
  c::layernorm_gate_forward(nullptr, buf, mean, rstd, y, z, w.out_norm_w, w.out_norm_b, P, D, s);
  return c::f32_operand(buf, D);
}

// One half of in_proj: xin (half 0) or z (half 1), (P,D) from ln1 (P,c). Forward and
// backward's recomputation make the same call, so they get the same bits.
static void in_proj_half(float* out, c::GemmOperand ln1, const BlockWeights& w, int half, const BlockDims& d,
                         c::Stream s) {
  c::linear_forward(out, ln1, w.in_proj + half * d.C * d.c(), nullptr, d.P(), d.c(), d.C, s);
}

// dz (P,D) of the gate, and dy, from the output norm's backward with the gate folded in.
// dz feeds nothing but in_proj's backward GEMMs, so under GemmCompute::BF16 it is written
// rounded to bf16 into dz_buf, as ln1 is (ln1_forward).
static c::GemmOperand out_norm_gate_backward(float* dz_buf, float* dy, const float* dg, const float* z,
                                             const BlockWeights& w, const BlockWeights& g, BlockActsCuda& a,
                                             int64_t P, int64_t D, c::Stream s) {
  const float *y = a.y.as<float>(), *mean = a.on_mean.as<float>(), *rstd = a.on_rstd.as<float>();
  if (c::gemm_compute() == c::GemmCompute::BF16) {
    auto* rounded = reinterpret_cast<uint16_t*>(dz_buf);
    c::layernorm_gate_backward_bf16(dy, g.out_norm_w, g.out_norm_b, rounded, dg, z, y, w.out_norm_w, w.out_norm_b,
                                    mean, rstd, P, D, s, kWrite);
    return c::bf16_operand(rounded, D);
  }
  c::layernorm_gate_backward(dy, g.out_norm_w, g.out_norm_b, dz_buf, dg, z, y, w.out_norm_w, w.out_norm_b, mean, rstd,
                             P, D, s, kWrite);
  return c::f32_operand(dz_buf, D);
}

// The depthwise conv's backward: its weight and bias gradients, and dxin (P,D) into buf,
// which, like dz, only in_proj's backward GEMMs read: rounded to bf16 under GemmCompute::BF16.
static c::GemmOperand dwconv_backward(float* buf, const float* dxconv, const float* xin, const BlockWeights& w,
                                      const BlockWeights& g, const BlockDims& d, c::Stream s) {
  if (c::gemm_compute() == c::GemmCompute::BF16) {
    auto* rounded = reinterpret_cast<uint16_t*>(buf);
    c::dwconv3x3_backward_dx_bf16(rounded, dxconv, w.dwconv_w, d.B, d.H, d.W, d.C, s);
    c::dwconv3x3_backward(nullptr, g.dwconv_w, g.dwconv_b, dxconv, xin, w.dwconv_w, d.B, d.H, d.W, d.C, s);
    return c::bf16_operand(rounded, d.C);
  }
  c::dwconv3x3_backward(buf, g.dwconv_w, g.dwconv_b, dxconv, xin, w.dwconv_w, d.B, d.H, d.W, d.C, s, kWrite);
  return c::f32_operand(buf, d.C);
}

// a6 (P,ch) = ReLU(BN5(a4)) into buf, in forward (batch statistics saved to mean/rstd in
// training) and again in backward (bn5_recompute). It feeds nothing but the 1x1 conv's GEMMs,
// so under GemmCompute::BF16 it is written rounded to bf16, from BN5's map (2·ch floats of
// map_buf), as ln1 is (ln1_forward).
static c::GemmOperand a6_rounded(float* buf, const float* a4, const c::ConvInputMap& m, int64_t P, int64_t ch,
                                 c::Stream s) {
  auto* rounded = reinterpret_cast<uint16_t*>(buf);
  c::batchnorm_apply_bf16(rounded, a4, m.scale, m.shift, P, ch, s, m.relu);
  return c::bf16_operand(rounded, ch);
}
static c::GemmOperand bn5_forward(float* buf, float* map_buf, const float* a4, const BlockWeights& w, float* mean,
                                  float* rstd, int64_t P, int64_t ch, bool train, c::Stream s) {
  if (c::gemm_compute() == c::GemmCompute::BF16)
    return a6_rounded(buf, a4, batchnorm_map(map_buf, a4, w.bn5, mean, rstd, P, ch, train, true, s), P, ch, s);
  batchnorm_fwd(buf, a4, w.bn5, mean, rstd, P, ch, train, true, s);
  return c::f32_operand(buf, ch);
}
static c::GemmOperand bn5_recompute(float* buf, float* map_buf, const float* a4, const BlockWeights& w,
                                    const float* mean, const float* rstd, int64_t P, int64_t ch, bool train,
                                    c::Stream s) {
  if (c::gemm_compute() == c::GemmCompute::BF16)
    return a6_rounded(buf, a4, batchnorm_map_saved(map_buf, w.bn5, mean, rstd, ch, train, true, s), P, ch, s);
  batchnorm_recompute(buf, a4, w.bn5, mean, rstd, P, ch, train, true, s);
  return c::f32_operand(buf, ch);
}

// l (P,ch) = the 1x1 conv of a6: a Linear over each pixel's channels (PyTorch's (Cout,Cin,1,1)
// weight is its (Cout,Cin)), reading a6 in bf16 where bn5_forward wrote it so.
static void conv1x1_forward(float* l, c::GemmOperand a6, const BlockWeights& w, int64_t P, int64_t ch, c::Stream s) {
  c::linear_forward(l, a6, w.conv7_w, w.conv7_b, P, ch, ch, s);
}

// Where u's bf16 rounding goes under GemmCompute::BF16 (nullptr otherwise): the second half
// of a (P,D) region whose first half holds a bf16 (P,D) or a smaller matrix (forward's ln1,
// backward's dz), when that half keeps 16-byte alignment. The depthwise conv writes it beside
// u, and the scan's x_proj GEMMs read it instead of rounding u themselves.
static uint16_t* u_bf16_in(float* region, int64_t P, int64_t D) {
  if (c::gemm_compute() != c::GemmCompute::BF16 || (P * D) % 8 != 0) return nullptr;
  return reinterpret_cast<uint16_t*>(region + P * D / 2);
}

// The block's end around its channel shuffle: the residual x (forward) or its gradient dx
// (backward), and drop path's per-image factors on the SS2D branch in training.
static c::ShuffleResidual block_end(const float* x, float* dx, const BlockDims& d, const BlockContextCuda& ctx) {
  c::ShuffleResidual r;
  r.x = x;
  r.dx = dx;
  if (ctx.train && ctx.drop_scale) {
    r.sb_scale = ctx.drop_scale;
    r.per_image = d.H * d.W * d.c();
  }
  return r;
}

// The scratch as six (P,D) regions T0..T5 and a (P,c) one, T6; a (P,c) buffer is half of a
// region. Which activation lives where is written next to each use: forward and backward
// each reuse a region once what was in it is dead.
struct BlockScratch {
  float* base;
  int64_t PD;
  float* operator[](int i) const { return base + i * PD; }
};

void block_forward_cuda(float* out, const float* x, const BlockWeights& w, BlockActsCuda& a, const BlockDims& d,
                        const BlockContextCuda& ctx) {
  a.ensure(d, ctx.keep);
  const int64_t P = d.P(), ch = d.c(), D = d.C;
  c::Stream s = ctx.stream;
  auto F = [](Tensor& t) { return t.as<float>(); };
  const BlockScratch T{ctx.scratch, P * D};
  // The input's channel halves are read in place, rows 2c apart.
  const float *left = x, *right = x + ch;

  // SS2D branch: (P,c) -> (P,c)
  const c::GemmOperand ln1 = ln1_forward(T[4], F(a.ln1_mean), F(a.ln1_rstd), right, w, P, ch, s);
  float *xin = T[0], *z = T[1], *xconv = T[2], *u = T[3];
  in_proj_half(xin, ln1, w, 0, d, s);
  in_proj_half(z, ln1, w, 1, d, s);
  uint16_t* u16 = u_bf16_in(T[4], P, D);  // beside ln1
  c::dwconv3x3_forward(xconv, xin, w.dwconv_w, w.dwconv_b, d.B, d.H, d.W, D, s, u, u16);  // u = SiLU(xconv)
  c::scan_train_forward(scan_shape(d, ctx.bf16), u, scan_weights(w), F(a.y), ctx.keep ? F(a.scan_states) : nullptr,
                        ctx.scan_workspace, s, u16);
  float* sb = T[3];  // xin, xconv, u are dead: gated goes to T2
  const c::GemmOperand gated = out_norm_gate(T[2], F(a.on_mean), F(a.on_rstd), F(a.y), z, w, P, D, s);
  c::linear_forward(sb, gated, w.out_proj, nullptr, P, D, ch, s);

  // Convolution branch: (P,c) -> (P,c); the last ReLU runs in the block's end. The 3x3 convs
  // apply BN0 and BN2 + ReLU as they read their inputs (a0 and a3 are never written); their
  // maps go to T0 (xin is dead).
  float *bm = F(a.bn_mean), *br = F(a.bn_rstd);
  float *map = T[0], *a6 = T[1], *l = T[1] + P * ch;  // z is dead
  const c::ConvInputMap a0 = batchnorm_map(map, left, w.bn0, bm, br, P, ch, ctx.train, false, s, 2 * ch);
  c::conv2d_forward(F(a.a1), left, w.conv1_w, w.conv1_b, conv_shape(d, 3), ctx.conv_workspace, s, &a0);
  const c::ConvInputMap a3 = batchnorm_map(map + 2 * ch, F(a.a1), w.bn2, bm + ch, br + ch, P, ch, ctx.train, true, s);
  c::conv2d_forward(F(a.a4), F(a.a1), w.conv4_w, w.conv4_b, conv_shape(d, 3), ctx.conv_workspace, s, &a3);
  const c::GemmOperand a6_op = bn5_forward(a6, map + 4 * ch, F(a.a4), w, bm + 2 * ch, br + 2 * ch, P, ch, ctx.train, s);
  conv1x1_forward(l, a6_op, w, P, ch, s);

  // out = shuffle(relu(l), sb · drop factor) + x
  c::ShuffleResidual end = block_end(x, nullptr, d, ctx);
  end.relu_l = true;
  c::concat_shuffle_forward(out, l, sb, P, ch, s, end);
}

void block_backward_cuda(float* dx, const float* dout, const float* x, const BlockWeights& w, const BlockWeights& g,
                         BlockActsCuda& a, const BlockDims& d, const BlockContextCuda& ctx) {
  const int64_t P = d.P(), ch = d.c(), D = d.C;
  c::Stream s = ctx.stream;
  auto F = [](Tensor& t) { return t.as<float>(); };
  const BlockScratch T{ctx.scratch, P * D};

  // The convolution branch's input a6 and the 1x1 conv's output l (before its ReLU) are
  // recomputed into T1 first: the block's end reads l for that ReLU's mask.
  const float *bm = F(a.bn_mean), *br = F(a.bn_rstd);
  float *pa = T[0], *pb = T[0] + P * ch, *act = T[1], *l = T[1] + P * ch;
  const c::GemmOperand a6 = bn5_recompute(act, T[2], F(a.a4), w, bm + 2 * ch, br + 2 * ch, P, ch, ctx.train, s);
  conv1x1_forward(l, a6, w, P, ch, s);

  // dx = dout (the residual; both branches add to it); pa = dl through the ReLU, ds carries
  // the drop factor. ds feeds nothing but out_proj's backward GEMMs: under GemmCompute::BF16
  // it is written rounded to bf16, as ln1 is (ln1_forward).
  float* ds_buf = T[4] + P * ch;
  c::ShuffleResidual end = block_end(nullptr, dx, d, ctx);
  end.l_pre = l;
  c::GemmOperand ds = c::f32_operand(ds_buf, ch);
  if (c::gemm_compute() == c::GemmCompute::BF16) {
    end.dsb_bf16 = reinterpret_cast<uint16_t*>(ds_buf);
    ds = c::bf16_operand(end.dsb_bf16, ch);
  }
  c::concat_shuffle_backward(pa, ds.f32 ? ds_buf : nullptr, dout, P, ch, s, kWrite, end);
  // The input's halves are read in place and their gradients added into dx's, rows 2c apart.
  const float *left = x, *right = x + ch;

  // Convolution branch, ping-ponging between the halves of T0; each BatchNorm's backward
  // takes its ReLU's mask from its own input. The 1x1 conv (a Linear, conv1x1_forward) reads
  // a6 in T1; the 3x3 convs' inputs a3 and a0 are mapped again by their im2col (maps in T2,
  // free until the SS2D branch).
  c::linear_backward(pb, g.conv7_w, g.conv7_b, pa, a6, w.conv7_w, P, ch, ch, s, kWrite);
  // The 3x3 convs' dout pa, which their bias gradients sum in float32, also in bf16 for their
  // GEMMs where a6 left room for it (a6 is then bf16 and dead after the line above).
  uint16_t* pa16 = a6.bf16 && (P * ch) % 8 == 0 ? reinterpret_cast<uint16_t*>(act + P * ch / 2) : nullptr;
  batchnorm_bwd(pa, g.bn5, pb, F(a.a4), w.bn5, bm + 2 * ch, br + 2 * ch, P, ch, ctx.train, true, s, kWrite, 0, pa16);
  float* map = T[2];
  const c::ConvInputMap a3 = batchnorm_map_saved(map, w.bn2, bm + ch, br + ch, ch, ctx.train, true, s);
  c::conv2d_backward(pb, g.conv4_w, g.conv4_b, pa, F(a.a1), w.conv4_w, conv_shape(d, 3), ctx.conv_workspace, s, kWrite,
                     &a3, pa16);
  batchnorm_bwd(pa, g.bn2, pb, F(a.a1), w.bn2, bm + ch, br + ch, P, ch, ctx.train, true, s, kWrite, 0, pa16);
  const c::ConvInputMap a0 = batchnorm_map_saved(map + 2 * ch, w.bn0, bm, br, ch, ctx.train, false, s, 2 * ch);
  c::conv2d_backward(pb, g.conv1_w, g.conv1_b, pa, left, w.conv1_w, conv_shape(d, 3), ctx.conv_workspace, s, kWrite,
                     &a0, pa16);
  batchnorm_bwd(dx, g.bn0, pb, left, w.bn0, bm, br, P, ch, ctx.train, false, s, c::GradOut::Accumulate, 2 * ch);

  // SS2D branch.
  const c::GemmOperand ln1 = ln1_forward(T[6], nullptr, nullptr, right, w, P, ch, s);
  float *z = T[0], *dg = T[3];
  in_proj_half(z, ln1, w, 1, d, s);
  const c::GemmOperand gated = out_norm_gate(T[2], nullptr, nullptr, F(a.y), z, w, P, D, s);
  c::linear_backward(dg, g.out_proj, nullptr, ds, gated, w.out_proj, P, D, ch, s, kWrite);
  float* dy = T[1];  // the gate's backward runs in the output norm's; its dz goes to T5
  const c::GemmOperand dz = out_norm_gate_backward(T[5], dy, dg, z, w, g, a, P, D, s);
  float *xin = T[0], *xconv = T[2], *u = T[3];  // z, gated, dg are dead
  in_proj_half(xin, ln1, w, 0, d, s);
  uint16_t* u16 = u_bf16_in(T[5], P, D);  // beside dz, bf16 then too
  c::dwconv3x3_forward(xconv, xin, w.dwconv_w, w.dwconv_b, d.B, d.H, d.W, D, s, u, u16);  // u = SiLU(xconv)
  float* du = T[4];  // ds is dead
  c::scan_train_backward(scan_shape(d, ctx.bf16), u, scan_weights(w), dy, du,
                         c::ScanTrainGrads{g.x_proj, g.dt_projs_w, g.dt_projs_b, g.A_logs, g.Ds}, F(a.scan_states),
                         ctx.scan_workspace, s, kWrite, u16);
  float* dxconv = T[1];  // dy is dead
  c::silu_backward(dxconv, du, xconv, P * D, s, kWrite);
  const c::GemmOperand dxin = dwconv_backward(T[3], dxconv, xin, w, g, d, s);  // u is dead
  // in_proj's backward by halves, each reading its gradient where it lies: xin's rows of
  // in_proj, then z's.
  float* dln1 = T[4];  // du is dead
  c::linear_backward(dln1, g.in_proj, nullptr, dxin, ln1, w.in_proj, P, ch, D, s, kWrite);
  c::linear_backward(dln1, g.in_proj + D * ch, nullptr, dz, ln1, w.in_proj + D * ch, P, ch, D, s,
                     c::GradOut::Accumulate);
  c::layernorm_backward(dx + ch, g.ln1_w, g.ln1_b, dln1, right, w.ln1_w, F(a.ln1_mean), F(a.ln1_rstd), P, ch, s,
                        c::GradOut::Accumulate, 2 * ch);
}

}  // namespace mm
#endif  // MM_HAVE_CUDA
