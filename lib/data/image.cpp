#include "data/image.h"

#include <cmath>
#include <limits>

namespace mm {

void set_window_center_width(Image& img, double center, double width) {
  // PS3.3 C.11.2.1.2.1: width >= 1; the -0.5 and (w-1) come from the standard's
  // formula for integer-valued stored pixels.
  width = std::max(width, 1.0);
  img.window_low = center - 0.5 - (width - 1) / 2;
  img.window_high = center - 0.5 + (width - 1) / 2;
}

std::pair<double, double> min_max_ignoring_nan(const float* values, size_t n) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(values[i])) continue;
    lo = std::min(lo, double(values[i]));
    hi = std::max(hi, double(values[i]));
  }
  if (lo > hi) return {0.0, 0.0};
  return {lo, hi};
}

std::pair<double, double> pixel_min_max(const Image& img) {
  return min_max_ignoring_nan(img.pixels.data(), img.pixels.size());
}

const char* image_error_kind_name(ImageError::Kind k) {
  switch (k) {
    case ImageError::Kind::Io: return "cannot read";
    case ImageError::Kind::NotRecognized: return "not a recognised image format";
    case ImageError::Kind::NoImage: return "no image";
    case ImageError::Kind::Unsupported: return "unsupported";
    case ImageError::Kind::Corrupt: return "corrupt";
    case ImageError::Kind::TooLarge: return "too large";
    case ImageError::Kind::BadOption: return "bad option";
  }
  return "?";
}

ImageError::ImageError(Kind k, const std::string& path, const std::string& reason)
    : Error(path + ": " + image_error_kind_name(k) + ": " + reason), kind(k) {}

}  // namespace mm
