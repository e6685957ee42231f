#pragma once
// Encapsulated frames that DCMTK 3.6.7 does not decode and that are not JPEG
// 2000: Deflated Image Frame Compression (1.2.840.10008.1.2.8.1, added to the
// standard in 2023, after DCMTK 3.6.7) and RLE Lossless with BitsAllocated 1
// (DCMTK's RLE decoder refuses it). Both give each frame on its own, so 1-bit
// frames start on a byte boundary (layout.frames_byte_aligned is set).
#include <cstdint>
#include <string>
#include <vector>

#include "core/uninitialised_buffer.h"
#include "imaging/dicom_pixels.h"

namespace mm::dicom {

// Each frame raw-deflated (RFC 1951) from its native little-endian bytes.
// Output is bounded by the layout: a frame that inflates past its size, or
// stops short of it, is Corrupt.
UninitialisedBytes inflate_frames(const std::vector<Codestream>& frames, PixelLayout& layout,
                                  const std::string& what);

// RLE Lossless (PS3.5 Annex G) of a 1-bit image: per frame a 64-byte header
// and one PackBits segment of the packed bits.
UninitialisedBytes decode_rle_bit_frames(const std::vector<Codestream>& frames, PixelLayout& layout,
                                         const std::string& what);

}  // namespace mm::dicom
