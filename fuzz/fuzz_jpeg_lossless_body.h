// The JPEG Lossless fuzz target's body, shared by fuzz/fuzz_jpeg_lossless.cpp
// (libFuzzer) and test/test_fuzz_regressions.cpp (replays
// fuzz/regressions/fuzz_jpeg_lossless/ in the doctest suite). The input is one
// bare JPEG stream, as a DICOM fragment holds it: our decoder alone, without
// DCMTK behind it, so every input reaches its marker parser and scan decoder.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "imaging/dicom_jpeg_lossless.h"

// Returns normally for an image or an mm::Error; anything else is a finding.
inline void fuzz_one_jpeg_lossless(const uint8_t* data, size_t size) {
  try {
    const mm::dicom::LosslessHeader h = mm::dicom::read_lossless_header(data, size, "fuzz-input");
    const size_t bytes = h.precision <= 8 ? 1 : 2;
    const size_t n = size_t(h.width) * size_t(h.height) * size_t(h.components) * bytes;
    if (n > (size_t(1) << 20)) return;  // the reader bounds it by its size limit; 1 MB keeps executions fast
    std::vector<uint8_t> out(n);
    mm::dicom::decode_lossless_stream(data, size, int(bytes), out.data(), n, "fuzz-input");
  } catch (const mm::Error&) {
  }
}
