#pragma once
// Draft decoding, as Pillow's Image.draft: JPEG (DCT scaling) and JPEG 2000
// (resolution levels) hold halved versions of the image that decode in a
// fraction of the full image's time. A classifier that resizes a 512-px CT slice
// to 224 px can take the 256-px version instead. Its pixels are not the full
// decode's: a JPEG 2000 level is the wavelet's low-pass band, a scaled JPEG the
// DCT's low frequencies, so draft decoding is a choice a caller makes.
#include <cstdint>

namespace mm {

// How many times both sides of a width x height image may be halved, at most
// max_halvings times, so that they stay at least side pixels: the largest n with
// 2^n <= min(width / side, height / side), integer divisions (Pillow's rule for
// JPEG). 0 when side <= 0.
inline int draft_halvings(int64_t width, int64_t height, int64_t side, int max_halvings) {
  if (side <= 0 || width <= 0 || height <= 0) return 0;
  const int64_t scale = (width < height ? width : height) / side;
  int n = 0;
  while (n < max_halvings && (int64_t(2) << n) <= scale) ++n;
  return n;
}

}  // namespace mm
