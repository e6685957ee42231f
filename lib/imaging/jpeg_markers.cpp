#include "imaging/jpeg_markers.h"

#include "data/image.h"  // ImageError

namespace mm::dicom {

namespace {

[[noreturn]] void corrupt(const char* codec, const std::string& what, const std::string& why) {
  throw ImageError(ImageError::Kind::Corrupt, what, std::string(codec) + ": " + why);
}

}  // namespace

void check_soi(const uint8_t* data, size_t size, const char* codec, const std::string& what) {
  if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) corrupt(codec, what, "no SOI marker");
}

MarkerSegment next_marker_segment(const uint8_t* data, size_t size, size_t at, bool skip_standalone,
                                  const char* codec, const std::string& what) {
  for (;;) {
    if (at >= size || data[at] != 0xFF)
      corrupt(codec, what, "no marker at byte " + std::to_string(at));
    while (at < size && data[at] == 0xFF) ++at;  // fill bytes
    if (at >= size) corrupt(codec, what, "ends before its scan");
    const uint8_t m = data[at++];
    if (skip_standalone && (m == 0x01 || (m >= 0xD0 && m <= 0xD7))) continue;
    if (m == 0xD8 || m == 0xD9)
      corrupt(codec, what, m == 0xD8 ? "a second SOI" : "EOI before a scan");
    if (at + 2 > size) corrupt(codec, what, "ends in a marker");
    const size_t len = size_t(load_be16(data + at));
    if (len < 2 || at + len > size) corrupt(codec, what, "a segment runs past the end");
    return MarkerSegment{m, data + at + 2, len - 2, at + len};
  }
}

std::string marker_name(uint8_t m) {
  const char* hex = "0123456789ABCDEF";
  return std::string("FF") + hex[m >> 4] + hex[m & 15];
}

}  // namespace mm::dicom
