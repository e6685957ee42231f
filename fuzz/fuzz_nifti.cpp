// libFuzzer target: the NIfTI reader (our header checks, ITK's NiftiImageIO,
// reorientation and slicing). ITK reads from a path, so each input is written
// to a per-process temporary file: .nii.gz when it starts like gzip, else .nii.
// Debian's ITK 5.2 headers accept only GCC (itk_compiler_detection.h), hence
// the flags that make clang present itself as GCC 10 for this target.
//
// fuzz-sources: lib/imaging/nifti_reader.cpp lib/imaging/nifti_header.cpp lib/imaging/itk_io.cpp lib/data/image.cpp
// fuzz-flags: -isystem /usr/include/ITK-5.2 -U__clang__ -fgnuc-version=10.2
// fuzz-libs: -lITKIONIFTI-5.2 -lITKniftiio-5.2 -lITKznz-5.2 -lITKIOPNG-5.2 -lITKIOJPEG-5.2 -lITKIOTIFF-5.2 -lITKIOBMP-5.2 -lITKIOImageBase-5.2 -lITKCommon-5.2 -litksys-5.2 -lz
// fuzz-seeds: fuzz/seeds/nifti
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "imaging/nifti_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
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
  return 0;
}
