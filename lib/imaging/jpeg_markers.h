#pragma once
// The marker segments before a scan, as JPEG (ITU-T T.81) and JPEG-LS (T.87) streams share
// them: FF, fill bytes, the marker, a 16-bit big-endian length that counts itself, and the
// parameters. Used by our JPEG Lossless and JPEG-LS decoders' header readers.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/byte_order.h"

namespace mm::dicom {

struct MarkerSegment {
  uint8_t marker = 0;
  const uint8_t* params = nullptr;  // after the length
  size_t size = 0;                  // bytes of params
  size_t end = 0;                   // offset just past the segment
};

// Errors are ImageError Corrupt naming `what`, their reason "<codec>: ...".

// Throws unless the stream starts with SOI (and has room for more).
void check_soi(const uint8_t* data, size_t size, const char* codec, const std::string& what);

// The segment at offset `at` (just past SOI or the previous segment). With skip_standalone,
// TEM and RSTn markers, which have no segment, are stepped over (IJG does so). Throws when no
// marker is there, when the stream ends in or before a segment, and at a second SOI or an EOI
// (the scan has not come yet). Reads nothing outside data[0, size).
MarkerSegment next_marker_segment(const uint8_t* data, size_t size, size_t at, bool skip_standalone,
                                  const char* codec, const std::string& what);

// "FFxx" in capital hex, for messages.
std::string marker_name(uint8_t marker);

}  // namespace mm::dicom
