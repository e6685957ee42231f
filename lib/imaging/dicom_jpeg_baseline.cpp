#include "imaging/dicom_jpeg_baseline.h"

#include "imaging/draft.h"
#include "imaging/jpeg_errors.h"
#include "imaging/picture_formats.h"

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {

[[noreturn]] void fail(Kind kind, const std::string& what, const std::string& why) {
  throw ImageError(kind, what, "JPEG: " + why);
}

// One decompressor for every frame of a file.
class Decompressor {
 public:
  Decompressor() {
    cinfo_.err = errors_.manager();
    jpeg_create_decompress(&cinfo_);
  }
  ~Decompressor() { jpeg_destroy_decompress(&cinfo_); }
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;

  // Reads frame's header and sets the colour handling and scale (1 << halvings);
  // checks the stream against the dataset's layout.
  void open(const Codestream& frame, const PixelLayout& l, int halvings, const std::string& what) {
    if (!picture::runs_without_longjmp(errors_.resume, [&] {
          jpeg_mem_src(&cinfo_, frame.data, static_cast<unsigned long>(frame.size));
          jpeg_read_header(&cinfo_, TRUE);
        }))
      fail(Kind::Corrupt, what, errors_.message);
    if (cinfo_.data_precision != 8) fail(Kind::Unsupported, what, std::to_string(cinfo_.data_precision) + "-bit stream");
    if (int64_t(cinfo_.image_width) != l.columns || int64_t(cinfo_.image_height) != l.rows ||
        cinfo_.num_components != l.samples)
      fail(Kind::Unsupported, what,
           "stream of " + std::to_string(cinfo_.image_width) + " x " + std::to_string(cinfo_.image_height) + " x " +
               std::to_string(cinfo_.num_components) + " for a dataset of " + std::to_string(l.columns) + " x " +
               std::to_string(l.rows) + " x " + std::to_string(l.samples));
    if (converts_ybr(l)) {
      cinfo_.jpeg_color_space = JCS_YCbCr;  // whatever the markers suggest, as DCMTK
      cinfo_.out_color_space = JCS_RGB;
    } else {
      cinfo_.jpeg_color_space = JCS_UNKNOWN;  // the components as coded
      cinfo_.out_color_space = JCS_UNKNOWN;
    }
    cinfo_.scale_num = 1;
    cinfo_.scale_denom = 1u << halvings;
  }

  // Decodes the opened frame into out (rows x columns x samples bytes).
  void decode(uint8_t* out, const PixelLayout& l, const std::string& what) {
    const size_t row_bytes = size_t(l.columns) * size_t(l.samples);
    if (!picture::runs_without_longjmp(errors_.resume, [&] {
          jpeg_start_decompress(&cinfo_);
          if (int64_t(cinfo_.output_width) == l.columns && int64_t(cinfo_.output_height) == l.rows &&
              cinfo_.output_components == l.samples)
            while (cinfo_.output_scanline < cinfo_.output_height) {
              JSAMPROW row = out + cinfo_.output_scanline * row_bytes;
              jpeg_read_scanlines(&cinfo_, &row, 1);
            }
        }))
      fail(Kind::Corrupt, what, errors_.message);
    const bool complete = cinfo_.output_scanline == cinfo_.output_height && cinfo_.output_height > 0 &&
                          int64_t(cinfo_.output_width) == l.columns && int64_t(cinfo_.output_height) == l.rows;
    jpeg_abort_decompress(&cinfo_);  // not finish: what follows the last scan does not change the pixels
    if (!complete) fail(Kind::Unsupported, what, "the scaled frame is not the size expected");
  }

  static bool converts_ybr(const PixelLayout& l) {
    return l.samples == 3 &&
           (l.photometric == "YBR_FULL" || l.photometric == "YBR_FULL_422" || l.photometric == "YBR_PARTIAL_422");
  }

 private:
  jpeg_decompress_struct cinfo_;
  picture::JpegErrors errors_;
};

// ceil(x / 2^n), libjpeg's size of a scaled image.
int64_t scaled(int64_t x, int n) { return (x + (int64_t(1) << n) - 1) >> n; }

}  // namespace

UninitialisedBytes decode_jpeg_baseline_frames(const std::vector<Codestream>& frames, PixelLayout& l,
                                               const std::string& what, int64_t draft_side) {
  if (l.bits_allocated != 8) fail(Kind::Unsupported, what, "BitsAllocated " + std::to_string(l.bits_allocated));
  if (l.samples != 1 && l.samples != 3) fail(Kind::Unsupported, what, std::to_string(l.samples) + " samples per pixel");
  // DCMTK declines to convert signed colour (IJG's arithmetic is unsigned): so do we.
  if (Decompressor::converts_ybr(l) && l.is_signed) fail(Kind::Unsupported, what, "signed " + l.photometric);
  if (int64_t(frames.size()) != l.frames || frames.empty())
    fail(Kind::Corrupt, what, std::to_string(frames.size()) + " streams for " + std::to_string(l.frames) + " frames");
  const PixelLayout full = l;
  const int halvings = draft_halvings(l.columns, l.rows, draft_side, 3);
  l.columns = scaled(l.columns, halvings);
  l.rows = scaled(l.rows, halvings);
  l.planar = 0;
  UninitialisedBytes out(size_t(l.total_bytes()));  // every sample is written, or the decode throws
  const size_t frame_bytes = size_t(l.frame_bytes());
  Decompressor d;
  for (size_t f = 0; f < frames.size(); ++f) {
    d.open(frames[f], full, halvings, what);
    d.decode(out.data() + f * frame_bytes, l, what);
  }
  if (Decompressor::converts_ybr(full)) l.photometric = "RGB";
  return out;
}

}  // namespace mm::dicom
