#include "imaging/dicom_jpegls_decoder.h"

#include <algorithm>
#include <cstring>
#ifdef __LZCNT__
#include <immintrin.h>
#endif
#include <utility>

#include "imaging/jpeg_markers.h"

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {

[[noreturn]] __attribute__((noinline)) void fail(Kind kind, const std::string& what, const std::string& why) {
  throw ImageError(kind, what, "JPEG-LS: " + why);
}

// T.87 C.2.4.1.1: the preset coding parameters (LSE id 1); 0 means "default".
struct Presets {
  int maxval = 0, t1 = 0, t2 = 0, t3 = 0, reset = 0;
};

// Everything before the scan's entropy-coded data.
struct Stream {
  JpegLsHeader header;
  int component_id = 0;
  Presets presets;
  int restart_interval = 0;  // in lines; 0: none
  size_t scan_begin = 0;
};

void read_frame_header(Stream& s, const uint8_t* seg, size_t n, const std::string& what) {
  if (s.header.components) fail(Kind::Corrupt, what, "a second frame header");
  if (n < 6) fail(Kind::Corrupt, what, "short frame header");
  JpegLsHeader& h = s.header;
  h.precision = seg[0];
  h.height = load_be16(seg + 1);
  h.width = load_be16(seg + 3);
  h.components = seg[5];
  if (h.precision < 2 || h.precision > 16) fail(Kind::Corrupt, what, "precision " + std::to_string(h.precision));
  if (h.height == 0 || h.width == 0) fail(Kind::Unsupported, what, "a dimension given elsewhere (0 in the frame header)");
  if (h.components != 1) fail(Kind::Unsupported, what, std::to_string(h.components) + " components");
  if (n != 6 + 3 * size_t(h.components)) fail(Kind::Corrupt, what, "frame header length");
  s.component_id = seg[6];
  if (seg[7] != 0x11) fail(Kind::Unsupported, what, "subsampled component");
}

void read_preset_segment(Stream& s, const uint8_t* seg, size_t n, const std::string& what) {
  if (n < 1) fail(Kind::Corrupt, what, "empty LSE segment");
  if (seg[0] != 1) fail(Kind::Unsupported, what, "LSE segment of type " + std::to_string(seg[0]));
  if (n != 11) fail(Kind::Corrupt, what, "LSE preset parameters length");
  s.presets = {load_be16(seg + 1), load_be16(seg + 3), load_be16(seg + 5), load_be16(seg + 7), load_be16(seg + 9)};
}

void read_restart_interval(Stream& s, const uint8_t* seg, size_t n, const std::string& what) {
  if (n < 2 || n > 4) fail(Kind::Corrupt, what, "DRI length");
  uint32_t ri = 0;
  for (size_t i = 0; i < n; ++i) ri = ri << 8 | seg[i];
  if (ri > 65535) fail(Kind::Unsupported, what, "restart interval of " + std::to_string(ri) + " lines");
  s.restart_interval = int(ri);
}

// Returns NEAR.
int read_scan_header(const Stream& s, const uint8_t* seg, size_t n, const std::string& what) {
  if (!s.header.components) fail(Kind::Corrupt, what, "a scan before the frame header");
  if (n < 1 || n != 4 + 2 * size_t(seg[0])) fail(Kind::Corrupt, what, "scan header length");
  if (seg[0] != 1) fail(Kind::Unsupported, what, std::to_string(seg[0]) + " components in the scan");
  if (seg[1] != s.component_id) fail(Kind::Corrupt, what, "scan names component " + std::to_string(seg[1]));
  if (seg[2] != 0) fail(Kind::Unsupported, what, "mapping table " + std::to_string(seg[2]));
  const int near = seg[3], ilv = seg[4], transform = seg[5];
  if (ilv != 0) fail(Kind::Unsupported, what, "interleave mode " + std::to_string(ilv) + " with one component");
  if (transform != 0) fail(Kind::Unsupported, what, "point transform " + std::to_string(transform));
  return near;
}

// Walks the markers from SOI to the scan.
Stream read_stream(const uint8_t* data, size_t size, const std::string& what) {
  check_soi(data, size, "JPEG-LS", what);
  Stream s;
  for (size_t at = 2;;) {
    const MarkerSegment g = next_marker_segment(data, size, at, false, "JPEG-LS", what);
    const uint8_t m = g.marker;
    const uint8_t* seg = g.params;
    const size_t n = g.size;
    if (m == 0xF7) {
      read_frame_header(s, seg, n, what);
    } else if (m == 0xF8) {
      read_preset_segment(s, seg, n, what);
    } else if (m == 0xDD) {
      read_restart_interval(s, seg, n, what);
    } else if (m == 0xDA) {
      s.header.near = read_scan_header(s, seg, n, what);
      s.scan_begin = g.end;
      return s;
    } else if (!(m >= 0xE0 && m <= 0xEF) && m != 0xFE) {
      // Other processes' frames (SOF0-15), tables, DNL, and markers JPEG-LS lacks.
      fail(Kind::Unsupported, what, "marker " + marker_name(m));
    }  // APPn (HP's colour transform is for several components), COM: skipped
    at = g.end;
  }
}

// T.87's derived parameters (A.2.1, C.2.4.1.1) as CharLS 2.4 computes them.
struct Params {
  int maxval, near, range, qbpp, limit, t1, t2, t3, reset;
};

int ceil_log2(int n) {
  int x = 0;
  while (n > (1 << x)) ++x;
  return x;
}

// C.2.4.1.1.1's default thresholds; clamp as Figure C.3.
Presets default_presets(int maxval, int near) {
  auto clamp = [&](int i, int j) { return i > maxval || i < j ? j : i; };
  Presets p;
  p.maxval = maxval;
  p.reset = 64;
  if (maxval >= 128) {
    const int factor = (std::min(maxval, 4095) + 128) / 256;
    p.t1 = clamp(factor * (3 - 2) + 2 + 3 * near, near + 1);
    p.t2 = clamp(factor * (7 - 3) + 3 + 5 * near, p.t1);
    p.t3 = clamp(factor * (21 - 4) + 4 + 7 * near, p.t2);
  } else {
    const int factor = 256 / (maxval + 1);
    p.t1 = clamp(std::max(2, 3 / factor + 3 * near), near + 1);
    p.t2 = clamp(std::max(3, 7 / factor + 5 * near), p.t1);
    p.t3 = clamp(std::max(4, 21 / factor + 7 * near), p.t2);
  }
  return p;
}

// Checks the presets as CharLS does (Table C.1), fills in the defaults, and
// refuses what CharLS decodes otherwise than T.87 says: it sizes RANGE and
// LIMIT from the precision, not from a custom MAXVAL, and counts run-mode
// occurrences in a byte.
Params derive_params(const Stream& s, const std::string& what) {
  const int full = (1 << s.header.precision) - 1, near = s.header.near;
  const Presets& in = s.presets;
  if (in.maxval != 0 && in.maxval != full)
    fail(Kind::Unsupported, what, "MAXVAL " + std::to_string(in.maxval) + " with precision " +
                                      std::to_string(s.header.precision));
  if (near > std::min(255, full / 2)) fail(Kind::Corrupt, what, "NEAR " + std::to_string(near));
  const Presets d = default_presets(full, near);
  Params p{};
  p.maxval = full;
  p.near = near;
  p.t1 = in.t1 ? in.t1 : d.t1;
  p.t2 = in.t2 ? in.t2 : d.t2;
  p.t3 = in.t3 ? in.t3 : d.t3;
  p.reset = in.reset ? in.reset : d.reset;
  if ((in.t1 && (in.t1 < near + 1 || in.t1 > full)) || (in.t2 && (in.t2 < p.t1 || in.t2 > full)) ||
      (in.t3 && (in.t3 < p.t2 || in.t3 > full)) || (in.reset && (in.reset < 3 || in.reset > std::max(255, full))))
    fail(Kind::Corrupt, what, "invalid preset coding parameters");
  if (p.reset > 255) fail(Kind::Unsupported, what, "RESET " + std::to_string(p.reset));
  p.range = (full + 2 * near) / (2 * near + 1) + 1;
  p.qbpp = ceil_log2(p.range);
  const int bpp = ceil_log2(full);
  p.limit = 2 * (bpp + std::max(8, bpp));
  return p;
}

// Where each restart interval's entropy-coded bytes lie in the stream.
// JPEG-LS stuffs a 0 bit after every 0xFF data byte, so 0xFF followed by a
// byte with its top bit set is a marker (T.87 A.1; CharLS's rule too).
struct ScanSegments {
  std::vector<std::pair<size_t, size_t>> bytes;  // [begin, end) in the stream
  std::vector<int> markers;                      // the marker after each; -1: the data ended
};

ScanSegments find_segments(const uint8_t* data, size_t size, size_t at) {
  ScanSegments s;
  size_t begin = at;
  while (at < size) {
    const void* ff = std::memchr(data + at, 0xFF, size - at);
    if (!ff) break;
    const size_t marker = size_t(static_cast<const uint8_t*>(ff) - data);
    size_t next = marker + 1;
    if (next < size && data[next] < 0x80) {  // a data byte: the next one holds 7 bits
      at = next;
      continue;
    }
    while (next < size && data[next] == 0xFF) ++next;  // fill bytes
    s.bytes.emplace_back(begin, marker);
    if (next >= size) {
      s.markers.push_back(-1);
      return s;
    }
    s.markers.push_back(data[next]);
    if (data[next] < 0xD0 || data[next] > 0xD7) return s;  // EOI or any other marker ends the scan
    begin = at = next + 1;
  }
  s.bytes.emplace_back(begin, size);
  s.markers.push_back(-1);
  return s;
}

// One restart interval's bytes and how far the bit reader has taken them.
struct ByteSource {
  const uint8_t* data;
  size_t size, pos = 0;
  size_t padded = 0;  // zero bytes read past the end (the last ones in the buffer)
  bool after_ff = false;
};

// MSB-first bits of a ByteSource, unstuffing as it goes. Past the end it reads
// zero bytes; a stream that needs more than 8 of them is damaged, and the
// caller checks overrun() once the interval is decoded. Only the buffer and its
// count are meant to live in registers (gcc spilled them, onto every sample's
// critical path, while the source's fields competed for registers too).
class BitReader {
 public:
  explicit BitReader(ByteSource& source) : src_(&source) {}

  __attribute__((always_inline)) void refill(const std::string& what) {
    ByteSource& s = *src_;
    if (!s.after_ff && s.pos + 8 <= s.size) {
      uint64_t w;
      std::memcpy(&w, s.data + s.pos, 8);
      // No 0xFF among the 8 bytes: no stuffed bit, take whole bytes.
      const uint64_t x = ~w;
      if (((x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull) == 0) {
        // Bits below `bits_` hold the start of the next bytes; OR-ing them in again changes nothing.
        acc_ |= __builtin_bswap64(w) >> bits_;
        s.pos += size_t(63 - bits_) >> 3;
        bits_ |= 56;
        return;
      }
    }
    // Through a copy: were this reader's address to reach a call, it would live
    // in memory, and so would the bit buffer.
    BitReader slow = *this;
    slow.refill_bytewise(what);
    *this = slow;
  }

  int bits() const { return bits_; }
  uint64_t acc() const { return acc_; }
  void skip(int n) {
    acc_ <<= n;
    bits_ -= n;
  }
  int read_bit(const std::string& what) {
    if (bits_ < 1) refill(what);
    const int b = int(acc_ >> 63);
    skip(1);
    return b;
  }
  int read_bits(int n, const std::string& what) {  // 1 <= n <= 32
    if (bits_ < n) refill(what);
    const int v = int(acc_ >> (64 - n));
    skip(n);
    return v;
  }
  bool overrun() const { return size_t(bits_) < src_->padded * 8; }

  // After an interval's last sample: only the zero bits that pad its last byte
  // (and the byte after a final 0xFF) may remain, as CharLS requires.
  bool only_padding_left() const {
    const ByteSource& s = *src_;
    if (bits_ > 0 && acc_ >> (64 - bits_) != 0) return false;
    size_t unread = 0;
    for (size_t i = s.pos; i < s.size; ++i) {
      if (s.data[i] != 0) return false;
      unread += 8;
    }
    const size_t left = size_t(bits_) + unread - std::min(size_t(bits_), s.padded * 8);
    return left <= (s.size >= 2 && s.data[s.size - 2] == 0xFF ? 14 : 7);
  }

 private:
  __attribute__((noinline)) void refill_bytewise(const std::string& what) {
    ByteSource& s = *src_;
    acc_ &= bits_ ? ~uint64_t(0) << (64 - bits_) : 0;  // the bits read ahead assumed no stuffing
    while (bits_ <= 55) {  // at most 63 bits: every shift by a code's length stays below 64
      if (s.pos >= s.size) {
        if (++s.padded > 8) fail(Kind::Corrupt, what, "entropy-coded data ends early");
        ++s.pos;
        bits_ += 8;
        continue;
      }
      const uint64_t b = s.data[s.pos++];
      if (s.after_ff) {  // a stuffed 0 bit, then 7 (find_segments left no marker inside)
        acc_ |= b << (57 - bits_);
        bits_ += 7;
        s.after_ff = false;
      } else {
        acc_ |= b << (56 - bits_);
        bits_ += 8;
        s.after_ff = b == 0xFF;
      }
    }
  }

  ByteSource* src_;
  uint64_t acc_ = 0;
  int bits_ = 0;
};

// Leading zero bits, the width for 0: one instruction with LZCNT, where
// __builtin_clz needs its argument made nonzero first.
inline int leading_zeros(uint64_t v) {
#ifdef __LZCNT__
  return int(_lzcnt_u64(v));
#else
  return v ? __builtin_clzll(v) : 64;
#endif
}
inline int leading_zeros(uint32_t v) {
#ifdef __LZCNT__
  return int(_lzcnt_u32(v));
#else
  return v ? __builtin_clz(v) : 32;
#endif
}

// min(max(v, lo), hi): std::clamp compiles to branches in gcc 12, which the
// data mispredict; this form gives two conditional moves.
inline int clamp_to(int v, int lo, int hi) { return std::min(std::max(v, lo), hi); }

// gcc's SLP vectorizer packed each sample's context update into vector
// registers before storing it (vmovd, vpinsrd, vpunpcklqdq): 6% of a CT
// slice's decoding time, taken off by keeping the stores scalar.
#if defined(__GNUC__) && !defined(__clang__)
#define MM_JPEGLS_NO_SLP __attribute__((optimize("no-tree-slp-vectorize")))
#else
#define MM_JPEGLS_NO_SLP
#endif

// T.87 A.2.1's J: run lengths coded per bit of run mode.
constexpr int kJ[32] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15};

struct RegularContext {
  int32_t a, b, c, n;
  // Worked out at the update, off the critical path, for the context's next sample:
  int32_t k;     // A.10's Golomb parameter
  int32_t flip;  // lossless: -1 where A.5.2's k = 0 correction (2B <= -N) inverts the error value, else 0
};
// Contexts are found by byte offset: the quantized gradients come scaled by
// this, which saves the index arithmetic on the critical path.
constexpr int kContextBytes = int(sizeof(RegularContext));
struct RunContext {
  int32_t a, n, nn;
};

// One scan's state: context statistics (A.2.1), run index, bits. kLossless
// (NEAR = 0) reconstructs modulo 2^P with a mask, as CharLS's lossless path.
template <bool kLossless>
class ScanDecoder {
 public:
  ScanDecoder(const Params& p, int width, const std::string& what)
      : p_(p), what_(what), above_(size_t(width) + 1), gradients_(size_t(width) + 1) {
    // Q3 of every difference Rc - Ra can take, [-MAXVAL, MAXVAL] (128 KiB at 16
    // bits, of which the samples touch a few lines), in context bytes: no clamp
    // on the critical path. quantize_gradient inside (-T3, T3); its region is
    // -4 or 4 beyond.
    quantize_.assign(size_t(2 * p.maxval + 1), int8_t(4 * kContextBytes));
    int8_t* q = quantize_.data() + p.maxval;
    const int inner = std::min(p.t3 - 1, p.maxval);
    std::fill(q - p.maxval, q - inner, int8_t(-4 * kContextBytes));
    for (int d = -inner; d <= inner; ++d) q[d] = int8_t(kContextBytes * quantize_gradient(d));
    reset();
  }

  // The statistics at the start of the scan and of every restart interval.
  void reset() {
    const int32_t a = std::max(2, (p_.range + 32) / 64);
    for (auto& c : regular_) c = {a, 0, 0, 1, golomb_parameter(1, a), 0};
    for (auto& c : run_) c = {a, 1, 0};
    run_index_ = 0;
  }

  // One line: prev[-1 .. width] and cur[-1] set as CharLS sets them.
  MM_JPEGLS_NO_SLP void decode_line(BitReader& reader, const int32_t* prev, int32_t* cur, int width) {
    // Q1 and Q2 (A.3.3) need only the line above: all of them first, in loops
    // the compiler vectorizes, leaving Q3 (from Ra, the sample just decoded) to
    // the serial loop. Each goes with Rb, so that one pointer walks both
    // (above[x].rb is Rc of sample x); registers are scarce in that loop.
    Above* above = above_.data();
    above[0] = {0, prev[-1]};
    // Sample x's Q1 is sample x + 1's Q2: each gradient quantized once.
    int32_t* q = gradients_.data();  // q[x]: Q(prev[x] - prev[x - 1]), x in [0, width]
    for (int x = 0; x <= width; ++x) q[x] = quantize_gradient(prev[x] - prev[x - 1]);
    for (int x = 0; x < width; ++x) above[x + 1] = {kContextBytes * (81 * q[x + 1] + 9 * q[x]), prev[x]};
    const int8_t* quantize = quantize_.data() + p_.maxval;
    BitReader br = reader;  // a local copy stays in registers
    // Ra stays in a register: through memory, the store and the load would sit on the critical path.
    int x = 0, ra = cur[-1];
    while (x < width) {
      // Regular samples in a loop of their own, which calls nothing: around a
      // call, gcc spilled the bit buffer and the position to the stack.
      // Q (A.3.4) in context bytes, in 64 bits (samples are never negative, so
      // Ra widens for free): no sign extensions on the critical path.
      intptr_t qs;
      while ((qs = intptr_t(above[x + 1].q12) + quantize[intptr_t(above[x].rb) - intptr_t(uint32_t(ra))]) != 0) {
        ra = regular(br, qs, ra, above[x + 1].rb, above[x].rb);
        cur[x] = ra;
        if (++x == width) break;
      }
      if (x == width) break;
      reader = br;  // run mode is rarer: the reader goes through memory there
      x += run(reader, x, prev, cur, width);
      br = reader;
      ra = cur[x - 1];
    }
    reader = br;
  }

 private:
  // A.3.3: a gradient's region, -4 .. 4, as a sum of comparisons (no branches, vectorizable).
  int quantize_gradient(int d) const {
    return int(d >= p_.t3) + int(d >= p_.t2) + int(d >= p_.t1) + int(d > p_.near) - int(d <= -p_.t3) -
           int(d <= -p_.t2) - int(d <= -p_.t1) - int(d < -p_.near);
  }

  // A.4.3 (and CharLS's correct_prediction): MAXVAL is 2^P - 1 here.
  int clamp_sample(int v) const { return clamp_to(v, 0, p_.maxval); }

  // A.4.4 / A.7.2.2: the error value back in sample units, modulo RANGE.
  int reconstruct(int predicted, int error) const {
    if constexpr (kLossless) {
      return (predicted + error) & p_.maxval;
    } else {
      const int step = 2 * p_.near + 1;
      int v = predicted + error * step;
      if (v < -p_.near) v += p_.range * step;
      else if (v > p_.maxval + p_.near) v -= p_.range * step;
      return clamp_sample(v);
    }
  }

  // An error value T.87's encoder can write lies in [-floor(RANGE/2), ceil(RANGE/2) - 1].
  void check_error(int e) const {
    if (__builtin_expect(unsigned(e + (p_.range >> 1)) >= unsigned(p_.range), 0))
      fail(Kind::Corrupt, what_, "error value " + std::to_string(e) + " outside RANGE");
  }

  // A.5.3's limited-length Golomb code: the mapped error value. `escape`
  // leading zeros (LIMIT - qbpp - 1) announce qbpp bits of MErrval - 1.
  // With at least 32 bits at hand, k <= 16 and fewer than 16 zeros (and than
  // `escape`), the code lies in the buffer: one test for the common case.
  // (Regular mode's escape, LIMIT - qbpp - 1 >= bpp + 15, is above 16.)
  template <bool kEscapeAbove16>
  __attribute__((always_inline)) int decode_value(BitReader& br, int k, int escape) {
    if (__builtin_expect(br.bits() < 32, 0)) br.refill(what_);
    const int zeros = leading_zeros(br.acc());
    if (__builtin_expect(zeros < 16 && (kEscapeAbove16 || zeros < escape), 1)) {
      const int length = zeros + 1 + k;
      // (zeros << k) + the k bits after the 1 that ends the zeros: that 1 is bit k of the shifted value.
      const int v = int((unsigned(zeros) - 1u) << k) + int(br.acc() >> (64 - length));
      br.skip(length);
      return v;
    }
    BitReader slow = br;  // a copy, as in BitReader::refill
    const int v = decode_long_value(slow, k, escape);
    br = slow;
    return v;
  }

  __attribute__((noinline)) int decode_long_value(BitReader& br, int k, int escape) {
    int zeros = 0;
    while (br.read_bit(what_) == 0)
      if (++zeros > escape) fail(Kind::Corrupt, what_, "a Golomb code longer than LIMIT");
    if (zeros == escape) return br.read_bits(p_.qbpp, what_) + 1;
    return (zeros << k) + (k ? br.read_bits(k, what_) : 0);
  }

  // A.3-A.6: one sample in regular mode.
  // qs: Q in context bytes, nonzero.
  __attribute__((always_inline)) int regular(BitReader& br, intptr_t qs, int ra, int rb, int rc) {
    const int sign = int(qs >> 63);
    RegularContext& c =
        *reinterpret_cast<RegularContext*>(reinterpret_cast<char*>(regular_) + (qs < 0 ? -qs : qs));
    const int k = c.k;
    if (__builtin_expect(k >= 16, 0)) fail(Kind::Corrupt, what_, "Golomb parameter 16");
    // A.4.1's median edge detector is the median of Ra, Rb and Ra + Rb - Rc;
    // min and max by masks (gcc 12 branches on std::min/max pairs here).
    const int d = rb - ra, below = d & (d >> 31);
    const int med = clamp_to(ra + rb - rc, ra + below, rb - below);
    const int predicted = clamp_sample(med + ((c.c ^ sign) - sign));
    const int mapped = decode_value<true>(br, k, p_.limit - p_.qbpp - 1);
    // The error values T.87's encoder writes are those whose mapped values (A.5.2) lie in [0, RANGE - 1].
    if (__builtin_expect(unsigned(mapped) >= unsigned(p_.range), 0)) check_error((mapped >> 1) ^ -(mapped & 1));
    int error = (mapped >> 1) ^ -(mapped & 1);  // A.5.2 inverted
    if (kLossless) error ^= c.flip;
    update(c, error);
    return reconstruct(predicted, (error ^ sign) - sign);
  }

  // A.6.1 and A.6.2, without branches where the outcome follows the data.
  __attribute__((always_inline)) void update(RegularContext& c, int error) {
    int a = c.a + (error < 0 ? -error : error), b = c.b + (kLossless ? error : error * (2 * p_.near + 1)), n = c.n;
    if (__builtin_expect(n == p_.reset, 0)) {
      a >>= 1;
      b >>= 1;
      n >>= 1;
    }
    ++n;
    // A.6.2 without branches (the data would mispredict them: a quarter of the
    // samples move C). When B + N <= 0, B rises by N (to no less than 1 - N) and
    // C falls; when B > 0, B falls by N (to no more than 0) and C rises.
    // Otherwise B already lies in [1 - N, 0], so one clamp serves all three.
    const int rise = int(b + n <= 0) - int(b > 0);  // B's move in units of N
    b = clamp_to(b + rise * n, 1 - n, 0);
    c.c = clamp_to(c.c - rise, -128, 127);
    c.a = a, c.b = b, c.n = n;
    const int k = golomb_parameter(n, a);
    c.k = k;
    if (kLossless) c.flip = ((2 * b + n - 1) >> 31) & -int(k == 0);
  }

  // A.7: a run of Ra from x, then the sample that interrupts it unless the
  // line ends first. Returns the samples decoded.
  int run(BitReader& br, int x, const int32_t* prev, int32_t* cur, int width) {
    const int ra = cur[x - 1], left = width - x;
    int count = 0;
    while (br.read_bit(what_)) {
      const int chunk = 1 << kJ[run_index_], n = std::min(chunk, left - count);
      count += n;
      if (n == chunk) run_index_ = std::min(31, run_index_ + 1);
      if (count == left) break;
    }
    if (count != left && kJ[run_index_] > 0) count += br.read_bits(kJ[run_index_], what_);
    if (count > left) fail(Kind::Corrupt, what_, "a run past the end of its line");
    std::fill(cur + x, cur + x + count, ra);
    const int end = x + count;
    if (end == width) return count;
    const int rb = prev[end];
    if (std::abs(ra - rb) <= p_.near) {
      cur[end] = reconstruct(ra, interruption_error(br, run_[1], 1));
    } else {
      const int e = interruption_error(br, run_[0], 0);
      cur[end] = reconstruct(rb, rb < ra ? -e : e);
    }
    run_index_ = std::max(0, run_index_ - 1);
    return count + 1;
  }

  // A.10's k: the least with N * 2^k >= A (N > 0; A >= 0, 0 once halved from 1), from their bit lengths.
  static int golomb_parameter(int n, int a) {
    const int k = std::max(0, leading_zeros(uint32_t(n)) - leading_zeros(uint32_t(a)));
    return k + int((n << k) < a);
  }

  // A.7.2: the interruption sample's error (before its sign), and A.7.2.2's updates.
  int interruption_error(BitReader& br, RunContext& c, int type) {
    const int temp = c.a + (c.n >> 1) * type;
    const int k = golomb_parameter(c.n, temp);
    if (k > 16) fail(Kind::Corrupt, what_, "run interruption Golomb parameter " + std::to_string(k));
    const int mapped = decode_value<false>(br, k, p_.limit - kJ[run_index_] - 1 - p_.qbpp - 1);
    const int t = mapped + type, map = t & 1, magnitude = (t + map) / 2;
    const int error = (k != 0 || 2 * c.nn >= c.n) == bool(map) ? -magnitude : magnitude;
    check_error(error);
    if (error < 0) ++c.nn;
    c.a += (mapped + 1 - type) >> 1;
    if (c.n == p_.reset) {
      c.a >>= 1;
      c.n >>= 1;
      c.nn >>= 1;
    }
    ++c.n;
    return error;
  }

  const Params p_;
  const std::string& what_;
  std::vector<int8_t> quantize_;
  struct Above {
    int32_t q12, rb;  // 81 * Q1 + 9 * Q2, and Rb
  };
  std::vector<Above> above_;        // [x + 1] for sample x; [0]: Rc of sample 0
  std::vector<int32_t> gradients_;  // a line's Q(prev[x] - prev[x - 1]), x in [0, width]
  RegularContext regular_[365];
  RunContext run_[2];
  int run_index_ = 0;
};

template <bool kLossless>
void decode_scan(const uint8_t* data, size_t size, const Stream& s, const Params& p, int bytes_per_sample,
                 uint8_t* out, const std::string& what) {
  const JpegLsHeader& h = s.header;
  const ScanSegments scan = find_segments(data, size, s.scan_begin);
  const int lines_per_interval = s.restart_interval ? s.restart_interval : h.height;
  const size_t intervals = size_t((h.height + lines_per_interval - 1) / lines_per_interval);
  if (scan.bytes.size() < intervals)
    fail(Kind::Corrupt, what, std::to_string(scan.bytes.size()) + " restart intervals, " + std::to_string(intervals) +
                                  " expected");
  for (size_t k = 0; k + 1 < intervals; ++k)
    if (scan.markers[k] != int(0xD0 + (k & 7)))
      fail(Kind::Corrupt, what, "no RST" + std::to_string(k & 7) + " after restart interval " + std::to_string(k));
  // CharLS reads the EOI the DICOM wrapper appends where a stream lacks it.
  const int end_marker = scan.markers[intervals - 1];
  if (end_marker != 0xD9 && end_marker != -1) fail(Kind::Unsupported, what, "a marker other than EOI after the scan");

  ScanDecoder<kLossless> decoder(p, h.width, what);
  // Lines with an edge sample either side: [-1] and [width] (T.87 A.2.1's edges).
  const size_t stride = size_t(h.width) + 2;
  std::vector<int32_t> lines(2 * stride);
  for (size_t k = 0; k < intervals; ++k) {
    if (k > 0) {
      decoder.reset();
      std::fill(lines.begin(), lines.end(), 0);
    }
    ByteSource source{data + scan.bytes[k].first, scan.bytes[k].second - scan.bytes[k].first};
    BitReader br(source);
    const int first = int(k) * lines_per_interval, last = std::min(h.height, first + lines_per_interval);
    for (int y = first; y < last; ++y) {
      int32_t* prev = lines.data() + 1 + ((y - first) & 1 ? stride : 0);
      int32_t* cur = lines.data() + 1 + ((y - first) & 1 ? 0 : stride);
      prev[h.width] = prev[h.width - 1];
      cur[-1] = prev[0];
      decoder.decode_line(br, prev, cur, h.width);
      // The width in a local: through h, gcc reloaded it after every byte stored (out may alias it).
      const int width = h.width;
      uint8_t* row = out + size_t(y) * size_t(width) * size_t(bytes_per_sample);
      if (bytes_per_sample == 1) {
        for (int x = 0; x < width; ++x) row[x] = uint8_t(cur[x]);
      } else {
        for (int x = 0; x < width; ++x) {
          const uint16_t v = uint16_t(cur[x]);
          std::memcpy(row + 2 * x, &v, 2);
        }
      }
    }
    if (br.overrun()) fail(Kind::Corrupt, what, "entropy-coded data ends early");
    if (!br.only_padding_left()) fail(Kind::Corrupt, what, "data after the last sample of an interval");
  }
}

}  // namespace

JpegLsHeader read_jpegls_header(const uint8_t* data, size_t size, const std::string& what) {
  const Stream s = read_stream(data, size, what);
  derive_params(s, what);
  return s.header;
}

void decode_jpegls_stream(const uint8_t* data, size_t size, int bytes_per_sample, uint8_t* out, size_t out_size,
                          const std::string& what) {
  const Stream s = read_stream(data, size, what);
  const Params p = derive_params(s, what);
  const JpegLsHeader& h = s.header;
  if (bytes_per_sample != 1 && bytes_per_sample != 2) fail(Kind::Unsupported, what, "samples of that size");
  if (h.precision > 8 * bytes_per_sample)
    fail(Kind::Corrupt, what, std::to_string(h.precision) + "-bit samples into " + std::to_string(bytes_per_sample) +
                                  " bytes");
  if (out_size != size_t(h.width) * size_t(h.height) * size_t(bytes_per_sample))
    fail(Kind::Corrupt, what, "output of " + std::to_string(out_size) + " bytes for " + std::to_string(h.width) + " x " +
                                  std::to_string(h.height));
  if (p.near == 0) decode_scan<true>(data, size, s, p, bytes_per_sample, out, what);
  else decode_scan<false>(data, size, s, p, bytes_per_sample, out, what);
}

UninitialisedBytes decode_own_jpegls_frames(const std::vector<Codestream>& frames, PixelLayout& l,
                                            const std::string& what) {
  if (l.bits_allocated != 8 && l.bits_allocated != 16)
    fail(Kind::Unsupported, what, "BitsAllocated " + std::to_string(l.bits_allocated));
  if (l.samples != 1) fail(Kind::Unsupported, what, std::to_string(l.samples) + " samples per pixel");
  if (int64_t(frames.size()) != l.frames)
    fail(Kind::Corrupt, what, std::to_string(frames.size()) + " streams for " + std::to_string(l.frames) + " frames");
  const int bytes = l.bits_allocated / 8;
  for (size_t f = 0; f < frames.size(); ++f) {  // every header checked before the output is allocated
    const JpegLsHeader h = read_jpegls_header(frames[f].data, frames[f].size, what);
    if (h.width != l.columns || h.height != l.rows || h.components != l.samples || h.precision > l.bits_allocated)
      fail(Kind::Corrupt, what,
           "frame " + std::to_string(f) + " is " + std::to_string(h.width) + " x " + std::to_string(h.height) + " x " +
               std::to_string(h.components) + " of " + std::to_string(h.precision) + " bits, the dataset says " +
               std::to_string(l.columns) + " x " + std::to_string(l.rows) + " x " + std::to_string(l.samples) +
               " of BitsAllocated " + std::to_string(l.bits_allocated));
  }
  UninitialisedBytes out(size_t(l.total_bytes()));  // every sample is written, or the decode throws
  const size_t frame_bytes = size_t(l.frame_bytes());
  for (size_t f = 0; f < frames.size(); ++f)
    decode_jpegls_stream(frames[f].data, frames[f].size, bytes, out.data() + f * frame_bytes, frame_bytes, what);
  l.planar = 0;
  return out;
}

}  // namespace mm::dicom
