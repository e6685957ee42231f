// The safetensors fuzz target's body, shared by fuzz/fuzz_safetensors.cpp (libFuzzer)
// and test/test_fuzz_regressions.cpp (replays the seeds and
// fuzz/regressions/fuzz_safetensors/ in the doctest suite). A model file goes as far
// as load_model goes before it builds the model (which would bring BLAS and OpenMP
// in): the metadata, int8 dequantisation, the config's parameter names and shapes.
// A file without our metadata goes through the converter's architecture inference.
#pragma once
#include <cstddef>
#include <cstdint>

#include "convert/infer_config.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/model_file.h"
#include "model/params.h"

// Returns normally for a model's tensors or an mm::Error; anything else is a finding.
inline void fuzz_one_safetensors(const uint8_t* data, size_t size) {
  try {
    mm::SafetensorsFile f = mm::parse_safetensors(data, size, "fuzz input");
    // Read every byte of every tensor, so a wrong size or offset shows up under ASan.
    uint8_t sum = 0;
    for (const auto& [name, t] : f.tensors)
      for (size_t i = 0; i < t.nbytes(); ++i) sum ^= t.as<uint8_t>()[i];
    volatile uint8_t sink = sum;
    (void)sink;
    mm::ModelConfig config;
    if (f.metadata.count("config")) {
      config = mm::read_model_meta(f).config;
    } else {
      mm::strip_model_prefix(f.tensors);
      config = mm::infer_model_config(f.tensors);
    }
    mm::ParamTable::for_config(config).check_state(f.tensors, config.to_json());
  } catch (const mm::Error&) {
  }
}
