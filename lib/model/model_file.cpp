#include "model/model_file.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace mm {

using json = nlohmann::json;
static constexpr const char* kFormat = "medmamba-cpp/1";

std::string Preprocess::to_json() const {
  return json{{"input_size", input_size}, {"mean", mean}, {"std", std}, {"interpolation", interpolation}}.dump();
}

Preprocess Preprocess::from_json(const std::string& text) {
  Preprocess p;
  try {
    json j = json::parse(text);
    p.input_size = j.value("input_size", p.input_size);
    p.mean = j.value("mean", p.mean);
    p.std = j.value("std", p.std);
    p.interpolation = j.value("interpolation", p.interpolation);
  } catch (const json::exception& e) {
    throw Error(std::string("preprocess metadata: ") + e.what());
  }
  MM_CHECK(p.input_size > 0, "preprocess metadata: input_size must be positive");
  MM_CHECK(!p.mean.empty() && p.mean.size() == p.std.size(), "preprocess metadata: mean and std lengths differ");
  for (float s : p.std) MM_CHECK(s > 0.f, "preprocess metadata: std must be positive");
  return p;
}

std::string ModelMeta::class_name(int64_t i) const {
  if (i >= 0 && size_t(i) < class_names.size()) return class_names[size_t(i)];
  return "class_" + std::to_string(i);
}

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
                                        {"class_names", json(meta.class_names).dump()},
                                        {"preprocess", meta.preprocess.to_json()}};
  if (meta.int8_weights) md["quantization"] = quantization_metadata(meta.int8_activation_scales);
  write_safetensors(path, tensors, md);
}

LoadedModel load_model(const std::string& path) {
  SafetensorsFile f = read_safetensors(path);
  auto cfg_it = f.metadata.find("config");
  if (cfg_it == f.metadata.end())
    throw Error(path + ": no model config in the safetensors metadata (convert it with mm-convert)");
  try {
    ModelMeta meta;
    meta.config = ModelConfig::from_json(cfg_it->second);
    if (f.metadata.count("class_names")) {
      json names = json::parse(f.metadata.at("class_names"));
      meta.class_names = names.get<std::vector<std::string>>();
      MM_CHECK(meta.class_names.empty() || int64_t(meta.class_names.size()) == meta.config.num_classes,
               "class_names has " + std::to_string(meta.class_names.size()) + " entries for " +
                   std::to_string(meta.config.num_classes) + " classes");
    }
    if (f.metadata.count("quantization")) {
      meta.int8_activation_scales = parse_quantization_metadata(f.metadata.at("quantization"));
      meta.int8_weights = true;
      f.tensors = dequantize_state_int8(f.tensors);
    }
    if (f.metadata.count("preprocess")) meta.preprocess = Preprocess::from_json(f.metadata.at("preprocess"));
    else meta.preprocess.input_size = meta.config.image_size;
    // Every parameter must be in the file, so a config that needs more floats
    // than the file holds is refused before allocating for it.
    int64_t file_elems = 0;
    for (const auto& [name, t] : f.tensors) file_elems += t.numel();
    const int64_t need = ParamTable::for_config(meta.config).trainable_count();
    MM_CHECK(need <= file_elems, "config needs " + std::to_string(need) + " parameters but the file holds " +
                                     std::to_string(file_elems) + " values");
    MedMamba model(meta.config);
    model.load_state(f.tensors);
    return LoadedModel{std::move(model), std::move(meta)};
  } catch (const json::exception& e) {
    throw Error(path + ": bad metadata: " + e.what());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

}  // namespace mm
