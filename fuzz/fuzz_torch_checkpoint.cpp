// libFuzzer target: the whole PyTorch checkpoint reader (zip archive, legacy
// stream, unpickler, tensor rebuilding, state-dict search) on arbitrary bytes.
// Any outcome but a checkpoint or an mm::Error is a bug: a crash, a sanitizer
// report, another exception type, a leak or an allocation past the RSS limit.
//
// fuzz-sources: lib/core/tensor.cpp lib/io/zip_reader.cpp lib/io/torch_pickle.cpp lib/io/torch_storage.cpp lib/io/torch_rebuild.cpp lib/io/torch_checkpoint.cpp lib/io/file_bytes.cpp
// fuzz-libs: -lz
// fuzz-seeds: fuzz/seeds/torch_checkpoint
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const mm::TorchCheckpoint ck = mm::parse_torch_checkpoint(std::vector<uint8_t>(data, data + size), "fuzz input");
    // Read every byte of every tensor, so a wrong size or copy shows up under ASan.
    uint8_t sum = 0;
    for (const auto& [name, t] : ck.tensors)
      for (size_t i = 0; i < t.nbytes(); ++i) sum ^= t.as<uint8_t>()[i];
    volatile uint8_t sink = sum;
    (void)sink;
  } catch (const mm::Error&) {
  }
  return 0;
}
