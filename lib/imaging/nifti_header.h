#pragma once
// The NIfTI-1/-2 (and Analyze) header, read and checked by us before ITK sees
// the file: ITK zero-fills truncated data, aborts on non-finite geometry and
// mishandles 5-D files, and Debian's ITK cannot read NIfTI-2 at all, which
// read_nifti_data() decodes instead.
#include <cstdint>
#include <string>

#include "imaging/itk_io.h"

namespace mm {

struct NiftiHeader {
  std::string header_path, data_path;  // the same file for .nii; .hdr and .img for pairs
  bool nifti2 = false, swap = false;    // swap: the file's byte order is not this machine's
  bool magic = false;                   // "n+1"/"ni1"/"n+2": NIfTI rather than Analyze 7.5
  int64_t ndim = 0, dim[8] = {};
  int datatype = 0, bitpix = 0;
  uint64_t data_offset = 0, data_bytes = 0;  // where the voxels start in data_path and how many bytes they take
  double pixdim[8] = {}, scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  double quatern[3] = {}, qoffset[3] = {}, srow[3][4] = {};

  bool without_orientation() const { return magic && qform_code == 0 && sform_code == 0; }
  // Direction cosines of the voxel axes in RAS (columns), nibabel's way: the
  // sform when sform_code > 0, else the qform, else identity (NIfTI-1 method 1).
  void ras_directions(double (&out)[3][3]) const;
};

// Reads and checks the header, and that the data it describes is all present
// (counting no further than needed). Throws ImageError naming `path`.
NiftiHeader read_nifti_header(const std::string& path, uint64_t max_bytes);

// Decodes the voxels ourselves (used for NIfTI-2): every NIfTI numeric type,
// RGB24, complex as magnitude; scl_slope/scl_inter applied as nibabel does
// (a slope of 0 or NaN means no scaling).
itkio::RawImage read_nifti_data(const NiftiHeader& header, const std::string& path);

}  // namespace mm
