#include <png.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "imaging/picture_formats.h"

namespace mm::picture {

using Kind = ImageError::Kind;

// PNG is read with libpng directly, not through ITK 5.2's PNGImageIO: that one parses
// the header with no setjmp in place, so a libpng error there (a bad CRC in IHDR or
// PLTE, an invalid IHDR, PLTE missing) ended in libpng's default handler, which
// aborts the process. The transformations are ITK's, so the samples are the same:
// palette to RGB, grey below 8 bits to 8, tRNS to an alpha channel, 16-bit samples
// in host order, and sBIT's significant bits shifted down.

namespace {

struct PngRead {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[256] = "out of memory";  // a buffer, not a string: nothing may throw inside libpng
  ~PngRead() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

void set_transformations(png_structp png, png_infop info) {
  const int color_type = png_get_color_type(png, info), bit_depth = png_get_bit_depth(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (bit_depth > 8) png_set_swap(png);  // PNG stores big-endian; x86 and ARM hosts are little-endian
  png_color_8p significant_bits;
  if (png_get_sBIT(png, info, &significant_bits)) png_set_shift(png, significant_bits);
  png_set_interlace_handling(png);  // Adam7 images come out whole
  png_read_update_info(png, info);
}

}  // namespace

RawImage read_png(const std::string& path, uint64_t max_bytes) {
  const std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!file) throw ImageError(Kind::Io, path, "cannot open");
  png_byte signature[8] = {};
  if (std::fread(signature, 1, sizeof signature, file.get()) != sizeof signature || png_sig_cmp(signature, 0, 8))
    throw ImageError(Kind::NotRecognized, path, "no PNG signature");
  PngRead read;
  const auto keep_error = [](png_structp png, png_const_charp message) {
    char* out = static_cast<char*>(png_get_error_ptr(png));
    std::snprintf(out, sizeof PngRead::message, "%s", message);
    png_longjmp(png, 1);
  };
  const auto ignore_warning = [](png_structp, png_const_charp) {};
  read.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, read.message, keep_error, ignore_warning);
  if (read.png) read.info = png_create_info_struct(read.png);
  if (!read.info) throw ImageError(Kind::TooLarge, path, "out of memory");
  const auto corrupt = [&](const char* part) {
    return ImageError(Kind::Corrupt, path, std::string("PNG ") + part + ": " + read.message);
  };
  if (!runs_without_longjmp(png_jmpbuf(read.png), [&] {
        png_set_read_fn(read.png, file.get(), [](png_structp png, png_bytep data, size_t n) {
          if (std::fread(data, 1, n, static_cast<FILE*>(png_get_io_ptr(png))) != n) png_error(png, "the file ends early");
        });
        png_set_sig_bytes(read.png, 8);
        png_read_info(read.png, read.info);
        set_transformations(read.png, read.info);
      }))
    throw corrupt("header");
  const uint64_t width = png_get_image_width(read.png, read.info), height = png_get_image_height(read.png, read.info);
  const int channels = png_get_channels(read.png, read.info);
  const bool wide = png_get_bit_depth(read.png, read.info) > 8;
  const uint64_t row_bytes = png_get_rowbytes(read.png, read.info);
  const uint64_t float_bytes = width * height * channels * sizeof(float);  // libpng caps each dimension at 2^31
  if (row_bytes * height > max_bytes || float_bytes > max_bytes)
    throw too_large(path, std::max(row_bytes * height, float_bytes), max_bytes);
  if (row_bytes != width * channels * (wide ? 2 : 1))
    throw ImageError(Kind::Unsupported, path, "PNG rows of " + std::to_string(row_bytes) + " bytes");
  std::vector<uint8_t> raw(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (uint64_t y = 0; y < height; ++y) rows[y] = raw.data() + y * row_bytes;
  // png_read_end checks the chunks after the pixels, as ITK's reader did.
  if (!runs_without_longjmp(png_jmpbuf(read.png), [&] {
        png_read_image(read.png, rows.data());
        png_read_end(read.png, nullptr);
      }))
    throw corrupt("pixels");
  RawImage r;
  r.dims = {int64_t(width), int64_t(height)};
  r.components = channels;
  store_samples(wide ? SampleType::U16 : SampleType::U8, raw.data(), size_t(width * height * channels), r);
  return r;
}

}  // namespace mm::picture
