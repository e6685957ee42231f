#include "io/png_writer.h"

#include <zlib.h>

#include <fstream>

#include "core/error.h"

namespace mm {

namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(v >> shift));
}

// length, type, data, CRC over type and data (PNG spec 5.3).
void put_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put_u32(out, uint32_t(data.size()));
  const size_t type_at = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put_u32(out, uint32_t(crc32(0L, out.data() + type_at, uInt(out.size() - type_at))));
}

}  // namespace

std::vector<uint8_t> encode_png(const uint8_t* pixels, int64_t width, int64_t height, int channels) {
  MM_CHECK(channels >= 1 && channels <= 4, "PNG: 1 to 4 channels, got " + std::to_string(channels));
  MM_CHECK(width > 0 && height > 0 && width < (int64_t(1) << 24) && height < (int64_t(1) << 24),
           "PNG: bad size " + std::to_string(width) + " x " + std::to_string(height));
  // Each scanline starts with its filter type; 0 (none) keeps this simple.
  const size_t row_bytes = size_t(width) * size_t(channels);
  std::vector<uint8_t> raw;
  raw.reserve((row_bytes + 1) * size_t(height));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), pixels + size_t(y) * row_bytes, pixels + size_t(y + 1) * row_bytes);
  }
  uLongf packed_size = compressBound(uLong(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  MM_CHECK(compress2(packed.data(), &packed_size, raw.data(), uLong(raw.size()), 9) == Z_OK, "PNG: deflate failed");
  packed.resize(packed_size);

  static const uint8_t color_type[5] = {0, 0, 4, 2, 6};  // grey, grey+alpha, RGB, RGBA
  std::vector<uint8_t> header;
  put_u32(header, uint32_t(width));
  put_u32(header, uint32_t(height));
  header.insert(header.end(), {8, color_type[channels], 0, 0, 0});  // depth, colour, deflate, filter, no interlace

  std::vector<uint8_t> png{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  put_chunk(png, "IHDR", header);
  put_chunk(png, "IDAT", packed);
  put_chunk(png, "IEND", {});
  return png;
}

void write_png(const std::string& path, const uint8_t* pixels, int64_t width, int64_t height, int channels) {
  const std::vector<uint8_t> png = encode_png(pixels, width, height, channels);
  std::ofstream out(path, std::ios::binary);
  MM_CHECK(out.good(), path + ": cannot write");
  out.write(reinterpret_cast<const char*>(png.data()), std::streamsize(png.size()));
  MM_CHECK(out.good(), path + ": write error");
}

}  // namespace mm
