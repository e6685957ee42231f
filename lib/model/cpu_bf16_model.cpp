#include "model/cpu_bf16_model.h"

#include <string>

#include "core/error.h"
#include "model/cpu_fast_forward.h"
#include "ops/gemm_bf16.h"

namespace mm {

namespace {

struct Bf16Precision {
  using Act = uint16_t;
  using Linear = Bf16Linear;
  static Linear linear(const float* weight, const float* bias, int64_t K, int64_t N, bool relu) {
    return Bf16Linear(weight, bias, K, N, relu ? Bf16Epilogue::Relu : Bf16Epilogue::None);
  }
  static void store_row(const Linear&, uint16_t* dst, float*, const float* row, int64_t n) { to_bf16(dst, row, n); }
  static void run(const Linear& lin, float* out, const uint16_t* x, const float*, int64_t M) { lin.forward(out, x, M); }
  using FirstConv = Bf16Conv2d;
  using ReluInputConv = Bf16Conv2d;
  static Bf16Conv2d first_conv(const Conv2dShape& g, const float* weight, const float* bias, const float* bn_scale,
                               const float* bn_shift) {
    return Bf16Conv2d(g, weight, bias, bn_scale, bn_shift, Bf16Epilogue::Relu);
  }
  static ReluInputConv relu_input_conv(const Conv2dShape& g, const float* weight, const float* bias,
                                       const float* bn_scale, const float* bn_shift) {
    return first_conv(g, weight, bias, bn_scale, bn_shift);
  }
  static void conv_out(const ReluInputConv& conv, const Linear&, uint16_t* out, float*, float*, const uint16_t* x,
                       int64_t B, int64_t H, int64_t W) {
    conv.forward_bf16(out, x, B, H, W);
  }
};

}  // namespace

struct CpuBf16Model::Impl {
  fast_forward::Forward<Bf16Precision> forward;
  explicit Impl(const MedMamba& m) : forward(m) {}
};

CpuBf16Model::CpuBf16Model(const MedMamba& model) {
  const std::string why = bf16_unavailable_reason();
  MM_CHECK(why.empty(), "bf16 inference on the CPU: " + why);
  impl_ = std::make_unique<Impl>(model);
}

CpuBf16Model::~CpuBf16Model() = default;
CpuBf16Model::CpuBf16Model(CpuBf16Model&&) noexcept = default;

const ModelConfig& CpuBf16Model::config() const { return impl_->forward.model().config(); }

Tensor CpuBf16Model::forward(const Tensor& images) { return impl_->forward(images, "bf16"); }

}  // namespace mm
