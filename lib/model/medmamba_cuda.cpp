// MedMambaCuda: the CUDA backend of mm::Model. The forward and backward passes follow
// MedMamba::forward / backward (medmamba.cpp) step for step, on device buffers.
#include "model/medmamba_cuda.h"

#include "core/error.h"
#include "model/medmamba.h"

namespace mm {

std::unique_ptr<Model> model_on_device(std::unique_ptr<Model> cpu, Device device, MedMambaCudaOptions opts) {
  if (device == Device::CPU || cpu->device() == device) return cpu;
  return MedMambaCuda::copy_of(*cpu, opts);
}

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "auto") return cuda_available() ? Device::CUDA : Device::CPU;
  MM_CHECK(name == "cuda", "unknown device '" + name + "' (expected cpu, cuda or auto)");
  MM_CHECK(cuda_available(), "--device cuda: no CUDA GPU is available (or this build has no CUDA backend)");
  return Device::CUDA;
}

GemmMath parse_gemm_math(const std::string& name, const std::string& what) {
  if (name == "fp32") return GemmMath::FP32;
  if (name == "tf32") return GemmMath::TF32;
  if (name == "bf16") return GemmMath::BF16;
  throw Error(what + " '" + name + "': expected fp32, tf32 or bf16");
}

}  // namespace mm

#ifndef MM_HAVE_CUDA

namespace mm {
struct MedMambaCuda::Impl {};
[[noreturn]] static void no_cuda() { throw Error("MedMambaCuda: built without CUDA"); }
MedMambaCuda::MedMambaCuda(ModelConfig, MedMambaCudaOptions) { no_cuda(); }
std::unique_ptr<MedMambaCuda> MedMambaCuda::copy_of(const Model&, MedMambaCudaOptions) { no_cuda(); }
MedMambaCuda::~MedMambaCuda() = default;
const ModelConfig& MedMambaCuda::config() const { no_cuda(); }
const ParamTable& MedMambaCuda::table() const { no_cuda(); }
Tensor& MedMambaCuda::params() { no_cuda(); }
Tensor& MedMambaCuda::grads() { no_cuda(); }
std::vector<int64_t>& MedMambaCuda::batches_tracked() { no_cuda(); }
void MedMambaCuda::params_changed() { no_cuda(); }
void MedMambaCuda::load_state(const std::map<std::string, Tensor>&) { no_cuda(); }
std::map<std::string, Tensor> MedMambaCuda::state() const { no_cuda(); }
Tensor MedMambaCuda::forward(const Tensor&, bool, bool) { no_cuda(); }
Tensor MedMambaCuda::backward(const Tensor&, bool) { no_cuda(); }
void MedMambaCuda::zero_grad() { no_cuda(); }
CudaMedMamba& MedMambaCuda::eval_engine() { no_cuda(); }
void MedMambaCuda::seed_drop_path(uint64_t) { no_cuda(); }
std::string MedMambaCuda::device_name() const { no_cuda(); }
}  // namespace mm

#else  // MM_HAVE_CUDA

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <optional>

#include "cuda_ops.h"
#include "cuda_train_gemm_conv.h"
#include "cuda_train_ops.h"
#include "model/block_cuda.h"
#include "model/medmamba_cuda_step.h"

namespace mm {

namespace c = cuda;
using cuda_step::PinnedUpload;
using cuda_step::StepGraphs;

namespace {

Tensor device_floats(int64_t n) { return Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, Device::CUDA); }
float* F(Tensor& t) { return t.as<float>(); }

struct StageActsCuda {
  std::vector<Tensor> xs;              // depth+1 (P,C): block inputs, then the stage output
  std::vector<BlockActsCuda> blocks;   // one per block when kept; one shared otherwise
  Tensor merge_mean, merge_rstd;       // the LayerNorm of the patch merging after this stage
};

struct ModelActsCuda {
  int64_t B = -1, S = -1;
  bool train = false, keep = false;
  Tensor images, embed, embed_mean, embed_rstd;
  Tensor drop_scales;                  // (blocks, B): training's drop-path factors, block after block
  std::vector<StageActsCuda> stages;
  Tensor pooled, logits, block_scratch;
  // The convolutions' and the scan's workspace: no op holds it past its return, and ops run
  // one after another on one stream, so one buffer, the larger of the two, serves both.
  Tensor op_workspace;
  // Backward's gradients (kept): of the logits and the pooled features, and two buffers of
  // the largest stage activation that ping-pong through the blocks, so that a step allocates
  // nothing (a cudaFree waits for the whole device). The patch embedding and mergings work in
  // block_scratch, which is free between blocks.
  Tensor dlogits, dpooled, grad_bufs[2];
};

c::ConvShape patch_embed_shape(const ModelConfig& cfg, int64_t B, int64_t S) {
  c::ConvShape s;
  s.B = B; s.H = S; s.W = S; s.Cin = cfg.in_chans; s.Cout = cfg.dims[0];
  s.KH = s.KW = 4; s.stride = 4; s.pad = 0;
  return s;
}

BlockDims stage_dims(const ModelConfig& cfg, int64_t i, int64_t B, int64_t S) {
  const int64_t side = (S / 4) >> i;
  return BlockDims{B, side, side, cfg.dims[i], cfg.d_state, cfg.dt_rank(i)};
}

std::string block_prefix(int64_t i, int64_t j) {
  return "layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
}

// One list of the model-level buffers and their sizes, for allocating and for counting.
template <class Alloc>
void model_buffers(ModelActsCuda& a, const ModelConfig& cfg, int64_t B, int64_t S, bool train, bool keep, bool bf16,
                   Alloc&& alloc) {
  a.images = alloc(B * cfg.in_chans * S * S);
  if (train) a.drop_scales = alloc(cfg.num_blocks() * B);
  const int64_t side0 = S / 4, P0 = B * side0 * side0;
  a.embed = alloc(P0 * cfg.dims[0]);
  a.embed_mean = alloc(P0);
  a.embed_rstd = alloc(P0);
  int64_t workspace = c::conv2d_workspace_floats(patch_embed_shape(cfg, B, S)), scratch = 0;
  a.stages.resize(size_t(cfg.num_stages()));
  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    StageActsCuda& st = a.stages[size_t(i)];
    const BlockDims d = stage_dims(cfg, i, B, S);
    const int64_t P = d.P(), C = d.C;
    for (int64_t j = 0; j <= cfg.depths[i]; ++j) st.xs.push_back(alloc(P * C));
    st.blocks.resize(keep ? size_t(cfg.depths[i]) : 1);
    if (i + 1 < cfg.num_stages()) {
      st.merge_mean = alloc(P / 4);
      st.merge_rstd = alloc(P / 4);
    }
    workspace = std::max({workspace, block_cuda_conv_workspace_floats(d), block_cuda_scan_workspace_floats(d, bf16)});
    scratch = std::max(scratch, block_cuda_scratch_floats(d));
  }
  scratch = std::max(scratch, B * S * S * cfg.in_chans + P0 * cfg.dims[0]);  // the patch embedding's
  a.pooled = alloc(B * cfg.dims.back());
  a.logits = alloc(B * cfg.num_classes);
  a.op_workspace = alloc(workspace);
  a.block_scratch = alloc(scratch);
  if (keep) {
    a.dlogits = alloc(B * cfg.num_classes);
    a.dpooled = alloc(B * cfg.dims.back());
    // Stage 0 holds the most: every later stage has a quarter of the positions and twice
    // the channels.
    for (Tensor& t : a.grad_bufs) t = alloc(P0 * cfg.dims[0]);
  }
}

// Device floats one forward (and its backward) of this shape holds: the model-level
// buffers, the blocks' activations, and backward's gradient buffers (a few stage-sized ones).
int64_t activation_floats(const ModelConfig& cfg, int64_t B, int64_t S, bool train, bool keep, bool bf16) {
  ModelActsCuda dry;
  int64_t n = 0;
  model_buffers(dry, cfg, B, S, train, keep, bf16, [&n](int64_t k) { n += std::max<int64_t>(k, 1); return Tensor(); });
  for (int64_t i = 0; i < cfg.num_stages(); ++i)
    n += BlockActsCuda::floats(stage_dims(cfg, i, B, S), keep) * (keep ? cfg.depths[i] : 1);
  return n;
}

// Refuses a batch whose activations cannot fit in the GPU's memory, naming a batch that would.
void check_fits(const ModelConfig& cfg, int64_t B, int64_t S, bool train, bool keep, bool bf16, int64_t held_floats) {
  size_t free_bytes = 0, total_bytes = 0;
  c::memory_info(&free_bytes, &total_bytes);
  const double need = 4.0 * double(activation_floats(cfg, B, S, train, keep, bf16));
  const double have = double(free_bytes) + 4.0 * double(held_floats);  // what this model holds now is freed first
  if (need <= 0.95 * have) return;
  const double per_image = need / double(B);
  const int64_t fits = int64_t(0.9 * have / per_image);
  auto gib = [](double bytes) {
    char s[32];
    std::snprintf(s, sizeof s, "%.1f", bytes / double(1 << 30));
    return std::string(s);
  };
  throw Error("a batch of " + std::to_string(B) + " at " + std::to_string(S) + " px needs about " + gib(need) +
              " GiB of GPU memory for " + (keep ? "training" : "inference") + ", and " + gib(have) + " GiB of " +
              gib(double(total_bytes)) + " GiB are free on " + c::device_name() + "; " +
              (fits > 0 ? "a batch of " + std::to_string(fits) + " fits" : "not even one image fits"));
}

// Returns whether it (re)allocated: the buffers' addresses changed.
// bf16: the model's GEMMs run in bf16 (fixed for a model, so not part of the buffers' key).
bool allocate_acts(ModelActsCuda& a, const ModelConfig& cfg, int64_t B, int64_t S, bool train, bool keep, bool bf16) {
  if (a.B == B && a.S == S && a.train == train && a.keep == keep) return false;
  const int64_t held = a.B > 0 ? activation_floats(cfg, a.B, a.S, a.train, a.keep, bf16) : 0;
  check_fits(cfg, B, S, train, keep, bf16, held);
  a = ModelActsCuda{};
  a.B = B; a.S = S; a.train = train; a.keep = keep;
  model_buffers(a, cfg, B, S, train, keep, bf16, device_floats);
  return true;
}

}  // namespace

// The GEMM compute of a model call (set for the call, so that two models with different
// settings can share a thread).
static c::GemmCompute gemm_compute_of(GemmMath m) {
  return m == GemmMath::TF32 ? c::GemmCompute::TF32 : m == GemmMath::BF16 ? c::GemmCompute::BF16 : c::GemmCompute::F32;
}

struct MedMambaCuda::Impl {
  MedMambaCudaOptions opts;
  ModelConfig cfg;
  ParamTable table;
  Tensor params, grads;  // device
  std::vector<int64_t> batches_tracked;
  ModelActsCuda acts;
  std::mt19937_64 rng{0};
  std::unique_ptr<CudaMedMamba> fast;  // the eval engine, built on demand
  bool fast_stale = false;             // its weights predate the parameters: reload them
  // A blocking stream: ordered with the legacy stream, where Tensor copies, zero_grad and the
  // optimiser run, and unlike the legacy stream it can be captured into a graph.
  c::Stream stream = nullptr;
  StepGraphs graphs;
  PinnedUpload image_upload, scale_upload;
  std::vector<float> drop_scales;      // (blocks, B), drawn on the host before a train forward

  Tensor params_bf16;                  // GemmMath::BF16: the parameters rounded to bf16 (device)

  // GemmMath::BF16: a forward rounds the parameters into params_bf16 (one launch), and its
  // GEMMs and its backward's read their weights there, instead of rounding a weight for each
  // GEMM (about 200 launches a MedMamba-T step).
  void bf16_weights(std::optional<c::Bf16TwinScope>& twin, bool refresh) {
    if (opts.math != GemmMath::BF16) return;
    if (params_bf16.numel() != params.numel()) {
      params_bf16 = Tensor::empty({params.numel()}, DType::BF16, Device::CUDA);
      refresh = true;
    }
    auto* dst = static_cast<uint16_t*>(params_bf16.data());
    if (refresh) c::bf16_operand_copy(F(params), 1, params.numel(), params.numel(), dst, stream);
    twin.emplace(F(params), params.numel(), dst);
  }
  float* w(const std::string& name) { return F(params) + table.at(name).offset; }
  float* g(const std::string& name) { return F(grads) + table.at(name).offset; }

  void forward_kernels();
  void backward_kernels(float* dimg_nhwc);

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    graphs.drop();
    c::stream_destroy(stream);
  }
};

MedMambaCuda::MedMambaCuda(ModelConfig cfg, MedMambaCudaOptions opts) : impl_(std::make_unique<Impl>()) {
  MM_CHECK(cuda_available(), "MedMambaCuda: no CUDA GPU is available");
  MM_CHECK(cfg.d_state == c::kScanStates, "MedMambaCuda: the CUDA scan supports d_state " +
                                              std::to_string(c::kScanStates) + ", the model has " +
                                              std::to_string(cfg.d_state));
  Impl& m = *impl_;
  m.stream = c::stream_create_blocking();
  m.opts = opts;
  m.cfg = std::move(cfg);
  m.table = ParamTable::for_config(m.cfg);
  m.params = Tensor::zeros({m.table.total_floats()}, DType::F32, Device::CUDA);
  m.grads = Tensor::zeros({m.table.total_floats()}, DType::F32, Device::CUDA);
  m.batches_tracked.assign(m.table.batchnorms().size(), 0);
}

std::unique_ptr<MedMambaCuda> MedMambaCuda::copy_of(const Model& cpu, MedMambaCudaOptions opts) {
  auto m = std::make_unique<MedMambaCuda>(cpu.config(), opts);
  Model& src = const_cast<Model&>(cpu);  // params() is non-const in the interface; only read here
  m->impl_->params.copy_from(src.params());
  m->impl_->batches_tracked = src.batches_tracked();
  return m;
}

MedMambaCuda::~MedMambaCuda() = default;

const ModelConfig& MedMambaCuda::config() const { return impl_->cfg; }
const ParamTable& MedMambaCuda::table() const { return impl_->table; }
Tensor& MedMambaCuda::params() { return impl_->params; }
Tensor& MedMambaCuda::grads() { return impl_->grads; }
std::vector<int64_t>& MedMambaCuda::batches_tracked() { return impl_->batches_tracked; }
void MedMambaCuda::params_changed() { impl_->fast_stale = true; }
void MedMambaCuda::zero_grad() { impl_->grads.zero_(); }
void MedMambaCuda::seed_drop_path(uint64_t seed) { impl_->rng.seed(seed); }
std::string MedMambaCuda::device_name() const { return c::device_name(); }

// State goes through a CPU MedMamba, which validates keys and shapes and converts dtypes.
void MedMambaCuda::load_state(const std::map<std::string, Tensor>& state) {
  MedMamba cpu(impl_->cfg);
  cpu.load_state(state);
  impl_->params.copy_from(cpu.params());
  impl_->batches_tracked = cpu.batches_tracked();
  params_changed();
}

std::map<std::string, Tensor> MedMambaCuda::state() const {
  MedMamba cpu(impl_->cfg);
  cpu.params().copy_from(impl_->params);
  cpu.batches_tracked() = impl_->batches_tracked;
  return cpu.state();
}

CudaMedMamba& MedMambaCuda::eval_engine() {
  Impl& m = *impl_;
  MM_CHECK(m.opts.fast_eval, "MedMambaCuda::eval_engine: the model was made without fast_eval");
  if (!m.fast || m.fast_stale) {
    MedMamba cpu(m.cfg);
    cpu.params().copy_from(m.params);
    cpu.batches_tracked() = m.batches_tracked;
    // Reloading keeps the engine's buffers, GEMM plans and graphs: a trainer validates after
    // every epoch, and building an engine each time cost it about a tenth of a second.
    if (m.fast)
      m.fast->reload_weights(cpu);
    else
      m.fast = std::make_unique<CudaMedMamba>(cpu, m.opts.fast);
    m.fast_stale = false;
  }
  return *m.fast;
}

Tensor MedMambaCuda::forward(const Tensor& images, bool train, bool keep_for_backward) {
  Impl& m = *impl_;
  const ModelConfig& cfg = m.cfg;
  keep_for_backward = keep_for_backward || train;
  const int64_t B = images.dim(0), S = check_forward_input(cfg, images);
  if (m.opts.fast_eval && !train && !keep_for_backward) return eval_engine().forward(images);
  ModelActsCuda& a = m.acts;
  if (allocate_acts(a, cfg, B, S, train, keep_for_backward, m.opts.math == GemmMath::BF16)) m.graphs.drop();
  const c::Stream s = m.stream;
  if (images.device() == Device::CPU)
    m.image_upload.upload(F(a.images), images.f32(), images.numel(), s);
  else
    c::copy_async(F(a.images), images.data(), size_t(images.numel()) * sizeof(float), s);
  if (train) {  // every block's factors in one upload: a copy per block would wait for the stream each time
    m.drop_scales.resize(size_t(cfg.num_blocks() * B));
    for (int64_t k = 0; k < cfg.num_blocks(); ++k) draw_drop_path(&m.drop_scales[size_t(k * B)], B, cfg, k, m.rng);
    m.scale_upload.upload(F(a.drop_scales), m.drop_scales.data(), cfg.num_blocks() * B, s);
    for (int64_t& n : m.batches_tracked) ++n;  // every BatchNorm (three a block) sees the batch
    m.graphs.run(m.graphs.forward, s, [&] { m.forward_kernels(); });
  } else {
    m.forward_kernels();
  }
  Tensor logits = Tensor::empty({B, cfg.num_classes});
  logits.copy_from(a.logits.slice_view(0, {B, cfg.num_classes}));
  return logits;
}

// The forward of the batch in acts.images, as queued on the stream (and captured into the
// step's graph): nothing here may depend on host state that changes from step to step.
void MedMambaCuda::Impl::forward_kernels() {
  ModelActsCuda& a = acts;
  const int64_t B = a.B, S = a.S;
  const bool train = a.train, keep_for_backward = a.keep;
  const c::GemmComputeScope math(gemm_compute_of(opts.math));
  std::optional<c::Bf16TwinScope> twin;
  bf16_weights(twin, true);
  const c::Stream s = stream;

  // Patch embedding: (B,Cin,S,S) -> (B,S/4,S/4,C0). The scratch is free until the first block.
  float* image_nhwc = F(a.block_scratch);
  c::nchw_to_nhwc(image_nhwc, F(a.images), B, cfg.in_chans, S, S, s);
  const c::ConvShape pe = patch_embed_shape(cfg, B, S);
  c::conv2d_forward(F(a.embed), image_nhwc, w("patch_embed.proj.weight"), w("patch_embed.proj.bias"), pe,
                    F(a.op_workspace), s);
  const int64_t P0 = B * pe.out_h() * pe.out_w();
  c::layernorm_forward(F(a.stages[0].xs[0]), F(a.embed_mean), F(a.embed_rstd), F(a.embed),
                       w("patch_embed.norm.weight"), w("patch_embed.norm.bias"), P0, cfg.dims[0], s);

  int64_t block_index = 0;
  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    StageActsCuda& st = a.stages[size_t(i)];
    const BlockDims d = stage_dims(cfg, i, B, S);
    for (int64_t j = 0; j < cfg.depths[i]; ++j, ++block_index) {
      BlockContextCuda ctx;
      ctx.train = train;
      ctx.keep = keep_for_backward;
      ctx.bf16 = opts.math == GemmMath::BF16;
      ctx.conv_workspace = F(a.op_workspace);
      ctx.scan_workspace = F(a.op_workspace);
      ctx.scratch = F(a.block_scratch);
      ctx.stream = s;
      if (train) ctx.drop_scale = F(a.drop_scales) + block_index * B;
      BlockActsCuda& ba = st.blocks[keep_for_backward ? size_t(j) : 0];
      const std::string prefix = block_prefix(i, j);
      block_forward_cuda(F(st.xs[size_t(j) + 1]), F(st.xs[size_t(j)]), block_weights(F(params), table, prefix),
                         ba, d, ctx);
    }
    if (i + 1 < cfg.num_stages()) {
      const std::string p = "layers." + std::to_string(i) + ".downsample.";
      const int64_t Pi = d.P(), C = d.C;
      float *gathered = F(a.block_scratch), *merged_ln = gathered + Pi * C;  // free between blocks
      c::patch_gather_forward(gathered, F(st.xs.back()), B, d.H, d.W, C, s);
      const c::GemmOperand ln = c::layernorm_forward_operand(merged_ln, F(st.merge_mean), F(st.merge_rstd), gathered,
                                                            w(p + "norm.weight"), w(p + "norm.bias"), Pi / 4, 4 * C, s);
      c::linear_forward(F(a.stages[size_t(i) + 1].xs[0]), ln, w(p + "reduction.weight"), nullptr, Pi / 4, 4 * C,
                        2 * C, s);
    }
  }

  const BlockDims last = stage_dims(cfg, cfg.num_stages() - 1, B, S);
  c::avgpool_forward(F(a.pooled), F(a.stages.back().xs.back()), B, last.H * last.W, last.C, s);
  c::linear_forward(F(a.logits), F(a.pooled), w("head.weight"), w("head.bias"), B, last.C, cfg.num_classes, s);
}

Tensor MedMambaCuda::backward(const Tensor& dlogits_host, bool want_input_grad) {
  Impl& m = *impl_;
  const ModelConfig& cfg = m.cfg;
  ModelActsCuda& a = m.acts;
  MM_CHECK(a.keep, "backward needs a preceding forward that kept its activations (train or keep_for_backward)");
  const int64_t B = a.B, S = a.S, K = cfg.num_classes;
  MM_CHECK(dlogits_host.numel() == B * K, "backward: dlogits shape " + shape_str(dlogits_host.shape()) +
                                              " does not match the forward batch");
  a.dlogits.copy_from(dlogits_host.reshape({B * K}));
  const c::Stream s = m.stream;
  if (want_input_grad) {
    Tensor dimg_nhwc = Tensor::zeros({B * S * S * cfg.in_chans}, DType::F32, Device::CUDA);
    m.backward_kernels(F(dimg_nhwc));
    Tensor dimg = device_floats(B * cfg.in_chans * S * S);
    c::nhwc_to_nchw(F(dimg), F(dimg_nhwc), B, S, S, cfg.in_chans, s);
    return dimg.reshape({B, cfg.in_chans, S, S}).to(Device::CPU);
  }
  if (a.train)
    m.graphs.run(m.graphs.backward, s, [&] { m.backward_kernels(nullptr); });
  else
    m.backward_kernels(nullptr);
  c::stream_sync(s);  // surface asynchronous faults here, naming backward
  return Tensor();
}

// Backward from acts.dlogits into the gradients and, when dimg_nhwc is given, the input's
// gradient (channels-last, added into it), as queued on the stream (and captured into the
// step's graph).
void MedMambaCuda::Impl::backward_kernels(float* dimg_nhwc) {
  ModelActsCuda& a = acts;
  const int64_t B = a.B, S = a.S, K = cfg.num_classes;
  const c::Stream s = stream;
  const c::GemmComputeScope math(gemm_compute_of(opts.math));
  std::optional<c::Bf16TwinScope> twin;
  bf16_weights(twin, false);  // as its forward rounded them: the parameters have not changed since
  float* dlogits = F(a.dlogits);
  auto zeroed = [&](Tensor& t, int64_t n) {
    c::memset_zero_async(t.data(), size_t(n) * sizeof(float), s);
    return F(t);
  };

  const int64_t ns = cfg.num_stages();
  const BlockDims last = stage_dims(cfg, ns - 1, B, S);
  float* dpooled = F(a.dpooled);
  c::linear_backward(dpooled, g("head.weight"), g("head.bias"), dlogits, F(a.pooled), w("head.weight"), B,
                     last.C, K, s, c::GradOut::Overwrite);

  // grad_bufs[0] and [1] ping-pong through the blocks and the patch mergings.
  Tensor* dcur = &a.grad_bufs[0];
  Tensor* dnext = &a.grad_bufs[1];
  c::avgpool_backward(zeroed(*dcur, last.P() * last.C), dpooled, B, last.H * last.W, last.C, s);
  for (int64_t i = ns - 1; i >= 0; --i) {
    StageActsCuda& st = a.stages[size_t(i)];
    const BlockDims d = stage_dims(cfg, i, B, S);
    for (int64_t j = cfg.depths[i] - 1; j >= 0; --j) {
      BlockContextCuda ctx;
      ctx.train = a.train;
      ctx.keep = true;
      ctx.bf16 = opts.math == GemmMath::BF16;
      ctx.conv_workspace = F(a.op_workspace);
      ctx.scan_workspace = F(a.op_workspace);
      ctx.scratch = F(a.block_scratch);
      ctx.stream = s;
      const int64_t block_index = std::accumulate(cfg.depths.begin(), cfg.depths.begin() + i, j);
      ctx.drop_scale = a.train ? F(a.drop_scales) + block_index * B : nullptr;
      const std::string prefix = block_prefix(i, j);
      block_backward_cuda(F(*dnext), F(*dcur), F(st.xs[size_t(j)]),
                          block_weights(F(params), table, prefix),
                          block_weights(F(grads), table, prefix), st.blocks[size_t(j)], d, ctx);
      std::swap(dcur, dnext);
    }
    if (i > 0) {  // back through the patch merging that produced this stage's input
      StageActsCuda& prev = a.stages[size_t(i) - 1];
      const BlockDims dp = stage_dims(cfg, i - 1, B, S);
      const int64_t Pi = d.P(), Cp = dp.C, n = Pi * 4 * Cp;
      const std::string p = "layers." + std::to_string(i - 1) + ".downsample.";
      // Forward's gathered rows and their LayerNorm again, and both gradients, in the scratch.
      float *gathered = F(a.block_scratch), *merged_ln = gathered + n, *dln = gathered + 2 * n,
            *dgathered = gathered + 3 * n;
      c::patch_gather_forward(gathered, F(prev.xs.back()), B, dp.H, dp.W, Cp, s);
      const c::GemmOperand ln = c::layernorm_forward_operand(merged_ln, nullptr, nullptr, gathered,
                                                            w(p + "norm.weight"), w(p + "norm.bias"), Pi, 4 * Cp, s);
      c::linear_backward(dln, g(p + "reduction.weight"), nullptr, F(*dcur), ln, w(p + "reduction.weight"), Pi,
                         4 * Cp, 2 * Cp, s, c::GradOut::Overwrite);
      c::layernorm_backward(dgathered, g(p + "norm.weight"), g(p + "norm.bias"), dln, gathered,
                            w(p + "norm.weight"), F(prev.merge_mean), F(prev.merge_rstd), Pi, 4 * Cp, s,
                            c::GradOut::Overwrite);
      c::patch_gather_backward(zeroed(*dnext, dp.P() * Cp), dgathered, B, dp.H, dp.W, Cp, s);
      std::swap(dcur, dnext);
    }
  }

  const c::ConvShape pe = patch_embed_shape(cfg, B, S);
  const int64_t P0 = B * pe.out_h() * pe.out_w();
  float *dembed = F(a.block_scratch), *image_nhwc = dembed + P0 * cfg.dims[0];
  c::nchw_to_nhwc(image_nhwc, F(a.images), B, cfg.in_chans, S, S, s);
  c::layernorm_backward(dembed, g("patch_embed.norm.weight"), g("patch_embed.norm.bias"), F(*dcur), F(a.embed),
                        w("patch_embed.norm.weight"), F(a.embed_mean), F(a.embed_rstd), P0, cfg.dims[0], s,
                        c::GradOut::Overwrite);
  c::conv2d_backward(dimg_nhwc, g("patch_embed.proj.weight"), g("patch_embed.proj.bias"), dembed, image_nhwc,
                     w("patch_embed.proj.weight"), pe, F(a.op_workspace), s);
}

}  // namespace mm

#endif  // MM_HAVE_CUDA
