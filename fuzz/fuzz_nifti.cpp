// libFuzzer target: the NIfTI reader (header checks, voxel decoding,
// orientation from the sform/qform, reorientation and slicing; no ITK). The
// body is in fuzz_nifti_body.h (the doctest suite replays regressions through it).
//
// fuzz-sources: lib/imaging/nifti_reader.cpp lib/imaging/nifti_header.cpp lib/imaging/nifti_orientation.cpp lib/data/image.cpp
// fuzz-libs: -lz
// fuzz-seeds: fuzz/seeds/nifti
// fuzz-runs: 200000
#include "fuzz_nifti_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_nifti(data, size);
  return 0;
}
