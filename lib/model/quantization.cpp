#include "model/quantization.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "ops/gemm_int8.h"

namespace mm {

using json = nlohmann::json;

namespace {
constexpr const char* kScaleSuffix = "_scale";

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
}  // namespace

bool is_int8_weight(const std::string& name) {
  for (const char* tail : {".self_attention.in_proj.weight", ".self_attention.x_proj_weight",
                           ".self_attention.out_proj.weight", ".conv33conv33conv11.7.weight", ".downsample.reduction.weight",
                           ".conv33conv33conv11.1.weight", ".conv33conv33conv11.4.weight",
                           ".self_attention.dt_projs_weight"})
    if (ends_with(name, tail)) return true;
  return false;
}

std::map<std::string, Tensor> quantize_state_int8(const std::map<std::string, Tensor>& state) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : state) {
    if (!is_int8_weight(name)) {
      out[name] = t;
      continue;
    }
    MM_CHECK(t.dtype() == DType::F32 && t.ndim() >= 2, "int8 quantisation: " + name + " is not a float32 matrix");
    // Rows of the last dimension, or of all but the first for a conv (Cout,Cin,KH,KW);
    // x_proj (4,N',K) has 4·N' output channels.
    const int64_t K = t.ndim() == 4 ? t.numel() / t.dim(0) : t.dim(-1), N = t.numel() / K;
    const Int8Weights q = quantize_per_channel(t.f32(), N, K);
    Tensor qt = Tensor::empty(t.shape(), DType::I8), scale = Tensor::empty({N});
    std::copy(q.q.begin(), q.q.end(), qt.as<int8_t>());
    std::copy(q.scale.begin(), q.scale.end(), scale.f32());
    out[name] = qt;
    out[name + kScaleSuffix] = scale;
  }
  return out;
}

std::map<std::string, Tensor> dequantize_state_int8(const std::map<std::string, Tensor>& state) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : state) {
    if (t.dtype() != DType::I8) {
      const std::string base = name.substr(0, name.size() - std::string(kScaleSuffix).size());
      const bool is_scale = ends_with(name, kScaleSuffix) && state.count(base) && state.at(base).dtype() == DType::I8;
      if (!is_scale) out[name] = t;
      continue;
    }
    auto s = state.find(name + kScaleSuffix);
    MM_CHECK(s != state.end(), "int8 tensor " + name + " has no " + name + kScaleSuffix);
    MM_CHECK(t.ndim() >= 1 && t.numel() > 0, "int8 tensor " + name + " is empty");
    const int64_t K = t.ndim() == 4 ? t.numel() / t.dim(0) : t.dim(-1), N = t.numel() / K;
    const Tensor scale = s->second.dtype() == DType::F32 ? s->second : s->second.to(DType::F32);
    MM_CHECK(scale.numel() == N, name + kScaleSuffix + " has " + std::to_string(scale.numel()) + " values for " +
                                     std::to_string(N) + " output channels");
    Tensor w = Tensor::empty(t.shape());
    const int8_t* q = t.as<int8_t>();
    for (int64_t n = 0; n < N; ++n) {
      const float sc = scale.f32()[n];
      MM_CHECK(std::isfinite(sc) && sc > 0.f, name + kScaleSuffix + ": scales must be finite and positive");
      for (int64_t k = 0; k < K; ++k) w.f32()[n * K + k] = float(q[n * K + k]) * sc;
    }
    out[name] = w;
  }
  return out;
}

std::string quantization_metadata(const ActivationScales& scales) {
  json j{{"scheme", kInt8Scheme},
         {"weights", "I8 + NAME_scale (F32, per output channel): weight = q * scale"},
         {"activations", scales.empty() ? "dynamic per row" : "static per tensor"}};
  if (!scales.empty()) j["activation_scales"] = scales;
  return j.dump();
}

ActivationScales parse_quantization_metadata(const std::string& text) {
  try {
    const json j = json::parse(text);
    const std::string scheme = j.value("scheme", "");
    MM_CHECK(scheme == kInt8Scheme, "quantization scheme '" + scheme + "' is not known to this build (expected " +
                                        kInt8Scheme + ")");
    ActivationScales scales;
    if (j.contains("activation_scales")) scales = j.at("activation_scales").get<ActivationScales>();
    for (const auto& [name, s] : scales)
      MM_CHECK(std::isfinite(s) && s > 0.f, "activation scale of " + name + " must be finite and positive");
    return scales;
  } catch (const json::exception& e) {
    throw Error(std::string("quantization metadata: ") + e.what());
  }
}

}  // namespace mm
