#include "imaging/nifti_orientation.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <utility>

#include "imaging/nifti_header.h"

namespace mm {

void polar_factor(const double (&a)[3][3], double (&r)[3][3], double (&singular)[3]) {
  double w[3][3], v[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  std::copy(&a[0][0], &a[0][0] + 9, &w[0][0]);
  auto rotate = [](double (&m)[3][3], int p, int q, double c, double s) {
    for (int i = 0; i < 3; ++i) {
      const double mp = m[i][p], mq = m[i][q];
      m[i][p] = c * mp - s * mq;
      m[i][q] = s * mp + c * mq;
    }
  };
  // One-sided Jacobi: rotate column pairs of w until they are orthogonal; then
  // w = U S and a = U S V^T. A 3x3 converges in a handful of sweeps; the cap only
  // guards against inputs that keep rounding noise alive.
  for (int sweep = 0; sweep < 32; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < 2; ++p)
      for (int q = p + 1; q < 3; ++q) {
        double alpha = 0, beta = 0, gamma = 0;
        for (int i = 0; i < 3; ++i) alpha += w[i][p] * w[i][p], beta += w[i][q] * w[i][q], gamma += w[i][p] * w[i][q];
        if (!(std::fabs(gamma) > 1e-15 * std::sqrt(alpha * beta))) continue;  // orthogonal (or NaN: nothing to do)
        rotated = true;
        const double zeta = (beta - alpha) / (2 * gamma);
        const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::hypot(1.0, zeta));
        const double c = 1 / std::hypot(1.0, t);
        rotate(w, p, q, c, c * t);
        rotate(v, p, q, c, c * t);
      }
    if (!rotated) break;
  }
  int order[3] = {0, 1, 2};
  double norm[3];
  for (int j = 0; j < 3; ++j) norm[j] = std::sqrt(w[0][j] * w[0][j] + w[1][j] * w[1][j] + w[2][j] * w[2][j]);
  std::stable_sort(order, order + 3, [&](int x, int y) { return norm[x] > norm[y]; });
  for (int k = 0; k < 3; ++k) singular[k] = norm[order[k]];
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 3; ++k) {
      r[i][k] = 0;
      for (int j = 0; j < 3; ++j)
        if (norm[j] > 0) r[i][k] += w[i][j] / norm[j] * v[k][j];
    }
}

bool nearest_axis_permutation(const double (&ras)[3][3], AxisMap& out, std::string* why) {
  auto fail = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  // Unit columns, as nibabel divides by the zooms; scaled by the largest entry
  // first so that squaring cannot overflow (NIfTI-2 stores doubles up to 1e308).
  double unit[3][3];
  for (int c = 0; c < 3; ++c) {
    double largest = 0;
    for (int r = 0; r < 3; ++r) {
      if (!std::isfinite(ras[r][c])) return fail("non-finite entries");
      largest = std::max(largest, std::fabs(ras[r][c]));
    }
    if (largest == 0) return fail("a zero column");
    double norm = 0;
    for (int r = 0; r < 3; ++r) unit[r][c] = ras[r][c] / largest, norm += unit[r][c] * unit[r][c];
    for (int r = 0; r < 3; ++r) unit[r][c] /= std::sqrt(norm);
  }
  double rot[3][3], singular[3];
  polar_factor(unit, rot, singular);
  // nibabel keeps singular values above 3 eps; a float32 header rounds a
  // singular matrix to one with singular values near 1e-8, hence 1e-6.
  if (!(singular[2] > 1e-6 * singular[0])) return fail("linearly dependent columns");
  // Strongest voxel axis first (stable on ties), each taking its largest
  // |component| among the world axes not yet taken: nibabel 5's order.
  int order[3] = {0, 1, 2};
  double strongest[3];
  for (int c = 0; c < 3; ++c) strongest[c] = std::max({rot[0][c] * rot[0][c], rot[1][c] * rot[1][c], rot[2][c] * rot[2][c]});
  std::stable_sort(order, order + 3, [&](int x, int y) { return strongest[x] > strongest[y]; });
  AxisMap m;
  bool world_taken[3] = {}, axis_placed[3] = {};
  for (int c : order) {
    int best = 0;
    for (int r = 1; r < 3; ++r)
      if (std::fabs(rot[r][c]) > std::fabs(rot[best][c])) best = r;
    if (!(std::fabs(rot[best][c]) > 1e-8)) continue;  // nibabel's allclose(col, 0): left for the loop below
    m.voxel_axis[size_t(best)] = c;
    m.flipped[size_t(best)] = rot[best][c] < 0;
    world_taken[best] = axis_placed[c] = true;
    for (int k = 0; k < 3; ++k) rot[best][k] = 0;
  }
  for (int c = 0; c < 3; ++c)  // not reached with full rank; kept so the map is always a permutation
    for (int w = 0; w < 3 && !axis_placed[c]; ++w)
      if (!world_taken[w]) m.voxel_axis[size_t(w)] = c, m.flipped[size_t(w)] = false, world_taken[w] = axis_placed[c] = true;
  const char letters[3][2] = {{'R', 'L'}, {'A', 'P'}, {'S', 'I'}};
  for (size_t w = 0; w < 3; ++w) m.stored_codes[size_t(m.voxel_axis[w])] = letters[w][m.flipped[w]];
  out = m;
  return true;
}

namespace {

// The qform's voxel axes in RAS (unit columns), nibabel's way: w from b, c, d
// (0 when 1 - |bcd|^2 is within 3 eps of 0), and qfac -1 only when pixdim[0]
// is -1 (nibabel sets any other value to 1). The zooms are left out: nibabel
// makes them positive on load, so they never change the orientation.
bool qform_axes(const NiftiHeader& h, double (&out)[3][3], std::string& why) {
  const double b = h.quatern[0], c = h.quatern[1], d = h.quatern[2];
  if (!std::isfinite(b) || !std::isfinite(c) || !std::isfinite(d)) return why = "non-finite quaternion", false;
  const double w2 = 1 - (b * b + c * c + d * d);
  double w = 0;
  if (std::fabs(w2) >= 3 * (h.nifti2 ? DBL_EPSILON : FLT_EPSILON)) {
    if (w2 < 0) return why = "quaternion (b, c, d) longer than 1", false;
    w = std::sqrt(w2);
  }
  const double s = 2 / (w * w + b * b + c * c + d * d);  // about 2: |w, b, c, d| is 1 within 3 eps
  const double qfac = h.pixdim[0] == -1 ? -1 : 1;
  const double rot[3][3] = {{1 - s * (c * c + d * d), s * (b * c - w * d), s * (b * d + w * c)},
                            {s * (b * c + w * d), 1 - s * (b * b + d * d), s * (c * d - w * b)},
                            {s * (b * d - w * c), s * (c * d + w * b), 1 - s * (b * b + c * c)}};
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) out[r][k] = rot[r][k] * (k == 2 ? qfac : 1);
  return true;
}

bool known_code(int code) { return code >= 1 && code <= 5; }  // nibabel treats others as 0 (unknown)

}  // namespace

NiftiOrientation nifti_orientation(const NiftiHeader& h) {
  NiftiOrientation o;
  if (!h.magic) {  // Analyze 7.5 has no orientation fields; nibabel, SPM and FSL read it as LAS
    o.axes.flipped[0] = true, o.axes.stored_codes = "LAS", o.source = "Analyze 7.5 (LAS)";
    return o;
  }
  auto pass_over = [&](const std::string& what) { o.warning += (o.warning.empty() ? "" : "; ") + what; };
  auto chosen = [&](const char* source) {
    o.source = source;
    if (!o.warning.empty()) o.warning = "orientation from " + o.source + ": " + o.warning;
    return o;
  };
  std::string why;
  if (h.sform_code != 0) {
    double s[3][3];
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) s[r][c] = h.srow[r][c];
    if (!known_code(h.sform_code))
      pass_over("sform ignored: sform_code " + std::to_string(h.sform_code) + " is not a NIfTI code");
    else if (nearest_axis_permutation(s, o.axes, &why))
      return chosen("sform");
    else
      pass_over("sform unusable (" + why + ")");
  }
  if (h.qform_code != 0) {
    double q[3][3];
    if (!known_code(h.qform_code))
      pass_over("qform ignored: qform_code " + std::to_string(h.qform_code) + " is not a NIfTI code");
    else if (qform_axes(h, q, why) && nearest_axis_permutation(q, o.axes, &why))
      return chosen("qform");
    else
      pass_over("qform unusable (" + why + ")");
  }
  o.axes = AxisMap();
  return chosen("none (NIfTI-1 method 1: RAS)");
}

}  // namespace mm
