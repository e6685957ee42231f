// libFuzzer target: the NIfTI reader (our header checks, ITK's NiftiImageIO,
// reorientation and slicing). The body is in fuzz_nifti_body.h (the doctest
// suite replays regressions through it).
// Debian's ITK 5.2 headers accept only GCC (itk_compiler_detection.h), hence
// the flags that make clang present itself as GCC 10 for this target.
//
// fuzz-sources: lib/imaging/nifti_reader.cpp lib/imaging/nifti_header.cpp lib/imaging/itk_io.cpp lib/data/image.cpp
// fuzz-flags: -isystem /usr/include/ITK-5.2 -U__clang__ -fgnuc-version=10.2
// fuzz-libs: -lITKIONIFTI-5.2 -lITKniftiio-5.2 -lITKznz-5.2 -lITKIOPNG-5.2 -lITKIOJPEG-5.2 -lITKIOTIFF-5.2 -lITKIOBMP-5.2 -lITKIOImageBase-5.2 -lITKCommon-5.2 -litksys-5.2 -lz
// fuzz-seeds: fuzz/seeds/nifti
#include "fuzz_nifti_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_nifti(data, size);
  return 0;
}
