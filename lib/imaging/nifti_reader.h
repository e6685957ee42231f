#pragma once
// NIfTI-1/-2 and Analyze (.nii, .nii.gz, .hdr/.img, gzipped pairs) through ITK.
//
// Header and voxels are decoded by us (nifti_header.h), not by ITK.
// A volume is reoriented to RAS+ (the closest canonical orientation: voxel axes
// permuted and flipped so x runs to the patient's Right, y Anterior, z
// Superior, as nibabel's as_closest_canonical) before slicing, so the same
// anatomy stored in any of the 48 axis orders gives the same slices. The
// orientation comes from the sform, else the qform, else none, skipping a
// source that cannot give one (nifti_orientation.h; docs/input-formats.md).
// scl_slope/scl_inter are applied, complex data becomes its magnitude.
//
// Slices are 2-D Images in neurological display order: the patient's right on
// the image's right; anterior (axial) or superior (coronal, sagittal) at the top.
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace mm {

struct NiftiOptions {
  WindowOptions window;  // Default: min-max over the whole volume (every slice gets the same window)
  int axis = 2;          // slicing axis in RAS: 0 sagittal (x), 1 coronal (y), 2 axial (z)
  enum class Slices { Middle, Index, Range, All };
  Slices slices = Slices::Middle;  // Middle: slice n/2 along the axis
  int64_t index = 0;               // Slices::Index
  int64_t first = 0, last = 0;     // Slices::Range: [first, last), clamped to the volume
  int64_t volume = 0;              // 4-D files: which volume (the 4th index); 5-D+ need trailing dims of 1
  uint64_t max_bytes = uint64_t(2) << 30;  // refuse headers that ask for more decoded data
};

// One volume, canonical RAS+, x fastest: data[((z * ny + y) * nx + x) * channels + c].
struct NiftiVolume {
  int64_t nx = 0, ny = 0, nz = 0, channels = 1;
  std::vector<float> data;
  std::string stored_orientation;  // axis codes of the file's voxel axes, e.g. "LPS", "RAS"
  std::string orientation_source;  // "sform", "qform", "none (NIfTI-1 method 1: RAS)", "Analyze 7.5 (LAS)"
  std::string warning;             // a source the header names was unusable and passed over (why); else empty
  double type_min = 0, type_max = 0;  // stored integer type's range; 0/0 for float data
  int64_t volumes = 1;                // in the file (4th dimension)
};

NiftiVolume read_nifti_volume(const std::string& path, const NiftiOptions& options = {});
// The slices the options ask for, windowed as they say.
std::vector<Image> slice_nifti(const NiftiVolume& volume, const NiftiOptions& options, const std::string& path);
std::vector<Image> read_nifti(const std::string& path, const NiftiOptions& options = {});

}  // namespace mm
