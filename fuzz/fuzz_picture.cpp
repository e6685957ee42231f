// libFuzzer target: the picture reader. PNG, JPEG and TIFF through libpng,
// libjpeg-turbo and libtiff directly, BMP through ITK's BMPImageIO behind our
// checks (the rows and the RLE stream); our size limits, page splitting and
// windows. Any outcome but images or an mm::Error (ImageError) is
// a finding; so is a crash, a leak, or a hang in any of the libraries (which are
// not instrumented: coverage guides only through our code). The DICOM and NIfTI
// sources are linked only because read_images, beside read_picture, calls them.
// The body is in fuzz_picture_body.h (the doctest suite replays regressions
// through it). Debian's ITK headers accept only the compiler ITK was built with
// (GCC): the flags skip their compiler detection and define the one macro the
// IO headers use.
//
// fuzz-sources: lib/imaging/image_reader.cpp lib/imaging/picture_decode.cpp lib/imaging/png_reader.cpp lib/imaging/jpeg_reader.cpp lib/imaging/tiff_reader.cpp lib/imaging/bmp_reader.cpp lib/imaging/dicom_reader.cpp lib/imaging/dicom_native.cpp lib/data/input_stages.cpp lib/imaging/dicom_parse.cpp lib/imaging/dicom_attributes.cpp lib/imaging/dicom_frames.cpp lib/imaging/dicom_pixels.cpp lib/imaging/dicom_window.cpp lib/imaging/dicom_j2k.cpp lib/imaging/dicom_jpegls.cpp lib/imaging/dicom_jpegls_decoder.cpp lib/imaging/dicom_jpeg_lossless.cpp lib/imaging/dicom_jpeg_baseline.cpp lib/imaging/jpeg_markers.cpp lib/imaging/dicom_dictionary.cpp lib/imaging/nifti_reader.cpp lib/imaging/nifti_header.cpp lib/imaging/nifti_orientation.cpp lib/core/install_paths.cpp lib/data/image.cpp lib/data/file_kind.cpp
// fuzz-flags: -isystem /usr/include/openjpeg-2.5 -isystem /usr/include/ITK-5.2 -DITK_COMPILER_DETECTION_H -DITK_NOEXCEPT=noexcept
// fuzz-libs: -lITKIOBMP-5.2 -lITKIOImageBase-5.2 -lITKCommon-5.2 -lpng16 -ljpeg -ltiff -lcharls -ldcmjpeg -lijg8 -lijg12 -lijg16 -ldcmimage -ldcmimgle -ldcmdata -loflog -lofstd -lopenjp2 -lz
// fuzz-seeds: fuzz/seeds/picture
// fuzz-runs: 50000
#include "fuzz_picture_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_picture(data, size);
  return 0;
}
