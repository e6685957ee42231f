// libFuzzer target: the DICOM reader from bytes (DCMTK parsing and decoders,
// OpenJPEG for JPEG 2000, our pixel conversion and windowing). Any outcome but an
// Image or an mm::Error (ImageError) is a finding; so is a crash, a leak, or a
// hang in any of the libraries.
//
// fuzz-sources: lib/imaging/dicom_reader.cpp lib/imaging/dicom_pixels.cpp lib/imaging/dicom_j2k.cpp lib/data/image.cpp lib/data/file_kind.cpp
// fuzz-flags: -isystem /usr/include/openjpeg-2.5
// fuzz-libs: -ldcmjpls -ldcmtkcharls -ldcmjpeg -lijg8 -lijg12 -lijg16 -ldcmimage -ldcmimgle -ldcmdata -loflog -lofstd -lopenjp2 -lz
// fuzz-seeds: fuzz/seeds/dicom
#include <cstddef>
#include <cstdint>

#include "imaging/dicom_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
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
  return 0;
}
