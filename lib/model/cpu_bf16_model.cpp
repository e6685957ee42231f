#include "model/cpu_bf16_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "model/block.h"
#include "ops/depthwise_conv.h"
#include "ops/gemm_bf16.h"
#include "ops/layernorm.h"
#include "ops/layout.h"
#include "ops/linear.h"
#include "ops/selective_scan.h"
#include "ops/vector_math.h"

namespace mm {

namespace {

constexpr float kNormEps = 1e-5f;  // LayerNorm and BatchNorm, as the reference

// out (P,C) bf16 = LayerNorm(x) [* silu(z)], x rows ld floats apart, z (P,C) or nullptr.
// The float32 normalisation, the gate and the rounding to bf16 in one pass.
void layernorm_to_bf16(uint16_t* out, const float* x, int64_t ld, const float* z, const float* weight,
                       const float* bias, int64_t P, int64_t C) {
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      const float* xr = x + p * ld;
      float m = 0.f;
#pragma omp simd reduction(+ : m)
      for (int64_t c = 0; c < C; ++c) m += xr[c];
      m /= float(C);
      float v = 0.f;
#pragma omp simd reduction(+ : v)
      for (int64_t c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
      const float r = 1.f / std::sqrt(v / float(C) + kNormEps);
      float* o = row.data();
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] = (xr[c] - m) * r * weight[c] + bias[c];
      if (z) {
        const float* zr = z + p * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] *= silu_vectorisable(zr[c]);
      }
      to_bf16(out + p * C, o, C);
    }
  }
}

// u = silu(x) (P,C) in float32 (the scan's input) and in bf16 (x_proj's), in one pass.
void silu_to_f32_and_bf16(float* u, uint16_t* u_bf16, const float* x, int64_t P, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < P; ++p) {
    const float* xr = x + p * C;
    float* ur = u + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) ur[c] = silu_vectorisable(xr[c]);
    to_bf16(u_bf16 + p * C, ur, C);
  }
}

// Eval-mode BatchNorm as out = x * scale + shift.
struct ChannelAffine {
  std::vector<float> scale, shift;
};
ChannelAffine batchnorm_affine(const BatchNormWeights& bn, int64_t c) {
  ChannelAffine a{std::vector<float>(size_t(c)), std::vector<float>(size_t(c))};
  for (int64_t i = 0; i < c; ++i) {
    const float s = bn.weight[i] / std::sqrt(bn.running_var[i] + kNormEps);
    a.scale[size_t(i)] = s;
    a.shift[size_t(i)] = bn.bias[i] - bn.running_mean[i] * s;
  }
  return a;
}

// out (P,c) bf16 = x[:, :c] * scale + shift, x rows C floats apart (the block's left half).
void affine_to_bf16(uint16_t* out, const float* x, int64_t C, const ChannelAffine& a, int64_t P, int64_t c) {
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t i = 0; i < c; ++i) row[size_t(i)] = x[p * C + i] * a.scale[size_t(i)] + a.shift[size_t(i)];
      to_bf16(out + p * c, row.data(), c);
    }
  }
}

Conv2dShape conv_geometry(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad) {
  Conv2dShape s;
  s.Cin = cin; s.Cout = cout; s.KH = s.KW = k; s.stride = stride; s.pad = pad;
  return s;
}

}  // namespace

// The bf16 form of one block's GEMMs and convs; the float32 pointers for the rest.
struct BlockBf16 {
  BlockWeights w;
  Bf16Linear in_proj_x, in_proj_z, x_proj, out_proj, conv7;
  Bf16Conv2d conv1, conv4;  // BatchNorm 2 / 5 and the ReLU after each folded in
  ChannelAffine bn0;

  BlockBf16(const BlockWeights& bw, int64_t C, int64_t N, int64_t R) : w(bw) {
    const int64_t c = C / 2, D = C;
    in_proj_x = Bf16Linear(w.in_proj, nullptr, c, D);
    in_proj_z = Bf16Linear(w.in_proj + D * c, nullptr, c, D);
    x_proj = Bf16Linear(w.x_proj, nullptr, D, 4 * (R + 2 * N));
    out_proj = Bf16Linear(w.out_proj, nullptr, D, c);
    conv7 = Bf16Linear(w.conv7_w, w.conv7_b, c, c, Bf16Epilogue::Relu);
    const ChannelAffine bn2 = batchnorm_affine(w.bn2, c), bn5 = batchnorm_affine(w.bn5, c);
    conv1 = Bf16Conv2d(conv_geometry(c, c, 3, 1, 1), w.conv1_w, w.conv1_b, bn2.scale.data(), bn2.shift.data(),
                       Bf16Epilogue::Relu);
    conv4 = Bf16Conv2d(conv_geometry(c, c, 3, 1, 1), w.conv4_w, w.conv4_b, bn5.scale.data(), bn5.shift.data(),
                       Bf16Epilogue::Relu);
    bn0 = batchnorm_affine(w.bn0, c);
  }
};

// Scratch for one batch size, sized for stage 0 (later stages have P·C halved per stage).
struct Bf16Buffers {
  int64_t B = -1, S = -1;
  std::vector<uint16_t> image, act_a, act_b;       // bf16
  std::vector<float> embed, x0, x1, xin, z, xconv, u, y, dbl, s, l, pooled;

  void ensure(const ModelConfig& cfg, int64_t batch, int64_t side) {
    if (B == batch && S == side) return;
    B = batch; S = side;
    const int64_t P0 = B * (S / 4) * (S / 4), C0 = cfg.dims[0];
    int64_t dbl_floats = 0;
    for (int64_t i = 0; i < cfg.num_stages(); ++i)
      dbl_floats = std::max(dbl_floats, (P0 >> (2 * i)) * 4 * (cfg.dt_rank(i) + 2 * cfg.d_state));
    image.resize(size_t(B * S * S * cfg.in_chans));
    for (auto* v : {&act_a, &act_b}) v->resize(size_t(P0 * C0));
    for (auto* v : {&embed, &x0, &x1, &xin, &z, &xconv, &u, &y, &s, &l}) v->resize(size_t(P0 * C0));
    dbl.resize(size_t(dbl_floats));
    pooled.resize(size_t(B * cfg.dims.back()));
  }
};

struct CpuBf16Model::Impl {
  const MedMamba& model;
  Bf16Conv2d patch_embed;
  std::vector<std::vector<BlockBf16>> blocks;  // [stage][block]
  std::vector<Bf16Linear> merge;               // patch merging reduction after stage i
  Bf16Buffers buf;

  explicit Impl(const MedMamba& m) : model(m) {
    const ModelConfig& cfg = m.config();
    patch_embed = Bf16Conv2d(conv_geometry(cfg.in_chans, cfg.dims[0], 4, 4, 0), w("patch_embed.proj.weight"),
                             w("patch_embed.proj.bias"), nullptr, nullptr);
    float* base = const_cast<float*>(m.params().f32());
    blocks.resize(size_t(cfg.num_stages()));
    for (int64_t i = 0; i < cfg.num_stages(); ++i) {
      for (int64_t j = 0; j < cfg.depths[i]; ++j) {
        const std::string prefix = "layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
        blocks[size_t(i)].emplace_back(block_weights(base, m.table(), prefix), cfg.dims[i], cfg.d_state,
                                       cfg.dt_rank(i));
      }
      if (i + 1 < cfg.num_stages())
        merge.emplace_back(w("layers." + std::to_string(i) + ".downsample.reduction.weight"), nullptr,
                           4 * cfg.dims[i], 2 * cfg.dims[i]);
    }
  }

  const float* w(const std::string& name) const { return model.params().f32() + model.table().at(name).offset; }

  // out, x: (B,H,W,C) float32.
  void block(float* out, const float* x, const BlockBf16& blk, const BlockDims& d) {
    const int64_t P = d.P(), c = d.c(), D = d.C;
    const BlockWeights& bw = blk.w;
    Bf16Buffers& b = buf;
    // SS2D branch on the right half.
    layernorm_to_bf16(b.act_a.data(), x + c, D, nullptr, bw.ln1_w, bw.ln1_b, P, c);
    blk.in_proj_x.forward(b.xin.data(), b.act_a.data(), P);
    blk.in_proj_z.forward(b.z.data(), b.act_a.data(), P);
    dwconv3x3_forward(b.xconv.data(), b.xin.data(), bw.dwconv_w, bw.dwconv_b, d.B, d.H, d.W, D);
    silu_to_f32_and_bf16(b.u.data(), b.act_a.data(), b.xconv.data(), P, D);
    blk.x_proj.forward(b.dbl.data(), b.act_a.data(), P);
    const SS2DScanShape ss{d.B, d.H, d.W, d.C, d.N, d.R};
    ss2d_scan_forward_from_dbl(ss, b.u.data(), SS2DScanWeights{bw.x_proj, bw.dt_projs_w, bw.dt_projs_b, bw.A_logs, bw.Ds},
                               b.dbl.data(), b.y.data(), nullptr, /*coarse_exp=*/true);
    layernorm_to_bf16(b.act_a.data(), b.y.data(), D, b.z.data(), bw.out_norm_w, bw.out_norm_b, P, D);
    blk.out_proj.forward(b.s.data(), b.act_a.data(), P);
    // Convolution branch on the left half.
    affine_to_bf16(b.act_a.data(), x, D, blk.bn0, P, c);
    blk.conv1.forward_bf16(b.act_b.data(), b.act_a.data(), d.B, d.H, d.W);
    blk.conv4.forward_bf16(b.act_a.data(), b.act_b.data(), d.B, d.H, d.W);
    blk.conv7.forward(b.l.data(), b.act_a.data(), P);

    // out = channel_shuffle(concat(l, s)) + x in one pass (concat_shuffle_forward, then the residual).
    const float *l = b.l.data(), *s = b.s.data();
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < P; ++p)
#pragma omp simd
      for (int64_t m = 0; m < c; ++m) {
        out[p * D + 2 * m] = l[p * c + m] + x[p * D + 2 * m];
        out[p * D + 2 * m + 1] = s[p * c + m] + x[p * D + 2 * m + 1];
      }
  }

  Tensor forward(const Tensor& images) {
    const ModelConfig& cfg = model.config();
    MM_CHECK(images.dtype() == DType::F32 && images.device() == Device::CPU && images.ndim() == 4 &&
                 images.dim(1) == cfg.in_chans && images.dim(2) == images.dim(3) &&
                 images.dim(2) % (4 << (cfg.num_stages() - 1)) == 0 && images.dim(2) > 0,
             "bf16 forward expects a float32 CPU tensor (B," + std::to_string(cfg.in_chans) +
                 ",S,S) with S divisible by " + std::to_string(4 << (cfg.num_stages() - 1)) + ", got " +
                 shape_str(images.shape()));
    const int64_t B = images.dim(0), S = images.dim(2), Cin = cfg.in_chans;
    buf.ensure(cfg, B, S);
    Bf16Buffers& b = buf;

    // Patch embedding: NCHW float32 -> NHWC bf16 -> conv 4x4/4 -> LayerNorm.
    const float* img = images.f32();
#pragma omp parallel for
    for (int64_t bh = 0; bh < B * S; ++bh)
      for (int64_t x = 0; x < S; ++x)
        for (int64_t ch = 0; ch < Cin; ++ch)
          b.image[size_t((bh * S + x) * Cin + ch)] =
              float_to_bf16(img[(((bh / S) * Cin + ch) * S + bh % S) * S + x]);
    patch_embed.forward(b.embed.data(), b.image.data(), B, S, S);
    const int64_t side0 = S / 4;
    layernorm_forward(b.x0.data(), nullptr, nullptr, b.embed.data(), w("patch_embed.norm.weight"),
                      w("patch_embed.norm.bias"), B * side0 * side0, cfg.dims[0]);

    float *cur = b.x0.data(), *next = b.x1.data();
    for (int64_t i = 0; i < cfg.num_stages(); ++i) {
      const int64_t side = side0 >> i, C = cfg.dims[i], P = B * side * side;
      const BlockDims d{B, side, side, C, cfg.d_state, cfg.dt_rank(i)};
      for (const BlockBf16& blk : blocks[size_t(i)]) {
        block(next, cur, blk, d);
        std::swap(cur, next);
      }
      if (i + 1 < cfg.num_stages()) {
        const std::string m = "layers." + std::to_string(i) + ".downsample.";
        patch_gather_forward(b.embed.data(), cur, B, side, side, C);
        layernorm_to_bf16(b.act_a.data(), b.embed.data(), 4 * C, nullptr, w(m + "norm.weight"), w(m + "norm.bias"),
                          P / 4, 4 * C);
        merge[size_t(i)].forward(next, b.act_a.data(), P / 4);
        std::swap(cur, next);
      }
    }

    const int64_t side_last = side0 >> (cfg.num_stages() - 1), C_last = cfg.dims.back();
    avgpool_forward(b.pooled.data(), cur, B, side_last * side_last, C_last);
    Tensor logits = Tensor::empty({B, cfg.num_classes});
    linear_forward(logits.f32(), b.pooled.data(), w("head.weight"), w("head.bias"), B, C_last, cfg.num_classes);
    return logits;
  }
};

CpuBf16Model::CpuBf16Model(const MedMamba& model) {
  const std::string why = bf16_unavailable_reason();
  MM_CHECK(why.empty(), "bf16 inference on the CPU: " + why);
  impl_ = std::make_unique<Impl>(model);
}

CpuBf16Model::~CpuBf16Model() = default;
CpuBf16Model::CpuBf16Model(CpuBf16Model&&) noexcept = default;

const ModelConfig& CpuBf16Model::config() const { return impl_->model.config(); }

Tensor CpuBf16Model::forward(const Tensor& images) { return impl_->forward(images); }

}  // namespace mm
