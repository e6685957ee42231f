#include <tiffio.h>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <tuple>
#include <vector>

#include "imaging/picture_formats.h"

namespace mm::picture {

using Kind = ImageError::Kind;

namespace {

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

// The sample type of grey or RGB strips read as stored (as ITK read them; stored
// MinIsWhite values are not inverted), or nullopt for the rest (palette, tiles,
// YCbCr, CMYK, 1-bit, ...): libtiff's 8-bit RGBA reader, as in ITK.
std::optional<SampleType> stored_sample_type(const TiffLayout& l) {
  const bool layout_ok = !l.tiled && (l.planar == PLANARCONFIG_CONTIG || l.samples == 1) &&
                         (l.orientation == ORIENTATION_TOPLEFT || l.orientation == ORIENTATION_BOTLEFT) &&
                         (l.photometric == PHOTOMETRIC_MINISBLACK || l.photometric == PHOTOMETRIC_MINISWHITE ||
                          l.photometric == PHOTOMETRIC_RGB);
  if (!layout_ok) return std::nullopt;
  const bool sign = l.format == SAMPLEFORMAT_INT;
  if (!sign && l.format != SAMPLEFORMAT_UINT)
    return l.bits == 32 && l.format == SAMPLEFORMAT_IEEEFP ? std::optional(SampleType::F32) : std::nullopt;
  switch (l.bits) {
    case 8: return sign ? SampleType::I8 : SampleType::U8;
    case 16: return sign ? SampleType::I16 : SampleType::U16;
    case 32: return sign ? SampleType::I32 : SampleType::U32;
    default: return std::nullopt;
  }
}

}  // namespace

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
  SampleType type = SampleType::U8;  // of the samples in raw
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
      const std::optional<SampleType> stored = stored_sample_type(layout);
      as_stored = stored.has_value();
      char why[1024];
      if (!as_stored && !TIFFRGBAImageOK(tif.get(), why))
        throw ImageError(Kind::Unsupported, path, std::string("TIFF: ") + why);
      type = stored.value_or(SampleType::U8);
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
  store_samples(type, raw.data(), raw.size() / sample_bytes, r);
  return r;
}

}  // namespace mm::picture
