#pragma once
// 8-bit lossy JPEG frames of a DICOM file (transfer syntaxes .50, baseline, and
// .51, extended, with 8-bit samples) through the system's libjpeg-turbo rather
// than DCMTK's bundled IJG 6b: the same arithmetic (islow IDCT, fancy
// upsampling, the same YCbCr tables) with SIMD, and draft scaling. Colour as
// DCMTK's codec gives it under the reader's setting (EDC_photometricInterpretation):
// a dataset that says YBR_FULL, YBR_FULL_422 or YBR_PARTIAL_422 gets its three
// components converted from YCbCr to RGB (and layout.photometric becomes RGB);
// any other keeps the components as coded.
//
// What this decoder does not take (12-bit or lossless streams, a stream whose
// size or components are not the dataset's, signed colour to convert) throws
// ImageError Unsupported, a stream libjpeg cannot decode Corrupt: the reader
// then decodes the file through DCMTK's codec, which decodes or reports it.
#include <cstdint>
#include <string>
#include <vector>

#include "core/uninitialised_buffer.h"
#include "imaging/dicom_pixels.h"

namespace mm::dicom {

// One stream per frame into the layout's interleaved 8-bit samples. draft_side > 0:
// every frame scaled by the same 1/2, 1/4 or 1/8 (imaging/draft.h), and
// layout.rows/columns give the scaled size.
UninitialisedBytes decode_jpeg_baseline_frames(const std::vector<Codestream>& frames, PixelLayout& layout,
                                               const std::string& what, int64_t draft_side = 0);

}  // namespace mm::dicom
