#include "imaging/dicom_frames.h"

#include <zlib.h>

#include <cstring>

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {

std::string frame_name(size_t f) { return "frame " + std::to_string(f); }

void check_frame_count(const std::vector<Codestream>& frames, const PixelLayout& l, const std::string& what) {
  if (int64_t(frames.size()) != l.frames)
    throw ImageError(Kind::Corrupt, what,
                     std::to_string(frames.size()) + " encoded frames for NumberOfFrames " + std::to_string(l.frames));
}

// Inflates one frame into exactly `size` bytes at `out`; a trailing pad byte is tolerated.
void inflate_frame(const Codestream& cs, uint8_t* out, size_t size, const std::string& what, size_t f) {
  z_stream z{};
  if (inflateInit2(&z, -15) != Z_OK) throw ImageError(Kind::Corrupt, what, "zlib initialisation failed");
  uint8_t pad[2];
  z.next_in = const_cast<Bytef*>(cs.data);
  z.avail_in = uInt(cs.size);
  z.next_out = out;
  z.avail_out = uInt(size);
  int status = inflate(&z, Z_FINISH);
  if (status == Z_BUF_ERROR && z.avail_out == 0) {  // room for one pad byte, never more
    z.next_out = pad;
    z.avail_out = 1;
    status = inflate(&z, Z_FINISH);
  }
  const size_t produced = size_t(z.total_out);
  const char* msg = z.msg;
  inflateEnd(&z);
  if (status != Z_STREAM_END) {
    const std::string why = produced > size ? "inflates past the frame's " + std::to_string(size) + " bytes"
                            : msg           ? std::string("deflate stream: ") + msg
                                            : "deflate stream ends after " + std::to_string(produced) + " of " +
                                                  std::to_string(size) + " bytes";
    throw ImageError(Kind::Corrupt, what, frame_name(f) + ": " + why);
  }
  if (produced < size)
    throw ImageError(Kind::Corrupt, what,
                     frame_name(f) + ": inflates to " + std::to_string(produced) + " of " + std::to_string(size) + " bytes");
}

// PackBits (PS3.5 G.3.1): a header byte n; 0..127: n+1 literal bytes follow;
// -127..-1: the next byte n+1 times; -128: nothing.
void unpack_bits(const uint8_t* in, size_t in_size, uint8_t* out, size_t size, const std::string& what, size_t f) {
  size_t i = 0, o = 0;
  while (o < size && i < in_size) {
    const int8_t n = int8_t(in[i++]);
    if (n >= 0) {
      const size_t count = size_t(n) + 1;
      if (i + count > in_size || o + count > size) break;
      std::memcpy(out + o, in + i, count);
      i += count, o += count;
    } else if (n != -128) {
      const size_t count = size_t(1 - n);
      if (i >= in_size || o + count > size) break;
      std::memset(out + o, in[i++], count);
      o += count;
    }
  }
  if (o != size)
    throw ImageError(Kind::Corrupt, what,
                     frame_name(f) + ": RLE segment decodes to " + std::to_string(o) + " of " + std::to_string(size) +
                         " bytes, or past them");
}

}  // namespace

UninitialisedBytes inflate_frames(const std::vector<Codestream>& frames, PixelLayout& l, const std::string& what) {
  check_frame_count(frames, l, what);
  l.frames_byte_aligned = true;
  const size_t frame_bytes = size_t(l.frame_bytes());
  UninitialisedBytes out(size_t(l.total_bytes()), uint8_t(0));
  for (size_t f = 0; f < frames.size(); ++f) inflate_frame(frames[f], out.data() + f * frame_bytes, frame_bytes, what, f);
  return out;
}

UninitialisedBytes decode_rle_bit_frames(const std::vector<Codestream>& frames, PixelLayout& l,
                                         const std::string& what) {
  if (l.bits_allocated != 1 || l.samples != 1)
    throw ImageError(Kind::Unsupported, what, "RLE of 1-bit data with more than one sample");
  check_frame_count(frames, l, what);
  l.frames_byte_aligned = true;
  const size_t frame_bytes = size_t(l.frame_bytes());
  UninitialisedBytes out(size_t(l.total_bytes()), uint8_t(0));
  for (size_t f = 0; f < frames.size(); ++f) {
    const Codestream& cs = frames[f];
    uint32_t header[16];
    if (cs.size < sizeof header) throw ImageError(Kind::Corrupt, what, frame_name(f) + ": RLE header truncated");
    std::memcpy(header, cs.data, sizeof header);  // little-endian host (checked by the reader)
    if (header[0] != 1 || header[1] < sizeof header || header[1] >= cs.size)
      throw ImageError(Kind::Corrupt, what,
                       frame_name(f) + ": RLE header with " + std::to_string(header[0]) +
                           " segments (1-bit data has 1) or its offset outside the frame");
    unpack_bits(cs.data + header[1], cs.size - header[1], out.data() + f * frame_bytes, frame_bytes, what, f);
  }
  return out;
}

}  // namespace mm::dicom
