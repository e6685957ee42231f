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

// Bytes per voxel of a NIfTI datatype; 0 for those we do not decode.
int datatype_bytes(int datatype) {
  switch (datatype) {
    case 2: case 256: return 1;           // uint8, int8
    case 4: case 512: return 2;           // int16, uint16
    case 128: return 3;                   // RGB24
    case 8: case 16: case 768: return 4;  // int32, float32, uint32
    case 32: case 64: case 1024: case 1280: return 8;  // complex64, float64, int64, uint64
    default: return 0;
  }
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
  const int64_t ndim = nifti2 ? int64_t(rd(16, 8)) : int16_t(rd(40, 2));
  if (ndim < 1 || ndim > 7) throw ImageError(Kind::Corrupt, path, "dim[0] = " + std::to_string(ndim));
  hd.ndim = ndim;
  hd.bitpix = int16_t(rd(nifti2 ? 14 : 72, 2));
  hd.datatype = int16_t(rd(nifti2 ? 12 : 70, 2));
  hd.item_bytes = datatype_bytes(hd.datatype);
  if (hd.item_bytes == 0) throw ImageError(Kind::Unsupported, path, "NIfTI datatype " + std::to_string(hd.datatype));
  const uint64_t floats_per_voxel = hd.datatype == 128 ? 3 : 1;
  hd.magic = nifti2 ? h[4] == 'n' : (h[344] == 'n' && (h[345] == '+' || h[345] == 'i'));
  int64_t stored[8] = {};
  for (int64_t i = 1; i <= ndim; ++i) stored[i] = nifti2 ? int64_t(rd(16 + 8 * size_t(i), 8)) : int16_t(rd(40 + 2 * size_t(i), 2));
  if (!nifti2 && hd.magic && ndim >= 3 && stored[2] == 1 && stored[3] == 1 && stored[1] == -1) {
    // FreeSurfer's surface maps outgrow int16 dims: the length is in glmin (as nibabel reads them).
    stored[1] = int32_t(rd(140, 4));
    if (stored[1] <= 0) throw ImageError(Kind::Corrupt, path, "dim[1] = -1 (FreeSurfer) but glmin = " + std::to_string(stored[1]));
  } else if (!nifti2 && hd.magic && ndim >= 3 && stored[1] == 27307 && stored[2] == 1 && stored[3] == 6) {
    stored[1] = 163842, stored[3] = 1;  // FreeSurfer's ico7 surface (163842 vertices), nibabel's rule too
  }
  uint64_t voxels = 1;
  for (int64_t i = 1; i <= ndim; ++i) {
    const int64_t d = stored[i];
    hd.dim[i] = std::max<int64_t>(d, 1);
    if (i >= 5 && d > 1)  // a 5th dimension holds vectors or components per voxel: not an image we slice
      throw ImageError(Kind::Unsupported, path, std::to_string(ndim) + "-D data (dimension " + std::to_string(i) +
                                                    " has " + std::to_string(d) + " entries)");
    // Each factor is below 2^31 and the product so far below max_bytes, so
    // the checks below see the true product unless max_bytes is near 2^64.
    if (d > (int64_t(1) << 31) || __builtin_mul_overflow(voxels, uint64_t(hd.dim[i]), &voxels) ||
        voxels > max_bytes / std::max<uint64_t>(uint64_t(hd.item_bytes), floats_per_voxel * sizeof(float)))
      throw ImageError(Kind::TooLarge, path, "header dimensions ask for more than " + std::to_string(max_bytes) + " bytes");
  }
  const uint64_t bytes = voxels * uint64_t(hd.item_bytes);
  double offset;
  if (nifti2) {
    offset = double(int64_t(rd(168, 8)));
  } else {
    const uint32_t bits = uint32_t(rd(108, 4));
    float fo;
    std::memcpy(&fo, &bits, 4);
    offset = fo;
  }
  // Reading skips to the offset (inflating what precedes it), so it is bounded like the data.
  if (!(offset >= 0 && offset <= double(max_bytes))) throw ImageError(Kind::Corrupt, path, "vox_offset " + std::to_string(offset));
  const bool single_file = data_path == header_path;
  const uint64_t start = single_file ? uint64_t(std::max(offset, double(nifti2 ? 544 : 352))) : uint64_t(offset);
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
void widen(const uint8_t* p, size_t n, bool swap, float* out, NiftiVoxels& r) {
  for (size_t i = 0; i < n; ++i) out[i] = float(load<T>(p + i * sizeof(T), swap));
  if (std::is_integral<T>::value) r.type_min = double(std::numeric_limits<T>::lowest()), r.type_max = double(std::numeric_limits<T>::max());
}

// Reads up to n bytes (n < 2^31); 0 at the end of the file. Throws Corrupt on a damaged gzip stream.
uint64_t read_some(gzFile f, uint8_t* into, uint64_t n, const std::string& path) {
  const int got = gzread(f, into, unsigned(n));
  if (got < 0) {
    int code = 0;
    throw ImageError(Kind::Corrupt, path, std::string("gzip: ") + gzerror(f, &code));
  }
  return uint64_t(got);
}

// The header's data bytes, read in growing chunks so that memory follows what
// the file holds. Throws Corrupt when it holds less.
std::vector<uint8_t> read_voxel_bytes(const NiftiHeader& h, const std::string& path) {
  GzFile f = open_gz(h.data_path);
  if (!f) throw ImageError(Kind::Io, path, h.data_path == path ? "cannot open" : "cannot open its data file " + h.data_path);
  uint64_t skipped = 0, got = 0;
  std::vector<uint8_t> raw(size_t(std::min<uint64_t>(h.data_offset, 1 << 20)));
  while (skipped < h.data_offset) {  // read, not gzseek, which would hide a damaged stream
    const uint64_t n = read_some(f.get(), raw.data(), std::min<uint64_t>(raw.size(), h.data_offset - skipped), path);
    if (n == 0) break;
    skipped += n;
  }
  raw.assign(size_t(std::min<uint64_t>(h.data_bytes, 1 << 20)), 0);
  while (skipped == h.data_offset && got < h.data_bytes) {
    if (got == raw.size()) raw.resize(size_t(std::min(h.data_bytes, 2 * got)));
    const uint64_t n = read_some(f.get(), raw.data() + got, std::min<uint64_t>(raw.size() - got, 1 << 30), path);
    if (n == 0) break;
    got += n;
  }
  if (got < h.data_bytes)
    throw ImageError(Kind::Corrupt, path,
                     "truncated: the header describes " + std::to_string(h.data_bytes) + " bytes of data from offset " +
                         std::to_string(h.data_offset) + "; " + h.data_path + " holds " + std::to_string(skipped + got) +
                         " bytes");
  return raw;
}

}  // namespace

int64_t NiftiVoxels::voxels() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

NiftiVoxels read_nifti_data(const NiftiHeader& h, const std::string& path) {
  NiftiVoxels r;
  for (int64_t i = 1; i <= std::min<int64_t>(h.ndim, 4); ++i) r.dims.push_back(h.dim[i]);
  const std::vector<uint8_t> raw = read_voxel_bytes(h, path);
  const uint8_t* p = raw.data();
  const bool sw = h.swap;
  const size_t n = size_t(r.voxels());
  r.data.resize(n * (h.datatype == 128 ? 3 : 1));
  float* out = r.data.data();
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
      r.channels = 3;
      break;
    case 32:  // complex64: magnitude
      for (size_t i = 0; i < n; ++i) out[i] = std::abs(std::complex<float>(load<float>(p + 8 * i, sw), load<float>(p + 8 * i + 4, sw)));
      break;
    default:  // read_nifti_header refuses the others
      throw ImageError(Kind::Unsupported, path, "NIfTI datatype " + std::to_string(h.datatype));
  }
  if (h.scl_slope != 0 && std::isfinite(h.scl_slope) && h.datatype != 128 && !(h.scl_slope == 1 && h.scl_inter == 0)) {
    const double inter = std::isfinite(h.scl_inter) ? h.scl_inter : 0;
    for (float& v : r.data) v = float(double(v) * h.scl_slope + inter);
    r.type_min = r.type_max = 0;  // scaled values have no type range
  }
  return r;
}

}  // namespace mm
