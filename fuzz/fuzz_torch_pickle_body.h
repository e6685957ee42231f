// The unpickler fuzz target's body, shared by fuzz/fuzz_torch_pickle.cpp
// (libFuzzer) and test/test_fuzz_regressions.cpp (replays the seeds and
// fuzz/regressions/fuzz_torch_pickle/ in the doctest suite). It reads pickles
// back to back as the legacy checkpoint stream does.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/torch_pickle.h"

// Returns normally for parsed pickles or an mm::Error; anything else is a finding.
inline void fuzz_one_torch_pickle(const uint8_t* data, size_t size) {
  static const mm::UnpickleOptions options = [] {
    mm::UnpickleOptions o;
    o.allowed_globals = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                         "torch._utils._rebuild_parameter", "torch.FloatStorage", "torch.LongStorage"};
    o.dict_classes = {"collections.OrderedDict"};
    o.max_nodes = size_t(1) << 20;
    return o;
  }();
  mm::PickleDocument doc;
  size_t pos = 0;
  try {
    for (int i = 0; i < 8 && pos < size; ++i) {
      const mm::PickleValue* root = mm::unpickle(doc, data, size, pos, options, "fuzz input");
      std::string text = root->describe();
      if (root->is(mm::PickleKind::Dict) && root->dict_size() > 0) text += root->dict_value(0)->describe();
      (void)root->get("state_dict");
    }
  } catch (const mm::Error&) {
  }
}
