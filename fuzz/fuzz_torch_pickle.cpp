// libFuzzer target: the safe unpickler alone (faster than going through a zip).
// The body is in fuzz_torch_pickle_body.h (the doctest suite replays through it).
//
// fuzz-sources: lib/io/torch_pickle.cpp
// fuzz-seeds: fuzz/seeds/torch_pickle
// fuzz-runs: 1500000
#include "fuzz_torch_pickle_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_torch_pickle(data, size);
  return 0;
}
