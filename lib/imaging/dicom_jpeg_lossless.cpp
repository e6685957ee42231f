#include "imaging/dicom_jpeg_lossless.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

#include "imaging/jpeg_markers.h"

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {

[[noreturn]] void fail(Kind kind, const std::string& what, const std::string& why) {
  throw ImageError(kind, what, "JPEG Lossless: " + why);
}

// Codes up to this many bits decode with one table look-up, and so do whole
// differences (code and extra bits) that fit in it; longer codes (rare:
// lossless tables put the small differences on short codes) walk T.81's
// MAXCODE list.
constexpr int kLookupBits = 11;

// What the next kLookupBits bits hold.
struct Lookup {
  int16_t difference;  // when ssss == kWhole
  uint8_t bits;        // to skip: the code's, or the code's and the extra bits' (kWhole); 0: a longer code
  uint8_t ssss;        // the code's difference category, or kWhole
};
constexpr uint8_t kWhole = 0xFF;

// A DHT table ready for decoding (T.81 C.2, F.2.2.3).
struct HuffmanTable {
  bool defined = false;
  Lookup fast[1 << kLookupBits];
  int32_t maxcode[17];  // the largest code of each length; -1: none of that length
  int32_t valptr[17];   // index in symbols of code c of length l: valptr[l] + c
  uint8_t symbols[256];
};

// The difference that `extra` (ssss bits, 1 <= ssss <= 15) stands for (T.81 F.2.2.1's EXTEND).
inline int extend(int extra, int ssss) { return extra < (1 << (ssss - 1)) ? extra - (1 << ssss) + 1 : extra; }

// Builds the table from DHT's 16 counts and symbols, refusing what IJG's
// jpeg_make_d_derived_tbl refuses: a code overflow (which includes a code of
// all ones) and a lossless difference category above 16.
void build_table(HuffmanTable& t, const uint8_t* counts, const uint8_t* symbols, int total, const std::string& what) {
  std::fill(std::begin(t.fast), std::end(t.fast), Lookup{0, 0, 0});
  std::memcpy(t.symbols, symbols, size_t(total));
  for (int i = 0; i < total; ++i)
    if (symbols[i] > 16) fail(Kind::Corrupt, what, "Huffman table with difference category " + std::to_string(symbols[i]));
  int32_t code = 0;
  int k = 0;
  for (int len = 1; len <= 16; ++len) {
    const int n = counts[len - 1];
    t.valptr[len] = k - code;
    t.maxcode[len] = n ? code + n - 1 : -1;
    // Checked before the code fills the look-up table: an overflowing code would index past it.
    if (code + n > (int32_t(1) << len) - 1)
      fail(Kind::Corrupt, what, "Huffman table with more codes than its lengths allow");
    for (int i = 0; i < n; ++i, ++code, ++k)
      if (len <= kLookupBits) {
        const int shift = kLookupBits - len, ssss = symbols[k];
        for (int32_t e = code << shift; e < (code + 1) << shift; ++e) {
          Lookup& l = t.fast[e];
          if (ssss == 0 || ssss == 16) {
            l = {int16_t(ssss ? -32768 : 0), uint8_t(len), kWhole};  // -32768: 32768 modulo 2^16
          } else if (len + ssss <= kLookupBits) {
            const int extra = (e >> (shift - ssss)) & ((1 << ssss) - 1);
            l = {int16_t(extend(extra, ssss)), uint8_t(len + ssss), kWhole};
          } else {
            l = {0, uint8_t(len), uint8_t(ssss)};
          }
        }
      }
    code <<= 1;
  }
  t.defined = true;
}

struct ScanComponent {
  int table = 0;  // Huffman table (Td) of the frame component at this position
};

// Everything before the entropy-coded data of the (only) scan.
struct Stream {
  LosslessHeader header;
  int component_ids[4] = {};
  HuffmanTable tables[4];
  int restart_interval = 0;  // in MCUs (one pixel's samples); 0: none
  int predictor = 0, point_transform = 0;
  ScanComponent scan[4];  // in the frame's component order
  size_t scan_begin = 0;
};

void read_frame_header(Stream& s, const uint8_t* seg, size_t n, const std::string& what) {
  if (s.header.components) fail(Kind::Corrupt, what, "a second frame header");
  if (n < 6) fail(Kind::Corrupt, what, "short frame header");
  LosslessHeader& h = s.header;
  h.precision = seg[0];
  h.height = load_be16(seg + 1);
  h.width = load_be16(seg + 3);
  h.components = seg[5];
  if (h.precision < 2 || h.precision > 16) fail(Kind::Corrupt, what, "precision " + std::to_string(h.precision));
  if (h.height == 0) fail(Kind::Unsupported, what, "height given by a DNL marker");
  if (h.width == 0) fail(Kind::Corrupt, what, "width 0");
  if (h.components != 1 && h.components != 3)
    fail(Kind::Unsupported, what, std::to_string(h.components) + " components");
  if (n != 6 + 3 * size_t(h.components)) fail(Kind::Corrupt, what, "frame header length");
  for (int c = 0; c < h.components; ++c) {
    s.component_ids[c] = seg[6 + 3 * c];
    if (seg[7 + 3 * c] != 0x11) fail(Kind::Unsupported, what, "subsampled components");
  }
}

void read_tables(Stream& s, const uint8_t* seg, size_t n, const std::string& what) {
  while (n > 0) {
    if (n < 17) fail(Kind::Corrupt, what, "short Huffman table segment");
    const int tc = seg[0] >> 4, th = seg[0] & 15;
    int total = 0;
    for (int i = 1; i <= 16; ++i) total += seg[i];
    if (tc > 1 || th > 3 || total > 256 || size_t(17 + total) > n)
      fail(Kind::Corrupt, what, "bad Huffman table segment");
    if (tc == 0) build_table(s.tables[th], seg + 1, seg + 17, total, what);  // lossless scans use "DC" tables
    seg += 17 + total;
    n -= size_t(17 + total);
  }
}

void read_scan_header(Stream& s, const uint8_t* seg, size_t n, const std::string& what) {
  const LosslessHeader& h = s.header;
  if (!h.components) fail(Kind::Corrupt, what, "a scan before the frame header");
  if (n < 1 || n != 4 + 2 * size_t(seg[0])) fail(Kind::Corrupt, what, "scan header length");
  if (seg[0] != h.components) fail(Kind::Unsupported, what, "components in separate scans");
  bool seen[4] = {};
  for (int i = 0; i < h.components; ++i) {
    const int id = seg[1 + 2 * i], table = seg[2 + 2 * i] >> 4;
    int c = 0;
    while (c < h.components && s.component_ids[c] != id) ++c;
    if (c == h.components || seen[c]) fail(Kind::Corrupt, what, "scan names component " + std::to_string(id));
    if (c != i) fail(Kind::Unsupported, what, "scan components in another order than the frame's");
    seen[c] = true;
    if (table > 3 || !s.tables[table].defined)
      fail(Kind::Corrupt, what, "scan uses undefined Huffman table " + std::to_string(table));
    s.scan[c].table = table;
  }
  const uint8_t* p = seg + 1 + 2 * h.components;
  s.predictor = p[0];
  s.point_transform = p[2] & 15;
  if (s.predictor < 1 || s.predictor > 7 || p[1] != 0 || (p[2] >> 4) != 0)
    fail(Kind::Corrupt, what, "predictor " + std::to_string(s.predictor) + ", Se " + std::to_string(p[1]) + ", Ah " +
                                  std::to_string(p[2] >> 4));
  if (s.point_transform >= h.precision) fail(Kind::Unsupported, what, "point transform not below the precision");
  if (s.restart_interval % h.width != 0)
    fail(Kind::Unsupported, what, "restart interval of " + std::to_string(s.restart_interval) + " for rows of " +
                                      std::to_string(h.width));
}

// Walks the markers from SOI to the first SOS.
Stream read_stream(const uint8_t* data, size_t size, const std::string& what) {
  check_soi(data, size, "JPEG Lossless", what);
  Stream s;
  for (size_t at = 2;;) {
    // TEM and RSTn have no segment (IJG skips them here too).
    const MarkerSegment g = next_marker_segment(data, size, at, true, "JPEG Lossless", what);
    const uint8_t m = g.marker;
    const uint8_t* seg = g.params;
    const size_t n = g.size;
    if (m == 0xC3) {
      read_frame_header(s, seg, n, what);
    } else if (m == 0xC4) {
      read_tables(s, seg, n, what);
    } else if (m == 0xDD) {
      if (n != 2) fail(Kind::Corrupt, what, "DRI length");
      s.restart_interval = load_be16(seg);
    } else if (m == 0xDA) {
      read_scan_header(s, seg, n, what);
      s.scan_begin = g.end;
      return s;
    } else if (!(m >= 0xE0 && m <= 0xEF) && m != 0xFE && m != 0xDB) {
      // Other processes (DCT, arithmetic, hierarchical: SOFn, DAC, DHP, EXP),
      // DNL before a scan, and markers IJG does not know (it stops at them).
      fail(Kind::Unsupported, what, "marker " + marker_name(m));
    }  // APPn, COM, DQT: skipped
    at = g.end;
  }
}

// The entropy-coded data with its 0xFF00 stuffing removed, cut at the restart
// markers: segment k (k >= 1) followed RST((k - 1) mod 8).
struct CleanScan {
  std::vector<uint8_t> bytes;
  std::vector<std::pair<size_t, size_t>> segments;  // [begin, end) in bytes
  std::vector<int> markers;                         // the RST number before each segment (-1 for the first)
  int end_marker = -1;                              // the marker after the scan; -1: the data ended first
};

void unstuff(const uint8_t* data, size_t size, size_t at, CleanScan& scan) {
  scan.bytes.resize(size - at);
  uint8_t* out = scan.bytes.data();
  size_t begin = 0, n = 0;
  scan.markers.push_back(-1);
  while (at < size) {
    const void* ff = std::memchr(data + at, 0xFF, size - at);
    const size_t run = ff ? size_t(static_cast<const uint8_t*>(ff) - (data + at)) : size - at;
    std::memcpy(out + n, data + at, run);
    n += run;
    at += run;
    if (at >= size) break;
    size_t next = at + 1;
    while (next < size && data[next] == 0xFF) ++next;  // fill bytes before a marker (IJG skips them)
    if (next >= size) break;
    if (data[next] == 0x00) {  // a stuffed data byte
      out[n++] = 0xFF;
      at = next + 1;
    } else if (data[next] >= 0xD0 && data[next] <= 0xD7) {
      scan.segments.emplace_back(begin, n);
      scan.markers.push_back(data[next] - 0xD0);
      begin = n;
      at = next + 1;
    } else {
      scan.end_marker = data[next];  // EOI, or any other marker, ends the scan
      break;
    }
  }
  scan.segments.emplace_back(begin, n);
}

// The 8 bytes at data[pos] as a big-endian word, zeros past size.
__attribute__((noinline)) uint64_t word_near_end(const uint8_t* data, size_t size, size_t pos) {
  uint64_t w = 0;
  for (int i = 0; i < 8; ++i) w = w << 8 | (pos + size_t(i) < size ? data[pos + size_t(i)] : 0);
  return w;
}

// MSB-first bits of one restart interval's unstuffed bytes; past the end it
// reads zero bits, and the caller checks overrun() once the interval is done.
class BitReader {
 public:
  BitReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  // At least 56 bits in the buffer. (Forced inline, as is decode_difference:
  // otherwise the reader's state lives in memory, on the critical path.)
  __attribute__((always_inline)) void refill() {
    uint64_t w;
    if (pos_ + 8 <= size_) {
      std::memcpy(&w, data_ + pos_, 8);
      w = __builtin_bswap64(w);
    } else {
      w = word_near_end(data_, size_, pos_);
    }
    // Bits below `bits_` hold the start of the next byte; OR-ing it in again later changes nothing.
    acc_ |= w >> bits_;
    pos_ += size_t(63 - bits_) >> 3;
    bits_ |= 56;
  }
  int bits() const { return bits_; }
  uint32_t peek(int n) const { return uint32_t(acc_ >> (64 - n)); }  // 1 <= n <= 32
  void skip(int n) {
    acc_ <<= n;
    bits_ -= n;
  }
  bool overrun() const { return pos_ * 8 - size_t(bits_) > size_ * 8; }

 private:
  const uint8_t* data_;
  size_t size_, pos_ = 0;
  uint64_t acc_ = 0;
  int bits_ = 0;
};

[[noreturn]] __attribute__((noinline)) void bad_code(const std::string& what) {
  fail(Kind::Corrupt, what, "a code its Huffman table lacks");
}

// One difference (T.81 H.1.2.2): a category SSSS, then SSSS extra bits;
// SSSS = 16 is 32768 with none.
__attribute__((always_inline)) inline int decode_difference(BitReader& br, const HuffmanTable& t, const std::string& what) {
  // A difference takes at most 31 bits; refilling only below 32 keeps the
  // refill's load off most samples' critical path (12-20% faster on CT).
  if (__builtin_expect(br.bits() < 32, 0)) br.refill();
  int len, ssss;
  const Lookup e = t.fast[br.peek(kLookupBits)];
  if (e.ssss == kWhole) {
    br.skip(e.bits);
    return e.difference;
  }
  if (e.bits) {
    len = e.bits, ssss = e.ssss;
  } else {
    const int32_t code16 = int32_t(br.peek(16));
    len = kLookupBits + 1;
    while (len <= 16 && (code16 >> (16 - len)) > t.maxcode[len]) ++len;
    if (len > 16) bad_code(what);
    ssss = t.symbols[t.valptr[len] + (code16 >> (16 - len))];
  }
  br.skip(len);
  if (ssss == 0) return 0;
  if (ssss == 16) return 32768;
  const int extra = int(br.peek(ssss));
  br.skip(ssss);
  return extend(extra, ssss);
}

// T.81 Table H.1 in IJG's int arithmetic (jdpred.c): Ra left, Rb above, Rc above-left.
template <int P>
inline int predict(int ra, int rb, int rc) {
  if constexpr (P == 1) return ra;
  if constexpr (P == 2) return rb;
  if constexpr (P == 3) return rc;
  if constexpr (P == 4) return ra + rb - rc;
  if constexpr (P == 5) return ra + ((rb - rc) >> 1);
  if constexpr (P == 6) return rb + ((ra - rc) >> 1);
  if constexpr (P == 7) return (ra + rb) >> 1;
  return 0;
}

struct RowDecoder {
  const HuffmanTable* tables[3];
  int width, first_predictor;  // first_predictor: 2^(P - Pt - 1)
  const std::string& what;

  // The first row of a scan or restart interval: the column 0 samples are
  // predicted by first_predictor, the others by their left neighbour.
  template <int NC>
  void first_row(BitReader& br, uint16_t* cur) const {
    for (int c = 0; c < NC; ++c)
      cur[c] = uint16_t(first_predictor + decode_difference(br, *tables[c], what));
    for (int i = NC; i < width * NC; ++i)
      cur[i] = uint16_t(cur[i - NC] + decode_difference(br, *tables[i % NC], what));
  }

  // Any other row: column 0 predicted from above, the rest by predictor P.
  template <int P, int NC>
  void row(BitReader& reader, const uint16_t* prev, uint16_t* cur) const {
    BitReader br = reader;  // a local copy stays in registers
    int left[NC];           // Ra, kept out of memory: it is on the critical path
    for (int c = 0; c < NC; ++c)
      cur[c] = uint16_t(left[c] = (prev[c] + decode_difference(br, *tables[c], what)) & 0xFFFF);
    for (int x = 1; x < width; ++x)
      for (int c = 0; c < NC; ++c) {
        const int i = x * NC + c;
        left[c] = (predict<P>(left[c], prev[i], prev[i - NC]) + decode_difference(br, *tables[c], what)) & 0xFFFF;
        cur[i] = uint16_t(left[c]);
      }
    reader = br;
  }

  template <int NC>
  void any_row(int predictor, BitReader& br, const uint16_t* prev, uint16_t* cur) const {
    switch (predictor) {
      case 1: row<1, NC>(br, prev, cur); break;
      case 2: row<2, NC>(br, prev, cur); break;
      case 3: row<3, NC>(br, prev, cur); break;
      case 4: row<4, NC>(br, prev, cur); break;
      case 5: row<5, NC>(br, prev, cur); break;
      case 6: row<6, NC>(br, prev, cur); break;
      default: row<7, NC>(br, prev, cur); break;
    }
  }
};

// Reconstructed samples (modulo 2^16) shifted back by the point transform,
// kept to the width of IJG's sample type: 8 bits up to precision 8, else 16.
void write_row(const uint16_t* cur, size_t n, int point_transform, int bytes_per_sample, uint8_t* out) {
  if (bytes_per_sample == 1) {
    for (size_t i = 0; i < n; ++i) out[i] = uint8_t(cur[i] << point_transform);
  } else if (point_transform == 0) {
    std::memcpy(out, cur, n * 2);  // little-endian host (checked by the reader)
  } else {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t v = uint16_t(cur[i] << point_transform);
      std::memcpy(out + 2 * i, &v, 2);
    }
  }
}

}  // namespace

LosslessHeader read_lossless_header(const uint8_t* data, size_t size, const std::string& what) {
  return read_stream(data, size, what).header;
}

void decode_lossless_stream(const uint8_t* data, size_t size, int bytes_per_sample, uint8_t* out, size_t out_size,
                            const std::string& what) {
  const Stream s = read_stream(data, size, what);
  const LosslessHeader& h = s.header;
  if (bytes_per_sample != (h.precision <= 8 ? 1 : 2))
    fail(Kind::Unsupported, what, std::to_string(h.precision) + "-bit samples into " + std::to_string(bytes_per_sample) +
                                      " bytes");
  const size_t row_samples = size_t(h.width) * size_t(h.components);
  if (out_size != row_samples * size_t(h.height) * size_t(bytes_per_sample))
    fail(Kind::Corrupt, what, "output of " + std::to_string(out_size) + " bytes for " + std::to_string(h.width) + " x " +
                                  std::to_string(h.height) + " x " + std::to_string(h.components));
  CleanScan scan;
  unstuff(data, size, s.scan_begin, scan);
  // DCMTK's codec fails a stream whose data ends before EOI (IJG suspends
  // waiting for more), and a second scan or DNL would be news to us.
  if (scan.end_marker != 0xD9) fail(Kind::Corrupt, what, "no EOI marker after the scan");
  const int rows_per_interval = s.restart_interval ? s.restart_interval / h.width : h.height;
  if (rows_per_interval == 0) fail(Kind::Unsupported, what, "restart interval shorter than a row");
  const size_t intervals = size_t((h.height + rows_per_interval - 1) / rows_per_interval);
  if (scan.segments.size() < intervals)
    fail(Kind::Corrupt, what, std::to_string(scan.segments.size()) + " restart intervals, " + std::to_string(intervals) +
                                  " expected");

  RowDecoder rows{{}, h.width, 1 << (h.precision - s.point_transform - 1), what};
  for (int c = 0; c < h.components; ++c) rows.tables[c] = &s.tables[s.scan[c].table];
  std::vector<uint16_t> prev(row_samples), cur(row_samples);
  const size_t out_row_bytes = row_samples * size_t(bytes_per_sample);
  for (size_t k = 0; k < intervals; ++k) {
    if (k > 0 && scan.markers[k] != int((k - 1) & 7))
      fail(Kind::Corrupt, what, "RST" + std::to_string(scan.markers[k]) + " where RST" + std::to_string((k - 1) & 7) +
                                    " belongs");
    const auto [begin, end] = scan.segments[k];
    BitReader br(scan.bytes.data() + begin, end - begin);
    const int first = int(k) * rows_per_interval, last = std::min(h.height, first + rows_per_interval);
    for (int y = first; y < last; ++y) {
      if (h.components == 1) {
        if (y == first) rows.first_row<1>(br, cur.data());
        else rows.any_row<1>(s.predictor, br, prev.data(), cur.data());
      } else {
        if (y == first) rows.first_row<3>(br, cur.data());
        else rows.any_row<3>(s.predictor, br, prev.data(), cur.data());
      }
      write_row(cur.data(), row_samples, s.point_transform, bytes_per_sample, out + size_t(y) * out_row_bytes);
      std::swap(prev, cur);
    }
    if (br.overrun()) fail(Kind::Corrupt, what, "entropy-coded data ends early");
  }
}

UninitialisedBytes decode_jpeg_lossless_frames(const std::vector<Codestream>& frames, PixelLayout& l,
                                               const std::string& what) {
  if (l.bits_allocated != 8 && l.bits_allocated != 16)
    fail(Kind::Unsupported, what, "BitsAllocated " + std::to_string(l.bits_allocated));
  // DCMTK turns a YBR stream's colours into RGB (the reader asks it to); RGB it leaves alone, as we do.
  if (l.samples != 1 && l.photometric != "RGB") fail(Kind::Unsupported, what, l.photometric + " colour");
  if (int64_t(frames.size()) != l.frames)
    fail(Kind::Corrupt, what, std::to_string(frames.size()) + " streams for " + std::to_string(l.frames) + " frames");
  const int bytes = l.bits_allocated / 8;
  for (size_t f = 0; f < frames.size(); ++f) {  // every header checked before the output is allocated
    const LosslessHeader h = read_lossless_header(frames[f].data, frames[f].size, what);
    if (h.width != l.columns || h.height != l.rows || h.components != l.samples)
      fail(Kind::Corrupt, what,
           "frame " + std::to_string(f) + " is " + std::to_string(h.width) + " x " + std::to_string(h.height) + " x " +
               std::to_string(h.components) + ", the dataset says " + std::to_string(l.columns) + " x " +
               std::to_string(l.rows) + " x " + std::to_string(l.samples));
    if ((h.precision <= 8 ? 1 : 2) != bytes)
      fail(Kind::Unsupported, what, std::to_string(h.precision) + "-bit stream, BitsAllocated " +
                                        std::to_string(l.bits_allocated));
  }
  UninitialisedBytes out(size_t(l.total_bytes()));  // every sample is written, or the decode throws
  const size_t frame_bytes = size_t(l.frame_bytes());
  for (size_t f = 0; f < frames.size(); ++f)
    decode_lossless_stream(frames[f].data, frames[f].size, bytes, out.data() + f * frame_bytes, frame_bytes, what);
  l.planar = 0;
  return out;
}

}  // namespace mm::dicom
