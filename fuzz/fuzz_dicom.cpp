// libFuzzer target: the DICOM reader from bytes (DCMTK parsing and decoders,
// OpenJPEG for JPEG 2000 and HTJ2K, ours then CharLS for JPEG-LS, libjpeg-turbo for
// 8-bit lossy JPEG, zlib for deflated frames, our pixel conversion and windowing; draft
// decoding for half the inputs). Any outcome but an Image or an
// mm::Error (ImageError) is a finding; so is a crash, a leak, or a hang in any
// of the libraries. The body is in fuzz_dicom_body.h (the doctest
// suite replays regressions through it).
//
// fuzz-sources: lib/imaging/dicom_reader.cpp lib/imaging/dicom_native.cpp lib/data/input_stages.cpp lib/imaging/dicom_parse.cpp lib/imaging/dicom_attributes.cpp lib/imaging/dicom_frames.cpp lib/imaging/dicom_pixels.cpp lib/imaging/dicom_window.cpp lib/imaging/dicom_j2k.cpp lib/imaging/dicom_jpegls.cpp lib/imaging/dicom_jpegls_decoder.cpp lib/imaging/dicom_jpeg_lossless.cpp lib/imaging/dicom_jpeg_baseline.cpp lib/imaging/jpeg_markers.cpp lib/imaging/dicom_dictionary.cpp lib/core/install_paths.cpp lib/data/image.cpp lib/data/file_kind.cpp
// fuzz-flags: -isystem /usr/include/openjpeg-2.5
// fuzz-libs: -lcharls -ldcmjpeg -lijg8 -lijg12 -lijg16 -ldcmimage -ldcmimgle -ldcmdata -loflog -lofstd -lopenjp2 -ljpeg -lz
// fuzz-seeds: fuzz/seeds/dicom
// fuzz-runs: 100000
#include "fuzz_dicom_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_dicom(data, size);
  return 0;
}
