// libFuzzer target: the .npy and .npz readers (zip container with stored and
// deflated members, .npy headers, every member's values) and the MedMNIST split
// reader on each split. Any outcome but arrays or an mm::Error (ImageError) is
// a finding. The body is in fuzz_npz_body.h (the doctest suite replays through it).
//
// fuzz-sources: lib/data/npz.cpp lib/data/image.cpp lib/io/zip_reader.cpp lib/io/file_bytes.cpp
// fuzz-libs: -lz
// fuzz-seeds: fuzz/seeds/npz
// fuzz-runs: 200000
#include "fuzz_npz_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_npz(data, size);
  return 0;
}
