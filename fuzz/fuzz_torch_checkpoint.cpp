// libFuzzer target: the whole PyTorch checkpoint reader (zip archive, legacy
// stream, unpickler, tensor rebuilding, state-dict search) on arbitrary bytes.
// Any outcome but a checkpoint or an mm::Error is a bug: a crash, a sanitizer
// report, another exception type, a leak or an allocation past the RSS limit.
// The body is in fuzz_torch_checkpoint_body.h (the doctest suite replays through it).
//
// fuzz-sources: lib/core/tensor.cpp lib/io/zip_reader.cpp lib/io/torch_pickle.cpp lib/io/torch_storage.cpp lib/io/torch_rebuild.cpp lib/io/torch_checkpoint.cpp lib/io/file_bytes.cpp
// fuzz-libs: -lz
// fuzz-seeds: fuzz/seeds/torch_checkpoint
// fuzz-runs: 1000000
#include "fuzz_torch_checkpoint_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_torch_checkpoint(data, size);
  return 0;
}
