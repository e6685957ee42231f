#pragma once
// A small PNG encoder (8-bit grey, grey+alpha, RGB or RGBA; no filtering,
// deflate through zlib): enough for thumbnails and heat-map overlays.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

// pixels: height rows of width * channels bytes, channels 1..4.
std::vector<uint8_t> encode_png(const uint8_t* pixels, int64_t width, int64_t height, int channels);
// Throws mm::Error naming the file when it cannot be written.
void write_png(const std::string& path, const uint8_t* pixels, int64_t width, int64_t height, int channels);

}  // namespace mm
