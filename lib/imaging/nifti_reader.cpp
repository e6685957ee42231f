#include "imaging/nifti_reader.h"

#include <algorithm>
#include <array>

#include "imaging/nifti_header.h"
#include "imaging/nifti_orientation.h"

namespace mm {

using Kind = ImageError::Kind;

NiftiVolume read_nifti_volume(const std::string& path, const NiftiOptions& opt) {
  const NiftiHeader header = read_nifti_header(path, opt.max_bytes);
  const int64_t volumes = header.ndim >= 4 ? header.dim[4] : 1;
  if (opt.volume < 0 || opt.volume >= volumes)
    throw ImageError(Kind::BadOption, path,
                     "volume " + std::to_string(opt.volume) + " requested; the file has " + std::to_string(volumes));
  const NiftiOrientation orientation = nifti_orientation(header);
  const NiftiVoxels raw = read_nifti_data(header, path);
  auto dim = [&](size_t i) { return i < raw.dims.size() ? raw.dims[i] : int64_t(1); };
  NiftiVolume v;
  v.channels = raw.channels;
  v.volumes = volumes;
  v.type_min = raw.type_min;
  v.type_max = raw.type_max;
  v.stored_orientation = orientation.axes.stored_codes;
  v.orientation_source = orientation.source;
  v.warning = orientation.warning;
  const AxisMap& map = orientation.axes;
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
  proto.warning = v.warning;
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
