// The metadata half of model_file.h, apart from load_model so that it builds
// without the model (and its BLAS and OpenMP): fuzz/fuzz_safetensors.cpp links it alone.
#include "model/model_file.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace mm {

using json = nlohmann::json;

std::string Preprocess::to_json() const {
  return json{{"input_size", input_size}, {"mean", mean}, {"std", std}, {"interpolation", interpolation}}.dump();
}

Preprocess Preprocess::from_json(const std::string& text) {
  Preprocess p;
  try {
    json j = json::parse(text);
    // nlohmann casts a float to int64_t, undefined beyond its range.
    MM_CHECK(!j.value("input_size", json()).is_number_float(), "preprocess metadata: input_size must be an integer");
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

ModelMeta read_model_meta(SafetensorsFile& f) {
  auto cfg_it = f.metadata.find("config");
  if (cfg_it == f.metadata.end()) throw Error("no model config in the safetensors metadata (convert it with mm-convert)");
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
    return meta;
  } catch (const json::exception& e) {
    throw Error(std::string("bad metadata: ") + e.what());
  }
}

}  // namespace mm
