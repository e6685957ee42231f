#pragma once
// Explicit VR encoding (PS3.5 7.1.2): the VRs whose elements carry two reserved
// bytes and a 4-byte length; every other VR has a 2-byte length. One list for
// our two explicit-VR walkers (dicom_native.cpp, dicom_parse.cpp's file meta).
#include <algorithm>
#include <iterator>

namespace mm::dicom {

inline bool has_four_byte_length(char first, char second) {
  static const char* const kLong[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
  return std::any_of(std::begin(kLong), std::end(kLong), [&](const char* v) { return v[0] == first && v[1] == second; });
}

}  // namespace mm::dicom
