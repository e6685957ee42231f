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
  // Draft decoding (reduced JPEG 2000 levels) for inputs whose last byte is odd: both paths
  // covered without decoding every input twice.
  static const mm::DicomOptions draft = [] {
    mm::DicomOptions o = options;
    o.draft_side = 16;
    return o;
  }();
  const bool use_draft = size > 0 && (data[size - 1] & 1);
  try {
    for (const mm::Image& img : mm::read_dicom_bytes(data, size, "fuzz-input", use_draft ? draft : options))
      if (int64_t(img.pixels.size()) != img.numel()) __builtin_trap();
  } catch (const mm::Error&) {
  }
}
