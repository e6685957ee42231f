#include "imaging/itk_io.h"

#include <itkBMPImageIO.h>
#include <itkPNGImageIO.h>
#include <png.h>
#include <tiffio.h>

#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <tuple>

#include <jpeglib.h>  // after <cstdio>, which it needs

#include "core/byte_order.h"
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
    case Format::Bmp: return itk::BMPImageIO::New().GetPointer();
    case Format::Jpeg:
    case Format::Tiff: break;  // read_jpeg, read_tiff
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

// ITK 5.2's PNG reader parses the header with no setjmp in place, so any libpng
// error there (a bad CRC in IHDR or PLTE, an invalid IHDR, PLTE missing) ends in
// libpng's default handler, which aborts the process. The same calls run here
// first with a handler that returns; ITK then repeats calls known to succeed.
bool png_header_parses(FILE* file, png_structp png, png_infop info) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_init_io(png, file);
  png_read_info(png, info);
  // ITK's transformations (its Read's too): png_read_update_info checks them against the header
  const int color_type = png_get_color_type(png, info), bit_depth = png_get_bit_depth(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (bit_depth > 8) png_set_swap(png);
  png_color_8p significant_bits;
  if (png_get_sBIT(png, info, &significant_bits)) png_set_shift(png, significant_bits);
  png_read_update_info(png, info);
  return true;
}

void check_png_header(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) throw ImageError(Kind::Io, path, "cannot open");
  char error[256] = "out of memory";  // a buffer, not a string: nothing may throw inside libpng
  const auto keep_error = [](png_structp png, png_const_charp message) {
    std::snprintf(static_cast<char*>(png_get_error_ptr(png)), sizeof error, "%s", message);
    png_longjmp(png, 1);
  };
  const auto ignore_warning = [](png_structp, png_const_charp) {};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, error, keep_error, ignore_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  const bool parses = info && png_header_parses(file, png, info);
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(file);
  if (!parses) throw ImageError(Kind::Corrupt, path, std::string("PNG header: ") + error);
}

ImageError too_large(const std::string& path, uint64_t bytes, uint64_t max_bytes) {
  return ImageError(Kind::TooLarge, path,
                    "header asks for " + std::to_string(bytes) + " bytes (limit " + std::to_string(max_bytes) + ")");
}

// JPEG is read with libjpeg directly, not through ITK 5.2's JPEGImageIO: as Debian
// builds it, that one's setjmp handlers resume with stale registers, so a libjpeg
// error can take the process down (mm-predict segfaults on a bad marker after the
// scan; under ASan, on a truncated header too, or exits).
struct JpegErrors {
  jpeg_error_mgr pub;
  std::jmp_buf resume;
  char message[JMSG_LENGTH_MAX] = "";
};

// Runs libjpeg calls; false, with the message in errors, when libjpeg reports an
// error. Nothing in step's frames may need a destructor: longjmp skips them.
template <class Step>
bool jpeg_step(JpegErrors& errors, const Step& step) {
  if (setjmp(errors.resume)) return false;
  step();
  return true;
}

RawImage read_jpeg(const std::string& path, uint64_t max_bytes) {
  const std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!file) throw ImageError(Kind::Io, path, "cannot open");
  JpegErrors errors;
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&errors.pub);
  errors.pub.error_exit = [](j_common_ptr c) {
    JpegErrors& e = *reinterpret_cast<JpegErrors*>(c->err);
    c->err->format_message(c, e.message);
    std::longjmp(e.resume, 1);
  };
  errors.pub.output_message = [](j_common_ptr) {};  // warnings: corrupt data decodes as far as it goes
  jpeg_create_decompress(&cinfo);
  const std::unique_ptr<jpeg_decompress_struct, void (*)(jpeg_decompress_struct*)> destroy(&cinfo, jpeg_destroy_decompress);
  const auto corrupt = [&] { return ImageError(Kind::Corrupt, path, std::string("JPEG: ") + errors.message); };
  if (!jpeg_step(errors, [&] {
        jpeg_stdio_src(&cinfo, file.get());
        jpeg_read_header(&cinfo, TRUE);
        jpeg_calc_output_dimensions(&cinfo);
      }))
    throw corrupt();
  RawImage r;
  r.dims = {int64_t(cinfo.output_width), int64_t(cinfo.output_height)};
  r.components = cinfo.output_components;
  if (r.components != 1 && r.components != 3 && r.components != 4)  // grey, RGB, CMYK (read as RGBA, as ITK did)
    throw ImageError(Kind::Unsupported, path, std::to_string(r.components) + " components per voxel");
  const uint64_t row_bytes = uint64_t(cinfo.output_width) * r.components;
  const uint64_t float_bytes = row_bytes * cinfo.output_height * sizeof(float);
  if (float_bytes > max_bytes) throw too_large(path, float_bytes, max_bytes);
  std::vector<uint8_t> raw(row_bytes * cinfo.output_height);
  // Not jpeg_finish_decompress: what follows the last scan does not change the pixels.
  if (!jpeg_step(errors, [&] {
        jpeg_start_decompress(&cinfo);
        while (cinfo.output_scanline < cinfo.output_height) {
          JSAMPROW row = raw.data() + cinfo.output_scanline * row_bytes;
          jpeg_read_scanlines(&cinfo, &row, 1);
        }
      }))
    throw corrupt();
  r.data.assign(raw.begin(), raw.end());
  set_range<uint8_t>(r);
  r.component_type = "unsigned_char";
  return r;
}

// TIFF is read with the system libtiff directly, not through ITK 5.2's TIFFImageIO:
// that one bundles libtiff 4.0.3 (2012), leaks its scanline buffer whenever a strip
// fails to read, and writes past its buffer when it counts pages by their
// SubFileType tags (three pages, the first alone tagged 0) but reads them all.
struct TiffLayout {  // what every page must share with the first
  uint32_t width = 0, height = 0;
  uint16_t samples = 1, bits = 1, format = SAMPLEFORMAT_UINT, photometric = 0xffff;
  uint16_t planar = PLANARCONFIG_CONTIG, orientation = ORIENTATION_TOPLEFT;
  bool tiled = false;
  bool operator!=(const TiffLayout& o) const {
    return std::tie(width, height, samples, bits, format, photometric, planar, orientation, tiled) !=
           std::tie(o.width, o.height, o.samples, o.bits, o.format, o.photometric, o.planar, o.orientation, o.tiled);
  }
};

TiffLayout tiff_layout(TIFF* tif) {
  TiffLayout l;
  TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &l.width);
  TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &l.height);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &l.samples);
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &l.bits);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &l.format);
  TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &l.photometric);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &l.planar);
  TIFFGetFieldDefaulted(tif, TIFFTAG_ORIENTATION, &l.orientation);
  l.tiled = TIFFIsTiled(tif);
  return l;
}

// The component type of grey or RGB strips read as stored (as ITK read them; stored
// MinIsWhite values are not inverted), or UNKNOWNCOMPONENTTYPE for the rest
// (palette, tiles, YCbCr, CMYK, 1-bit, ...): libtiff's 8-bit RGBA reader, as in ITK.
Component stored_component(const TiffLayout& l) {
  const bool layout_ok = !l.tiled && (l.planar == PLANARCONFIG_CONTIG || l.samples == 1) &&
                         (l.orientation == ORIENTATION_TOPLEFT || l.orientation == ORIENTATION_BOTLEFT) &&
                         (l.photometric == PHOTOMETRIC_MINISBLACK || l.photometric == PHOTOMETRIC_MINISWHITE ||
                          l.photometric == PHOTOMETRIC_RGB);
  if (!layout_ok) return Component::UNKNOWNCOMPONENTTYPE;
  const bool sign = l.format == SAMPLEFORMAT_INT;
  if (!sign && l.format != SAMPLEFORMAT_UINT) return l.bits == 32 && l.format == SAMPLEFORMAT_IEEEFP ? Component::FLOAT : Component::UNKNOWNCOMPONENTTYPE;
  switch (l.bits) {
    case 8: return sign ? Component::CHAR : Component::UCHAR;
    case 16: return sign ? Component::SHORT : Component::USHORT;
    case 32: return sign ? Component::INT : Component::UINT;
    default: return Component::UNKNOWNCOMPONENTTYPE;
  }
}

RawImage read_tiff(const std::string& path, uint64_t max_bytes) {
  char error[256] = "";  // libtiff's latest; a buffer, not a string: nothing may throw inside libtiff
  TIFFOpenOptions* options = TIFFOpenOptionsAlloc();
  TIFFOpenOptionsSetErrorHandlerExtR(
      options,
      [](TIFF*, void* buffer, const char* module, const char* format, va_list args) {
        char* out = static_cast<char*>(buffer);
        const size_t n = std::min<size_t>(std::snprintf(out, sizeof error, "%s: ", module ? module : "libtiff"), 64);
        std::vsnprintf(out + n, sizeof error - n, format, args);
        return 1;
      },
      error);
  TIFFOpenOptionsSetWarningHandlerExtR(options, [](TIFF*, void*, const char*, const char*, va_list) { return 1; }, nullptr);
  TIFFOpenOptionsSetMaxSingleMemAlloc(options, tmsize_t(std::min<uint64_t>(max_bytes, INT64_MAX)));
  const std::unique_ptr<TIFF, void (*)(TIFF*)> tif(TIFFOpenExt(path.c_str(), "r", options), TIFFClose);
  TIFFOpenOptionsFree(options);
  const auto corrupt = [&](const std::string& what) {
    return ImageError(Kind::Corrupt, path, "TIFF: " + what + (*error ? std::string(" (") + error + ")" : ""));
  };
  if (!tif) throw corrupt("cannot read the header");
  RawImage r;
  TiffLayout layout;
  Component type = Component::UCHAR;  // of the samples in raw
  bool as_stored = false;              // else through libtiff's RGBA reader
  uint64_t sample_bytes = 1;
  std::vector<uint8_t> raw;
  int64_t pages = 0;
  do {
    uint32_t subfile = 0;  // thumbnails and masks are no pages
    if (TIFFGetField(tif.get(), TIFFTAG_SUBFILETYPE, &subfile) && (subfile & (FILETYPE_REDUCEDIMAGE | FILETYPE_MASK)))
      continue;
    const TiffLayout page = tiff_layout(tif.get());
    if (pages == 0) {
      layout = page;
      if (layout.width == 0 || layout.height == 0)
        throw corrupt(std::to_string(layout.width) + " x " + std::to_string(layout.height) + " pixels");
      const Component stored = stored_component(layout);
      as_stored = stored != Component::UNKNOWNCOMPONENTTYPE;
      char why[1024];
      if (!as_stored && !TIFFRGBAImageOK(tif.get(), why))
        throw ImageError(Kind::Unsupported, path, std::string("TIFF: ") + why);
      type = as_stored ? stored : Component::UCHAR;
      sample_bytes = as_stored ? layout.bits / 8 : 1;
      r.components = as_stored ? layout.samples : 4;
      if (r.components > 4)
        throw ImageError(Kind::Unsupported, path, std::to_string(r.components) + " components per voxel");
    } else if (page != layout) {
      throw ImageError(Kind::Unsupported, path,
                       "TIFF page " + std::to_string(pages + 1) + " differs in size or layout from the first");
    }
    ++pages;
    const uint64_t page_samples = uint64_t(layout.width) * layout.height * r.components;
    const double float_bytes = double(page_samples) * pages * sizeof(float);
    if (float_bytes > double(max_bytes)) throw too_large(path, uint64_t(std::min(float_bytes, 1e19)), max_bytes);
    raw.resize(raw.size() + page_samples * sample_bytes);
    uint8_t* out = raw.data() + raw.size() - page_samples * sample_bytes;
    error[0] = 0;
    if (as_stored) {
      const uint64_t row_bytes = page_samples * sample_bytes / layout.height;
      if (TIFFScanlineSize64(tif.get()) != row_bytes)
        throw corrupt("rows of " + std::to_string(TIFFScanlineSize64(tif.get())) + " bytes, not " + std::to_string(row_bytes));
      for (uint32_t row = 0; row < layout.height; ++row) {
        const uint32_t to = layout.orientation == ORIENTATION_BOTLEFT ? layout.height - 1 - row : row;
        if (TIFFReadScanline(tif.get(), out + to * row_bytes, row, 0) < 0)
          throw corrupt("row " + std::to_string(row) + " unreadable");
      }
    } else {
      std::vector<uint32_t> abgr(uint64_t(layout.width) * layout.height);
      if (!TIFFReadRGBAImageOriented(tif.get(), layout.width, layout.height, abgr.data(), ORIENTATION_TOPLEFT, 1))
        throw corrupt("pixels unreadable");
      for (uint32_t px : abgr) *out++ = TIFFGetR(px), *out++ = TIFFGetG(px), *out++ = TIFFGetB(px), *out++ = TIFFGetA(px);
    }
  } while (TIFFReadDirectory(tif.get()));
  if (pages == 0) throw corrupt("no full-resolution page");
  r.dims = {int64_t(layout.width), int64_t(layout.height)};
  if (pages > 1) r.dims.push_back(pages);
  r.data.resize(raw.size() / sample_bytes);
  to_float(type, raw.data(), r.data.size(), r.data.data(), r);
  r.component_type = itk::ImageIOBase::GetComponentTypeAsString(type);
  return r;
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
    if (format == Format::Jpeg) return read_jpeg(path, max_bytes);
    if (format == Format::Tiff) return read_tiff(path, max_bytes);
    if (!io->CanReadFile(path.c_str()))
      throw ImageError(Kind::NotRecognized, path, std::string(io->GetNameOfClass()) + " cannot read it");
    io->SetFileName(path);
    if (format == Format::Png) check_png_header(path);
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
      throw too_large(path, std::max(raw_bytes, float_bytes), max_bytes);
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
    if (format == Format::Bmp)
      check_bmp(path, r.dims[0], r.dims[1], static_cast<itk::BMPImageIO&>(*io).GetBMPCompression() == 1 && r.components == 3);
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
