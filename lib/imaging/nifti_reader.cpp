#include "imaging/nifti_reader.h"

#include <algorithm>
#include <array>
#include <cmath>

#include <zlib.h>

#include <cstring>
#include <memory>

#include "imaging/itk_io.h"

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

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// gzopen reads plain and gzipped files alike.
using GzFile = std::unique_ptr<std::remove_pointer_t<gzFile>, int (*)(gzFile)>;
GzFile open_gz(const std::string& path) { return GzFile(gzopen(path.c_str(), "rb"), gzclose); }

// How many bytes a (possibly gzipped) file holds, counting no further than `enough`.
// Throws Corrupt when a gzip stream is damaged before that.
uint64_t available_bytes(const std::string& path, uint64_t enough) {
  GzFile f = open_gz(path);
  if (!f) throw ImageError(Kind::Io, path, "cannot open");
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  while (total < enough) {
    const int n = gzread(f.get(), buf.data(), unsigned(buf.size()));
    if (n < 0) {
      int code = 0;
      throw ImageError(Kind::Corrupt, path, std::string("gzip: ") + gzerror(f.get(), &code));
    }
    if (n == 0) break;
    total += uint64_t(n);
  }
  return total;
}

struct HeaderFacts {
  bool nifti_without_orientation = false;  // NIfTI magic with qform_code = sform_code = 0
};

// Reads what ITK does not tell us from the header. Also, since ITK (nifti_clib)
// fills a short read with zeros instead of failing, checks that the data the
// header describes is all there, and refuses what ITK would mishandle.
HeaderFacts inspect_header(const std::string& path, uint64_t max_bytes) {
  std::string header_path = path, data_path = path;
  for (const char* img : {".img", ".img.gz"})
    if (ends_with(path, img)) header_path = path.substr(0, path.size() - std::strlen(img)) + (img[4] ? ".hdr.gz" : ".hdr");
  for (const char* hdr : {".hdr", ".hdr.gz"})
    if (ends_with(path, hdr)) data_path = path.substr(0, path.size() - std::strlen(hdr)) + (hdr[4] ? ".img.gz" : ".img");
  uint8_t h[540] = {};
  GzFile f = open_gz(header_path);
  if (!f) throw ImageError(Kind::Io, header_path, "cannot open");
  const int got = gzread(f.get(), h, sizeof h);
  f.reset();
  if (got < 348) throw ImageError(Kind::Corrupt, path, "header shorter than 348 bytes");
  int32_t sizeof_hdr;
  std::memcpy(&sizeof_hdr, h, 4);
  const bool swap = sizeof_hdr != 348 && sizeof_hdr != 540;
  auto rd = [&](size_t at, size_t n) {  // an integer or float field in the file's byte order
    uint8_t b[8];
    for (size_t i = 0; i < n; ++i) b[i] = h[at + (swap ? n - 1 - i : i)];
    uint64_t v = 0;
    std::memcpy(&v, b, n);
    return v;
  };
  const bool nifti2 = int32_t(rd(0, 4)) == 540;
  if (!nifti2 && int32_t(rd(0, 4)) != 348) throw ImageError(Kind::NotRecognized, path, "sizeof_hdr is neither 348 nor 540");
  if (nifti2 && got < 540) throw ImageError(Kind::Corrupt, path, "NIfTI-2 header shorter than 540 bytes");
  const int64_t bitpix = int16_t(rd(nifti2 ? 14 : 72, 2));
  const int64_t ndim = nifti2 ? int64_t(rd(16, 8)) : int16_t(rd(40, 2));
  if (ndim < 1 || ndim > 7) throw ImageError(Kind::Corrupt, path, "dim[0] = " + std::to_string(ndim));
  if (bitpix <= 0 || bitpix % 8 != 0 || bitpix > 256) throw ImageError(Kind::Corrupt, path, "bitpix " + std::to_string(bitpix));
  uint64_t bytes = uint64_t(bitpix / 8);
  for (int64_t i = 1; i <= ndim; ++i) {
    const int64_t d = nifti2 ? int64_t(rd(16 + 8 * size_t(i), 8)) : int16_t(rd(40 + 2 * size_t(i), 2));
    if (i >= 5 && d > 1)  // ITK reads dimensions 5+ as vector voxels, and its 5.2 reader frees memory it does not own then
      throw ImageError(Kind::Unsupported, path, std::to_string(ndim) + "-D data (dimension " + std::to_string(i) +
                                                    " has " + std::to_string(d) + " entries)");
    bytes *= uint64_t(std::max<int64_t>(d, 1));
    if (d > (int64_t(1) << 31) || bytes > max_bytes)
      throw ImageError(Kind::TooLarge, path, "header dimensions ask for more than " + std::to_string(max_bytes) + " bytes");
  }
  double offset;
  if (nifti2) {
    offset = double(int64_t(rd(168, 8)));
  } else {
    const uint32_t bits = uint32_t(rd(108, 4));
    float fo;
    std::memcpy(&fo, &bits, 4);
    offset = fo;
  }
  if (!(offset >= 0 && offset < 1e12)) throw ImageError(Kind::Corrupt, path, "vox_offset " + std::to_string(offset));
  const bool single_file = data_path == header_path;
  const uint64_t start = single_file ? uint64_t(std::max(offset, double(nifti2 ? 544 : 352))) : uint64_t(std::max(offset, 0.0));
  const uint64_t have = available_bytes(data_path, start + bytes);
  if (have < start + bytes)
    throw ImageError(Kind::Corrupt, path,
                     "truncated: the header describes " + std::to_string(bytes) + " bytes of data from offset " +
                         std::to_string(start) + "; " + data_path + " holds " + std::to_string(have) + " bytes");
  // VNL aborts the process on a non-finite matrix (ITK builds one from these
  // fields), so non-finite geometry stops here. Only the fields in use count.
  auto real = [&](size_t nifti1_at, size_t nifti2_at) {
    if (!nifti2) {
      const uint32_t bits = uint32_t(rd(nifti1_at, 4));
      float v;
      std::memcpy(&v, &bits, 4);
      return double(v);
    }
    const uint64_t bits = rd(nifti2_at, 8);
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  };
  const int64_t qform_code = nifti2 ? int32_t(rd(344, 4)) : int16_t(rd(252, 2));
  const int64_t sform_code = nifti2 ? int32_t(rd(348, 4)) : int16_t(rd(254, 2));
  std::vector<double> geometry;
  for (size_t i = 0; i < 8; ++i) geometry.push_back(real(76 + 4 * i, 104 + 8 * i));  // pixdim
  if (qform_code != 0)
    for (size_t i = 0; i < 6; ++i) geometry.push_back(real(256 + 4 * i, 352 + 8 * i));  // quatern_*, qoffset_*
  if (sform_code != 0)
    for (size_t i = 0; i < 12; ++i) geometry.push_back(real(280 + 4 * i, 400 + 8 * i));  // srow_x/y/z
  for (double g : geometry)
    if (!std::isfinite(g)) throw ImageError(Kind::Corrupt, path, "non-finite voxel size, qform or sform");
  HeaderFacts facts;
  const bool magic = nifti2 ? h[4] == 'n' : (h[344] == 'n' && (h[345] == '+' || h[345] == 'i'));
  facts.nifti_without_orientation = magic && qform_code == 0 && sform_code == 0;
  return facts;
}

}  // namespace

NiftiVolume read_nifti_volume(const std::string& path, const NiftiOptions& opt) {
  const HeaderFacts facts = inspect_header(path, opt.max_bytes);
  itkio::RawImage raw = itkio::read_with_itk(path, itkio::Format::Nifti, opt.max_bytes);
  if (facts.nifti_without_orientation) {
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
  auto min_max = [&] {  // over the whole volume: every slice shares one window
    double lo = INFINITY, hi = -INFINITY;
    for (float x : v.data)
      if (!std::isnan(x)) lo = std::min(lo, double(x)), hi = std::max(hi, double(x));
    return lo <= hi ? std::make_pair(lo, hi) : std::make_pair(0.0, 0.0);
  };
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
