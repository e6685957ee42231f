#include "model/medmamba.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "model/block.h"
#include "model/cpu_batch_split.h"
#include "ops/conv2d.h"
#include "ops/layernorm.h"
#include "ops/layout.h"
#include "ops/linear.h"
#include "ops/op_profile.h"

namespace mm {

// ---------------------------------------------------------------------------
// Activations of one forward pass.

struct StageActs {
  std::vector<Tensor> xs;         // depth+1 tensors (P,C): block inputs, then the stage output
  std::vector<BlockActs> blocks;  // one per block in training; one shared in inference
  std::vector<Tensor> drop_scale; // (B) per block, training only
  // Patch merging after this stage: gathered (P/4,4C) -> LayerNorm -> reduction.
  Tensor gathered, merged_ln, merge_mean, merge_rstd;
};

struct ModelActs {
  int64_t B = -1, S = -1;
  bool train = false;  // BatchNorm batch statistics and drop path
  bool keep = false;   // activations kept per block for backward()
  Tensor image_nhwc;                      // (B,S,S,Cin)
  Tensor embed, embed_mean, embed_rstd;   // (B,S/4,S/4,C0) conv output, LN stats
  std::vector<StageActs> stages;
  Tensor pooled;                          // (B,C_last)
  Tensor conv_workspace;
  Tensor block_scratch, scan_workspace;  // shared by every block (BlockContext)
};

static Conv2dShape patch_embed_shape(const ModelConfig& cfg, int64_t B, int64_t S) {
  Conv2dShape s;
  s.B = B; s.H = S; s.W = S; s.Cin = cfg.in_chans; s.Cout = cfg.dims[0];
  s.KH = s.KW = 4; s.stride = 4; s.pad = 0;
  return s;
}

static void allocate_acts(ModelActs& a, const ModelConfig& cfg, int64_t B, int64_t S, bool train, bool keep) {
  if (a.B == B && a.S == S && a.train == train && a.keep == keep) return;
  a = ModelActs{};
  a.B = B; a.S = S; a.train = train; a.keep = keep;
  a.image_nhwc = Tensor::empty({B, S, S, cfg.in_chans});
  const int64_t side0 = S / 4;
  a.embed = Tensor::empty({B * side0 * side0 * cfg.dims[0]});
  a.embed_mean = Tensor::empty({B * side0 * side0});
  a.embed_rstd = Tensor::empty({B * side0 * side0});
  int64_t ws = conv2d_workspace_floats(patch_embed_shape(cfg, B, S)), scratch = 0, scan_ws = 0;
  a.stages.resize(size_t(cfg.num_stages()));
  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    StageActs& st = a.stages[size_t(i)];
    const int64_t side = side0 >> i, P = B * side * side, C = cfg.dims[i];
    for (int64_t j = 0; j <= cfg.depths[i]; ++j) st.xs.push_back(Tensor::empty({P * C}));
    st.blocks.resize(keep ? size_t(cfg.depths[i]) : 1);
    if (train)
      for (int64_t j = 0; j < cfg.depths[i]; ++j) st.drop_scale.push_back(Tensor::empty({B}));
    if (i + 1 < cfg.num_stages()) {
      st.gathered = Tensor::empty({P * C});
      st.merged_ln = Tensor::empty({P * C});
      st.merge_mean = Tensor::empty({P / 4});
      st.merge_rstd = Tensor::empty({P / 4});
    }
    Conv2dShape cs;
    cs.B = B; cs.H = side; cs.W = side; cs.Cin = cs.Cout = C / 2; cs.KH = cs.KW = 3; cs.pad = 1;
    ws = std::max(ws, conv2d_workspace_floats(cs));
    const BlockDims d{B, side, side, C, cfg.d_state, cfg.dt_rank(i)};
    if (keep) scratch = std::max(scratch, block_scratch_floats(d));  // used by backward only
    scan_ws = std::max(scan_ws, block_scan_workspace_floats(d, keep));
  }
  a.pooled = Tensor::empty({B * cfg.dims.back()});
  a.conv_workspace = Tensor::empty({std::max<int64_t>(ws, 1)});
  a.block_scratch = Tensor::empty({std::max<int64_t>(scratch, 1)});
  a.scan_workspace = Tensor::empty({std::max<int64_t>(scan_ws, 1)});
}

// ---------------------------------------------------------------------------

MedMamba::MedMamba(ModelConfig cfg)
    : cfg_(std::move(cfg)), table_(ParamTable::for_config(cfg_)) {
  params_ = Tensor::zeros({table_.total_floats()});
  grads_ = Tensor::zeros({table_.total_floats()});
  batches_tracked_.assign(table_.batchnorms().size(), 0);
  acts_ = std::make_unique<ModelActs>();
  int64_t blocks = 0;
  for (int64_t depth : cfg_.depths) blocks += depth;
  winograd_caches_ = std::vector<WinogradWeightCache>(size_t(2 * blocks));
}

void MedMamba::params_changed() {
  for (WinogradWeightCache& c : winograd_caches_) c.clear();
}

MedMamba::~MedMamba() = default;
MedMamba::MedMamba(MedMamba&&) noexcept = default;
MedMamba& MedMamba::operator=(MedMamba&&) noexcept = default;

Tensor MedMamba::param(const std::string& name) {
  const ParamEntry& e = table_.at(name);
  return params_.slice_view(e.offset, e.shape);
}

Tensor MedMamba::grad(const std::string& name) {
  const ParamEntry& e = table_.at(name);
  return grads_.slice_view(e.offset, e.shape);
}

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void MedMamba::init_reference(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  auto uniform = [&](float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); };
  auto trunc_normal = [&](float std) {  // timm's trunc_normal_: cut at +-2 absolute
    for (;;) {
      float v = normal(rng) * std;
      if (v >= -2.f && v <= 2.f) return v;
    }
  };
  params_changed();
  params_.zero_();
  float* base = params_.f32();
  std::set<std::string> batchnorm_weights;  // BatchNorm2d's default affine init: weight 1, bias 0
  for (const std::string& bn : table_.batchnorms()) batchnorm_weights.insert(bn + ".weight");
  for (const ParamEntry& e : table_.entries()) {
    float* p = base + e.offset;
    const int64_t n = e.numel();
    const std::string& k = e.name;
    auto fill = [&](auto gen) { for (int64_t i = 0; i < n; ++i) p[i] = gen(i); };
    if (ends_with(k, "running_var") || ends_with(k, "norm.weight") || ends_with(k, "ln_1.weight") ||
        ends_with(k, ".Ds") || batchnorm_weights.count(k)) {
      fill([](int64_t) { return 1.f; });
    } else if (ends_with(k, "running_mean") || ends_with(k, "norm.bias") || ends_with(k, "ln_1.bias")) {
      // zeros
    } else if (ends_with(k, "A_logs")) {
      const int64_t N = e.shape[1];
      fill([&](int64_t i) { return std::log(float(i % N + 1)); });
    } else if (ends_with(k, "x_proj_weight")) {
      const float bound = 1.f / std::sqrt(float(e.shape[2]));
      fill([&](int64_t) { return uniform(-bound, bound); });
    } else if (ends_with(k, "dt_projs_weight")) {
      const float bound = 1.f / std::sqrt(float(e.shape[2]));
      fill([&](int64_t) { return uniform(-bound, bound); });
    } else if (ends_with(k, "dt_projs_bias")) {
      fill([&](int64_t) {
        const float lo = std::log(1e-3f), hi = std::log(0.1f);
        const float dt = std::max(std::exp(uniform(0.f, 1.f) * (hi - lo) + lo), 1e-4f);
        return dt + std::log(-std::expm1(-dt));  // inverse of softplus
      });
    } else if (e.shape.size() == 4) {  // Conv2d weight: Kaiming normal, fan_out, ReLU gain
      const int64_t fan_out = e.shape[0] * e.shape[2] * e.shape[3];
      const float std = std::sqrt(2.f / float(fan_out));
      fill([&](int64_t) { return normal(rng) * std; });
    } else if (e.shape.size() == 2 && e.kind == ParamKind::Weight) {  // Linear weight
      fill([&](int64_t) { return trunc_normal(0.02f); });
    } else if (ends_with(k, ".bias") && e.kind == ParamKind::NoDecay) {
      // Linear biases are 0; conv biases take PyTorch's default uniform(+-1/sqrt(fan_in)).
      const std::string wname = k.substr(0, k.size() - 4) + "weight";
      const ParamEntry* w = table_.find(wname);
      if (w && w->shape.size() == 4) {
        const float bound = 1.f / std::sqrt(float(w->shape[1] * w->shape[2] * w->shape[3]));
        fill([&](int64_t) { return uniform(-bound, bound); });
      }
    }
  }
  std::fill(batches_tracked_.begin(), batches_tracked_.end(), 0);
}

void MedMamba::load_state(const std::map<std::string, Tensor>& state) {
  table_.check_state(state, cfg_.to_json());
  params_changed();
  for (const ParamEntry& e : table_.entries()) {
    const Tensor src = state.at(e.name).to(Device::CPU).to(DType::F32);
    std::memcpy(params_.f32() + e.offset, src.f32(), size_t(e.numel()) * sizeof(float));
  }
  for (size_t i = 0; i < table_.batchnorms().size(); ++i) {
    auto it = state.find(table_.batchnorms()[i] + ".num_batches_tracked");
    if (it == state.end()) continue;
    const Tensor t = it->second.to(Device::CPU);
    if (t.dtype() == DType::I64) {
      batches_tracked_[i] = t.as<int64_t>()[0];
    } else {  // a float beyond int64_t (or NaN) is undefined to convert; it is only a counter
      const float count = t.to(DType::F32).f32()[0];
      batches_tracked_[i] = std::isnan(count) ? 0 : int64_t(std::clamp(count, -9e18f, 9e18f));
    }
  }
}

std::map<std::string, Tensor> MedMamba::state() const {
  std::map<std::string, Tensor> out;
  for (const ParamEntry& e : table_.entries())
    out[e.name] = params_.slice_view(e.offset, e.shape).clone();
  for (size_t i = 0; i < table_.batchnorms().size(); ++i) {
    Tensor t = Tensor::empty({}, DType::I64);
    t.as<int64_t>()[0] = batches_tracked_[i];
    out[table_.batchnorms()[i] + ".num_batches_tracked"] = t;
  }
  return out;
}

// ---------------------------------------------------------------------------

Tensor MedMamba::forward(const Tensor& images, bool train, bool keep_for_backward) {
  keep_for_backward = keep_for_backward || train;
  MM_CHECK(images.device() == Device::CPU, "forward: the CPU backend takes CPU tensors");
  const int64_t B = images.dim(0), S = check_forward_input(cfg_, images);
  if (train) params_changed();  // it updates the BatchNorms' running statistics, which the eval convs fold in
  Tensor logits = Tensor::empty({B, cfg_.num_classes});
  // Training and kept activations need the whole batch in one set of activations (BatchNorm
  // batch statistics, backward); a plain eval forward may run per image (cpu_batch_split.h).
  const int workers =
      keep_for_backward ? 1 : sub_batch_count(batch_split_setting(), B, omp_get_max_threads());
  if (workers == 1) {
    allocate_acts(*acts_, cfg_, B, S, train, keep_for_backward);
    forward_pass(logits.f32(), images.f32(), *acts_);
    return logits;
  }
  forward_sub_batches(logits.f32(), images.f32(), B, cfg_.in_chans * S * S, cfg_.num_classes, workers,
                      sub_batch_acts_, [&](ModelActs& a, float* out, const float* in, int64_t count) {
                        allocate_acts(a, cfg_, count, S, false, false);  // by this worker: its pages near its core
                        forward_pass(out, in, a);
                      });
  return logits;
}

void MedMamba::forward_pass(float* logits, const float* images, ModelActs& a) {
  const int64_t B = a.B, S = a.S;
  const bool train = a.train, keep_for_backward = a.keep;
  float* P = params_.f32();
  auto w = [&](const std::string& name) { return P + table_.at(name).offset; };

  // Patch embedding: (B,Cin,S,S) -> (B,S/4,S/4,C0)
  timed("patch_embed", [&] {
    nchw_to_nhwc(a.image_nhwc.f32(), images, B, cfg_.in_chans, S, S);
    const Conv2dShape pe = patch_embed_shape(cfg_, B, S);
    conv2d_forward(a.embed.f32(), a.image_nhwc.f32(), w("patch_embed.proj.weight"), w("patch_embed.proj.bias"),
                   pe, a.conv_workspace.f32());
    layernorm_forward(a.stages[0].xs[0].f32(), a.embed_mean.f32(), a.embed_rstd.f32(), a.embed.f32(),
                      w("patch_embed.norm.weight"), w("patch_embed.norm.bias"), B * pe.out_h() * pe.out_w(),
                      cfg_.dims[0]);
  });

  int64_t block_index = 0;
  size_t bn_counter = 0;
  for (int64_t i = 0; i < cfg_.num_stages(); ++i) {
    StageActs& st = a.stages[size_t(i)];
    const int64_t side = (S / 4) >> i, C = cfg_.dims[i], Pi = B * side * side;
    const BlockDims d{B, side, side, C, cfg_.d_state, cfg_.dt_rank(i)};
    for (int64_t j = 0; j < cfg_.depths[i]; ++j, ++block_index) {
      const std::string prefix = "layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
      BlockContext ctx;
      ctx.train = train;
      ctx.keep = keep_for_backward;
      ctx.conv_workspace = a.conv_workspace.f32();
      // Only the eval forward takes them (training's convs use batch statistics, not Winograd);
      // the sub-batch workers share them (WinogradWeightCache builds once, thread-safely).
      ctx.conv3x3_caches = train || keep_for_backward ? nullptr : &winograd_caches_[size_t(2 * block_index)];
      ctx.scratch = a.block_scratch.f32();
      ctx.scan_workspace = a.scan_workspace.f32();
      ctx.batchnorm_sync = batchnorm_sync_ ? &batchnorm_sync_ : nullptr;
      if (train) {
        float* scale = st.drop_scale[size_t(j)].f32();
        draw_drop_path(scale, B, cfg_, block_index, rng_);
        ctx.drop_scale = scale;
        for (int k = 0; k < 3; ++k) ++batches_tracked_[bn_counter + size_t(k)];
      }
      bn_counter += 3;
      BlockActs& ba = st.blocks[keep_for_backward ? size_t(j) : 0];
      block_forward(st.xs[size_t(j) + 1].f32(), st.xs[size_t(j)].f32(), block_weights(P, table_, prefix), ba, d, ctx);
    }
    if (i + 1 < cfg_.num_stages()) {
      const std::string m = "layers." + std::to_string(i) + ".downsample.";
      timed("patch_merge", [&] {
        patch_gather_forward(st.gathered.f32(), st.xs.back().f32(), B, side, side, C);
        layernorm_forward(st.merged_ln.f32(), st.merge_mean.f32(), st.merge_rstd.f32(), st.gathered.f32(),
                          w(m + "norm.weight"), w(m + "norm.bias"), Pi / 4, 4 * C);
        linear_forward(a.stages[size_t(i) + 1].xs[0].f32(), st.merged_ln.f32(), w(m + "reduction.weight"),
                       nullptr, Pi / 4, 4 * C, 2 * C);
      });
    }
  }

  const int64_t side_last = (S / 4) >> (cfg_.num_stages() - 1), C_last = cfg_.dims.back();
  timed("head", [&] {
    avgpool_forward(a.pooled.f32(), a.stages.back().xs.back().f32(), B, side_last * side_last, C_last);
    linear_forward(logits, a.pooled.f32(), w("head.weight"), w("head.bias"), B, C_last, cfg_.num_classes);
  });
}

Tensor MedMamba::backward(const Tensor& dlogits, bool want_input_grad) {
  ModelActs& a = *acts_;
  MM_CHECK(a.keep, "backward needs a preceding forward that kept its activations (train or keep_for_backward)");
  const int64_t B = a.B, S = a.S, K = cfg_.num_classes;
  MM_CHECK(dlogits.numel() == B * K, "backward: dlogits shape " + shape_str(dlogits.shape()) +
                                         " does not match the forward batch");
  float* P = params_.f32();
  float* G = grads_.f32();
  auto w = [&](const std::string& name) { return P + table_.at(name).offset; };
  auto g = [&](const std::string& name) { return G + table_.at(name).offset; };

  const int64_t ns = cfg_.num_stages();
  const int64_t side_last = (S / 4) >> (ns - 1), C_last = cfg_.dims.back();
  Tensor dpooled = Tensor::zeros({B * C_last});
  linear_backward(dpooled.f32(), g("head.weight"), g("head.bias"), dlogits.f32(), a.pooled.f32(),
                  w("head.weight"), B, C_last, K);

  // Two gradient buffers per stage, ping-ponged through its blocks.
  Tensor dcur = Tensor::zeros({B * side_last * side_last * C_last});
  avgpool_backward(dcur.f32(), dpooled.f32(), B, side_last * side_last, C_last);
  for (int64_t i = ns - 1; i >= 0; --i) {
    StageActs& st = a.stages[size_t(i)];
    const int64_t side = (S / 4) >> i, C = cfg_.dims[i], Pi = B * side * side;
    const BlockDims d{B, side, side, C, cfg_.d_state, cfg_.dt_rank(i)};
    Tensor dnext = Tensor::empty({Pi * C});
    for (int64_t j = cfg_.depths[i] - 1; j >= 0; --j) {
      const std::string prefix = "layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
      BlockContext ctx;
      ctx.train = a.train;
      ctx.keep = true;
      ctx.conv_workspace = a.conv_workspace.f32();
      ctx.scratch = a.block_scratch.f32();
      ctx.scan_workspace = a.scan_workspace.f32();
      ctx.drop_scale = a.train ? st.drop_scale[size_t(j)].f32() : nullptr;
      ctx.batchnorm_sync = batchnorm_sync_ ? &batchnorm_sync_ : nullptr;
      dnext.zero_();
      block_backward(dnext.f32(), dcur.f32(), block_weights(P, table_, prefix), block_weights(G, table_, prefix),
                     st.blocks[size_t(j)], d, ctx);
      std::swap(dcur, dnext);
    }
    if (i > 0) {  // back through the patch merging that produced this stage's input
      StageActs& prev = a.stages[size_t(i) - 1];
      const int64_t Cp = cfg_.dims[i - 1], sidep = side * 2, Pp = B * sidep * sidep;
      const std::string m = "layers." + std::to_string(i - 1) + ".downsample.";
      Tensor dln = Tensor::zeros({Pi * 4 * Cp});
      linear_backward(dln.f32(), g(m + "reduction.weight"), nullptr, dcur.f32(), prev.merged_ln.f32(),
                      w(m + "reduction.weight"), Pi, 4 * Cp, 2 * Cp);
      Tensor dgathered = Tensor::zeros({Pi * 4 * Cp});
      layernorm_backward(dgathered.f32(), g(m + "norm.weight"), g(m + "norm.bias"), dln.f32(), prev.gathered.f32(),
                         w(m + "norm.weight"), prev.merge_mean.f32(), prev.merge_rstd.f32(), Pi, 4 * Cp);
      dcur = Tensor::zeros({Pp * Cp});
      patch_gather_backward(dcur.f32(), dgathered.f32(), B, sidep, sidep, Cp);
    }
  }

  const Conv2dShape pe = patch_embed_shape(cfg_, B, S);
  const int64_t P0 = B * pe.out_h() * pe.out_w();
  Tensor dembed = Tensor::zeros({P0 * cfg_.dims[0]});
  layernorm_backward(dembed.f32(), g("patch_embed.norm.weight"), g("patch_embed.norm.bias"), dcur.f32(),
                     a.embed.f32(), w("patch_embed.norm.weight"), a.embed_mean.f32(), a.embed_rstd.f32(), P0,
                     cfg_.dims[0]);
  Tensor dimg_nhwc;
  if (want_input_grad) dimg_nhwc = Tensor::zeros({B, S, S, cfg_.in_chans});
  conv2d_backward(want_input_grad ? dimg_nhwc.f32() : nullptr, g("patch_embed.proj.weight"),
                  g("patch_embed.proj.bias"), dembed.f32(), a.image_nhwc.f32(), w("patch_embed.proj.weight"), pe,
                  a.conv_workspace.f32());
  if (!want_input_grad) return Tensor();
  Tensor dimg = Tensor::empty({B, cfg_.in_chans, S, S});
  nhwc_to_nchw(dimg.f32(), dimg_nhwc.f32(), B, S, S, cfg_.in_chans);
  return dimg;
}

}  // namespace mm
