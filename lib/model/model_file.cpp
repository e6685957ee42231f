#include "model/model_file.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_text.h"
#include "io/safetensors.h"

namespace mm {

using json = nlohmann::json;
static constexpr const char* kFormat = "medmamba-cpp/1";

void save_model(const std::string& path, const Model& model, const ModelMeta& meta, DType storage) {
  save_model_state(path, model.state(), model.config(), meta, storage);
}

void save_model_state(const std::string& path, std::map<std::string, Tensor> tensors, const ModelConfig& config,
                      const ModelMeta& meta, DType storage) {
  MM_CHECK(storage == DType::F32 || storage == DType::F16 || storage == DType::BF16,
           "save_model: storage must be F32, F16 or BF16");
  for (auto& [name, t] : tensors)
    if (t.dtype() == DType::F32 && !(meta.int8_weights && is_int8_weight(name))) t = t.to(storage);
  if (meta.int8_weights) tensors = quantize_state_int8(tensors);  // its scales are F32
  std::map<std::string, std::string> md{{"format", kFormat},
                                        {"config", config.to_json()},
                                        {"class_names", json_text(json(meta.class_names))},
                                        {"preprocess", meta.preprocess.to_json()}};
  if (meta.int8_weights) md["quantization"] = quantization_metadata(meta.int8_activation_scales);
  write_safetensors(path, tensors, md);
}

LoadedModel load_model(const std::string& path) {
  SafetensorsFile f = read_safetensors(path);
  try {
    ModelMeta meta = read_model_meta(f);
    MedMamba model(meta.config);
    model.load_state(f.tensors);
    return LoadedModel{std::move(model), std::move(meta)};
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

}  // namespace mm
