// The JPEG-LS fuzz target's body, shared by fuzz/fuzz_jpegls.cpp (libFuzzer)
// and test/test_fuzz_regressions.cpp (replays fuzz/regressions/fuzz_jpegls/ in
// the doctest suite). The input is one bare JPEG-LS stream, as a DICOM fragment
// holds it: our decoder alone, without CharLS behind it, so every input reaches
// its marker parser and scan decoder.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "imaging/dicom_jpegls_decoder.h"

// Returns normally for an image or an mm::Error; anything else is a finding.
inline void fuzz_one_jpegls(const uint8_t* data, size_t size) {
  try {
    const mm::dicom::JpegLsHeader h = mm::dicom::read_jpegls_header(data, size, "fuzz-input");
    const size_t bytes = h.precision <= 8 ? 1 : 2;
    const size_t n = size_t(h.width) * size_t(h.height) * bytes;
    if (n > (size_t(1) << 20)) return;  // the reader bounds it by its size limit; 1 MB keeps executions fast
    std::vector<uint8_t> out(n);
    mm::dicom::decode_jpegls_stream(data, size, int(bytes), out.data(), n, "fuzz-input");
  } catch (const mm::Error&) {
  }
}
