#pragma once
// JPEG Lossless frames of a DICOM file (transfer syntaxes 1.2.840.10008.1.2.4.70,
// process 14 first-order prediction, and .57, process 14 any predictor):
// ITU-T T.81 lossless (SOF3), Huffman coded, predictors 1-7, point transform,
// restart intervals of whole rows, precision 2-16 bits, one component, or
// three interleaved (RGB). Decoded here rather than through DCMTK's IJG codec,
// which spends about 4 ms of CPU on a 512 x 512 CT slice: that capped a 16-core
// machine near 2,000 slices/s (issue 14). The arithmetic is IJG's (reconstructed
// samples modulo 2^16, SSSS = 16 meaning 32768, no extra bits), so the samples
// are those DCMTK gives.
//
// A stream this decoder does not take (hierarchical, arithmetic coded, DNL,
// subsampled or non-interleaved components, a restart interval that is not a
// whole number of rows) throws ImageError Unsupported; a damaged one throws
// Corrupt. The DICOM reader then decodes the file through DCMTK's codec, which
// decodes or reports it as it always did.
#include <cstdint>
#include <string>
#include <vector>

#include "core/uninitialised_buffer.h"
#include "imaging/dicom_pixels.h"

namespace mm::dicom {

// What a lossless JPEG stream's frame header (SOF3) says.
struct LosslessHeader {
  int width = 0, height = 0, components = 0, precision = 0;
};

// Reads the markers up to the first scan and checks that this decoder takes
// the stream (throws as above).
LosslessHeader read_lossless_header(const uint8_t* data, size_t size, const std::string& what);

// Decodes one stream into `out`, which holds width * height * components
// samples of bytes_per_sample bytes (1: precision up to 8; 2: little-endian
// words), components interleaved. Reads nothing outside data[0, size).
void decode_lossless_stream(const uint8_t* data, size_t size, int bytes_per_sample, uint8_t* out, size_t out_size,
                            const std::string& what);

// One stream per frame into the native layout the dataset describes
// (BitsAllocated 8 or 16, samples interleaved: sets layout.planar = 0). Each
// stream's header is checked against Rows, Columns, SamplesPerPixel and
// BitsAllocated before anything is decoded.
UninitialisedBytes decode_jpeg_lossless_frames(const std::vector<Codestream>& frames, PixelLayout& layout,
                                               const std::string& what);

}  // namespace mm::dicom
