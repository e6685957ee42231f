#pragma once
// JPEG-LS frames of a DICOM file (transfer syntaxes 1.2.840.10008.1.2.4.80
// lossless and .81 near-lossless), decoded here rather than by CharLS 2.4, which
// spends about 8 ms of CPU on a 512 x 512 16-bit CT slice (13 ms on the GPU
// machine's Xeon): that capped a 16-core machine near 930 slices/s (issue 14).
// ITU-T T.87 for what DICOM grey images use: one component, precision 2-16,
// lossless or near-lossless (NEAR > 0), default or LSE preset thresholds and
// RESET, restart intervals. The samples are those CharLS gives.
//
// A stream this decoder does not take (several components, a mapping table, a
// point transform, oversize dimensions, a MAXVAL other than 2^P - 1 or a RESET
// above 255, where CharLS departs from T.87 or keeps counters in a byte) throws
// ImageError Unsupported; a damaged one (including any error value outside the
// range T.87's encoder can produce) throws Corrupt. The DICOM reader then
// decodes the file through CharLS, which decodes or reports it as it always did.
#include <cstdint>
#include <string>
#include <vector>

#include "core/uninitialised_buffer.h"
#include "imaging/dicom_pixels.h"

namespace mm::dicom {

// What a JPEG-LS stream's frame (SOF55) and scan (SOS) headers say.
struct JpegLsHeader {
  int width = 0, height = 0, components = 0, precision = 0;
  int near = 0;  // 0: lossless
};

// Reads the markers up to the scan and checks that this decoder takes the
// stream (throws as above).
JpegLsHeader read_jpegls_header(const uint8_t* data, size_t size, const std::string& what);

// Decodes one stream into `out`, which holds width * height samples of
// bytes_per_sample bytes (1, or 2: little-endian words; at least the
// precision's). Reads nothing outside data[0, size).
void decode_jpegls_stream(const uint8_t* data, size_t size, int bytes_per_sample, uint8_t* out, size_t out_size,
                          const std::string& what);

// One stream per frame into the native layout the dataset describes
// (BitsAllocated 8 or 16, one sample per pixel). Each stream's header is
// checked against Rows, Columns, SamplesPerPixel and BitsAllocated before
// anything is allocated or decoded.
UninitialisedBytes decode_own_jpegls_frames(const std::vector<Codestream>& frames, PixelLayout& layout,
                                            const std::string& what);

}  // namespace mm::dicom
