#pragma once
// The second DICOM decoder: GDCM (with OpenJPEG and CharLS), for transfer
// syntaxes DCMTK cannot decompress, JPEG 2000 above all. Kept apart from the
// DCMTK code so each translation unit includes one toolkit.
#include <cstdint>
#include <string>
#include <vector>

#include "imaging/dicom_pixels.h"

namespace mm::dicom {

struct GdcmPixels {
  PixelLayout layout;           // pixel format and photometric as GDCM reports them after decoding
  std::vector<uint8_t> buffer;  // all frames, uncompressed, little-endian
};

// Decodes the pixel data of a whole DICOM file held in memory. Refuses (TooLarge)
// when the decoded size would exceed max_bytes; throws ImageError naming `what`.
GdcmPixels decode_with_gdcm(const uint8_t* data, size_t size, const std::string& what, uint64_t max_bytes);

}  // namespace mm::dicom
