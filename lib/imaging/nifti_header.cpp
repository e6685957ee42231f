#include "imaging/nifti_header.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <complex>
#include <cstring>
#include <memory>
#include <vector>

#include "data/image.h"

namespace mm {

using Kind = ImageError::Kind;

namespace {

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

}  // namespace

NiftiHeader read_nifti_header(const std::string& path, uint64_t max_bytes) {
  NiftiHeader hd;
  std::string& header_path = hd.header_path;
  std::string& data_path = hd.data_path;
  header_path = data_path = path;
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
  const bool swap = hd.swap = sizeof_hdr != 348 && sizeof_hdr != 540;
  auto rd = [&](size_t at, size_t n) {  // an integer or float field in the file's byte order
    uint8_t b[8];
    for (size_t i = 0; i < n; ++i) b[i] = h[at + (swap ? n - 1 - i : i)];
    uint64_t v = 0;
    std::memcpy(&v, b, n);
    return v;
  };
  const bool nifti2 = hd.nifti2 = int32_t(rd(0, 4)) == 540;
  if (!nifti2 && int32_t(rd(0, 4)) != 348) throw ImageError(Kind::NotRecognized, path, "sizeof_hdr is neither 348 nor 540");
  if (nifti2 && got < 540) throw ImageError(Kind::Corrupt, path, "NIfTI-2 header shorter than 540 bytes");
  const int64_t bitpix = int16_t(rd(nifti2 ? 14 : 72, 2));
  const int64_t ndim = nifti2 ? int64_t(rd(16, 8)) : int16_t(rd(40, 2));
  if (ndim < 1 || ndim > 7) throw ImageError(Kind::Corrupt, path, "dim[0] = " + std::to_string(ndim));
  if (bitpix <= 0 || bitpix % 8 != 0 || bitpix > 256) throw ImageError(Kind::Corrupt, path, "bitpix " + std::to_string(bitpix));
  hd.ndim = ndim;
  hd.bitpix = int(bitpix);
  hd.datatype = int16_t(rd(nifti2 ? 12 : 70, 2));
  uint64_t bytes = uint64_t(bitpix / 8);
  for (int64_t i = 1; i <= ndim; ++i) {
    const int64_t d = nifti2 ? int64_t(rd(16 + 8 * size_t(i), 8)) : int16_t(rd(40 + 2 * size_t(i), 2));
    hd.dim[i] = std::max<int64_t>(d, 1);
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
  hd.magic = nifti2 ? h[4] == 'n' : (h[344] == 'n' && (h[345] == '+' || h[345] == 'i'));
  hd.data_offset = start;
  hd.data_bytes = bytes;
  hd.qform_code = int(qform_code);
  hd.sform_code = int(sform_code);
  for (size_t i = 0; i < 8; ++i) hd.pixdim[i] = real(76 + 4 * i, 104 + 8 * i);
  hd.scl_slope = real(112, 176);
  hd.scl_inter = real(116, 184);
  for (size_t i = 0; i < 3; ++i) hd.quatern[i] = real(256 + 4 * i, 352 + 8 * i), hd.qoffset[i] = real(268 + 4 * i, 376 + 8 * i);
  for (size_t r = 0; r < 3; ++r)
    for (size_t c = 0; c < 4; ++c) hd.srow[r][c] = real(280 + 16 * r + 4 * c, 400 + 32 * r + 8 * c);
  return hd;
}


void NiftiHeader::ras_directions(double (&out)[3][3]) const {
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) out[r][c] = r == c;
  if (sform_code > 0) {
    for (int c = 0; c < 3; ++c) {
      const double n = std::sqrt(srow[0][c] * srow[0][c] + srow[1][c] * srow[1][c] + srow[2][c] * srow[2][c]);
      if (n > 0)
        for (int r = 0; r < 3; ++r) out[r][c] = srow[r][c] / n;
    }
  } else if (qform_code > 0) {  // the NIfTI-1 quaternion, qfac from pixdim[0]
    double b = quatern[0], c = quatern[1], d = quatern[2], a = 1 - (b * b + c * c + d * d);
    if (a < 1e-7) {
      const double n = std::sqrt(b * b + c * c + d * d);
      b /= n, c /= n, d /= n, a = 0;
    } else {
      a = std::sqrt(a);
    }
    const double qfac = pixdim[0] < 0 ? -1 : 1;
    const double m[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                            {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                            {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 3; ++k) out[r][k] = m[r][k] * (k == 2 ? qfac : 1);
  }
}

namespace {

template <class T>
T load(const uint8_t* p, bool swap) {
  uint8_t b[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) b[i] = p[swap ? sizeof(T) - 1 - i : i];
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

template <class T>
void widen(const uint8_t* p, size_t n, bool swap, float* out, itkio::RawImage& r) {
  for (size_t i = 0; i < n; ++i) out[i] = float(load<T>(p + i * sizeof(T), swap));
  if (std::is_integral<T>::value) r.type_min = double(std::numeric_limits<T>::lowest()), r.type_max = double(std::numeric_limits<T>::max());
}

}  // namespace

int datatype_bytes(int datatype) {
  switch (datatype) {
    case 2: case 256: return 1;
    case 4: case 512: return 2;
    case 128: return 3;
    case 8: case 16: case 768: return 4;
    case 32: case 64: case 1024: case 1280: return 8;
    default: return 0;
  }
}

itkio::RawImage read_nifti_data(const NiftiHeader& h, const std::string& path) {
  const int item = datatype_bytes(h.datatype);
  if (item == 0) throw ImageError(Kind::Unsupported, path, "NIfTI datatype " + std::to_string(h.datatype));
  if (item * 8 != h.bitpix)  // every read below relies on it
    throw ImageError(Kind::Corrupt, path, "bitpix " + std::to_string(h.bitpix) + " for datatype " + std::to_string(h.datatype));
  itkio::RawImage r;
  for (int64_t i = 1; i <= std::min<int64_t>(h.ndim, 4); ++i) r.dims.push_back(h.dim[i]);
  const int64_t voxels = r.voxels();
  std::vector<uint8_t> raw(h.data_bytes);
  {
    GzFile f = open_gz(h.data_path);
    if (!f || gzseek(f.get(), z_off_t(h.data_offset), SEEK_SET) < 0 ||
        gzread(f.get(), raw.data(), unsigned(raw.size())) != int(raw.size()))
      throw ImageError(Kind::Corrupt, path, "cannot read the voxel data");
  }
  const uint8_t* p = raw.data();
  const bool sw = h.swap;
  r.data.resize(size_t(voxels) * (h.datatype == 128 ? 3 : 1));
  float* out = r.data.data();
  const size_t n = size_t(voxels);
  switch (h.datatype) {
    case 2: widen<uint8_t>(p, n, sw, out, r); break;
    case 4: widen<int16_t>(p, n, sw, out, r); break;
    case 8: widen<int32_t>(p, n, sw, out, r); break;
    case 16: widen<float>(p, n, sw, out, r); break;
    case 64: widen<double>(p, n, sw, out, r); break;
    case 256: widen<int8_t>(p, n, sw, out, r); break;
    case 512: widen<uint16_t>(p, n, sw, out, r); break;
    case 768: widen<uint32_t>(p, n, sw, out, r); break;
    case 1024: widen<int64_t>(p, n, sw, out, r); break;
    case 1280: widen<uint64_t>(p, n, sw, out, r); break;
    case 128:  // RGB24: three bytes per voxel
      widen<uint8_t>(p, 3 * n, false, out, r);
      r.components = 3;
      break;
    case 32:  // complex64: magnitude
      for (size_t i = 0; i < n; ++i) out[i] = std::abs(std::complex<float>(load<float>(p + 8 * i, sw), load<float>(p + 8 * i + 4, sw)));
      r.complex = true, r.components = 2;
      break;
    default:
      throw ImageError(Kind::Unsupported, path, "NIfTI datatype " + std::to_string(h.datatype));
  }
  if (h.scl_slope != 0 && std::isfinite(h.scl_slope) && h.datatype != 128 && !(h.scl_slope == 1 && h.scl_inter == 0)) {
    const double inter = std::isfinite(h.scl_inter) ? h.scl_inter : 0;
    for (float& v : r.data) v = float(double(v) * h.scl_slope + inter);
    r.type_min = r.type_max = 0;  // scaled values have no type range
  }
  double ras[3][3];
  h.ras_directions(ras);
  for (int row = 0; row < 3; ++row)
    for (int c = 0; c < 3; ++c) r.direction[row][c] = (row < 2 ? -1 : 1) * ras[row][c];  // RAS -> ITK's LPS
  return r;
}

}  // namespace mm
