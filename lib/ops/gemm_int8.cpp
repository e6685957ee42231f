#include "ops/gemm_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/half.h"

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

// gcc 12's unmasked AVX-512 intrinsics pass an undefined vector as the unused merge source,
// which -Wmaybe-uninitialized reports where they are inlined (a header bug, no effect on the code).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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

__attribute__((target("avx512f,avx512bw"))) float abs_max_avx512(const float* src, int64_t n) {
  __m512 m = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(src + i)));
  if (i < n) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(__mmask16((1u << (n - i)) - 1), src + i)));
  return _mm512_reduce_max_ps(m);
}

#pragma GCC diagnostic pop

bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512bw");
  return yes;
}

// dst = quantize(src) with one scale, serially.
void quantize_span(int8_t* dst, const float* src, int64_t n, float scale) {
  const float inv = 1.f / scale;
  if (have_avx512()) {
    quantize_s8_avx512(dst, src, n, inv);
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = quantize_one(src[i], inv);
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
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c)
    quantize_span(dst + c * kChunk, src + c * kChunk, std::min(kChunk, n - c * kChunk), scale);
}

float quantize_row_s8(int8_t* dst, const float* src, int64_t n, float fixed_scale) {
  float scale = fixed_scale;
  if (scale <= 0.f) {
    float m = 0.f;
    if (have_avx512()) {
      m = abs_max_avx512(src, n);
    } else {
      for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(src[i]));
    }
    if (m == 0.f) {
      std::fill(dst, dst + n, int8_t(0));
      return 0.f;
    }
    scale = m / 127.f;
  }
  quantize_span(dst, src, n, scale);
  return scale;
}

#ifdef MM_HAVE_DNNL

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct CompiledMatmul {
  dnnl::matmul primitive;
  memory weights;
  memory::desc scratchpad;  // what it needs of the running thread's dnnl_scratchpad()
};

// xq (n) = x (n, bf16) quantised with one scale, which it returns (0 for an all-zero x, whose
// xq is zeros): to u8 with max x / 255 (x never negative), or to s8 with max |x| / 127.
template <class Q>
float quantize_bf16_tensor(Q* xq, const uint16_t* x, int64_t n) {
  constexpr bool kSigned = std::is_signed_v<Q>;
  constexpr float kLow = kSigned ? -127.f : 0.f, kHigh = kSigned ? 127.f : 255.f;
  float m = 0.f;
#pragma omp parallel for simd reduction(max : m) schedule(static) if (n > kChunk)
  for (int64_t i = 0; i < n; ++i) m = std::max(m, kSigned ? std::fabs(bf16_to_float(x[i])) : bf16_to_float(x[i]));
  if (m <= 0.f) {
    std::fill(xq, xq + n, Q(0));
    return 0.f;
  }
  const float scale = m / kHigh, inv = 1.f / scale;
#pragma omp parallel for simd schedule(static) if (n > kChunk)
  for (int64_t i = 0; i < n; ++i) xq[i] = Q(std::clamp(std::nearbyint(bf16_to_float(x[i]) * inv), kLow, kHigh));
  return scale;
}

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
  mutable std::atomic<float> seen_max{0.f};
  mutable std::map<int64_t, CompiledMatmul> cache;  // by M
  mutable std::mutex cache_mutex;  // entries never move or go: a reference stays valid unlocked

  // The weight scales as the primitive's output scales, then the rows' activation scales,
  // the bias and the ReLU as post-ops. The matmul is 3-D, (1,M,K) x (1,K,N): oneDNN 2.6
  // runs a per-row (1,M,1) binary post-op in its brgemm kernels, where the 2-D (M,1) one
  // falls back to a reference kernel ~500x slower. (Runtime output scales, or the
  // primitive's own bias, which oneDNN 2.x applies before the scales, would make it fall
  // back to a generic GEMM 7x slower.)
  const CompiledMatmul& compiled(int64_t M) const {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(M);
    if (it != cache.end()) return it->second;
    const memory::desc src_md({1, M, K}, dt::s8, tag::abc), w_any({1, K, N}, dt::s8, tag::any);
    const memory::desc dst_md({1, M, N}, dt::f32, tag::abc);
    dnnl::primitive_attr attr = dnnl_user_scratchpad_attr();
    attr.set_output_scales(1 << 2, weight.scale);
    dnnl::post_ops po;
    po.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, M, 1}, dt::f32, tag::abc));
    if (has_bias) po.append_binary(dnnl::algorithm::binary_add, memory::desc({1, 1, N}, dt::f32, tag::abc));
    if (epilogue == Int8Epilogue::Relu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_any, dst_md), attr, dnnl_engine());
    memory plain({{1, K, N}, dt::s8, tag::acb}, dnnl_engine(), const_cast<int8_t*>(weight.q.data()));
    memory reordered(pd.weights_desc(), dnnl_engine());
    dnnl::reorder(plain, reordered).execute(dnnl_stream(), plain, reordered);
    dnnl_stream().wait();
    return cache.emplace(M, CompiledMatmul{dnnl::matmul(pd), reordered, pd.scratchpad_desc()}).first->second;
  }

  void forward(float* out, const int8_t* x8, const float* row_scale, int64_t M) const {
    if (M == 0) return;
    if (static_scale == 0.f) {  // the rows' own scales: note their range for observed_abs_max()
      float m = 0.f;
      for (int64_t i = 0; i < M; ++i) m = std::max(m, row_scale[i]);
      float seen = seen_max.load();  // several sub-batch workers may note theirs at once
      while (seen < m * 127.f && !seen_max.compare_exchange_weak(seen, m * 127.f)) {
      }
    }
    const CompiledMatmul& c = compiled(M);
    memory src({{1, M, K}, dt::s8, tag::abc}, dnnl_engine(), const_cast<int8_t*>(x8));
    memory dst({{1, M, N}, dt::f32, tag::abc}, dnnl_engine(), out);
    memory scale_mem({{1, M, 1}, dt::f32, tag::abc}, dnnl_engine(), const_cast<float*>(row_scale));
    memory bias_mem({{1, 1, N}, dt::f32, tag::abc}, dnnl_engine(), const_cast<float*>(bias.data()));
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src},
                                         {DNNL_ARG_WEIGHTS, c.weights},
                                         {DNNL_ARG_DST, dst},
                                         {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, scale_mem},
                                         {DNNL_ARG_SCRATCHPAD, dnnl_scratchpad(c.scratchpad)}};
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

void Int8Linear::forward(float* out, const int8_t* xq, const float* x_scale, int64_t M) const {
  impl_->forward(out, xq, x_scale, M);
}
void Int8Linear::forward(float* out, const float* x, int64_t M) const {
  const Impl& p = *impl_;
  const int64_t K = p.K;
  // The quantised input and its row scales: the calling thread's (the team below writes
  // through the pointers; inside the region the names would be each thread's own).
  thread_local std::vector<int8_t> xq_buffer;
  thread_local std::vector<float> scale_buffer;
  xq_buffer.resize(size_t(M * K));
  scale_buffer.resize(size_t(M));
  int8_t* xq = xq_buffer.data();
  float* x_scale = scale_buffer.data();
#pragma omp parallel for schedule(static) if (M * K > kChunk)
  for (int64_t m = 0; m < M; ++m) x_scale[m] = quantize_row_s8(xq + m * K, x + m * K, K, p.static_scale);
  p.forward(out, xq, x_scale, M);
}
void Int8Linear::set_input_scale(float scale) {
  MM_CHECK(scale >= 0.f && std::isfinite(scale), "int8 linear: the input scale must be finite and >= 0");
  impl_->static_scale = scale;
}
float Int8Linear::input_scale() const { return impl_->static_scale; }
int64_t Int8Linear::in_features() const { return impl_->K; }
float Int8Linear::observed_abs_max() const { return impl_->seen_max.load(); }

struct Int8Conv2d::Impl {
  Conv2dShape g;
  Int8Epilogue epilogue = Int8Epilogue::None;
  Int8ConvInput input = Int8ConvInput::NonNegative;
  Int8Weights weight;       // (Cout, Cin·KH·KW) in oihw order, the BatchNorm scale folded in
  std::vector<float> bias;  // (Cout), the BatchNorm's scale and shift folded in
  struct Compiled {
    dnnl::convolution_forward primitive;
    memory weights;
    memory::desc scratchpad;
  };
  mutable std::map<std::tuple<int64_t, int64_t, bool>, Compiled> cache;  // (H, W, bf16 out)
  mutable std::mutex cache_mutex;  // entries never move or go: a reference stays valid unlocked

  // The weight scales as output scales, then x's scale (a scalar, given per call), the bias
  // and the ReLU as post-ops: oneDNN 2.6 has no run-time output scales for convolutions, and
  // adds the primitive's own bias before its scales.
  // For one image of H x W (forward runs the images of a batch one at a time).
  const Compiled& compiled(int64_t H, int64_t W, bool bf16_out) const {
    const auto key = std::make_tuple(H, W, bf16_out);
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (const auto it = cache.find(key); it != cache.end()) return it->second;
    Conv2dShape s = g;
    s.B = 1; s.H = H; s.W = W;
    const memory::desc src_md({1, s.Cin, H, W}, src_type(), tag::nhwc), w_any({s.Cout, s.Cin, s.KH, s.KW}, dt::s8, tag::any);
    const memory::desc dst_md({1, s.Cout, s.out_h(), s.out_w()}, bf16_out ? dt::bf16 : dt::f32, tag::nhwc);
    dnnl::primitive_attr attr = dnnl_user_scratchpad_attr();
    attr.set_output_scales(1 << 1, weight.scale);  // per output channel (dim 1 of dst)
    dnnl::post_ops po;
    po.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, 1, 1, 1}, dt::f32, tag::abcd));
    po.append_binary(dnnl::algorithm::binary_add, memory::desc({1, s.Cout, 1, 1}, dt::f32, tag::abcd));
    if (epilogue == Int8Epilogue::Relu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
    const dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                            src_md, w_any, dst_md, {s.stride, s.stride}, {s.pad, s.pad},
                                            {s.pad, s.pad});
    const dnnl::convolution_forward::primitive_desc pd(d, attr, dnnl_engine());
    memory plain({{s.Cout, s.Cin, s.KH, s.KW}, dt::s8, tag::oihw}, dnnl_engine(), const_cast<int8_t*>(weight.q.data()));
    memory reordered(pd.weights_desc(), dnnl_engine());
    dnnl::reorder(plain, reordered).execute(dnnl_stream(), plain, reordered);
    dnnl_stream().wait();
    return cache.emplace(key, Compiled{dnnl::convolution_forward(pd), reordered, pd.scratchpad_desc()}).first->second;
  }

  dt src_type() const { return input == Int8ConvInput::Signed ? dt::s8 : dt::u8; }

  // One image at a time, each quantised with its own scale, so that an image's result does not
  // depend on the others in its batch (nor on how the batch is split over threads). oneDNN's
  // scalar post-op runs in its brgemm kernels, a per-image (B,1,1,1) one in a reference kernel
  // ~200x slower; and a batch-1 call is as fast per image (measured: 0.28 ms for MedMamba-T's
  // 3x3 convs at every stage, one thread).
  void forward(void* out, const uint16_t* x, int64_t B, int64_t H, int64_t W, bool bf16_out) const {
    Conv2dShape s = g;
    s.B = 1; s.H = H; s.W = W;
    const Compiled& c = compiled(H, W, bf16_out);
    // The quantised image: the calling thread's (the team in quantize_bf16_tensor writes
    // through the pointer).
    thread_local std::vector<uint8_t> xq_buffer;
    const int64_t in_n = H * W * s.Cin, out_bytes = s.out_h() * s.out_w() * s.Cout * (bf16_out ? 2 : 4);
    xq_buffer.resize(size_t(in_n));
    memory bias_mem({{1, s.Cout, 1, 1}, dt::f32, tag::abcd}, dnnl_engine(), const_cast<float*>(bias.data()));
    for (int64_t b = 0; b < B; ++b) {
      float x_scale = input == Int8ConvInput::Signed
                          ? quantize_bf16_tensor(reinterpret_cast<int8_t*>(xq_buffer.data()), x + b * in_n, in_n)
                          : quantize_bf16_tensor(xq_buffer.data(), x + b * in_n, in_n);
      memory src({{1, s.Cin, H, W}, src_type(), tag::nhwc}, dnnl_engine(), xq_buffer.data());
      memory dst({{1, s.Cout, s.out_h(), s.out_w()}, bf16_out ? dt::bf16 : dt::f32, tag::nhwc}, dnnl_engine(),
                 static_cast<char*>(out) + b * out_bytes);
      memory scale_mem({{1, 1, 1, 1}, dt::f32, tag::abcd}, dnnl_engine(), &x_scale);
      c.primitive.execute(dnnl_stream(), {{DNNL_ARG_SRC, src},
                                          {DNNL_ARG_WEIGHTS, c.weights},
                                          {DNNL_ARG_DST, dst},
                                          {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, scale_mem},
                                          {DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, bias_mem},
                                          {DNNL_ARG_SCRATCHPAD, dnnl_scratchpad(c.scratchpad)}});
      dnnl_stream().wait();
    }
  }
};

Int8Conv2d::Int8Conv2d(const Conv2dShape& geometry, const float* weight, const float* bias, const float* scale,
                       const float* shift, Int8Epilogue epilogue, Int8ConvInput input)
    : impl_(std::make_unique<Impl>()) {
  const std::string why = int8_unavailable_reason();
  MM_CHECK(why.empty(), "int8 convolution: " + why);
  Impl& m = *impl_;
  m.g = geometry;
  m.epilogue = epilogue;
  m.input = input;
  const int64_t Cout = geometry.Cout, K = geometry.col_k();
  std::vector<float> w;
  fold_batchnorm_into_conv(w, m.bias, weight, bias, scale, shift, Cout, K);
  m.weight = quantize_per_channel(w.data(), Cout, K);
}

void Int8Conv2d::forward(float* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const {
  impl_->forward(out, x, B, H, W, false);
}
void Int8Conv2d::forward_bf16(uint16_t* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const {
  impl_->forward(out, x, B, H, W, true);
}

#else  // no oneDNN

std::string int8_unavailable_reason() { return "this build has no oneDNN (install libdnnl-dev and rebuild)"; }

struct Int8Conv2d::Impl {};
Int8Conv2d::Int8Conv2d(const Conv2dShape&, const float*, const float*, const float*, const float*, Int8Epilogue,
                       Int8ConvInput) {
  throw Error("int8 convolution: " + int8_unavailable_reason());
}
void Int8Conv2d::forward(float*, const uint16_t*, int64_t, int64_t, int64_t) const {}
void Int8Conv2d::forward_bf16(uint16_t*, const uint16_t*, int64_t, int64_t, int64_t) const {}

struct Int8Linear::Impl {};
Int8Linear::Int8Linear(const float*, const float*, int64_t, int64_t, Int8Epilogue) {
  throw Error("int8 linear: " + int8_unavailable_reason());
}
void Int8Linear::forward(float*, const int8_t*, const float*, int64_t) const {}
void Int8Linear::forward(float*, const float*, int64_t) const {}
void Int8Linear::set_input_scale(float) {}
float Int8Linear::input_scale() const { return 0.f; }
int64_t Int8Linear::in_features() const { return 0; }
float Int8Linear::observed_abs_max() const { return 0.f; }

#endif

Int8Conv2d::Int8Conv2d() = default;
Int8Conv2d::~Int8Conv2d() = default;
Int8Conv2d::Int8Conv2d(Int8Conv2d&&) noexcept = default;
Int8Conv2d& Int8Conv2d::operator=(Int8Conv2d&&) noexcept = default;

Int8Linear::Int8Linear() = default;
Int8Linear::~Int8Linear() = default;
Int8Linear::Int8Linear(Int8Linear&&) noexcept = default;
Int8Linear& Int8Linear::operator=(Int8Linear&&) noexcept = default;

}  // namespace mm
