#include "imaging/itk_io.h"

#include <itkBMPImageIO.h>
#include <itkJPEGImageIO.h>
#include <itkPNGImageIO.h>
#include <itkTIFFImageIO.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "data/image.h"

namespace mm::itkio {

using Kind = ImageError::Kind;
using Component = itk::IOComponentEnum;

int64_t RawImage::voxels() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

namespace {

itk::ImageIOBase::Pointer make_io(Format f) {
  // Each format's ImageIO directly, not the factory: only the reader asked for
  // runs, and nothing depends on which factories a program registered.
  switch (f) {
    case Format::Png: return itk::PNGImageIO::New().GetPointer();
    case Format::Jpeg: return itk::JPEGImageIO::New().GetPointer();
    case Format::Tiff: return itk::TIFFImageIO::New().GetPointer();
    case Format::Bmp: return itk::BMPImageIO::New().GetPointer();
  }
  return nullptr;
}

template <class T>
void widen(const void* src, size_t n, float* dst) {
  const T* s = static_cast<const T*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]);
}

template <class T>
void set_range(RawImage& r) {
  r.type_min = double(std::numeric_limits<T>::lowest());
  r.type_max = double(std::numeric_limits<T>::max());
}

// Converts n components of the given type to float and records the type's range.
void to_float(Component type, const void* src, size_t n, float* dst, RawImage& r) {
  switch (type) {
    case Component::UCHAR: widen<uint8_t>(src, n, dst), set_range<uint8_t>(r); break;
    case Component::CHAR: widen<int8_t>(src, n, dst), set_range<int8_t>(r); break;
    case Component::USHORT: widen<uint16_t>(src, n, dst), set_range<uint16_t>(r); break;
    case Component::SHORT: widen<int16_t>(src, n, dst), set_range<int16_t>(r); break;
    case Component::UINT: widen<uint32_t>(src, n, dst), set_range<uint32_t>(r); break;
    case Component::INT: widen<int32_t>(src, n, dst), set_range<int32_t>(r); break;
    case Component::ULONG: widen<unsigned long>(src, n, dst), set_range<unsigned long>(r); break;
    case Component::LONG: widen<long>(src, n, dst), set_range<long>(r); break;
    case Component::ULONGLONG: widen<unsigned long long>(src, n, dst), set_range<unsigned long long>(r); break;
    case Component::LONGLONG: widen<long long>(src, n, dst), set_range<long long>(r); break;
    case Component::FLOAT: widen<float>(src, n, dst); break;
    case Component::DOUBLE: widen<double>(src, n, dst); break;
    default: throw Error("unsupported component type " + itk::ImageIOBase::GetComponentTypeAsString(type));
  }
}

}  // namespace

RawImage read_with_itk(const std::string& path, Format format, uint64_t max_bytes) {
  static const bool quiet = [] {  // problems reach the caller as ImageError; ITK's console warnings would repeat them
    itk::Object::SetGlobalWarningDisplay(false);
    return true;
  }();
  (void)quiet;
  itk::ImageIOBase::Pointer io = make_io(format);
  RawImage r;
  try {
    if (!io->CanReadFile(path.c_str()))
      throw ImageError(Kind::NotRecognized, path, std::string(io->GetNameOfClass()) + " cannot read it");
    io->SetFileName(path);
    io->ReadImageInformation();
    const unsigned ndim = io->GetNumberOfDimensions();
    uint64_t voxels = 1;
    for (unsigned i = 0; i < ndim; ++i) {
      const uint64_t d = io->GetDimensions(i);
      if (d == 0 || d > (uint64_t(1) << 31)) throw ImageError(Kind::Corrupt, path, "dimension " + std::to_string(d));
      voxels *= d;
      if (voxels > max_bytes) break;  // stops the product before it can overflow
      r.dims.push_back(int64_t(d));
    }
    r.components = int(io->GetNumberOfComponents());
    const Component type = io->GetComponentType();
    const uint64_t component_size = io->GetComponentSize();
    const uint64_t raw_bytes = voxels * r.components * component_size;
    const uint64_t float_bytes = voxels * r.components * sizeof(float);
    if (r.dims.size() != ndim || raw_bytes > max_bytes || float_bytes > max_bytes)
      throw ImageError(Kind::TooLarge, path,
                       "header asks for " + std::to_string(std::max(raw_bytes, float_bytes)) + " bytes (limit " +
                           std::to_string(max_bytes) + ")");
    if (r.components < 1 || r.components > 4)
      throw ImageError(Kind::Unsupported, path, std::to_string(r.components) + " components per voxel");
    const itk::IOPixelEnum pixel = io->GetPixelType();
    if (pixel != itk::IOPixelEnum::SCALAR && pixel != itk::IOPixelEnum::RGB && pixel != itk::IOPixelEnum::RGBA &&
        pixel != itk::IOPixelEnum::COMPLEX)
      throw ImageError(Kind::Unsupported, path, "voxels of type " + itk::ImageIOBase::GetPixelTypeAsString(pixel));
    r.complex = pixel == itk::IOPixelEnum::COMPLEX;
    r.component_type = itk::ImageIOBase::GetComponentTypeAsString(type);
    itk::ImageIORegion region(ndim);
    for (unsigned i = 0; i < ndim; ++i) {
      region.SetIndex(i, 0);
      region.SetSize(i, r.dims[i]);
    }
    io->SetIORegion(region);
    std::vector<uint8_t> raw(raw_bytes);
    io->Read(raw.data());
    std::vector<float> values(voxels * r.components);
    to_float(type, raw.data(), values.size(), values.data(), r);
    if (r.complex) {  // magnitude: a classifier needs one real channel
      r.data.resize(voxels);
      for (uint64_t i = 0; i < voxels; ++i) r.data[i] = std::hypot(values[2 * i], values[2 * i + 1]);
      r.type_min = r.type_max = 0;
    } else {
      r.data = std::move(values);
    }
  } catch (const itk::ExceptionObject& e) {
    throw ImageError(Kind::Corrupt, path, std::string("ITK: ") + e.GetDescription());
  } catch (const std::bad_alloc&) {
    throw ImageError(Kind::TooLarge, path, "out of memory");
  }
  return r;
}

}  // namespace mm::itkio
