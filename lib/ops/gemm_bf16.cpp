#include "ops/gemm_bf16.h"

#include <immintrin.h>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/half.h"

#ifdef MM_HAVE_DNNL
#include "ops/dnnl_context.h"
#endif

namespace mm {

namespace {

__attribute__((target("avx512f,avx512bf16"))) void to_bf16_avx512(uint16_t* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<const __m256i&>(v));
  }
  for (; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

void to_bf16_scalar(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

}  // namespace

void to_bf16(uint16_t* dst, const float* src, int64_t n) {
  static const bool native = __builtin_cpu_supports("avx512bf16");
  constexpr int64_t kChunk = 1 << 14;
  if (n <= kChunk) {  // a row: no parallel region (callers convert rows inside their own)
    if (native) to_bf16_avx512(dst, src, n);
    else to_bf16_scalar(dst, src, n);
    return;
  }
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
    if (native) to_bf16_avx512(dst + i0, src + i0, len);
    else to_bf16_scalar(dst + i0, src + i0, len);
  }
}

#ifdef MM_HAVE_DNNL

namespace {

std::vector<uint16_t> bf16_copy(const float* src, int64_t n) {
  std::vector<uint16_t> out(static_cast<size_t>(n));
  to_bf16(out.data(), src, n);
  return out;
}

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& engine() { return dnnl_engine(); }
dnnl::stream& stream() { return dnnl_stream(); }

dnnl::primitive_attr epilogue_attr(Bf16Epilogue e) {
  dnnl::primitive_attr attr = dnnl_user_scratchpad_attr();
  if (e == Bf16Epilogue::Relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return attr;
}

// One primitive for one input shape, with the weights reordered into its layout.
template <class Primitive>
struct Compiled {
  Primitive primitive;
  memory weights;
  memory::desc scratchpad;  // what it needs of the running thread's dnnl_scratchpad()
};

// Converts plain bf16 weights (plain_md over plain) into the layout a primitive chose.
memory reorder_weights(const memory::desc& plain_md, const std::vector<uint16_t>& plain, const memory::desc& want) {
  memory src(plain_md, engine(), const_cast<uint16_t*>(plain.data()));
  memory dst(want, engine());
  dnnl::reorder(src, dst).execute(stream(), src, dst);
  stream().wait();
  return dst;
}

template <class Primitive>
void run(const Compiled<Primitive>& c, const memory& src, const memory& bias, const memory& dst) {
  c.primitive.execute(stream(), {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, c.weights},
                                 {DNNL_ARG_BIAS, bias},
                                 {DNNL_ARG_DST, dst},
                                 {DNNL_ARG_SCRATCHPAD, dnnl_scratchpad(c.scratchpad)}});
  stream().wait();
}

}  // namespace

std::string bf16_unavailable_reason() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  if (isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx) return "";
  return "this CPU has neither AVX512_BF16 nor AMX (or ONEDNN_MAX_CPU_ISA excludes them)";
}

std::string bf16_conv_unavailable_reason() { return ""; }

struct Bf16Linear::Impl {
  int64_t K = 0, N = 0;
  Bf16Epilogue epilogue = Bf16Epilogue::None;
  std::vector<uint16_t> weight;  // (N,K) bf16
  std::vector<float> bias;       // (N), zeros without a bias
  memory bias_mem;
  mutable std::map<std::pair<int64_t, bool>, Compiled<dnnl::matmul>> cache;  // (M, bf16 out)
  mutable std::mutex cache_mutex;  // entries never move or go: a reference stays valid unlocked

  const Compiled<dnnl::matmul>& compiled(int64_t M, bool bf16_out) const {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find({M, bf16_out});
    if (it != cache.end()) return it->second;
    const memory::desc src_md({M, K}, dt::bf16, tag::ab), w_any({K, N}, dt::bf16, tag::any);
    const memory::desc bias_md({1, N}, dt::f32, tag::ab), dst_md({M, N}, bf16_out ? dt::bf16 : dt::f32, tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_any, bias_md, dst_md), epilogue_attr(epilogue),
                                          engine());
    const memory::desc plain({K, N}, dt::bf16, tag::ba);  // (N,K) row-major is (K,N) column-major
    Compiled<dnnl::matmul> c{dnnl::matmul(pd), reorder_weights(plain, weight, pd.weights_desc()),
                             pd.scratchpad_desc()};
    return cache.emplace(std::make_pair(M, bf16_out), std::move(c)).first->second;
  }

  void forward(void* out, const uint16_t* x, int64_t M, bool bf16_out) const {
    if (M == 0) return;
    const Compiled<dnnl::matmul>& c = compiled(M, bf16_out);
    memory src({{M, K}, dt::bf16, tag::ab}, engine(), const_cast<uint16_t*>(x));
    memory dst({{M, N}, bf16_out ? dt::bf16 : dt::f32, tag::ab}, engine(), out);
    run(c, src, bias_mem, dst);
  }
};

Bf16Linear::Bf16Linear(const float* weight, const float* bias, int64_t K, int64_t N, Bf16Epilogue epilogue)
    : impl_(std::make_unique<Impl>()) {
  const std::string why = bf16_unavailable_reason();
  MM_CHECK(why.empty(), "bf16 linear: " + why);
  impl_->K = K;
  impl_->N = N;
  impl_->epilogue = epilogue;
  impl_->weight = bf16_copy(weight, N * K);
  impl_->bias.assign(size_t(N), 0.f);
  if (bias) impl_->bias.assign(bias, bias + N);
  impl_->bias_mem = memory({{1, N}, dt::f32, tag::ab}, engine(), impl_->bias.data());
}

void Bf16Linear::forward(float* out, const uint16_t* x, int64_t M) const { impl_->forward(out, x, M, false); }
void Bf16Linear::forward_bf16(uint16_t* out, const uint16_t* x, int64_t M) const { impl_->forward(out, x, M, true); }

struct Bf16Conv2d::Impl {
  Conv2dShape g;
  Bf16Epilogue epilogue = Bf16Epilogue::None;
  std::vector<uint16_t> weight;  // (Cout,Cin,KH,KW) bf16, scale folded in
  std::vector<float> bias;       // (Cout), scale and shift folded in
  memory bias_mem;
  // No native bf16: the bf16 operands widened to float32 (exactly) and a float32 convolution,
  // 3-4x faster than oneDNN's bf16 emulation here; the same products, summed in another order.
  bool widen = false;
  mutable std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Compiled<dnnl::convolution_forward>> cache;
  mutable std::mutex cache_mutex;

  const Compiled<dnnl::convolution_forward>& compiled(int64_t B, int64_t H, int64_t W, bool bf16_out) const {
    const auto key = std::make_tuple(B, H, W, bf16_out);
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    Conv2dShape s = g;
    s.B = B; s.H = H; s.W = W;
    const dt in = widen ? dt::f32 : dt::bf16, out = bf16_out && !widen ? dt::bf16 : dt::f32;
    const memory::desc src_md({B, s.Cin, H, W}, in, tag::nhwc);
    const memory::desc w_any({s.Cout, s.Cin, s.KH, s.KW}, in, tag::any);
    const memory::desc bias_md({s.Cout}, dt::f32, tag::a);
    const memory::desc dst_md({B, s.Cout, s.out_h(), s.out_w()}, out, tag::nhwc);
    const dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                            src_md, w_any, bias_md, dst_md, {s.stride, s.stride}, {s.pad, s.pad},
                                            {s.pad, s.pad});
    const dnnl::convolution_forward::primitive_desc pd(d, epilogue_attr(epilogue), engine());
    const memory::desc plain({s.Cout, s.Cin, s.KH, s.KW}, dt::bf16, tag::oihw);
    Compiled<dnnl::convolution_forward> c{dnnl::convolution_forward(pd),
                                          reorder_weights(plain, weight, pd.weights_desc()), pd.scratchpad_desc()};
    return cache.emplace(key, std::move(c)).first->second;
  }

  void forward(void* out, const uint16_t* x, int64_t B, int64_t H, int64_t W, bool bf16_out) const {
    Conv2dShape s = g;
    s.B = B; s.H = H; s.W = W;
    const Compiled<dnnl::convolution_forward>& c = compiled(B, H, W, bf16_out);
    const int64_t in_n = B * H * W * s.Cin, out_n = B * s.out_h() * s.out_w() * s.Cout;
    void* src_data = const_cast<uint16_t*>(x);
    void* dst_data = out;
    // widen: the input, and the output before bf16 rounding. The calling thread's: the team
    // below writes through the pointer (inside the region the name would be each thread's own).
    thread_local std::vector<float> x_wide, out_wide;
    if (widen) {
      x_wide.resize(size_t(in_n));
      float* wide = x_wide.data();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < in_n; ++i) wide[i] = bf16_to_float(x[i]);
      src_data = wide;
      if (bf16_out) {
        out_wide.resize(size_t(out_n));
        dst_data = out_wide.data();
      }
    }
    const dt in = widen ? dt::f32 : dt::bf16, out_dt = bf16_out && !widen ? dt::bf16 : dt::f32;
    memory src({{B, s.Cin, H, W}, in, tag::nhwc}, engine(), src_data);
    memory dst({{B, s.Cout, s.out_h(), s.out_w()}, out_dt, tag::nhwc}, engine(), dst_data);
    run(c, src, bias_mem, dst);
    if (widen && bf16_out) to_bf16(static_cast<uint16_t*>(out), out_wide.data(), out_n);
  }
};

Bf16Conv2d::Bf16Conv2d(const Conv2dShape& geometry, const float* weight, const float* bias, const float* scale,
                       const float* shift, Bf16Epilogue epilogue)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.widen = !bf16_unavailable_reason().empty();
  m.g = geometry;
  m.epilogue = epilogue;
  const int64_t Cout = geometry.Cout, K = geometry.col_k();
  std::vector<float> w;
  fold_batchnorm_into_conv(w, m.bias, weight, bias, scale, shift, Cout, K);
  m.weight = bf16_copy(w.data(), Cout * K);
  m.bias_mem = memory({{Cout}, dt::f32, tag::a}, engine(), m.bias.data());
}

void Bf16Conv2d::forward(float* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const {
  impl_->forward(out, x, B, H, W, false);
}
void Bf16Conv2d::forward_bf16(uint16_t* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) const {
  impl_->forward(out, x, B, H, W, true);
}

#else  // no oneDNN

std::string bf16_unavailable_reason() { return "this build has no oneDNN (install libdnnl-dev and rebuild)"; }
std::string bf16_conv_unavailable_reason() { return bf16_unavailable_reason(); }

struct Bf16Linear::Impl {};
struct Bf16Conv2d::Impl {};

Bf16Linear::Bf16Linear(const float*, const float*, int64_t, int64_t, Bf16Epilogue) {
  throw Error("bf16 linear: " + bf16_unavailable_reason());
}
void Bf16Linear::forward(float*, const uint16_t*, int64_t) const {}
void Bf16Linear::forward_bf16(uint16_t*, const uint16_t*, int64_t) const {}
Bf16Conv2d::Bf16Conv2d(const Conv2dShape&, const float*, const float*, const float*, const float*, Bf16Epilogue) {
  throw Error("bf16 convolution: " + bf16_unavailable_reason());
}
void Bf16Conv2d::forward(float*, const uint16_t*, int64_t, int64_t, int64_t) const {}
void Bf16Conv2d::forward_bf16(uint16_t*, const uint16_t*, int64_t, int64_t, int64_t) const {}

#endif

Bf16Linear::Bf16Linear() = default;
Bf16Linear::~Bf16Linear() = default;
Bf16Linear::Bf16Linear(Bf16Linear&&) noexcept = default;
Bf16Linear& Bf16Linear::operator=(Bf16Linear&&) noexcept = default;
Bf16Conv2d::Bf16Conv2d() = default;
Bf16Conv2d::~Bf16Conv2d() = default;
Bf16Conv2d::Bf16Conv2d(Bf16Conv2d&&) noexcept = default;
Bf16Conv2d& Bf16Conv2d::operator=(Bf16Conv2d&&) noexcept = default;

}  // namespace mm
