// The .npz fuzz target's body, shared by fuzz/fuzz_npz.cpp (libFuzzer) and
// test/test_fuzz_regressions.cpp (replays the seeds and fuzz/regressions/fuzz_npz/
// in the doctest suite). NpzFile opens a path, so each input is written to a
// per-process temporary file; the input is also parsed as a bare .npy.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "data/npz.h"

// Returns normally for arrays or an mm::Error; anything else is a finding.
inline void fuzz_one_npz(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/mm_fuzz_npz_" + std::to_string(getpid()) + ".npz";
  const uint64_t max_bytes = uint64_t(64) << 20;
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    (void)mm::parse_npy(data, size, "fuzz input", max_bytes);
  } catch (const mm::Error&) {
  }
  try {
    const mm::NpzFile npz = mm::NpzFile::open(path);
    // One bad member or split must not hide the others from the fuzzer.
    for (const std::string& name : npz.names()) {
      try {
        (void)npz.array(name, max_bytes).to_float();
      } catch (const mm::Error&) {
      }
    }
    for (const char* split : {"train", "val", "test"}) {
      try {
        const mm::MedmnistSplit s = mm::read_medmnist(npz, split, max_bytes);
        if (s.count == 0) continue;
        // The last row reaches the end of the image buffer; the label as the dataset reads it.
        (void)s.image(s.count - 1);
        if (s.label_columns == 1) (void)s.label(s.count - 1);
      } catch (const mm::Error&) {
      }
    }
  } catch (const mm::Error&) {
  }
  std::remove(path.c_str());
}
