#pragma once
// The NIfTI-1/-2 (and Analyze 7.5) header and voxels, read by us rather than
// ITK: ITK's NiftiImageIO zero-fills truncated data, aborts on non-finite
// geometry, can loop for ever in an SVD on huge sform entries, refuses sheared
// affines, mishandles 5-D files, and (Debian's ITK 5.2) cannot read NIfTI-2.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

struct NiftiHeader {
  std::string header_path, data_path;  // the same file for .nii; .hdr and .img for pairs
  bool nifti2 = false, swap = false;    // swap: the file's byte order is not this machine's
  bool magic = false;                   // "n+1"/"ni1"/"n+2": NIfTI rather than Analyze 7.5
  int64_t ndim = 0, dim[8] = {};
  int datatype = 0, bitpix = 0;
  int item_bytes = 0;  // bytes per voxel of datatype (bitpix is not trusted: nibabel ignores it too)
  uint64_t data_offset = 0, data_bytes = 0;  // where the voxels start in data_path and how many bytes they take
  // As stored, possibly non-finite or absurd: nifti_orientation() judges the
  // geometry, read_nifti_data() the scaling; nothing else reads them.
  double pixdim[8] = {}, scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  double quatern[3] = {}, qoffset[3] = {}, srow[3][4] = {};
};

// Reads and checks the header: sizes (no product overflows, none above
// max_bytes, raw or as floats), datatype, offset. Reads no voxel data.
// Throws ImageError naming `path`.
NiftiHeader read_nifti_header(const std::string& path, uint64_t max_bytes);

// The voxels as floats, x fastest, channels interleaved.
struct NiftiVoxels {
  std::vector<int64_t> dims;  // dim[1..min(ndim, 4)]
  int channels = 1;           // 3 for RGB24; complex data becomes its magnitude
  std::vector<float> data;
  double type_min = 0, type_max = 0;  // the stored integer type's range; 0/0 for float, complex or scaled data
  int64_t voxels() const;
};

// Every NIfTI numeric type, RGB24, complex as magnitude; scl_slope/scl_inter
// applied as nibabel does (a slope of 0 or non-finite means no scaling).
// Memory grows with the data actually present, so a short file claiming a
// large volume costs little before it is refused as truncated.
NiftiVoxels read_nifti_data(const NiftiHeader& header, const std::string& path);

}  // namespace mm
