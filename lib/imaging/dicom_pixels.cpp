#include "imaging/dicom_pixels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

namespace mm::dicom {

using ErrKind = ImageError::Kind;

uint16_t Lut::lookup(int64_t stored) const {
  const int64_t i = std::clamp<int64_t>(stored - first_mapped, 0, int64_t(data.size()) - 1);
  return data[size_t(i)];
}

namespace {

struct SegmentExpander {
  const std::vector<uint16_t>& data;
  size_t max_entries;
  const std::string& what;
  std::vector<uint16_t> lut;

  [[noreturn]] void fail(const std::string& why) const {
    throw ImageError(ErrKind::Corrupt, what, "segmented palette table: " + why);
  }
  void push(uint16_t v) {
    if (lut.size() >= max_entries) fail("expands past " + std::to_string(max_entries) + " entries");
    lut.push_back(v);
  }
  // Expands segments from data[at] on; nr_segments < 0: to the end. depth bounds indirection.
  void expand(size_t at, int64_t nr_segments, int depth) {
    if (depth > 8) fail("indirect segments nested too deeply");
    for (int64_t done = 0; at + 1 < data.size() && done != nr_segments; ++done) {
      const uint16_t opcode = data[at], length = data[at + 1];
      at += 2;
      if (opcode == 0) {  // discrete: `length` values follow
        if (at + length > data.size()) fail("a discrete segment runs past the data");
        for (size_t i = 0; i < length; ++i) push(data[at + i]);
        at += length;
      } else if (opcode == 1) {  // linear: from the last value to y1 in `length` steps
        if (lut.empty()) fail("starts with a linear segment");
        if (at >= data.size()) fail("a linear segment without its end value");
        const double y0 = lut.back(), y1 = data[at++];
        const double step = (y1 - y0) / length, first = y0 + step;
        for (size_t i = 0; i < length; ++i) {  // numpy.linspace(first, y1, length), rounded half to even
          const double v = length == 1 ? first : first + double(i) * ((y1 - first) / double(length - 1));
          push(uint16_t(std::nearbyint(v)));
        }
      } else if (opcode == 2) {  // indirect: copy `length` segments found at a 32-bit offset
        if (lut.empty()) fail("starts with an indirect segment");
        if (at + 1 >= data.size()) fail("an indirect segment without its offset");
        const size_t offset = size_t(data[at]) | size_t(data[at + 1]) << 16;
        at += 2;
        if (offset >= data.size()) fail("an indirect segment points past the data");
        expand(offset, length, depth + 1);
      } else {
        fail("segment type " + std::to_string(opcode));
      }
    }
  }
};

}  // namespace

std::vector<uint16_t> expand_segmented_lut(const std::vector<uint16_t>& data, int bits, size_t max_entries,
                                           const std::string& what) {
  std::vector<uint16_t> entries = data;
  if (bits == 8) {  // 8-bit entries, two to a word
    entries.clear();
    for (uint16_t w : data) entries.push_back(w & 0xFF), entries.push_back(w >> 8);
  }
  SegmentExpander e{entries, max_entries, what, {}};
  e.expand(0, -1, 0);
  return std::move(e.lut);
}

int64_t PixelLayout::frame_bytes() const {
  const int64_t pixels = rows * columns;
  if (kind == PixelLayout::Kind::Float32) return pixels * samples * 4;
  if (kind == PixelLayout::Kind::Float64) return pixels * samples * 8;
  if (kind == PixelLayout::Kind::Integer && bits_allocated == 1) return (pixels * samples + 7) / 8;
  if (ybr422_subsampled) return pixels * 2 * (bits_allocated / 8);
  return pixels * samples * (bits_allocated / 8);
}

int64_t PixelLayout::total_bytes() const {
  if (kind == Kind::Integer && bits_allocated == 1 && !frames_byte_aligned)
    return (rows * columns * samples * frames + 7) / 8;
  return frame_bytes() * frames;
}

void validate(const PixelLayout& l, const std::string& what) {
  auto fail = [&](ErrKind k, const std::string& why) { throw ImageError(k, what, why); };
  if (l.rows < 1 || l.columns < 1 || l.rows > 65535 || l.columns > 65535)
    fail(ErrKind::Corrupt, "Rows x Columns " + std::to_string(l.rows) + " x " + std::to_string(l.columns));
  if (l.frames < 1 || l.frames > (int64_t(1) << 31))
    fail(ErrKind::Corrupt, "NumberOfFrames " + std::to_string(l.frames));
  if (l.samples != 1 && l.samples != 3) fail(ErrKind::Unsupported, "SamplesPerPixel " + std::to_string(l.samples));
  if (l.kind == PixelLayout::Kind::Integer) {
    if (l.bits_allocated != 1 && l.bits_allocated != 8 && l.bits_allocated != 16 && l.bits_allocated != 32)
      fail(ErrKind::Unsupported, "BitsAllocated " + std::to_string(l.bits_allocated));
    if (l.bits_stored < 1 || l.bits_stored > l.bits_allocated)
      fail(ErrKind::Corrupt, "BitsStored " + std::to_string(l.bits_stored) + " with BitsAllocated " +
                              std::to_string(l.bits_allocated));
    if (l.high_bit < l.bits_stored - 1 || l.high_bit >= l.bits_allocated)
      fail(ErrKind::Corrupt, "HighBit " + std::to_string(l.high_bit) + " with BitsStored " +
                              std::to_string(l.bits_stored));
  }
  const std::string& pi = l.photometric;
  const bool grey = pi == "MONOCHROME1" || pi == "MONOCHROME2";
  const bool colour = pi == "RGB" || pi == "YBR_FULL" || pi == "YBR_FULL_422" || pi == "YBR_PARTIAL_422" ||
                      pi == "YBR_ICT" || pi == "YBR_RCT";
  if (grey && l.samples != 1) fail(ErrKind::Corrupt, pi + " with SamplesPerPixel " + std::to_string(l.samples));
  if (colour && l.samples != 3) fail(ErrKind::Corrupt, pi + " with SamplesPerPixel " + std::to_string(l.samples));
  if (pi == "PALETTE COLOR") {
    if (l.samples != 1) fail(ErrKind::Corrupt, "PALETTE COLOR with SamplesPerPixel " + std::to_string(l.samples));
    if (l.palette[0].empty() || l.palette[1].empty() || l.palette[2].empty())
      fail(ErrKind::Corrupt, "PALETTE COLOR without palette lookup tables");
    if (l.kind != PixelLayout::Kind::Integer) fail(ErrKind::Corrupt, "PALETTE COLOR with float pixel data");
  } else if (pi == "YBR_PARTIAL_420") {
    // PS3.3 C.7.6.3.1.2 defines it for MPEG-2/MPEG-4/HEVC video only, whose
    // transfer syntaxes we do not decode; native 4:2:0 has no defined layout.
    fail(ErrKind::Unsupported, "YBR_PARTIAL_420 outside a video transfer syntax (no defined native layout)");
  } else if (!grey && !colour) {
    fail(ErrKind::Unsupported, "PhotometricInterpretation '" + pi + "'");
  }
  if (l.ybr422_subsampled && (l.bits_allocated != 8 || l.columns % 2 != 0))
    fail(ErrKind::Unsupported, pi + " other than 8 bits with an even number of columns");
  if ((pi == "YBR_FULL" || pi == "YBR_FULL_422" || pi == "YBR_PARTIAL_422") && l.bits_allocated != 8)
    fail(ErrKind::Unsupported, pi + " with BitsAllocated " + std::to_string(l.bits_allocated));
}

std::pair<double, double> modality_range(const PixelLayout& l) {
  double lo, hi;
  if (l.is_signed) {
    lo = -std::ldexp(1.0, l.bits_stored - 1);
    hi = std::ldexp(1.0, l.bits_stored - 1) - 1;
  } else {
    lo = 0;
    hi = std::ldexp(1.0, l.bits_stored) - 1;
  }
  if (!l.modality_lut.empty()) {
    auto [mn, mx] = std::minmax_element(l.modality_lut.data.begin(), l.modality_lut.data.end());
    return {double(*mn), double(*mx)};
  }
  double a = lo * l.slope + l.intercept, b = hi * l.slope + l.intercept;
  return {std::min(a, b), std::max(a, b)};
}

namespace {

// Reads stored values of one frame: handles bit packing, BitsStored/HighBit and sign.
class StoredValues {
 public:
  StoredValues(const uint8_t* buffer, const PixelLayout& l, int64_t frame)
      : l_(l), base_(buffer + (l.bits_allocated == 1 ? 0 : frame * l.frame_bytes())),
        first_bit_(l.bits_allocated != 1 ? 0
                   : l.frames_byte_aligned ? frame * l.frame_bytes() * 8
                                           : frame * l.rows * l.columns * l.samples),
        shift_(l.high_bit + 1 - l.bits_stored),
        mask_(l.bits_stored >= 32 ? 0xFFFFFFFFull : ((uint64_t(1) << l.bits_stored) - 1)) {}

  // The value of sample s of pixel p (p = row * columns + column).
  int64_t operator()(int64_t p, int s) const {
    const int64_t plane = l_.rows * l_.columns;
    const int64_t index = l_.planar == 1 ? s * plane + p : p * l_.samples + s;
    uint64_t word;
    switch (l_.bits_allocated) {
      case 1: {
        const int64_t bit = first_bit_ + index;
        return (base_[bit >> 3] >> (bit & 7)) & 1;
      }
      case 8: word = base_[index]; break;
      case 16: word = uint64_t(base_[2 * index]) | uint64_t(base_[2 * index + 1]) << 8; break;
      default: {
        uint32_t w;
        std::memcpy(&w, base_ + 4 * index, 4);  // little-endian host (checked by the reader)
        word = w;
      }
    }
    const uint64_t v = (word >> shift_) & mask_;
    if (l_.is_signed && (v >> (l_.bits_stored - 1)) & 1) return int64_t(v) - (int64_t(1) << l_.bits_stored);
    return int64_t(v);
  }

 private:
  const PixelLayout& l_;
  const uint8_t* base_;
  int64_t first_bit_;
  int shift_;
  uint64_t mask_;
};

// ITU-R BT.601 full range, as PS3.3 C.7.6.3.1.2 defines YBR_FULL; written as
// pydicom's convert_color_space (float32, round half up, clip) so both agree.
void ybr_full_to_rgb(float y, float cb, float cr, float* rgb) {
  cb -= 128.f;
  cr -= 128.f;
  const float g_cb = float(-0.114 * 1.772 / 0.587), g_cr = float(-0.299 * 1.402 / 0.587);
  const float r = y + cr * 1.402f, g = y + cb * g_cb + cr * g_cr, b = y + cb * 1.772f;
  rgb[0] = std::clamp(std::floor(r + 0.5f), 0.f, 255.f);
  rgb[1] = std::clamp(std::floor(g + 0.5f), 0.f, 255.f);
  rgb[2] = std::clamp(std::floor(b + 0.5f), 0.f, 255.f);
}

// PS3.3 C.7.6.3.1.2 YBR_PARTIAL_422 (BT.601 studio range: Y 16..235, Cb/Cr
// 16..240): the inverse of the standard's RGB -> YBR matrix, rounded as above.
void ybr_partial_to_rgb(float y, float cb, float cr, float* rgb) {
  y -= 16.f, cb -= 128.f, cr -= 128.f;
  const float r = 1.16441546f * y - 0.00009504f * cb + 1.59600188f * cr;
  const float g = 1.16441546f * y - 0.39172456f * cb - 0.81301337f * cr;
  const float b = 1.16441546f * y + 2.01729068f * cb - 0.00013527f * cr;
  rgb[0] = std::clamp(std::floor(r + 0.5f), 0.f, 255.f);
  rgb[1] = std::clamp(std::floor(g + 0.5f), 0.f, 255.f);
  rgb[2] = std::clamp(std::floor(b + 0.5f), 0.f, 255.f);
}

// A grey frame's 8- or 16-bit words as rescaled floats, for vector::assign, which then builds
// the image in one pass without zeroing it first (1 MB of writes for a 512 x 512 slice).
template <class Word, class Rescale>
struct RescaledWords {
  using iterator_category = std::random_access_iterator_tag;
  using value_type = float;
  using difference_type = std::ptrdiff_t;
  using pointer = const float*;
  using reference = float;
  const uint8_t* p;
  int shift;
  uint32_t mask;
  int32_t sign;  // two's complement in bits_stored, or 0
  Rescale rescale;

  float operator*() const {
    Word w;
    std::memcpy(&w, p, sizeof(Word));  // little-endian host (checked by the reader)
    const int32_t v = int32_t((uint32_t(w) >> shift) & mask);
    return rescale((v ^ sign) - sign);
  }
  RescaledWords& operator++() { p += sizeof(Word); return *this; }
  RescaledWords& operator--() { p -= sizeof(Word); return *this; }
  RescaledWords& operator+=(difference_type k) { p += k * difference_type(sizeof(Word)); return *this; }
  difference_type operator-(const RescaledWords& o) const { return (p - o.p) / difference_type(sizeof(Word)); }
  bool operator==(const RescaledWords& o) const { return p == o.p; }
  bool operator!=(const RescaledWords& o) const { return p != o.p; }
};

// 8- and 16-bit grey frames without a modality LUT, the common case (CT, MR): the same values
// as StoredValues and the rescale below, in one pass the compiler vectorises.
template <class Word>
void rescale_words(const uint8_t* bytes, const PixelLayout& l, int64_t n, std::vector<float>& out) {
  const int shift = l.high_bit + 1 - l.bits_stored;
  const uint32_t mask = l.bits_stored >= 32 ? 0xFFFFFFFFu : (uint32_t(1) << l.bits_stored) - 1;
  const int32_t sign = l.is_signed ? int32_t(uint32_t(1) << (l.bits_stored - 1)) : 0;
  const uint8_t* end = bytes + n * int64_t(sizeof(Word));
  const double slope = l.slope, intercept = l.intercept;
  if (slope == 1.0 && intercept == std::trunc(intercept) && std::fabs(intercept) < double(1 << 30)) {
    // Slope 1 and a whole intercept (most CT and MR): the sum is an exact integer either way,
    // so integer arithmetic gives the same floats as the double arithmetic below, 3x faster
    // (AVX-512 converts 16 ints to floats where it converts 8 to doubles, twice).
    const auto add = [a = int32_t(intercept)](int32_t v) { return float(v + a); };
    using It = RescaledWords<Word, decltype(add)>;
    out.assign(It{bytes, shift, mask, sign, add}, It{end, shift, mask, sign, add});
    return;
  }
  const auto rescale = [slope, intercept](int32_t v) { return float(double(v) * slope + intercept); };
  using It = RescaledWords<Word, decltype(rescale)>;
  out.assign(It{bytes, shift, mask, sign, rescale}, It{end, shift, mask, sign, rescale});
}

// img.pixels (rows x columns) from frame `frame`; the common case builds it in one pass, the
// others fill a zeroed image.
void convert_grey(const uint8_t* buffer, const PixelLayout& l, int64_t frame, Image& img) {
  const int64_t n = l.rows * l.columns;
  if (l.kind == PixelLayout::Kind::Integer && l.modality_lut.empty() && (l.bits_allocated == 8 || l.bits_allocated == 16)) {
    const uint8_t* bytes = buffer + frame * l.frame_bytes();
    if (l.bits_allocated == 8) rescale_words<uint8_t>(bytes, l, n, img.pixels);
    else rescale_words<uint16_t>(bytes, l, n, img.pixels);
    return;
  }
  img.pixels.assign(size_t(n), 0.f);
  if (l.kind != PixelLayout::Kind::Integer) {  // float pixel data has no modality LUT
    const uint8_t* p = buffer + frame * l.frame_bytes();
    for (int64_t i = 0; i < n; ++i) {
      if (l.kind == PixelLayout::Kind::Float32) {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        img.pixels[size_t(i)] = v;
      } else {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        img.pixels[size_t(i)] = float(v);
      }
    }
    return;
  }
  const StoredValues stored(buffer, l, frame);
  if (!l.modality_lut.empty()) {
    for (int64_t i = 0; i < n; ++i) img.pixels[size_t(i)] = l.modality_lut.lookup(stored(i, 0));
    return;
  }
  for (int64_t i = 0; i < n; ++i) img.pixels[size_t(i)] = float(double(stored(i, 0)) * l.slope + l.intercept);
}

void convert_colour(const uint8_t* buffer, const PixelLayout& l, int64_t frame, Image& img) {
  const int64_t n = l.rows * l.columns;
  float* out = img.pixels.data();
  if (l.photometric == "PALETTE COLOR") {
    const StoredValues stored(buffer, l, frame);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = stored(i, 0);
      for (int c = 0; c < 3; ++c) out[3 * i + c] = l.palette[c].lookup(v);
    }
    return;
  }
  const bool partial = l.photometric == "YBR_PARTIAL_422";
  const auto ybr_to_rgb = partial ? ybr_partial_to_rgb : ybr_full_to_rgb;
  if (l.ybr422_subsampled) {  // native YBR_*_422: Y1 Y2 Cb Cr for each pixel pair
    const uint8_t* p = buffer + frame * l.frame_bytes();
    for (int64_t i = 0; i < n; i += 2, p += 4) {
      ybr_to_rgb(p[0], p[2], p[3], out + 3 * i);
      ybr_to_rgb(p[1], p[2], p[3], out + 3 * (i + 1));
    }
    return;
  }
  const StoredValues stored(buffer, l, frame);
  const bool ybr = partial || l.photometric == "YBR_FULL" || l.photometric == "YBR_FULL_422";
  for (int64_t i = 0; i < n; ++i) {
    const float a = float(stored(i, 0)), b = float(stored(i, 1)), c = float(stored(i, 2));
    if (ybr) {
      ybr_to_rgb(a, b, c, out + 3 * i);
    } else {  // RGB, or YBR_ICT/YBR_RCT already turned into RGB by the JPEG 2000 decoder
      out[3 * i] = a;
      out[3 * i + 1] = b;
      out[3 * i + 2] = c;
    }
  }
}

}  // namespace

Image convert_frame(const uint8_t* buffer, size_t buffer_size, const PixelLayout& l, int64_t frame,
                    const std::string& what) {
  if (frame < 0 || frame >= l.frames)
    throw ImageError(ErrKind::BadOption, what, "frame " + std::to_string(frame) + " of " + std::to_string(l.frames));
  if (int64_t(buffer_size) < l.total_bytes())
    throw ImageError(ErrKind::Corrupt, what,
                     "pixel data holds " + std::to_string(buffer_size) + " bytes; Rows, Columns, frames and bits need " +
                         std::to_string(l.total_bytes()));
  Image img;
  img.height = l.rows;
  img.width = l.columns;
  img.channels = l.monochrome() ? 1 : 3;
  if (l.monochrome()) {
    convert_grey(buffer, l, frame, img);
  } else {
    img.pixels.assign(size_t(img.numel()), 0.f);
    convert_colour(buffer, l, frame, img);
  }
  return img;
}

}  // namespace mm::dicom
