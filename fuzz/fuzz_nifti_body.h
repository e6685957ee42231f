// The NIfTI fuzz target's body, shared by fuzz/fuzz_nifti.cpp (libFuzzer) and
// test/test_fuzz_regressions.cpp (replays fuzz/regressions/fuzz_nifti/ in the
// doctest suite), so a committed regression input runs the same code either way.
// The reader reads from a path, so each input is written to a per-process temporary
// file: .nii.gz when it starts like gzip, else .nii.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "imaging/nifti_reader.h"

// Returns normally for images or an mm::Error; anything else is a finding.
inline void fuzz_one_nifti(const uint8_t* data, size_t size) {
  const bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  static const std::string base = "/tmp/mm_fuzz_nifti_" + std::to_string(getpid());
  const std::string path = base + (gz ? ".nii.gz" : ".nii");
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  mm::NiftiOptions o;
  o.max_bytes = uint64_t(64) << 20;
  o.slices = mm::NiftiOptions::Slices::All;
  try {
    for (int axis = 0; axis < 3; ++axis) {
      o.axis = axis;
      mm::read_nifti(path, o);
    }
  } catch (const mm::Error&) {
  }
  std::remove(path.c_str());
}
