#pragma once
// The fast path for the commonest DICOM image: uncompressed (explicit or
// implicit VR little endian), grey, 8 or 16 bits, with a rescale (no LUT
// tables). We read the file in one go and take the attributes and the pixel
// bytes straight from it, without DCMTK's dataset objects, which cost more
// than the pixel conversion itself (0.3 ms of a 512 x 512 CT's 1 ms).
//
// Anything else, and anything this reader finds odd (a length past the end, a
// value it cannot parse, an undefined length it cannot follow, pixel data
// shorter than the attributes say), returns nullopt: the caller reads the file
// with DCMTK, the careful path, which then decodes it or says what is wrong.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "imaging/dicom_pixels.h"

namespace mm::dicom {

struct NativeFile {
  std::vector<uint8_t> bytes;  // the whole file
  size_t pixel_offset = 0, pixel_length = 0;
  PixelLayout layout;
  FileVoi voi;
  std::string study_uid, series_uid, sop_uid, sop_class_uid, modality;
};

// Files larger than max_bytes are left to the careful path.
std::optional<NativeFile> read_native_file(const std::string& path, uint64_t max_bytes);
// The same from memory (bytes: the whole file).
std::optional<NativeFile> parse_native_file(std::vector<uint8_t> bytes);

}  // namespace mm::dicom
