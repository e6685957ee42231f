#pragma once
// DICOM files -> Images, through DCMTK (parsing; its JPEG and RLE decoders),
// OpenJPEG (JPEG 2000, HTJ2K), CharLS (JPEG-LS), libjpeg-turbo (8-bit lossy
// JPEG, DCMTK's codec behind it) and zlib (deflated image frames); 1-bit RLE,
// JPEG-LS and JPEG Lossless (process 14, CharLS or DCMTK's codec behind them)
// are ours.
//
// Each frame becomes one Image holding modality values (the Modality LUT or
// RescaleSlope/Intercept applied; MONOCHROME1 mirrored so that bright means
// dense) or RGB (YBR_* and PALETTE COLOR converted), with the window chosen by
// DicomOptions::window (default: the file's first VOI, else min-max; a VOI LUT
// Sequence, when it is the VOI used, replaces the pixels by its output; see
// docs/input-formats.md). Files without a preamble or file meta are read as a
// bare dataset; files without pixel data (SR, RTSTRUCT, RTPLAN, ...) throw
// ImageError with kind NoImage.
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace mm {

struct DicomOptions {
  WindowOptions window;
  int64_t frame = -1;               // -1: every frame is its own Image; otherwise only this frame
  bool invert_monochrome1 = true;   // false keeps MONOCHROME1 values as stored (for comparisons)
  // Refuses files whose decoded pixel data or float output would exceed this
  // many bytes, checked from Rows/Columns/frames/samples before decoding.
  uint64_t max_decoded_bytes = uint64_t(2) << 30;
  uint64_t max_file_bytes = uint64_t(4) << 30;
  // Grey single-frame files without LUT tables, uncompressed or in JPEG-LS,
  // JPEG Lossless or JPEG 2000, are read without DCMTK's dataset objects
  // (imaging/dicom_native.h), the same Images faster; false reads every file
  // through DCMTK (tests compare the two).
  bool native_fast_path = true;
  // JPEG Lossless (.4.70, .4.57) through imaging/dicom_jpeg_lossless.h, the
  // same samples as DCMTK's codec in a fraction of the time; what it does not
  // take goes to DCMTK's codec. false: DCMTK's codec only (tests compare them).
  bool own_jpeg_lossless = true;
  // JPEG-LS (.4.80, .4.81) through imaging/dicom_jpegls_decoder.h, CharLS's
  // samples in a fraction of its time; what it does not take goes to CharLS.
  // false: CharLS only (tests compare them).
  bool own_jpegls = true;
  // 8-bit lossy JPEG (.50, .51) through imaging/dicom_jpeg_baseline.h
  // (libjpeg-turbo), DCMTK's samples faster; what it does not take goes to
  // DCMTK's codec. false: DCMTK's codec only (tests compare them).
  bool own_jpeg_baseline = true;
  // > 0: JPEG 2000 and 8-bit lossy JPEG frames are decoded at a reduced resolution whose sides stay
  // at least this many pixels, when the stream has one (imaging/draft.h): the
  // Image is then smaller than Rows x Columns. 0: full resolution.
  int64_t draft_side = 0;
};

std::vector<Image> read_dicom(const std::string& path, const DicomOptions& options = {});
// The same, naming the file `what` in errors and in Image::source_path.
std::vector<Image> read_dicom_as(const std::string& path, const std::string& what, const DicomOptions& options = {});
// The same from memory (through a temporary file: DCMTK checks element lengths
// against a file's size, not a buffer's).
std::vector<Image> read_dicom_bytes(const uint8_t* data, size_t size, const std::string& what,
                                    const DicomOptions& options = {});

}  // namespace mm
