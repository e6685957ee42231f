#include "ops/gemm_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>

#include "core/error.h"

#ifdef MM_HAVE_DNNL
#include "ops/dnnl_context.h"
#endif

namespace mm {

namespace {

constexpr int64_t kChunk = 1 << 14;  // elements per parallel task in the element-wise passes

int8_t quantize_one(float v, float inv_scale) {
  const float r = std::nearbyint(v * inv_scale);
  return int8_t(std::clamp(r, -127.f, 127.f));
}

__attribute__((target("avx512f,avx512bw"))) void quantize_s8_avx512(int8_t* dst, const float* src, int64_t n,
                                                                    float inv_scale) {
  const __m512 s = _mm512_set1_ps(inv_scale), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(src + i), s), lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  for (; i < n; ++i) dst[i] = quantize_one(src[i], inv_scale);
}

}  // namespace

Int8Weights quantize_per_channel(const float* w, int64_t N, int64_t K) {
  Int8Weights q;
  q.N = N;
  q.K = K;
  q.q.resize(size_t(N * K));
  q.scale.resize(size_t(N));
  for (int64_t n = 0; n < N; ++n) {
    float m = 0.f;
    for (int64_t k = 0; k < K; ++k) m = std::max(m, std::fabs(w[n * K + k]));
    const float scale = m > 0.f ? m / 127.f : 1.f;
    q.scale[size_t(n)] = scale;
    for (int64_t k = 0; k < K; ++k) q.q[size_t(n * K + k)] = quantize_one(w[n * K + k], 1.f / scale);
  }
  return q;
}

float abs_max(const float* x, int64_t n) {
  float m = 0.f;
#pragma omp parallel for simd reduction(max : m) schedule(static) if (n > kChunk)
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

void quantize_s8(int8_t* dst, const float* src, int64_t n, float scale) {
  static const bool avx512 = __builtin_cpu_supports("avx512bw");
  const float inv = 1.f / scale;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
    if (avx512) {
      quantize_s8_avx512(dst + i0, src + i0, len, inv);
    } else {
      for (int64_t i = i0; i < i0 + len; ++i) dst[i] = quantize_one(src[i], inv);
    }
  }
}

#ifdef MM_HAVE_DNNL

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct CompiledMatmul {
  dnnl::matmul primitive;
  memory weights;
};

}  // namespace

std::string int8_unavailable_reason() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
    case dnnl::cpu_isa::avx512_core_amx:
      return "";
    default:
      return "this CPU has neither AVX512_VNNI nor AMX (or ONEDNN_MAX_CPU_ISA excludes them)";
  }
}

struct Int8Linear::Impl {
  int64_t K = 0, N = 0;
  Int8Epilogue epilogue = Int8Epilogue::None;
  Int8Weights weight;
  std::vector<float> bias;  // (N), zeros without a bias
  bool has_bias = false;    // without one, no bias post-op (a pass over every output element fewer)
  float static_scale = 0.f;
  mutable float seen_max = 0.f;
  mutable std::vector<int8_t> xq;           // the quantised input of the last call
  mutable float batch_scale = 0.f;          // the scale the last call quantised x with
  mutable std::map<int64_t, CompiledMatmul> cache;  // by M

  // The weight scales as the primitive's output scales, then the batch's activation
  // scale, the bias and the ReLU as post-ops. (Runtime output scales, or the
  // primitive's own bias, which oneDNN 2.x applies before the scales, would make
  // oneDNN 2.6 fall back from its brgemm kernels to a generic GEMM 7x slower.)
  const CompiledMatmul& compiled(int64_t M) const {
    auto it = cache.find(M);
    if (it != cache.end()) return it->second;
    const memory::desc src_md({M, K}, dt::s8, tag::ab), w_any({K, N}, dt::s8, tag::any);
    const memory::desc dst_md({M, N}, dt::f32, tag::ab), bias_md({1, N}, dt::f32, tag::ab);
    dnnl::primitive_attr attr;
    attr.set_output_scales(1 << 1, weight.scale);
    dnnl::post_ops po;
    po.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, 1}, dt::f32, tag::ab));
    if (has_bias) po.append_binary(dnnl::algorithm::binary_add, bias_md);
    if (epilogue == Int8Epilogue::Relu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_any, dst_md), attr, dnnl_engine());
    memory plain({{K, N}, dt::s8, tag::ba}, dnnl_engine(), const_cast<int8_t*>(weight.q.data()));
    memory reordered(pd.weights_desc(), dnnl_engine());
    dnnl::reorder(plain, reordered).execute(dnnl_stream(), plain, reordered);
    dnnl_stream().wait();
    return cache.emplace(M, CompiledMatmul{dnnl::matmul(pd), reordered}).first->second;
  }

  // The scale x is quantised with: the fixed one, or max|x| / 127 (the max noted for
  // observed_abs_max()). A calibrated scale needs no pass over x for its range
  // (observed_abs_max is for the calibration runs, which use per-batch scales).
  float input_scale(const float* x, int64_t M, float x_abs_max) const {
    if (static_scale > 0.f) return static_scale;
    const float m = x_abs_max >= 0.f ? x_abs_max : abs_max(x, M * K);
    seen_max = std::max(seen_max, m);
    return m > 0.f ? m / 127.f : 1.f;
  }

  void forward(float* out, const float* x, int64_t M, float x_abs_max) const {
    if (M == 0) return;
    const float x_scale = input_scale(x, M, x_abs_max);
    xq.resize(size_t(M * K));
    quantize_s8(xq.data(), x, M * K, x_scale);
    batch_scale = x_scale;
    run(out, xq.data(), M);
  }

  // out from x quantised into x8 with batch_scale.
  void run(float* out, const int8_t* x8, int64_t M) const {
    const CompiledMatmul& c = compiled(M);
    memory src({{M, K}, dt::s8, tag::ab}, dnnl_engine(), const_cast<int8_t*>(x8));
    memory dst({{M, N}, dt::f32, tag::ab}, dnnl_engine(), out);
    memory scale_mem({{1, 1}, dt::f32, tag::ab}, dnnl_engine(), &batch_scale);
    memory bias_mem({{1, N}, dt::f32, tag::ab}, dnnl_engine(), const_cast<float*>(bias.data()));
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src},
                                         {DNNL_ARG_WEIGHTS, c.weights},
                                         {DNNL_ARG_DST, dst},
                                         {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, scale_mem}};
    if (has_bias) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, bias_mem);
    c.primitive.execute(dnnl_stream(), args);
    dnnl_stream().wait();
  }
};

Int8Linear::Int8Linear(const float* weight, const float* bias, int64_t K, int64_t N, Int8Epilogue epilogue)
    : impl_(std::make_unique<Impl>()) {
  const std::string why = int8_unavailable_reason();
  MM_CHECK(why.empty(), "int8 linear: " + why);
  impl_->K = K;
  impl_->N = N;
  impl_->epilogue = epilogue;
  impl_->weight = quantize_per_channel(weight, N, K);
  impl_->bias.assign(size_t(N), 0.f);
  if (bias) impl_->bias.assign(bias, bias + N);
  impl_->has_bias = bias != nullptr;
}

void Int8Linear::forward(float* out, const float* x, int64_t M, float x_abs_max) const {
  impl_->forward(out, x, M, x_abs_max);
}
void Int8Linear::forward_same_input(const Int8Linear& other, float* out_other, float* out, const float* x, int64_t M,
                                    float x_abs_max) const {
  MM_CHECK(other.impl_->K == impl_->K, "int8 linear: forward_same_input needs the same input width");
  impl_->forward(out, x, M, x_abs_max);
  if (M == 0) return;
  const Impl& o = *other.impl_;
  const float scale = o.input_scale(x, M, x_abs_max);
  if (scale != impl_->batch_scale) {
    o.forward(out_other, x, M, x_abs_max);
    return;
  }
  o.batch_scale = scale;
  o.run(out_other, impl_->xq.data(), M);
}
void Int8Linear::set_input_scale(float scale) {
  MM_CHECK(scale >= 0.f && std::isfinite(scale), "int8 linear: the input scale must be finite and >= 0");
  impl_->static_scale = scale;
}
float Int8Linear::input_scale() const { return impl_->static_scale; }
float Int8Linear::observed_abs_max() const { return impl_->seen_max; }

#else  // no oneDNN

std::string int8_unavailable_reason() { return "this build has no oneDNN (install libdnnl-dev and rebuild)"; }

struct Int8Linear::Impl {};
Int8Linear::Int8Linear(const float*, const float*, int64_t, int64_t, Int8Epilogue) {
  throw Error("int8 linear: " + int8_unavailable_reason());
}
void Int8Linear::forward(float*, const float*, int64_t, float) const {}
void Int8Linear::forward_same_input(const Int8Linear&, float*, float*, const float*, int64_t, float) const {}
void Int8Linear::set_input_scale(float) {}
float Int8Linear::input_scale() const { return 0.f; }
float Int8Linear::observed_abs_max() const { return 0.f; }

#endif

Int8Linear::Int8Linear() = default;
Int8Linear::~Int8Linear() = default;
Int8Linear::Int8Linear(Int8Linear&&) noexcept = default;
Int8Linear& Int8Linear::operator=(Int8Linear&&) noexcept = default;

}  // namespace mm
