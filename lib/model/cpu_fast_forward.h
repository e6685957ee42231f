#pragma once
// The inference forward shared by CpuBf16Model and CpuInt8Model (internal to lib/model).
//
// Both compute MedMamba::forward in eval mode with the same skeleton: the convs in
// bf16 (Bf16Conv2d, BatchNorms folded in), the scan, norms, depthwise conv and head
// in float32. They differ in the Linear layers (in_proj, x_proj, out_proj, the 1x1
// conv, patch merging), which a Precision policy supplies:
//   using Act = ...;      // what its Linears read: uint16_t (bf16) or int8_t (int8, a scale per row)
//   using Linear = ...;
//   static Linear linear(const float* weight, const float* bias, int64_t K, int64_t N, bool relu);
//   // A Linear's input row from its float32 values, written by the op that produced them
//   // while the row is in cache; int8: quantised with consumer's fixed scale or its own
//   // (*row_scale, what run reads back).
//   static void store_row(const Linear& consumer, Act* dst, float* row_scale, const float* row, int64_t n);
//   // row_scale: what store_row wrote for x's M rows.
//   static void run(const Linear&, float* out, const Act* x, const float* row_scale, int64_t M);
//   // The block's 3x3 convs (BatchNorm 2 or 5 and the ReLU after it folded in): Bf16Conv2d,
//   // or Int8Conv2d (one scale per image). The first reads BatchNorm 0's signed output, the
//   // second the first's ReLU.
//   using FirstConv = ...;
//   static FirstConv first_conv(const Conv2dShape& geometry, const float* weight,
//                               const float* bias, const float* bn_scale, const float* bn_shift);
//   using ReluInputConv = ...;
//   static ReluInputConv relu_input_conv(const Conv2dShape& geometry, const float* weight,
//                                        const float* bias, const float* bn_scale, const float* bn_shift);
//   // conv's output as consumer's input (out, row_scale); scratch: room for it in float32.
//   static void conv_out(const ReluInputConv& conv, const Linear& consumer, Act* out, float* row_scale,
//                        float* scratch, const uint16_t* x, int64_t B, int64_t H, int64_t W);
#include <omp.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "model/block.h"
#include "model/cpu_batch_split.h"
#include "model/medmamba.h"
#include "ops/depthwise_conv.h"
#include "ops/gemm_bf16.h"
#include "ops/layernorm.h"
#include "ops/layout.h"
#include "ops/linear.h"
#include "ops/op_profile.h"
#include "ops/selective_scan.h"

namespace mm::fast_forward {

constexpr size_t kHugePage = size_t(2) << 20;
// madvise(MADV_HUGEPAGE) on [p, p + bytes), p and bytes multiples of kHugePage; a hint only.
void advise_huge_pages(void* p, size_t bytes);

// Eval-mode BatchNorm as out = x * scale + shift.
struct ChannelAffine {
  std::vector<float> scale, shift;
};
ChannelAffine batchnorm_affine(const BatchNormWeights& bn, int64_t c);
// out (P,c) bf16 = x[:, :c] * scale + shift, x rows C floats apart (the block's left half).
void affine_to_bf16(uint16_t* out, const float* x, int64_t C, const ChannelAffine& a, int64_t P, int64_t c);
// One row of it: out (c) bf16 = x (c) * scale + shift; tmp: c floats.
void affine_row_to_bf16(uint16_t* out, const float* x, const ChannelAffine& a, int64_t c, float* tmp);
Conv2dShape conv_geometry(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad);
// Each row of out (P,C) = LayerNorm(row of x) [* silu(row of z)], x rows ld floats apart,
// z (P,C) or nullptr; store(p, row) takes the float32 result of row p.
void layernorm_rows(const float* x, int64_t ld, const float* z, const float* weight, const float* bias, int64_t P,
                    int64_t C, const std::function<void(int64_t, const float*)>& store);
// One row of it: o (C) = LayerNorm(xr) [* silu(zr)], zr (C) or nullptr.
void layernorm_row(float* o, const float* xr, const float* zr, const float* weight, const float* bias, int64_t C);
// Patch merging's gather and LayerNorm in one pass: row q of LayerNorm(patch_gather(x)), x
// (B,H,W,C), goes to store(q, row) (4C floats) without the gathered tensor being written.
void merge_layernorm_rows(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, const float* weight,
                          const float* bias, const std::function<void(int64_t, const float*)>& store);
// out = channel_shuffle(concat(l, s)) + x, all (P, 2c) but l, s (P,c). Each finished row p of
// out, still in cache, goes to row_done(p, row) where set (from the threads of the loop).
void shuffle_residual(float* out, const float* l, const float* s, const float* x, int64_t P, int64_t c,
                      const std::function<void(int64_t, const float*)>& row_done = nullptr);
// NCHW float32 images (B,Cin,S,S) to bf16 patch rows (B, S/k, S/k, Cin·k·k), each in (ci, kh, kw)
// order: the patch embedding (a k×k conv of stride k) is then a 1x1 conv, whose (Cout, Cin·k·k)
// weight is the k×k conv's (Cout, Cin, k, k) as it is. oneDNN ran the 4x4/4 conv with 3 input
// channels at a third of the 1x1 conv's speed.
void images_to_patches_bf16(uint16_t* out, const float* images, int64_t B, int64_t Cin, int64_t S, int64_t k);
void check_images(const Tensor& images, const ModelConfig& cfg, const char* precision);

template <class Precision>
struct Block {
  using Linear = typename Precision::Linear;
  BlockWeights w;
  Linear in_proj_x, in_proj_z, x_proj, out_proj, conv7;
  typename Precision::FirstConv conv1;      // BatchNorm 2 and the ReLU after it folded in
  typename Precision::ReluInputConv conv4;  // BatchNorm 5 and the ReLU after it; reads conv1's ReLU
  ChannelAffine bn0;

  Block(const BlockWeights& bw, int64_t C, int64_t N, int64_t R) : w(bw) {
    const int64_t c = C / 2, D = C;
    in_proj_x = Precision::linear(w.in_proj, nullptr, c, D, false);
    in_proj_z = Precision::linear(w.in_proj + D * c, nullptr, c, D, false);
    x_proj = Precision::linear(w.x_proj, nullptr, D, 4 * (R + 2 * N), false);
    out_proj = Precision::linear(w.out_proj, nullptr, D, c, false);
    conv7 = Precision::linear(w.conv7_w, w.conv7_b, c, c, true);
    const ChannelAffine bn2 = batchnorm_affine(w.bn2, c), bn5 = batchnorm_affine(w.bn5, c);
    conv1 = Precision::first_conv(conv_geometry(c, c, 3, 1, 1), w.conv1_w, w.conv1_b, bn2.scale.data(),
                                  bn2.shift.data());
    conv4 = Precision::relu_input_conv(conv_geometry(c, c, 3, 1, 1), w.conv4_w, w.conv4_b, bn5.scale.data(),
                                       bn5.shift.data());
    bn0 = batchnorm_affine(w.bn0, c);
  }
};

// std::allocator's large blocks start 16 bytes past a page: every 64-byte row of 16 channels
// would straddle two cache lines (measured: the scan's loads of u stalled on the second).
// Blocks of 2 MiB and more are also asked to be backed by huge pages (where the kernel's
// transparent huge pages are in "madvise" mode): the scan's column-major directions step a
// whole image row (a new 4 KiB page) per position in u, dbl and out.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePage) return static_cast<T*>(::operator new(bytes, std::align_val_t(64)));
    const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = ::operator new(rounded, std::align_val_t(kHugePage));
    advise_huge_pages(p, rounded);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) < kHugePage) ::operator delete(p, std::align_val_t(64));
    else ::operator delete(p, std::align_val_t(kHugePage));
  }
  friend bool operator==(const CacheLineAllocator&, const CacheLineAllocator&) { return true; }
  friend bool operator!=(const CacheLineAllocator&, const CacheLineAllocator&) { return false; }
};
template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

// Scratch for one batch size, sized for stage 0 (later stages have P·C halved per stage).
template <class Act>
struct Buffers {
  int64_t B = -1, S = -1;
  AlignedVector<Act> act;                       // a Linear's input
  AlignedVector<float> row_scale;               // the scales of act's rows (int8)
  AlignedVector<uint16_t> image, conv_a, conv_b;  // bf16 conv inputs
  AlignedVector<float> embed, x0, x1, xin, z, u, y, dbl, s, l, pooled;

  void ensure(const ModelConfig& cfg, int64_t batch, int64_t side) {
    if (B == batch && S == side) return;
    B = batch; S = side;
    const int64_t P0 = B * (S / 4) * (S / 4), C0 = cfg.dims[0];
    int64_t dbl_floats = 0;
    for (int64_t i = 0; i < cfg.num_stages(); ++i)
      dbl_floats = std::max(dbl_floats, (P0 >> (2 * i)) * 4 * (cfg.dt_rank(i) + 2 * cfg.d_state));
    image.resize(size_t(B * S * S * cfg.in_chans));
    act.resize(size_t(P0 * C0));
    row_scale.resize(size_t(P0));
    for (auto* v : {&conv_a, &conv_b}) v->resize(size_t(P0 * C0));
    for (auto* v : {&embed, &x0, &x1, &xin, &z, &u, &y, &s, &l}) v->resize(size_t(P0 * C0));
    dbl.resize(size_t(dbl_floats));
    pooled.resize(size_t(B * cfg.dims.back()));
  }
};

template <class Precision>
class Forward {
 public:
  using Act = typename Precision::Act;
  using Linear = typename Precision::Linear;

  // Reads model's float32 parameters in every call: model must outlive this object.
  explicit Forward(const MedMamba& m) : model_(m) {
    const ModelConfig& cfg = m.config();
    patch_embed_ = Bf16Conv2d(conv_geometry(cfg.in_chans * 16, cfg.dims[0], 1, 1, 0), w("patch_embed.proj.weight"),
                              w("patch_embed.proj.bias"), nullptr, nullptr);
    float* base = const_cast<float*>(m.params().f32());
    blocks_.resize(size_t(cfg.num_stages()));
    for (int64_t i = 0; i < cfg.num_stages(); ++i) {
      for (int64_t j = 0; j < cfg.depths[i]; ++j)
        blocks_[size_t(i)].emplace_back(block_weights(base, m.table(), block_prefix(i, j)), cfg.dims[i], cfg.d_state,
                                        cfg.dt_rank(i));
      if (i + 1 < cfg.num_stages())
        merge_.push_back(Precision::linear(w(merge_prefix(i) + "reduction.weight"), nullptr, 4 * cfg.dims[i],
                                           2 * cfg.dims[i], false));
    }
  }

  const MedMamba& model() const { return model_; }

  // Every Linear with a name ("layers.0.blocks.1.in_proj_x", "layers.0.downsample.reduction").
  void for_each_linear(const std::function<void(const std::string&, Linear&)>& fn) {
    for (size_t i = 0; i < blocks_.size(); ++i) {
      for (size_t j = 0; j < blocks_[i].size(); ++j) {
        Block<Precision>& b = blocks_[i][j];
        const std::string p = block_prefix(int64_t(i), int64_t(j));
        fn(p + "in_proj_x", b.in_proj_x);
        fn(p + "in_proj_z", b.in_proj_z);
        fn(p + "x_proj", b.x_proj);
        fn(p + "out_proj", b.out_proj);
        fn(p + "conv7", b.conv7);
      }
      if (i < merge_.size()) fn(merge_prefix(int64_t(i)) + "reduction", merge_[i]);
    }
  }

  // The whole batch per op, or one sub-batch per thread (cpu_batch_split.h), as the fp32 forward.
  Tensor operator()(const Tensor& images, const char* precision_name) {
    const ModelConfig& cfg = model_.config();
    check_images(images, cfg, precision_name);
    const int64_t B = images.dim(0), S = images.dim(2);
    Tensor logits = Tensor::empty({B, cfg.num_classes});
    const int workers = sub_batch_count(batch_split_setting(), B, omp_get_max_threads());
    if (workers == 1) {
      forward(logits.f32(), images.f32(), B, S, buf_);
      return logits;
    }
    forward_sub_batches(logits.f32(), images.f32(), B, cfg.in_chans * S * S, cfg.num_classes, workers, worker_buf_,
                        [&](Buffers<Act>& b, float* out, const float* in, int64_t count) {
                          forward(out, in, count, S, b);  // sized by its worker: its pages near its core
                        });
    return logits;
  }

 private:
  // logits (B,classes) of images (B,in_chans,S,S), with b as the activations.
  void forward(float* logits, const float* images, int64_t B, int64_t S, Buffers<Act>& b) {
    const ModelConfig& cfg = model_.config();
    b.ensure(cfg, B, S);
    const int64_t side0 = S / 4;
    float *cur = b.x0.data(), *next = b.x1.data();
    timed("patch_embed", [&] {
      images_to_patches_bf16(b.image.data(), images, B, cfg.in_chans, S, 4);
      patch_embed_.forward(b.embed.data(), b.image.data(), B, side0, side0);
      layernorm_forward(cur, nullptr, nullptr, b.embed.data(), w("patch_embed.norm.weight"),
                        w("patch_embed.norm.bias"), B * side0 * side0, cfg.dims[0]);
    });
    for (int64_t i = 0; i < cfg.num_stages(); ++i) {
      const int64_t side = side0 >> i, C = cfg.dims[i], P = B * side * side;
      const BlockDims d{B, side, side, C, cfg.d_state, cfg.dt_rank(i)};
      const auto& stage = blocks_[size_t(i)];
      for (size_t j = 0; j < stage.size(); ++j) {
        block(b, next, cur, stage[j], j + 1 < stage.size() ? &stage[j + 1] : nullptr, /*inputs_ready=*/j > 0, d);
        std::swap(cur, next);
      }
      if (i + 1 < cfg.num_stages()) {
        const std::string m = merge_prefix(i);
        timed("patch_merge", [&] {
          const Linear& reduction = merge_[size_t(i)];
          Act* act = b.act.data();
          float* row_scale = b.row_scale.data();
          merge_layernorm_rows(cur, B, side, side, C, w(m + "norm.weight"), w(m + "norm.bias"),
                               [&](int64_t q, const float* row) {
                                 Precision::store_row(reduction, act + q * 4 * C, row_scale + q, row, 4 * C);
                               });
          Precision::run(reduction, next, act, row_scale, P / 4);
        });
        std::swap(cur, next);
      }
    }
    const int64_t side_last = side0 >> (cfg.num_stages() - 1), C_last = cfg.dims.back();
    timed("head", [&] {
      avgpool_forward(b.pooled.data(), cur, B, side_last * side_last, C_last);
      linear_forward(logits, b.pooled.data(), w("head.weight"), w("head.bias"), B, C_last, cfg.num_classes);
    });
  }

  static std::string block_prefix(int64_t i, int64_t j) {
    return "layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
  }
  static std::string merge_prefix(int64_t i) { return "layers." + std::to_string(i) + ".downsample."; }
  const float* w(const std::string& name) const { return model_.params().f32() + model_.table().at(name).offset; }

  // consumer's input (act, row_scale) = LayerNorm(x) [* silu(z)].
  void normalize_to_act(Buffers<Act>& b, const Linear& consumer, const float* x, int64_t ld, const float* z,
                        const float* weight, const float* bias, int64_t P, int64_t C) {
    Act* act = b.act.data();
    float* row_scale = b.row_scale.data();
    layernorm_rows(x, ld, z, weight, bias, P, C, [&](int64_t p, const float* row) {
      Precision::store_row(consumer, act + p * C, row_scale + p, row, C);
    });
  }

  // out, x: (B,H,W,C) float32. inputs_ready: the block before wrote this one's ln_1 output (act,
  // row_scale) and BatchNorm-0 output (conv_a) while it wrote x. following: the next block of the
  // stage, whose inputs this one writes the same way, or nullptr.
  void block(Buffers<Act>& b, float* out, const float* x, const Block<Precision>& blk,
             const Block<Precision>* following, bool inputs_ready, const BlockDims& d) {
    const int64_t P = d.P(), c = d.c(), D = d.C;
    const BlockWeights& bw = blk.w;
    // SS2D branch on the right half.
    // in_proj's halves read one input, quantised with in_proj_x's scale (int8): calibration
    // gives both the same, as they see the same values.
    if (!inputs_ready)
      timed("ln1", [&] { normalize_to_act(b, blk.in_proj_x, x + c, D, nullptr, bw.ln1_w, bw.ln1_b, P, c); });
    timed("in_proj", [&] {
      Precision::run(blk.in_proj_x, b.xin.data(), b.act.data(), b.row_scale.data(), P);
      Precision::run(blk.in_proj_z, b.z.data(), b.act.data(), b.row_scale.data(), P);
    });
    // u = silu(dwconv(xin)) in float32 for the scan, and x_proj's input.
    timed("dwconv3x3_silu", [&] {
      Act* act = b.act.data();
      float* row_scale = b.row_scale.data();
      dwconv3x3_silu_forward(b.u.data(), b.xin.data(), bw.dwconv_w, bw.dwconv_b, d.B, d.H, d.W, D,
                             [&](int64_t p, const float* row) {
                               Precision::store_row(blk.x_proj, act + p * D, row_scale + p, row, D);
                             });
    });
    timed("x_proj", [&] { Precision::run(blk.x_proj, b.dbl.data(), b.act.data(), b.row_scale.data(), P); });
    const SS2DScanShape ss{d.B, d.H, d.W, d.C, d.N, d.R};
    timed("scan", [&] {
      ss2d_scan_forward_from_dbl(ss, b.u.data(),
                                 SS2DScanWeights{bw.x_proj, bw.dt_projs_w, bw.dt_projs_b, bw.A_logs, bw.Ds},
                                 b.dbl.data(), b.y.data(), nullptr, /*coarse_exp=*/true);
    });
    timed("out_norm_gate", [&] {
      normalize_to_act(b, blk.out_proj, b.y.data(), D, b.z.data(), bw.out_norm_w, bw.out_norm_b, P, D);
    });
    timed("out_proj", [&] { Precision::run(blk.out_proj, b.s.data(), b.act.data(), b.row_scale.data(), P); });
    // Convolution branch on the left half.
    if (!inputs_ready) timed("bn0", [&] { affine_to_bf16(b.conv_a.data(), x, D, blk.bn0, P, c); });
    timed("conv3x3", [&] {
      blk.conv1.forward_bf16(b.conv_b.data(), b.conv_a.data(), d.B, d.H, d.W);
      // y as scratch: out_norm_gate has read the scan's output.
      Precision::conv_out(blk.conv4, blk.conv7, b.act.data(), b.row_scale.data(), b.y.data(), b.conv_b.data(), d.B,
                          d.H, d.W);
    });
    timed("conv1x1", [&] { Precision::run(blk.conv7, b.l.data(), b.act.data(), b.row_scale.data(), P); });
    if (!following) {
      timed("shuffle_residual", [&] { shuffle_residual(out, b.l.data(), b.s.data(), x, P, c); });
      return;
    }
    // The next block's ln_1 and BatchNorm 0 from each row of out while it is in cache: two
    // passes over the (P, C) float32 activations fewer.
    timed("shuffle_residual+ln1+bn0", [&] {
      const BlockWeights& nw = following->w;
      Act* act = b.act.data();
      float* row_scale = b.row_scale.data();
      uint16_t* conv_a = b.conv_a.data();
      shuffle_residual(out, b.l.data(), b.s.data(), x, P, c, [&](int64_t p, const float* row) {
        thread_local std::vector<float> tmp;
        tmp.resize(size_t(c));
        affine_row_to_bf16(conv_a + p * c, row, following->bn0, c, tmp.data());
        layernorm_row(tmp.data(), row + c, nullptr, nw.ln1_w, nw.ln1_b, c);
        Precision::store_row(following->in_proj_x, act + p * c, row_scale + p, tmp.data(), c);
      });
    });
  }

  const MedMamba& model_;
  Bf16Conv2d patch_embed_;
  std::vector<std::vector<Block<Precision>>> blocks_;  // [stage][block]
  std::vector<Linear> merge_;                          // patch merging reduction after stage i
  Buffers<Act> buf_;                                   // the per-op forward's
  std::vector<std::unique_ptr<Buffers<Act>>> worker_buf_;  // each sub-batch worker's
};

}  // namespace mm::fast_forward
