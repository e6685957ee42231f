#pragma once
// JPEG 2000 frames of a DICOM file, decoded with OpenJPEG (which DCMTK lacks).
// OpenJPEG is used directly rather than through GDCM: GDCM 3.0 aborts on
// 1-bit images and crashes on some malformed codestreams (found by fuzzing),
// while OpenJPEG is itself fuzzed continuously.
#include <cstdint>
#include <string>
#include <vector>

#include "core/uninitialised_buffer.h"
#include "imaging/dicom_pixels.h"

namespace mm::dicom {

// Decodes one codestream (J2K or JP2) per frame into the native layout the
// dataset describes: little-endian samples of BitsAllocated bits, interleaved.
// A YBR_ICT/YBR_RCT image comes out as RGB (OpenJPEG undoes the component
// transform), and `layout.photometric` says so. Throws ImageError naming `what`
// when a stream is invalid or does not match the dataset's Rows, Columns or
// SamplesPerPixel; allocations are bounded by the layout, checked beforehand.
// draft_side > 0: the frames are decoded halved as often as their resolution
// levels allow while both sides stay at least draft_side (imaging/draft.h), and
// layout.rows/columns give the halved size.
UninitialisedBytes decode_j2k_frames(const std::vector<Codestream>& frames, PixelLayout& layout,
                                     const std::string& what, int64_t draft_side = 0);

}  // namespace mm::dicom
