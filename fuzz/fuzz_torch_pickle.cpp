// libFuzzer target: the safe unpickler alone (faster than going through a zip),
// reading pickles back to back as the legacy checkpoint stream does.
//
// fuzz-sources: lib/io/torch_pickle.cpp
// fuzz-seeds: fuzz/seeds/torch_pickle
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
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
  return 0;
}
