#include "model/cpu_fp32_block.h"

#include <vector>

#include "ops/batchnorm.h"
#include "ops/depthwise_conv.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/op_profile.h"
#include "ops/selective_scan.h"

namespace mm {

namespace {

// An eval-mode BatchNorm as x·scale + shift (batchnorm_eval_affine, as batchnorm_forward_eval).
struct EvalBatchNorm {
  std::vector<float> scale, shift;
  EvalBatchNorm(const BatchNormWeights& bn, int64_t c) : scale(size_t(c)), shift(size_t(c)) {
    batchnorm_eval_affine(scale.data(), shift.data(), bn.running_mean, bn.running_var, bn.weight, bn.bias, c);
  }
};

// out (P,c) = x·scale + shift, x's rows ldx floats apart.
void batchnorm_rows(float* out, const float* x, int64_t ldx, const EvalBatchNorm& bn, int64_t P, int64_t c) {
  const float *scale = bn.scale.data(), *shift = bn.shift.data();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < P; ++p) {
    const float* xr = x + p * ldx;
    float* o = out + p * c;
#pragma omp simd
    for (int64_t i = 0; i < c; ++i) o[i] = xr[i] * scale[i] + shift[i];
  }
}

// out = channel_shuffle(concat(relu(l), s)) + x; l, s (P,c), out and x (P,2c).
void relu_shuffle_residual(float* out, const float* l, const float* s, const float* x, int64_t P, int64_t c) {
  const int64_t D = 2 * c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < P; ++p)
#pragma omp simd
    for (int64_t m = 0; m < c; ++m) {
      const float lv = l[p * c + m];
      out[p * D + 2 * m] = (lv > 0.f ? lv : 0.f) + x[p * D + 2 * m];
      out[p * D + 2 * m + 1] = s[p * c + m] + x[p * D + 2 * m + 1];
    }
}

}  // namespace

Conv2dShape block_conv_shape(const BlockDims& d, int64_t k) {
  Conv2dShape s;
  s.B = d.B; s.H = d.H; s.W = d.W; s.Cin = d.c(); s.Cout = d.c();
  s.KH = s.KW = k; s.pad = k / 2;
  return s;
}

void block_forward_inference(float* out, const float* x, const BlockWeights& w, BlockActs& a, const BlockDims& d,
                             float* conv_workspace, float* scan_workspace, WinogradWeightCache* conv3x3_caches) {
  a.ensure(d, false);
  const int64_t P = d.P(), c = d.c(), D = d.C;

  // SS2D branch: (P,c) -> (P,c). (timed: MM_OP_PROFILE's per-op totals, one branch when off.)
  timed("ln1", [&] { layernorm_forward_rows(a.ln1.f32(), x + c, D, nullptr, w.ln1_w, w.ln1_b, P, c); });
  timed("in_proj", [&] {
    linear_forward(a.xin.f32(), a.ln1.f32(), w.in_proj, nullptr, P, c, D);        // in_proj rows [0, D)
    linear_forward(a.z.f32(), a.ln1.f32(), w.in_proj + D * c, nullptr, P, c, D);  // rows [D, 2D)
  });
  timed("dwconv3x3_silu",
        [&] { dwconv3x3_silu_forward(a.u.f32(), a.xin.f32(), w.dwconv_w, w.dwconv_b, d.B, d.H, d.W, D); });
  const SS2DScanShape ss{d.B, d.H, d.W, d.C, d.N, d.R};
  const SS2DScanWeights sw{w.x_proj, w.dt_projs_w, w.dt_projs_b, w.A_logs, w.Ds};
  float* dbl = scan_workspace;  // (P, 4·(R+2N)): ss2d_scan_forward's own x_proj GEMM
  timed("x_proj", [&] { linear_forward(dbl, a.u.f32(), w.x_proj, nullptr, P, D, 4 * (d.R + 2 * d.N)); });
  timed("scan", [&] { ss2d_scan_forward_from_dbl(ss, a.u.f32(), sw, dbl, a.y.f32()); });
  timed("out_norm_gate",
        [&] { layernorm_forward_rows(a.g.f32(), a.y.f32(), D, a.z.f32(), w.out_norm_w, w.out_norm_b, P, D); });
  timed("out_proj", [&] { linear_forward(a.s.f32(), a.g.f32(), w.out_proj, nullptr, P, D, c); });

  // Convolution branch on the left half: (P,c) -> (P,c).
  timed("bn0", [&] { batchnorm_rows(a.a0.f32(), x, D, EvalBatchNorm(w.bn0, c), P, c); });
  timed("conv3x3", [&] {  // each conv carries its BatchNorm and ReLU (Winograd: in the output transform)
    const EvalBatchNorm bn2(w.bn2, c), bn5(w.bn5, c);
    WinogradWeightCache *cache1 = conv3x3_caches, *cache4 = conv3x3_caches ? conv3x3_caches + 1 : nullptr;
    conv2d_forward_eval(a.a1.f32(), a.a0.f32(), w.conv1_w, w.conv1_b, block_conv_shape(d, 3), conv_workspace,
                        {bn2.scale.data(), bn2.shift.data(), true}, cache1);
    conv2d_forward_eval(a.a4.f32(), a.a1.f32(), w.conv4_w, w.conv4_b, block_conv_shape(d, 3), conv_workspace,
                        {bn5.scale.data(), bn5.shift.data(), true}, cache4);
  });
  timed("conv1x1",
        [&] { conv2d_forward(a.a7.f32(), a.a4.f32(), w.conv7_w, w.conv7_b, block_conv_shape(d, 1), conv_workspace); });

  timed("shuffle_residual", [&] { relu_shuffle_residual(out, a.a7.f32(), a.s.f32(), x, P, c); });
}

}  // namespace mm
