#pragma once
// How a NIfTI/Analyze volume's voxel axes map onto the RAS world, chosen by us
// from the header (never by ITK: its orthonormality check runs an SVD that can
// loop for ever on finite but huge sform entries, and it refuses sheared
// affines that nibabel reads).
//
// The source is nibabel's (sform, else qform, else none), except that a source
// whose numbers cannot give an orientation (non-finite, rank-deficient, a
// quaternion out of range) is skipped for the next one, with a warning, where
// nibabel fails. The axis mapping is nibabel's io_orientation: the nearest axis
// permutation of the affine's orthogonal polar factor, so sheared and skewed
// affines reorient as nibabel's as_closest_canonical does.
#include <array>
#include <string>

namespace mm {

struct NiftiHeader;

// Which voxel axis runs along each RAS world axis, and whether it runs backwards.
struct AxisMap {
  std::array<int, 3> voxel_axis{0, 1, 2};
  std::array<bool, 3> flipped{false, false, false};
  std::string stored_codes = "RAS";  // per voxel axis: the direction it points, e.g. "LPS"
};

struct NiftiOrientation {
  AxisMap axes;
  std::string source;   // "sform", "qform", "none (NIfTI-1 method 1: RAS)", "Analyze 7.5 (LAS)"
  std::string warning;  // why a source the header names was passed over; empty when none was
};

// The orientation the header gives, per the rule above. Never throws.
NiftiOrientation nifti_orientation(const NiftiHeader& header);

// nibabel's io_orientation for a 3x3 matrix whose columns are the voxel axes in
// RAS (zooms and shears included). False when the matrix has no orientation:
// non-finite, or its columns (scaled to unit length) are linearly dependent to
// within 1e-6 of the largest singular value; `why` then says which.
bool nearest_axis_permutation(const double (&ras)[3][3], AxisMap& out, std::string* why = nullptr);

// The orthogonal polar factor U V^T of a = U S V^T and the singular values
// (descending), by one-sided Jacobi with a fixed sweep cap, so it ends on any
// finite input. Entries of a should be of order 1 (callers scale columns first).
void polar_factor(const double (&a)[3][3], double (&r)[3][3], double (&singular)[3]);

}  // namespace mm
