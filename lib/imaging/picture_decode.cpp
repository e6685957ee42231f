#include "imaging/picture_decode.h"

#include <limits>
#include <new>

#include "imaging/picture_formats.h"

namespace mm::picture {

using Kind = ImageError::Kind;

int64_t RawImage::voxels() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

namespace {

template <class T>
void widen(const void* src, size_t n, RawImage& r, const char* name) {
  const T* s = static_cast<const T*>(src);
  r.data.resize(n);
  for (size_t i = 0; i < n; ++i) r.data[i] = float(s[i]);
  if (std::numeric_limits<T>::is_integer) {
    r.type_min = double(std::numeric_limits<T>::lowest());
    r.type_max = double(std::numeric_limits<T>::max());
  }
  r.component_type = name;
}

}  // namespace

void store_samples(SampleType type, const void* src, size_t n, RawImage& r) {
  switch (type) {
    case SampleType::U8: return widen<uint8_t>(src, n, r, "unsigned_char");
    case SampleType::I8: return widen<int8_t>(src, n, r, "char");
    case SampleType::U16: return widen<uint16_t>(src, n, r, "unsigned_short");
    case SampleType::I16: return widen<int16_t>(src, n, r, "short");
    case SampleType::U32: return widen<uint32_t>(src, n, r, "unsigned_int");
    case SampleType::I32: return widen<int32_t>(src, n, r, "int");
    case SampleType::F32: return widen<float>(src, n, r, "float");
  }
}

ImageError too_large(const std::string& path, uint64_t bytes, uint64_t max_bytes) {
  return ImageError(Kind::TooLarge, path,
                    "header asks for " + std::to_string(bytes) + " bytes (limit " + std::to_string(max_bytes) + ")");
}

RawImage decode_picture(const std::string& path, Format format, uint64_t max_bytes, int64_t draft_side) {
  try {
    switch (format) {
      case Format::Png: return read_png(path, max_bytes);
      case Format::Jpeg: return read_jpeg(path, max_bytes, draft_side);
      case Format::Tiff: return read_tiff(path, max_bytes);
      case Format::Bmp: return read_bmp(path, max_bytes);
    }
  } catch (const std::bad_alloc&) {
    throw ImageError(Kind::TooLarge, path, "out of memory");
  }
  throw ImageError(Kind::NotRecognized, path, "not a picture format");
}

}  // namespace mm::picture
