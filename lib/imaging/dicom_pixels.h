#pragma once
// Decoded (uncompressed, little-endian) DICOM pixel data -> float frames.
// No DCMTK here: the DCMTK and OpenJPEG decoding paths both end in this one
// conversion, so stored-value extraction, the modality LUT and colour handling
// behave the same whichever library decompressed the data.
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace mm::dicom {

// A lookup table as DICOM stores it: descriptor (entries, first mapped value, bits) and data.
struct Lut {
  int64_t first_mapped = 0;
  int bits = 16;
  std::vector<uint16_t> data;
  bool empty() const { return data.empty(); }
  uint16_t lookup(int64_t stored) const;  // values outside the table clamp to its ends
};

// Expands segmented palette LUT data (PS3.3 C.7.9.2: discrete, linear and
// indirect segments) as pydicom does, linear ramps rounded half to even. Entries
// are 8-bit when the descriptor says 8 bits (then `data` holds them two to a
// word, little-endian), else 16-bit. Throws ImageError (Corrupt) on a malformed
// table or one that would exceed max_entries.
std::vector<uint16_t> expand_segmented_lut(const std::vector<uint16_t>& data, int bits, size_t max_entries,
                                           const std::string& what);

// One frame's encoded bytes (a JPEG 2000 codestream, a deflated or RLE frame).
struct Codestream {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// The Image Pixel module attributes that say how to read the buffer.
struct PixelLayout {
  int64_t rows = 0, columns = 0, frames = 1;
  int samples = 1;  // 1 or 3
  int bits_allocated = 0, bits_stored = 0, high_bit = -1;
  bool is_signed = false;
  int planar = 0;               // 0: samples interleaved, 1: one plane per sample
  std::string photometric;      // after decompression (a decoder may have converted YBR to RGB)
  bool ybr422_subsampled = false;  // native YBR_FULL_422/YBR_PARTIAL_422: Y1 Y2 Cb Cr per pixel pair
  // Decoded frame by frame (deflated frames, RLE): 1-bit frames then start on a
  // byte boundary; native 1-bit frames follow each other without padding.
  bool frames_byte_aligned = false;
  enum class Kind { Integer, Float32, Float64 } kind = Kind::Integer;  // Float*: (7FE0,0008/0009)

  // Modality LUT for grey images: a LUT sequence when present, else slope/intercept.
  double slope = 1, intercept = 0;
  Lut modality_lut;
  Lut palette[3];  // PALETTE COLOR: red, green, blue

  int64_t frame_bytes() const;   // bytes of one frame in the decoded buffer (rounded up for 1-bit)
  int64_t total_bytes() const;   // all frames; 1-bit frames packed without padding unless frames_byte_aligned
  bool monochrome() const { return photometric == "MONOCHROME1" || photometric == "MONOCHROME2"; }
};

// The file's VOI LUT module: (center, width) window pairs and VOI LUT Sequence
// tables, either of which maps modality values to what is shown.
struct FileVoi {
  std::vector<std::pair<double, double>> windows;
  std::vector<Lut> luts;
  // VOILUTFunction for the windows: LINEAR (also when absent), LINEAR_EXACT or SIGMOID.
  std::string function = "LINEAR";
};

// Throws ImageError (Unsupported/Corrupt) naming `what` when the layout is not
// one we can read: checked before any allocation that depends on it.
void validate(const PixelLayout& layout, const std::string& what);

// The range of modality values the stored bits can express (grey integer data),
// used by the full-range window and to invert MONOCHROME1.
std::pair<double, double> modality_range(const PixelLayout& layout);

// One frame as modality values (grey) or RGB. buffer holds total_bytes() bytes.
// Grey pixels are not inverted here (see finish_frame).
Image convert_frame(const uint8_t* buffer, size_t buffer_size, const PixelLayout& layout, int64_t frame,
                    const std::string& what);

// Picks the window (options, the file's VOI) and inverts MONOCHROME1 so that
// bright means dense. A VOI LUT, when chosen (the default for a grey image that
// has one, as pydicom's apply_voi_lut prefers it to a window), replaces the
// pixels by its output and the window by the output's range [0, 2^bits - 1]: a
// table need not be linear, so no window on modality values could stand for it.
// The same holds for a file window whose VOI LUT Function is SIGMOID: its
// output (pydicom's apply_windowing) replaces the pixels, over the full range.
void finish_frame(Image& img, const PixelLayout& layout, const WindowOptions& options, const FileVoi& voi,
                  bool invert_monochrome1);

}  // namespace mm::dicom
