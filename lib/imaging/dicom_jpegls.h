#pragma once
// JPEG-LS frames of a DICOM file, decoded with CharLS 2 rather than the CharLS
// 1.0 fork inside DCMTK 3.6.7, which rejects valid streams of fewer than 8 bits
// (pydicom-data's JLSL_08_07_0_1F.dcm: "Invalid compressed image data"), while
// CharLS 2 is maintained and fuzzed upstream.
#include <cstdint>
#include <string>
#include <vector>

#include "core/uninitialised_buffer.h"
#include "imaging/dicom_pixels.h"

namespace mm::dicom {

// Decodes one JPEG-LS stream per frame into the native layout the dataset
// describes: little-endian samples of BitsAllocated bits, interleaved, or one
// plane per sample when the stream is not interleaved (sets layout.planar).
// Throws ImageError naming `what` when a stream is invalid or does not match
// the dataset's Rows, Columns, SamplesPerPixel or BitsAllocated; each stream is
// checked before CharLS allocates for it.
UninitialisedBytes decode_jpegls_frames(const std::vector<Codestream>& frames, PixelLayout& layout,
                                        const std::string& what);

}  // namespace mm::dicom
