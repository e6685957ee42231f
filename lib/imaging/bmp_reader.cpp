#include <itkBMPImageIO.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <optional>
#include <vector>

#include "core/byte_order.h"
#include "imaging/picture_formats.h"

namespace mm::picture {

using Kind = ImageError::Kind;

namespace {

// ITK's RLE8 decoder bounds nothing: a run longer than its row, or an end-of-line or
// delta past the image, writes outside it. This walks the stream as ITK's loop does
// (itkBMPImageIO.cxx, Read) and refuses the first step that would leave the image
// or the data; a valid stream never takes one.
void check_bmp_rle(const std::string& path, const std::vector<uint8_t>& data, int64_t width, int64_t height) {
  size_t i = 0;
  const auto next = [&] {
    if (i >= data.size()) throw ImageError(Kind::Corrupt, path, "BMP RLE data ends inside a run");
    return data[i++];
  };
  int64_t row = height - 1, column = 0;  // the image buffer's; the stream starts at the bottom row
  const auto run = [&](int64_t pixels) {
    if (row < 0 || row >= height || column + pixels > width)
      throw ImageError(Kind::Corrupt, path,
                       "BMP RLE run of " + std::to_string(pixels) + " pixels at row " + std::to_string(row) +
                           ", column " + std::to_string(column) + " leaves the " + std::to_string(width) + " x " +
                           std::to_string(height) + " image");
    column += pixels;
  };
  while (i < data.size()) {
    const uint8_t count = next(), code = next();
    if (count > 0) {
      run(count);
    } else if (code == 0) {  // end of line
      --row, column = 0;
    } else if (code == 1) {  // end of bitmap
      break;
    } else if (code == 2) {  // delta
      column += next();
      row -= next();
    } else {  // `code` literal pixels, padded to an even length
      run(code);
      for (int k = 0; k < code; ++k) next();
      i += code % 2;
    }
  }
}

// ITK's BMP reader trusts the header. Uncompressed, it reads every row the header
// claims wherever the file ends (a 50-byte file claiming 16 x 262160 pixels costs
// seconds); RLE8, it decodes the data size the header claims, past the end of the
// file into its buffer's uninitialised rest. Both are refused here: the pixel rows
// or the RLE data must lie in the file (the last row's padding may be missing).
// rle: ITK takes its RLE8 path (compression 1, 3 components).
void check_bmp(const std::string& path, int64_t width, int64_t height, bool rle) {
  std::ifstream in(path, std::ios::binary);
  uint8_t header[54] = {};
  in.read(reinterpret_cast<char*>(header), sizeof header);
  const uint32_t info_size = load_le32(header + 14);  // 12 (OS/2) or 40, as ITK checked
  if (in.gcount() < (info_size == 12 ? 26 : 54))
    throw ImageError(Kind::Corrupt, path, "BMP header truncated");  // ITK would use half-read fields
  in.clear();
  in.seekg(0, std::ios::end);
  const int64_t file_size = in.tellg();
  const int64_t offset = int32_t(load_le32(header + 10));
  const int64_t row_bytes = width * load_le16(header + (info_size == 12 ? 24 : 28)) / 8;
  const int64_t bytes = rle ? int32_t(load_le32(header + 34)) : (row_bytes + 3) / 4 * 4 * (height - 1) + row_bytes;
  if (offset < 0 || bytes < 0 || offset + bytes > file_size)
    throw ImageError(Kind::Corrupt, path,
                     std::string("BMP ") + (rle ? "RLE data" : "pixel rows") + " of " + std::to_string(bytes) +
                         " bytes at offset " + std::to_string(offset) + " do not fit in the file's " +
                         std::to_string(file_size));
  if (!rle) return;
  std::vector<uint8_t> data(static_cast<size_t>(bytes));
  in.seekg(offset);
  in.read(reinterpret_cast<char*>(data.data()), bytes);
  check_bmp_rle(path, data, width, height);
}

std::optional<SampleType> sample_type(itk::IOComponentEnum c) {
  using C = itk::IOComponentEnum;
  switch (c) {
    case C::UCHAR: return SampleType::U8;
    case C::CHAR: return SampleType::I8;
    case C::USHORT: return SampleType::U16;
    case C::SHORT: return SampleType::I16;
    case C::UINT: return SampleType::U32;
    case C::INT: return SampleType::I32;
    case C::FLOAT: return SampleType::F32;
    default: return std::nullopt;
  }
}

}  // namespace

RawImage read_bmp(const std::string& path, uint64_t max_bytes) {
  static const bool quiet = [] {  // problems reach the caller as ImageError; ITK's console warnings would repeat them
    itk::Object::SetGlobalWarningDisplay(false);
    return true;
  }();
  (void)quiet;
  const itk::BMPImageIO::Pointer io = itk::BMPImageIO::New();
  RawImage r;
  try {
    if (!io->CanReadFile(path.c_str())) throw ImageError(Kind::NotRecognized, path, "BMPImageIO cannot read it");
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
    const uint64_t raw_bytes = voxels * r.components * io->GetComponentSize();
    const uint64_t float_bytes = voxels * r.components * sizeof(float);
    if (r.dims.size() != ndim || raw_bytes > max_bytes || float_bytes > max_bytes)
      throw too_large(path, std::max(raw_bytes, float_bytes), max_bytes);
    if (ndim != 2 || r.components < 1 || r.components > 4)
      throw ImageError(Kind::Unsupported, path,
                       std::to_string(ndim) + " dimensions of " + std::to_string(r.components) + " components per pixel");
    const std::optional<SampleType> type = sample_type(io->GetComponentType());
    if (!type)
      throw ImageError(Kind::Unsupported, path,
                       "samples of type " + itk::ImageIOBase::GetComponentTypeAsString(io->GetComponentType()));
    itk::ImageIORegion region(ndim);
    for (unsigned i = 0; i < ndim; ++i) {
      region.SetIndex(i, 0);
      region.SetSize(i, r.dims[i]);
    }
    io->SetIORegion(region);
    check_bmp(path, r.dims[0], r.dims[1], io->GetBMPCompression() == 1 && r.components == 3);
    std::vector<uint8_t> raw(raw_bytes);
    io->Read(raw.data());
    store_samples(*type, raw.data(), size_t(voxels) * r.components, r);
  } catch (const itk::ExceptionObject& e) {
    throw ImageError(Kind::Corrupt, path, std::string("ITK: ") + e.GetDescription());
  }
  return r;
}

}  // namespace mm::picture
