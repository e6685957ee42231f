#include "imaging/nifti_reader.h"

#include <algorithm>
#include <array>
#include <cmath>

#include <cstring>

#include "imaging/itk_io.h"
#include "imaging/nifti_header.h"

namespace mm {

using Kind = ImageError::Kind;

namespace {

// Which voxel axis runs along each RAS world axis, and whether it runs backwards.
struct AxisMap {
  std::array<int, 3> voxel_axis{0, 1, 2};
  std::array<bool, 3> flipped{false, false, false};
  std::string stored_codes;  // per voxel axis: the direction it points, e.g. "LPS"
};

// Greedy closest-axis assignment (as nibabel's io_orientation): repeatedly take
// the largest remaining |cosine|, so each voxel axis maps to one world axis.
AxisMap closest_canonical(const double (&lps)[3][3]) {
  double ras[3][3];
  for (int w = 0; w < 3; ++w)
    for (int a = 0; a < 3; ++a) ras[w][a] = (w < 2 ? -1.0 : 1.0) * lps[w][a];  // ITK's LPS -> RAS
  AxisMap m;
  bool world_used[3] = {}, axis_used[3] = {};
  for (int step = 0; step < 3; ++step) {
    int best_w = -1, best_a = -1;
    double best = -1;
    for (int w = 0; w < 3; ++w)
      for (int a = 0; a < 3; ++a)
        if (!world_used[w] && !axis_used[a] && std::fabs(ras[w][a]) > best) best = std::fabs(ras[w][a]), best_w = w, best_a = a;
    world_used[best_w] = axis_used[best_a] = true;
    m.voxel_axis[size_t(best_w)] = best_a;
    m.flipped[size_t(best_w)] = ras[best_w][best_a] < 0;
  }
  m.stored_codes = "???";
  const char* letters[3][2] = {{"R", "L"}, {"A", "P"}, {"S", "I"}};
  for (int w = 0; w < 3; ++w) m.stored_codes[size_t(m.voxel_axis[size_t(w)])] = letters[w][m.flipped[size_t(w)]][0];
  return m;
}

}  // namespace

NiftiVolume read_nifti_volume(const std::string& path, const NiftiOptions& opt) {
  const NiftiHeader header = read_nifti_header(path, opt.max_bytes);
  // NIfTI-2 is ours to decode: Debian's ITK 5.2 links nifti_clib 1, which does not know it.
  itkio::RawImage raw =
      header.nifti2 ? read_nifti_data(header, path) : itkio::read_with_itk(path, itkio::Format::Nifti, opt.max_bytes);
  if (header.without_orientation()) {
    // NIfTI-1 "method 1": voxel axes are RAS (x = pixdim[1] * i, ...). ITK
    // reads such files as LPS, nibabel's affine as LAS (Analyze's habit); the
    // standard says RAS, and that is what we use.
    const double lps_of_ras[3][3] = {{-1, 0, 0}, {0, -1, 0}, {0, 0, 1}};
    std::memcpy(raw.direction, lps_of_ras, sizeof lps_of_ras);
  }
  const size_t ndim = raw.dims.size();
  auto dim = [&](size_t i) { return i < ndim ? raw.dims[i] : int64_t(1); };
  for (size_t i = 4; i < ndim; ++i)
    if (raw.dims[i] != 1)
      throw ImageError(Kind::Unsupported, path, std::to_string(ndim) + "-D data (dimension " + std::to_string(i + 1) +
                                                    " has " + std::to_string(raw.dims[i]) + " entries)");
  NiftiVolume v;
  v.channels = raw.channels();
  v.volumes = dim(3);
  v.type_min = raw.type_min;
  v.type_max = raw.type_max;
  if (opt.volume < 0 || opt.volume >= v.volumes)
    throw ImageError(Kind::BadOption, path,
                     "volume " + std::to_string(opt.volume) + " requested; the file has " + std::to_string(v.volumes));
  const AxisMap map = closest_canonical(raw.direction);
  v.stored_orientation = map.stored_codes;
  const std::array<int64_t, 3> in_size{dim(0), dim(1), dim(2)};
  const std::array<int64_t, 3> in_stride{v.channels, dim(0) * v.channels, dim(0) * dim(1) * v.channels};
  const int64_t base = opt.volume * dim(0) * dim(1) * dim(2) * v.channels;
  std::array<int64_t, 3> out_size, step, start;
  for (size_t w = 0; w < 3; ++w) {
    const size_t a = size_t(map.voxel_axis[w]);
    out_size[w] = in_size[a];
    step[w] = map.flipped[w] ? -in_stride[a] : in_stride[a];
    start[w] = map.flipped[w] ? (in_size[a] - 1) * in_stride[a] : 0;
  }
  v.nx = out_size[0], v.ny = out_size[1], v.nz = out_size[2];
  v.data.resize(size_t(v.nx * v.ny * v.nz * v.channels));
  float* out = v.data.data();
  for (int64_t z = 0; z < v.nz; ++z)
    for (int64_t y = 0; y < v.ny; ++y) {
      const int64_t row = base + start[0] + start[1] + start[2] + z * step[2] + y * step[1];
      for (int64_t x = 0; x < v.nx; ++x)
        for (int64_t c = 0; c < v.channels; ++c) *out++ = raw.data[size_t(row + x * step[0] + c)];
    }
  return v;
}

namespace {

void choose_window(Image& img, const NiftiVolume& v, const WindowOptions& w, const std::string& path) {
  using Mode = WindowOptions::Mode;
  // Over the whole volume: every slice shares one window.
  auto min_max = [&] { return min_max_ignoring_nan(v.data.data(), v.data.size()); };
  switch (w.mode) {
    case Mode::Default:
    case Mode::MinMax: {
      const auto [lo, hi] = min_max();
      img.window_low = lo, img.window_high = hi, img.window_source = "min-max (volume)";
      break;
    }
    case Mode::FullRange:
      if (v.type_max > v.type_min) {
        img.window_low = v.type_min, img.window_high = v.type_max, img.window_source = "full range";
      } else {  // float data has no range of its own
        const auto [lo, hi] = min_max();
        img.window_low = lo, img.window_high = hi, img.window_source = "min-max (volume)";
      }
      break;
    case Mode::Explicit:
      set_window_center_width(img, w.center, w.width);
      img.window_source = "explicit";
      break;
    case Mode::File:
      throw ImageError(Kind::BadOption, path, "NIfTI files carry no window we read; use min-max, explicit or full range");
  }
}

}  // namespace

std::vector<Image> slice_nifti(const NiftiVolume& v, const NiftiOptions& opt, const std::string& path) {
  if (opt.axis < 0 || opt.axis > 2) throw ImageError(Kind::BadOption, path, "axis " + std::to_string(opt.axis));
  const int64_t n = opt.axis == 0 ? v.nx : opt.axis == 1 ? v.ny : v.nz;
  int64_t first = 0, last = n;
  switch (opt.slices) {
    case NiftiOptions::Slices::Middle: first = n / 2, last = first + 1; break;
    case NiftiOptions::Slices::Index:
      if (opt.index < 0 || opt.index >= n)
        throw ImageError(Kind::BadOption, path, "slice " + std::to_string(opt.index) + " of " + std::to_string(n));
      first = opt.index, last = first + 1;
      break;
    case NiftiOptions::Slices::Range:
      first = std::clamp<int64_t>(opt.first, 0, n), last = std::clamp<int64_t>(opt.last, first, n);
      break;
    case NiftiOptions::Slices::All: break;
  }
  // Rows x columns of a slice and the volume coordinates of pixel (r, c).
  const int64_t rows = opt.axis == 2 ? v.ny : v.nz, cols = opt.axis == 0 ? v.ny : v.nx;
  auto voxel = [&](int64_t s, int64_t r, int64_t c) -> int64_t {
    int64_t x, y, z;
    if (opt.axis == 2) x = c, y = v.ny - 1 - r, z = s;       // axial: anterior at the top
    else if (opt.axis == 1) x = c, y = s, z = v.nz - 1 - r;  // coronal: superior at the top
    else x = s, y = c, z = v.nz - 1 - r;                     // sagittal: anterior on the right
    return ((z * v.ny + y) * v.nx + x) * v.channels;
  };
  Image proto;
  choose_window(proto, v, opt.window, path);
  proto.source_path = path;
  proto.format = "nifti";
  proto.slice_axis = opt.axis;
  proto.volume_index = v.volumes > 1 ? opt.volume : -1;
  std::vector<Image> out;
  for (int64_t s = first; s < last; ++s) {
    Image img = proto;
    img.slice_index = s;
    img.height = rows, img.width = cols, img.channels = v.channels;
    img.pixels.resize(size_t(img.numel()));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t ch = 0; ch < v.channels; ++ch) img.at(r, c, ch) = v.data[size_t(voxel(s, r, c) + ch)];
    out.push_back(std::move(img));
  }
  return out;
}

std::vector<Image> read_nifti(const std::string& path, const NiftiOptions& opt) {
  return slice_nifti(read_nifti_volume(path, opt), opt, path);
}

}  // namespace mm
