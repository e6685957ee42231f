// CudaMedMamba: weight preparation and the forward pass as a sequence of kernels
// (kernels/cuda_ops.h). The stub for builds without CUDA is cuda_model_stub.cpp.
#include "model/cuda_model.h"

#include "core/cuda_memory.h"
#include "core/error.h"

namespace mm {

Precision precision_from_name(const std::string& name) {
  if (name == "fp32" || name == "f32") return Precision::F32;
  if (name == "bf16") return Precision::BF16;
  if (name == "fp16" || name == "f16") return Precision::F16;
  throw Error("unknown precision '" + name + "' (expected fp32, bf16 or fp16)");
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::F32: return "fp32";
    case Precision::BF16: return "bf16";
    case Precision::F16: return "fp16";
  }
  return "?";
}

}  // namespace mm

#ifdef MM_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <vector>

#include "core/half.h"
#include "cuda_ops.h"

namespace mm {

namespace {

constexpr float kBatchNormEps = 1e-5f;
constexpr int64_t kN = cuda::kScanStates;

DType act_dtype(Precision p) {
  switch (p) {
    case Precision::F32: return DType::F32;
    case Precision::BF16: return DType::BF16;
    case Precision::F16: return DType::F16;
  }
  return DType::F32;
}

// Device copies of one block's weights, already in the layout the kernels want.
struct BlockWeightsGpu {
  int64_t C = 0, R = 0;
  const float *ln1_w, *ln1_b, *dw_w, *dw_b, *dt_w, *dt_b, *A_logs, *Ds, *on_w, *on_b;
  const float *bn0_scale, *bn0_shift;                    // BN0, applied in the im2col gather
  const void *in_proj, *x_proj, *out_proj;               // activation precision
  const void *conv1_w, *conv1_b, *conv4_w, *conv4_b;     // BN folded, (Cout,kh,kw,Cin)
  const void *conv7_w, *conv7_b;
};

struct MergeWeightsGpu {
  const float *norm_w = nullptr, *norm_b = nullptr;
  const void* reduction = nullptr;  // (2C, 4C)
};

// Activation buffers for one (batch, image side); sized for the largest stage.
struct Workspace {
  int64_t B = -1, S = -1;
  std::vector<Tensor> owned;
  float* images = nullptr;  // (B,Cin,S,S) float32: the graph's fixed input
  void *col0, *emb, *x[2], *ln1, *xz, *u, *g, *sb, *col, *a3, *a6, *lb, *merged, *pooled;
  float *dbl, *y, *logits;
  float* scan = nullptr;  // segmented-scan workspace (small batches), or nullptr
};

}  // namespace

struct CudaMedMamba::Impl {
  ModelConfig cfg;
  CudaModelOptions opts;
  DType act = DType::BF16;
  cuda::Stream stream = nullptr;
  std::unique_ptr<cuda::GemmRunner> gemm;
  std::vector<Tensor> weights;  // owners of every device weight
  const void *pe_w = nullptr, *pe_b = nullptr, *head_w = nullptr;
  const float *pe_norm_w = nullptr, *pe_norm_b = nullptr, *head_b = nullptr;
  std::vector<std::vector<BlockWeightsGpu>> blocks;
  std::vector<MergeWeightsGpu> merges;
  Workspace ws;
  cuda::CapturedGraph graph;
  bool ran_eagerly = false;  // the shape's first pass runs eagerly (plans, lazy init), later ones replay

  ~Impl() { cuda::stream_destroy(stream); }

  // reload_weights: prepare() runs again and upload() refills weights[refill_next++] in
  // place, in the order the first prepare() made them, so that the buffers a captured graph
  // reads stay where they are. Both copy synchronously, so `src` may go away after.
  bool refilling = false;
  size_t refill_next = 0;
  const void* upload(const float* src, int64_t n, DType dt) {
    const Tensor host = Tensor::wrap(const_cast<float*>(src), {n}).to(dt);
    if (refilling) {
      MM_CHECK(refill_next < weights.size(), "CudaMedMamba::reload_weights: the model has more weights than before");
      Tensor& t = weights[refill_next++];
      MM_CHECK(t.numel() == n && t.dtype() == dt, "CudaMedMamba::reload_weights: a weight changed size or type");
      cuda::copy(t.data(), host.data(), size_t(host.nbytes()), cuda::Copy::HostToDevice);
      return t.data();
    }
    Tensor t = host.to(Device::CUDA);
    weights.push_back(t);
    return t.data();
  }
  const float* upload_f32(const float* src, int64_t n) { return static_cast<const float*>(upload(src, n, DType::F32)); }
  const void* upload_act(const std::vector<float>& v) { return upload(v.data(), int64_t(v.size()), act); }

  void prepare(const MedMamba& model);
  BlockWeightsGpu prepare_block(const std::map<std::string, Tensor>& st, const std::string& prefix, int64_t C,
                                int64_t R);
  void ensure_workspace(int64_t B, int64_t S);
  void run_layers();
  void run_block(const BlockWeightsGpu& w, const void* x, void* out, int64_t side);
  cuda::ScanArgs scan_args(int64_t B, int64_t side, int64_t D, int64_t R) const {
    cuda::ScanArgs sa;
    sa.B = B; sa.H = side; sa.W = side; sa.D = D; sa.R = R;
    sa.u_type = act;
    return sa;
  }
  void* at(void* p, int64_t elems) const { return static_cast<char*>(p) + elems * int64_t(dtype_size(act)); }
  void gemm_act(int64_t M, int64_t N, int64_t K, const void* x, const void* w, void* out, const void* bias = nullptr,
                bool relu = false) {
    cuda::GemmArgs a;
    a.M = M; a.N = N; a.K = K;
    a.x = x; a.ldx = K; a.x_type = act;
    a.w = w;
    a.out = out; a.ldo = N; a.out_type = act;
    a.bias = bias; a.relu = relu;
    gemm->run(a, stream);
  }
};

namespace {

// MM_CONV3X3=im2col or implicit: the 3x3 convs through im2col3x3 + GEMM, or conv3x3_implicit
// wherever it can run, instead of where conv3x3_implicit_preferred says (for comparisons).
std::string conv3x3_forced() {
  const char* v = std::getenv("MM_CONV3X3");
  return v ? v : "";
}

const float* param(const std::map<std::string, Tensor>& st, const std::string& name) {
  auto it = st.find(name);
  MM_CHECK(it != st.end(), "CudaMedMamba: the model has no parameter " + name);
  return it->second.f32();
}

// Eval BatchNorm as y = x·scale + shift.
void batchnorm_affine(const std::map<std::string, Tensor>& st, const std::string& bn, int64_t c,
                      std::vector<float>& scale, std::vector<float>& shift) {
  const float *w = param(st, bn + "weight"), *b = param(st, bn + "bias");
  const float *rm = param(st, bn + "running_mean"), *rv = param(st, bn + "running_var");
  scale.resize(size_t(c));
  shift.resize(size_t(c));
  for (int64_t i = 0; i < c; ++i) {
    scale[size_t(i)] = w[i] / std::sqrt(rv[i] + kBatchNormEps);
    shift[size_t(i)] = b[i] - rm[i] * scale[size_t(i)];
  }
}

// conv3x3 (c,c,3,3) followed by an eval BatchNorm, folded into one conv whose weight is
// reordered to (Cout,kh,kw,Cin), the column order of cuda::im2col3x3.
void fold_conv3x3(const std::map<std::string, Tensor>& st, const std::string& conv, const std::string& bn, int64_t c,
                  std::vector<float>& weight, std::vector<float>& bias) {
  std::vector<float> scale, shift;
  batchnorm_affine(st, bn, c, scale, shift);
  const float *w = param(st, conv + "weight"), *b = param(st, conv + "bias");
  weight.resize(size_t(c * 9 * c));
  bias.resize(size_t(c));
  for (int64_t co = 0; co < c; ++co) {
    bias[size_t(co)] = b[co] * scale[size_t(co)] + shift[size_t(co)];
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t k = 0; k < 9; ++k)
        weight[size_t((co * 9 + k) * c + ci)] = w[(co * c + ci) * 9 + k] * scale[size_t(co)];
  }
}

// The 3x3 conv weights of a TF32 engine are rounded to TF32 once: cuBLAS's TF32 GEMMs would
// round them anyway, and conv3x3_implicit's tensor cores would truncate them.
void round_to_tf32(std::vector<float>& v) {
  for (float& x : v) x = float_to_tf32(x);
}

// Depthwise weight (C,1,3,3) -> (3,3,C), the layout of cuda::dwconv3x3_silu.
std::vector<float> tap_major(const float* w, int64_t C) {
  std::vector<float> t(size_t(9 * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < 9; ++k) t[size_t(k * C + c)] = w[c * 9 + k];
  return t;
}

// x_proj_weight (4, R+2N, D) -> (4, Rp+2N, D): zero rows after each direction's R dt rows,
// the row layout cuda::ss2d_scan stages in 16-byte words.
std::vector<float> padded_x_proj(const float* w, int64_t R, int64_t D) {
  const int64_t Rp = cuda::scan_padded_rank(R);
  std::vector<float> out(size_t(4 * (Rp + 2 * kN) * D), 0.f);
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t j = 0; j < R + 2 * kN; ++j) {
      const int64_t row = k * (Rp + 2 * kN) + (j < R ? j : j - R + Rp);
      std::copy(w + (k * (R + 2 * kN) + j) * D, w + (k * (R + 2 * kN) + j + 1) * D, out.begin() + row * D);
    }
  return out;
}

std::vector<float> copy_of(const float* p, int64_t n) { return std::vector<float>(p, p + n); }

}  // namespace

BlockWeightsGpu CudaMedMamba::Impl::prepare_block(const std::map<std::string, Tensor>& st, const std::string& prefix,
                                                  int64_t C, int64_t R) {
  const int64_t c = C / 2, D = C;
  auto P = [&](const std::string& n) { return param(st, prefix + n); };
  BlockWeightsGpu w;
  w.C = C;
  w.R = R;
  w.ln1_w = upload_f32(P("ln_1.weight"), c);
  w.ln1_b = upload_f32(P("ln_1.bias"), c);
  w.in_proj = upload(P("self_attention.in_proj.weight"), 2 * D * c, act);
  w.dw_w = upload_f32(tap_major(P("self_attention.conv2d.weight"), D).data(), D * 9);
  w.dw_b = upload_f32(P("self_attention.conv2d.bias"), D);
  w.x_proj = upload_act(padded_x_proj(P("self_attention.x_proj_weight"), R, D));
  w.dt_w = upload_f32(P("self_attention.dt_projs_weight"), 4 * D * R);
  w.dt_b = upload_f32(P("self_attention.dt_projs_bias"), 4 * D);
  w.A_logs = upload_f32(P("self_attention.A_logs"), 4 * D * kN);
  w.Ds = upload_f32(P("self_attention.Ds"), 4 * D);
  w.on_w = upload_f32(P("self_attention.out_norm.weight"), D);
  w.on_b = upload_f32(P("self_attention.out_norm.bias"), D);
  w.out_proj = upload(P("self_attention.out_proj.weight"), c * D, act);

  const std::string br = prefix + "conv33conv33conv11.";
  std::vector<float> scale, shift, weight, bias;
  batchnorm_affine(st, br + "0.", c, scale, shift);
  w.bn0_scale = upload_f32(scale.data(), c);
  w.bn0_shift = upload_f32(shift.data(), c);
  const bool tf32 = act == DType::F32 && opts.allow_tf32;
  fold_conv3x3(st, br + "1.", br + "2.", c, weight, bias);
  if (tf32) round_to_tf32(weight);
  w.conv1_w = upload_act(weight);
  w.conv1_b = upload_act(bias);
  fold_conv3x3(st, br + "4.", br + "5.", c, weight, bias);
  if (tf32) round_to_tf32(weight);
  w.conv4_w = upload_act(weight);
  w.conv4_b = upload_act(bias);
  w.conv7_w = upload_act(copy_of(param(st, br + "7.weight"), c * c));
  w.conv7_b = upload_act(copy_of(param(st, br + "7.bias"), c));
  return w;
}

void CudaMedMamba::Impl::prepare(const MedMamba& model) {
  cfg = model.config();
  MM_CHECK(cfg.d_state == kN, "CudaMedMamba: d_state must be " + std::to_string(kN) + ", the model has " +
                                  std::to_string(cfg.d_state));
  const std::map<std::string, Tensor> st = model.state();
  const int64_t C0 = cfg.dims[0], Cin = cfg.in_chans;
  pe_w = upload(param(st, "patch_embed.proj.weight"), C0 * Cin * 16, act);
  pe_b = upload(param(st, "patch_embed.proj.bias"), C0, act);
  pe_norm_w = upload_f32(param(st, "patch_embed.norm.weight"), C0);
  pe_norm_b = upload_f32(param(st, "patch_embed.norm.bias"), C0);
  blocks.assign(size_t(cfg.num_stages()), {});  // also when reload_weights runs this again
  merges.assign(size_t(cfg.num_stages()), {});
  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    const std::string stage = "layers." + std::to_string(i) + ".";
    for (int64_t j = 0; j < cfg.depths[size_t(i)]; ++j)
      blocks[size_t(i)].push_back(
          prepare_block(st, stage + "blocks." + std::to_string(j) + ".", cfg.dims[size_t(i)], cfg.dt_rank(i)));
    if (i + 1 < cfg.num_stages()) {
      const int64_t C = cfg.dims[size_t(i)];
      MergeWeightsGpu& m = merges[size_t(i)];
      m.norm_w = upload_f32(param(st, stage + "downsample.norm.weight"), 4 * C);
      m.norm_b = upload_f32(param(st, stage + "downsample.norm.bias"), 4 * C);
      m.reduction = upload(param(st, stage + "downsample.reduction.weight"), 2 * C * 4 * C, act);
    }
  }
  const int64_t Cl = cfg.dims.back(), K = cfg.num_classes;
  head_w = upload(param(st, "head.weight"), K * Cl, act);
  head_b = upload_f32(param(st, "head.bias"), K);  // logits are float32, so is their bias
}

void CudaMedMamba::Impl::ensure_workspace(int64_t B, int64_t S) {
  if (ws.B == B && ws.S == S) return;
  graph.reset();
  ran_eagerly = false;
  ws = Workspace{};
  ws.B = B;
  ws.S = S;
  const int64_t side0 = S / 4, P0 = B * side0 * side0;
  int64_t pc = 0, pcmax_merge = 0, pdbl = 0;  // max over stages of P·C, of the merge input, of P·4(R+2N)
  int64_t pscan = 0;                            // and of the scan's workspace
  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    const int64_t side = side0 >> i, P = B * side * side, C = cfg.dims[size_t(i)];
    pc = std::max(pc, P * C);
    if (i + 1 < cfg.num_stages()) pcmax_merge = std::max(pcmax_merge, P * C);
    pdbl = std::max(pdbl, P * 4 * (cuda::scan_padded_rank(cfg.dt_rank(i)) + 2 * kN));
    pscan = std::max(pscan, cuda::ss2d_scan_workspace_floats(scan_args(B, side, C, cfg.dt_rank(i))));
  }
  auto buf = [&](int64_t n, DType dt) {
    ws.owned.push_back(Tensor::empty({std::max<int64_t>(n, 1)}, dt, Device::CUDA));
    return ws.owned.back().data();
  };
  const int64_t Cin = cfg.in_chans, C0 = cfg.dims[0], pch = pc / 2;  // P·c = P·C/2
  ws.images = static_cast<float*>(buf(B * Cin * S * S, DType::F32));
  ws.col0 = buf(P0 * Cin * 16, act);
  ws.emb = buf(P0 * C0, act);
  ws.x[0] = buf(pc, act);
  ws.x[1] = buf(pc, act);
  ws.ln1 = buf(pch, act);
  ws.xz = buf(2 * pc, act);
  ws.u = buf(pc, act);
  ws.dbl = static_cast<float*>(buf(pdbl, DType::F32));
  ws.y = static_cast<float*>(buf(pc, DType::F32));
  ws.g = buf(pc, act);
  ws.sb = buf(pch, act);
  ws.col = buf(9 * pch, act);
  ws.a3 = buf(pch, act);
  ws.a6 = buf(pch, act);
  ws.lb = buf(pch, act);
  ws.merged = buf(pcmax_merge, act);
  ws.pooled = buf(B * cfg.dims.back(), act);
  ws.logits = static_cast<float*>(buf(B * cfg.num_classes, DType::F32));
  if (pscan > 0) ws.scan = static_cast<float*>(buf(pscan, DType::F32));
}

void CudaMedMamba::Impl::run_block(const BlockWeightsGpu& w, const void* x, void* out, int64_t side) {
  const int64_t B = ws.B, P = B * side * side, C = w.C, c = C / 2, D = C, R = w.R;
  cuda::Stream s = stream;
  // SS2D branch on the right half: (P,c) -> (P,c)
  cuda::layernorm(act, ws.ln1, at(const_cast<void*>(x), c), C, w.ln1_w, w.ln1_b, P, c, s);
  gemm_act(P, 2 * D, c, ws.ln1, w.in_proj, ws.xz);
  cuda::dwconv3x3_silu(act, ws.u, ws.xz, 2 * D, w.dw_w, w.dw_b, B, side, side, D, s, /*zero=*/ws.y);
  {
    cuda::GemmArgs a;  // x_proj for all four directions, float32 out: Δ, B, C stay float32
    a.M = P; a.N = 4 * (cuda::scan_padded_rank(R) + 2 * kN); a.K = D;
    a.x = ws.u; a.ldx = D; a.x_type = act;
    a.w = w.x_proj;
    a.out = ws.dbl; a.ldo = a.N; a.out_type = DType::F32;
    gemm->run(a, s);
  }
  cuda::ScanArgs sa = scan_args(B, side, D, R);
  sa.u = ws.u; sa.dbl = ws.dbl;
  sa.dt_w = w.dt_w; sa.dt_b = w.dt_b; sa.A_logs = w.A_logs; sa.Ds = w.Ds;
  sa.y = ws.y;
  sa.workspace = ws.scan;  // sized by ensure_workspace for these shapes
  cuda::ss2d_scan(sa, s);
  cuda::layernorm_gate(act, ws.g, ws.y, at(ws.xz, D), 2 * D, w.on_w, w.on_b, P, D, s);
  gemm_act(P, c, D, ws.g, w.out_proj, ws.sb);

  // Convolution branch on the left half: BN0 -> conv3x3(+BN2) -> ReLU -> conv3x3(+BN5) -> ReLU -> conv1x1 -> ReLU
  static const std::string forced = conv3x3_forced();
  // In float32 the implicit conv computes in TF32: only where the engine's GEMMs do.
  const bool implicit = (act != DType::F32 || opts.allow_tf32) &&
                        (forced == "implicit" || (forced != "im2col" && cuda::conv3x3_implicit_preferred(P, c, c)));
  if (implicit && cuda::conv3x3_implicit_supported(act, ws.a3, c, x, C, w.conv1_w, B, side, side, c, c) &&
      cuda::conv3x3_implicit_supported(act, ws.a6, c, ws.a3, c, w.conv4_w, B, side, side, c, c)) {
    cuda::conv3x3_implicit(act, ws.a3, c, x, C, w.bn0_scale, w.bn0_shift, w.conv1_w, w.conv1_b, /*relu=*/true, B,
                           side, side, c, c, s);
    cuda::conv3x3_implicit(act, ws.a6, c, ws.a3, c, nullptr, nullptr, w.conv4_w, w.conv4_b, /*relu=*/true, B, side,
                           side, c, c, s);
  } else {
    cuda::im2col3x3(act, ws.col, x, C, w.bn0_scale, w.bn0_shift, B, side, side, c, s);
    gemm_act(P, c, 9 * c, ws.col, w.conv1_w, ws.a3, w.conv1_b, /*relu=*/true);
    cuda::im2col3x3(act, ws.col, ws.a3, c, nullptr, nullptr, B, side, side, c, s);
    gemm_act(P, c, 9 * c, ws.col, w.conv4_w, ws.a6, w.conv4_b, /*relu=*/true);
  }
  gemm_act(P, c, c, ws.a6, w.conv7_w, ws.lb, w.conv7_b, /*relu=*/true);

  cuda::shuffle_residual(act, out, ws.lb, ws.sb, x, P, c, s);
}

void CudaMedMamba::Impl::run_layers() {
  const int64_t B = ws.B, S = ws.S, side0 = S / 4, P0 = B * side0 * side0, C0 = cfg.dims[0];
  const int64_t Cin = cfg.in_chans;
  cuda::Stream s = stream;
  cuda::patchify(act, ws.col0, ws.images, B, Cin, S, 4, s);
  gemm_act(P0, C0, Cin * 16, ws.col0, pe_w, ws.emb, pe_b);
  cuda::layernorm(act, ws.x[0], ws.emb, C0, pe_norm_w, pe_norm_b, P0, C0, s);
  int cur = 0;
  for (int64_t i = 0; i < cfg.num_stages(); ++i) {
    const int64_t side = side0 >> i, C = cfg.dims[size_t(i)];
    for (const BlockWeightsGpu& w : blocks[size_t(i)]) {
      run_block(w, ws.x[cur], ws.x[1 - cur], side);
      cur ^= 1;
    }
    if (i + 1 < cfg.num_stages()) {
      const MergeWeightsGpu& m = merges[size_t(i)];
      cuda::merge_layernorm(act, ws.merged, ws.x[cur], m.norm_w, m.norm_b, B, side, side, C, s);
      gemm_act(B * (side / 2) * (side / 2), 2 * C, 4 * C, ws.merged, m.reduction, ws.x[1 - cur]);
      cur ^= 1;
    }
  }
  const int64_t side_last = side0 >> (cfg.num_stages() - 1), Cl = cfg.dims.back();
  cuda::avgpool(act, ws.pooled, ws.x[cur], B, side_last * side_last, Cl, s);
  cuda::GemmArgs a;
  a.M = B; a.N = cfg.num_classes; a.K = Cl;
  a.x = ws.pooled; a.ldx = Cl; a.x_type = act;
  a.w = head_w;
  a.out = ws.logits; a.ldo = a.N; a.out_type = DType::F32;
  a.bias = head_b;
  gemm->run(a, s);
}

CudaMedMamba::CudaMedMamba(const MedMamba& model, CudaModelOptions opts) : impl_(std::make_unique<Impl>()) {
  MM_CHECK(cuda_available(), "CudaMedMamba: no CUDA device is present");
  impl_->opts = opts;
  impl_->act = act_dtype(opts.precision);
  impl_->stream = cuda::stream_create();
  impl_->gemm = std::make_unique<cuda::GemmRunner>(opts.allow_tf32);
  impl_->prepare(model);
}

CudaMedMamba::~CudaMedMamba() = default;

void CudaMedMamba::reload_weights(const MedMamba& model) {
  Impl& m = *impl_;
  MM_CHECK(model.config().to_json() == m.cfg.to_json(), "CudaMedMamba::reload_weights: a model of another configuration");
  cuda::stream_sync(m.stream);  // no pass still reads the weights
  m.refilling = true;
  m.refill_next = 0;
  try {
    m.prepare(model);
  } catch (...) {
    m.refilling = false;
    throw;
  }
  m.refilling = false;
  MM_CHECK(m.refill_next == m.weights.size(), "CudaMedMamba::reload_weights: the model has fewer weights than before");
}

const ModelConfig& CudaMedMamba::config() const { return impl_->cfg; }
const CudaModelOptions& CudaMedMamba::options() const { return impl_->opts; }
std::string CudaMedMamba::device_name() const { return cuda::device_name(); }

Tensor CudaMedMamba::forward_device(const Tensor& images) {
  Impl& m = *impl_;
  const ModelConfig& cfg = m.cfg;
  MM_CHECK(images.dtype() == DType::F32 && images.ndim() == 4,
           "CudaMedMamba::forward expects float32 images (B,C,H,W), got " + shape_str(images.shape()));
  const int64_t B = images.dim(0), S = images.dim(2);
  const int64_t div = 4 << (cfg.num_stages() - 1);
  MM_CHECK(images.dim(1) == cfg.in_chans && images.dim(3) == S && S > 0 && S % div == 0 && B > 0,
           "CudaMedMamba::forward: expected (B," + std::to_string(cfg.in_chans) + ",S,S) with S divisible by " +
               std::to_string(div) + ", got " + shape_str(images.shape()));
  // A batch of more than half the workspace's runs at its size, the other rows left as they
  // are (rows are independent in eval mode): one shape, one graph, no reallocation for the
  // short last batch of a run. A smaller one gets a workspace of its own size.
  if (!(m.ws.S == S && B <= m.ws.B && 2 * B > m.ws.B)) m.ensure_workspace(B, S);
  cuda::copy_async(m.ws.images, images.data(), images.nbytes(), m.stream);
  if (!m.opts.use_graphs || !m.ran_eagerly) {
    m.run_layers();
    m.ran_eagerly = true;
  } else {
    if (!m.graph.ready()) m.graph.capture(m.stream, [&] { m.run_layers(); });
    m.graph.launch(m.stream);
  }
  return Tensor::wrap(m.ws.logits, {B, cfg.num_classes}, DType::F32, Device::CUDA);
}

void CudaMedMamba::synchronize() { cuda::stream_sync(impl_->stream); }
CUstream_st* CudaMedMamba::stream() const { return impl_->stream; }

Tensor CudaMedMamba::forward(const Tensor& images) {
  Tensor logits = forward_device(images);
  synchronize();  // the copy below runs on the legacy stream, which does not wait for ours
  return logits.to(Device::CPU);
}

}  // namespace mm

#endif  // MM_HAVE_CUDA
