#include "model/cpu_int8_model.h"

#include "core/error.h"
#include "model/cpu_fast_forward.h"
#include "ops/gemm_bf16.h"
#include "ops/gemm_int8.h"

namespace mm {

namespace {

struct Int8Precision {
  using Act = int8_t;  // with a scale per row
  using Linear = Int8Linear;
  static Linear linear(const float* weight, const float* bias, int64_t K, int64_t N, bool relu) {
    return Int8Linear(weight, bias, K, N, relu ? Int8Epilogue::Relu : Int8Epilogue::None);
  }
  static void store_row(const Linear& consumer, int8_t* dst, float* row_scale, const float* row, int64_t n) {
    *row_scale = quantize_row_s8(dst, row, n, consumer.input_scale());
  }
  static void run(const Linear& lin, float* out, const int8_t* x, const float* row_scale, int64_t M) {
    lin.forward(out, x, row_scale, M);
  }
  // Both 3x3 convs in int8, each image with its own scale: the first one's input (BatchNorm 0's
  // output) in s8, the second's (after a ReLU) in u8. (One s8 scale per batch for the first
  // had cost a point of brain-MRI accuracy, on 101 test images.)
  using FirstConv = Int8Conv2d;
  static FirstConv first_conv(const Conv2dShape& g, const float* weight, const float* bias, const float* bn_scale,
                              const float* bn_shift) {
    return Int8Conv2d(g, weight, bias, bn_scale, bn_shift, Int8Epilogue::Relu, Int8ConvInput::Signed);
  }
  using ReluInputConv = Int8Conv2d;
  static ReluInputConv relu_input_conv(const Conv2dShape& g, const float* weight, const float* bias,
                                       const float* bn_scale, const float* bn_shift) {
    return Int8Conv2d(g, weight, bias, bn_scale, bn_shift, Int8Epilogue::Relu);
  }
  // oneDNN's convolution writes float32 (into scratch), quantised by rows after it.
  static void conv_out(const ReluInputConv& conv, const Linear& consumer, int8_t* out, float* row_scale, float* scratch,
                       const uint16_t* x, int64_t B, int64_t H, int64_t W) {
    conv.forward(scratch, x, B, H, W);
    const int64_t n = consumer.in_features(), P = B * H * W;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < P; ++p) store_row(consumer, out + p * n, row_scale + p, scratch + p * n, n);
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
