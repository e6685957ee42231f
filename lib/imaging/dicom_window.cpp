// The VOI stage of a decoded grey or colour frame: which window, a VOI LUT or
// SIGMOID function applied to the pixels, and MONOCHROME1 mirrored (see
// finish_frame in dicom_pixels.h and docs/input-formats.md).
#include "imaging/dicom_pixels.h"

#include <algorithm>
#include <cmath>

namespace mm::dicom {

using ErrKind = ImageError::Kind;

namespace {

// Modality values through a VOI LUT (PS3.3 C.11.2.1.1), as pydicom's apply_voi:
// values below the first mapped one take the first entry, values past the end
// the last, non-integers their floor.
void apply_voi_lut(Image& img, const Lut& lut) {
  for (float& v : img.pixels) {
    const double x = std::isfinite(v) ? std::clamp(std::floor(double(v)), -1e12, 1e12) : double(lut.first_mapped);
    v = lut.lookup(int64_t(x));
  }
}

// PS3.3 C.11.2.1.3.1, as pydicom's apply_windowing: onto the full output range.
void apply_sigmoid(Image& img, double center, double width, std::pair<double, double> range) {
  for (float& v : img.pixels)
    v = float((range.second - range.first) / (1 + std::exp(-4 * (double(v) - center) / width)) + range.first);
}

}  // namespace

void finish_frame(Image& img, const PixelLayout& l, const WindowOptions& opt, const FileVoi& voi,
                  bool invert_monochrome1) {
  using Mode = WindowOptions::Mode;
  // The range the stored type can express: integer data through the modality
  // LUT; float data and colour have no such thing beyond the data or the bits.
  std::pair<double, double> full;
  if (!l.monochrome()) {
    const int bits = l.photometric == "PALETTE COLOR" ? l.palette[0].bits : l.bits_stored;
    full = {0.0, std::ldexp(1.0, bits) - 1};
  } else if (l.kind == PixelLayout::Kind::Integer) {
    full = modality_range(l);
  } else {
    full = pixel_min_max(img);
  }
  // The file's VOI: a VOI LUT when the image is grey and has one (pydicom's
  // apply_voi_lut prefers it to a window), else its window pairs.
  const bool use_luts = l.monochrome() && !voi.luts.empty();
  const size_t file_vois = use_luts ? voi.luts.size() : voi.windows.size();
  Mode mode = opt.mode;
  if (mode == Mode::Default) {
    if (!l.monochrome()) mode = Mode::FullRange;
    else mode = file_vois == 0 ? Mode::MinMax : Mode::File;
  }
  switch (mode) {
    case Mode::File: {
      if (opt.file_index < 0 || size_t(opt.file_index) >= file_vois)
        throw ImageError(ErrKind::BadOption, img.source_path,
                         "window " + std::to_string(opt.file_index) + " requested; the file has " +
                             std::to_string(file_vois));
      const size_t k = size_t(opt.file_index);
      if (use_luts) {
        apply_voi_lut(img, voi.luts[k]);
        full = {0.0, std::ldexp(1.0, voi.luts[k].bits) - 1};
        img.window_low = full.first;
        img.window_high = full.second;
        img.window_source = "file VOI LUT[" + std::to_string(k) + "]";
      } else {
        const auto [center, width] = voi.windows[k];
        img.window_source = "file[" + std::to_string(k) + "]";
        if (voi.function == "SIGMOID" && l.monochrome()) {
          apply_sigmoid(img, center, width, full);
          img.window_low = full.first;
          img.window_high = full.second;
          img.window_source += " SIGMOID";
        } else if (voi.function == "LINEAR_EXACT") {  // C.11.2.1.3.2: no half-pixel offsets
          img.window_low = center - width / 2;
          img.window_high = center + width / 2;
          img.window_source += " LINEAR_EXACT";
        } else {
          set_window_center_width(img, center, width);
        }
      }
      break;
    }
    case Mode::Explicit:
      set_window_center_width(img, opt.center, opt.width);
      img.window_source = "explicit";
      break;
    case Mode::MinMax: {
      auto [lo, hi] = pixel_min_max(img);
      img.window_low = lo;
      img.window_high = hi;
      img.window_source = "min-max";
      break;
    }
    case Mode::FullRange:
    case Mode::Default:
      img.window_low = full.first;
      img.window_high = full.second;
      img.window_source = "full range";
      break;
  }
  if (invert_monochrome1 && l.photometric == "MONOCHROME1") {
    // Mirror values and window within the full range: low stored values, shown
    // white in MONOCHROME1, become high values, as dense tissue is in MONOCHROME2.
    const double sum = full.first + full.second;
    for (float& v : img.pixels) v = float(sum - double(v));
    const double lo = sum - img.window_high, hi = sum - img.window_low;
    img.window_low = lo;
    img.window_high = hi;
  }
}

}  // namespace mm::dicom
