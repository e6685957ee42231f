#pragma once
// The tiny MedMamba the tool tests classify with: dims 8..64, depths 1, 32 px,
// reference initialisation with the given seed. Fast on any machine; it tests
// plumbing, not accuracy.
#include <string>
#include <vector>

#include "model/model_file.h"

namespace mm::test {

inline LoadedModel tiny_model(const std::vector<std::string>& class_names, uint64_t seed) {
  ModelConfig cfg;
  cfg.dims = {8, 16, 32, 64};
  cfg.depths = {1, 1, 1, 1};
  cfg.num_classes = int64_t(class_names.size());
  cfg.image_size = 32;
  LoadedModel m{MedMamba(cfg), {}};
  m.model.init_reference(seed);
  m.meta.config = cfg;
  m.meta.class_names = class_names;
  m.meta.preprocess.input_size = 32;
  return m;
}

// The same written as a model file at `path`, for the tests that run the tools.
inline void save_tiny_model(const std::string& path, const std::vector<std::string>& class_names, uint64_t seed) {
  const LoadedModel m = tiny_model(class_names, seed);
  save_model(path, m.model, m.meta);
}

}  // namespace mm::test
