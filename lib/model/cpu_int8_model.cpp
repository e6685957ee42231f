#include "model/cpu_int8_model.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/cpu_fast_forward.h"
#include "ops/gemm_bf16.h"
#include "ops/gemm_int8.h"

namespace mm {

namespace {

struct Int8Precision {
  using Act = float;  // Int8Linear quantises its input itself (it needs the whole tensor's range)
  using Linear = Int8Linear;
  static Linear linear(const float* weight, const float* bias, int64_t K, int64_t N, bool relu) {
    return Int8Linear(weight, bias, K, N, relu ? Int8Epilogue::Relu : Int8Epilogue::None);
  }
  static void store_row(float* dst, float* row_max, const float* row, int64_t n) {
    std::copy(row, row + n, dst);
    u_row(nullptr, row_max, row, n);
  }
  // max|x| from the rows' maxima, or -1: Int8Linear scans x itself.
  static float abs_max_of_rows(const float* row_max, int64_t M) {
    float m = row_max ? 0.f : -1.f;
    if (row_max)
      for (int64_t i = 0; i < M; ++i) m = std::max(m, row_max[i]);
    return m;
  }
  static void run(const Linear& lin, float* out, const float* x, const float* row_max, int64_t M) {
    lin.forward(out, x, M, abs_max_of_rows(row_max, M));
  }
  // in_proj's halves quantise their common input once.
  static void run_pair(const Linear& a, float* out_a, const Linear& b, float* out_b, const float* x,
                       const float* row_max, int64_t M) {
    a.forward_same_input(b, out_b, out_a, x, M, abs_max_of_rows(row_max, M));
  }
  // x_proj reads u itself (float32, as the scan does); only its rows' ranges are noted.
  static void u_row(float*, float* row_max, const float* row, int64_t n) {
    float m = 0.f;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(row[i]));
    *row_max = m;
  }
  static const float* u_input(const float*, const float* u) { return u; }
  static void conv_out(const Bf16Conv2d& conv, float* out, const uint16_t* x, int64_t B, int64_t H, int64_t W) {
    conv.forward(out, x, B, H, W);
  }
};

}  // namespace

std::string int8_model_unavailable_reason() {
  std::string why = int8_unavailable_reason();
  if (why.empty()) why = bf16_conv_unavailable_reason();  // its convolutions are bf16
  return why;
}

struct CpuInt8Model::Impl {
  fast_forward::Forward<Int8Precision> forward;
  explicit Impl(const MedMamba& m) : forward(m) {}
};

CpuInt8Model::CpuInt8Model(const MedMamba& model, const ActivationScales& scales) {
  const std::string why = int8_model_unavailable_reason();
  MM_CHECK(why.empty(), "int8 inference on the CPU: " + why);
  impl_ = std::make_unique<Impl>(model);
  size_t used = 0;
  impl_->forward.for_each_linear([&](const std::string& name, Int8Linear& lin) {
    auto it = scales.find(name);
    if (it == scales.end()) return;
    lin.set_input_scale(it->second);
    ++used;
  });
  MM_CHECK(used == scales.size(), "int8 activation scales: " + std::to_string(scales.size() - used) +
                                      " of them name no Linear layer of this model");
}

CpuInt8Model::~CpuInt8Model() = default;
CpuInt8Model::CpuInt8Model(CpuInt8Model&&) noexcept = default;

const ModelConfig& CpuInt8Model::config() const { return impl_->forward.model().config(); }

Tensor CpuInt8Model::forward(const Tensor& images) { return impl_->forward(images, "int8"); }

ActivationScales CpuInt8Model::observed_scales() const {
  ActivationScales out;
  const_cast<Impl&>(*impl_).forward.for_each_linear([&](const std::string& name, Int8Linear& lin) {
    const float m = lin.observed_abs_max();
    out[name] = m > 0.f ? m / 127.f : 1.f;
  });
  return out;
}

}  // namespace mm
