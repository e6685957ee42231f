// The DICOM fuzz target's body, shared by fuzz/fuzz_dicom.cpp (libFuzzer) and
// test/test_fuzz_regressions.cpp (replays fuzz/regressions/fuzz_dicom/ in the
// doctest suite), so a committed regression input runs the same code either way.
#pragma once
#include <cstddef>
#include <cstdint>

#include "imaging/dicom_reader.h"

// Returns normally for an Image or an mm::Error; anything else is a finding.
inline void fuzz_one_dicom(const uint8_t* data, size_t size) {
  static const mm::DicomOptions options = [] {
    mm::DicomOptions o;
    o.max_decoded_bytes = uint64_t(4) << 20;  // hostile headers asking for more are refused, not allocated
    return o;
  }();
  try {
    for (const mm::Image& img : mm::read_dicom_bytes(data, size, "fuzz-input", options))
      if (int64_t(img.pixels.size()) != img.numel()) __builtin_trap();
  } catch (const mm::Error&) {
  }
}
