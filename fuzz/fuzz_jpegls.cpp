// libFuzzer target: our JPEG-LS decoder (imaging/dicom_jpegls_decoder.h) on
// bare streams: markers, preset parameters, restart intervals, the scan. Any
// outcome but an image or an mm::Error (ImageError) is a finding; so is a crash,
// a leak, or a hang. fuzz_dicom reaches it too, through the reader, behind
// DICOM parsing. The body is in fuzz_jpegls_body.h (the doctest suite replays
// regressions through it).
//
// fuzz-sources: lib/imaging/dicom_jpegls_decoder.cpp lib/imaging/jpeg_markers.cpp lib/imaging/dicom_pixels.cpp lib/data/image.cpp
// fuzz-seeds: fuzz/seeds/jpegls
// fuzz-runs: 200000
#include "fuzz_jpegls_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_jpegls(data, size);
  return 0;
}
