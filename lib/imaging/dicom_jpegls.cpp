#include "imaging/dicom_jpegls.h"

#include <charls/charls.h>

#include <memory>
#include <vector>

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {

struct DecoderDeleter {
  void operator()(charls_jpegls_decoder* d) const { charls_jpegls_decoder_destroy(d); }
};

// Decodes frame f into `out` (frame_bytes bytes of the layout).
void decode_frame(const Codestream& cs, PixelLayout& l, uint8_t* out, const std::string& what, size_t f) {
  const std::string where = "JPEG-LS frame " + std::to_string(f) + ": ";
  auto fail_if = [&](charls_jpegls_errc e) {
    if (e != charls::jpegls_errc::success) throw ImageError(Kind::Corrupt, what, where + charls_get_error_message(e));
  };
  std::unique_ptr<charls_jpegls_decoder, DecoderDeleter> decoder(charls_jpegls_decoder_create());
  if (!decoder) throw ImageError(Kind::Corrupt, what, where + "cannot create a decoder");
  // CharLS 2.4 crawls when a damaged scan runs into the very end of its buffer
  // (fuzz_dicom: a 434-byte stream without EOI took 7 s; with an EOI after it,
  // no time): a stream that does not end in EOI gets one.
  std::vector<uint8_t> with_eoi;
  const void* data = cs.data;
  size_t data_size = cs.size;
  if (cs.size < 2 || cs.data[cs.size - 2] != 0xFF || cs.data[cs.size - 1] != 0xD9) {
    with_eoi.assign(cs.data, cs.data + cs.size);
    with_eoi.push_back(0xFF);
    with_eoi.push_back(0xD9);
    data = with_eoi.data();
    data_size = with_eoi.size();
  }
  fail_if(charls_jpegls_decoder_set_source_buffer(decoder.get(), data, data_size));
  fail_if(charls_jpegls_decoder_read_header(decoder.get()));
  charls_frame_info info{};
  charls_interleave_mode mode{};
  fail_if(charls_jpegls_decoder_get_frame_info(decoder.get(), &info));
  fail_if(charls_jpegls_decoder_get_interleave_mode(decoder.get(), &mode));
  if (int64_t(info.width) != l.columns || int64_t(info.height) != l.rows || info.component_count != l.samples ||
      info.bits_per_sample > l.bits_allocated)
    throw ImageError(Kind::Corrupt, what,
                     where + "stream is " + std::to_string(info.width) + " x " + std::to_string(info.height) + " x " +
                         std::to_string(info.component_count) + " of " + std::to_string(info.bits_per_sample) +
                         " bits, the dataset says " + std::to_string(l.columns) + " x " + std::to_string(l.rows) +
                         " x " + std::to_string(l.samples) + " of BitsAllocated " + std::to_string(l.bits_allocated));
  // CharLS writes 1 byte per sample up to 8 bits, else 2: widen to BitsAllocated 16 where needed.
  const int stream_bytes = info.bits_per_sample <= 8 ? 1 : 2, bytes = l.bits_allocated / 8;
  size_t size = 0;
  fail_if(charls_jpegls_decoder_get_destination_size(decoder.get(), 0, &size));
  const size_t samples = size_t(l.rows * l.columns * l.samples);
  if (size != samples * size_t(stream_bytes))
    throw ImageError(Kind::Corrupt, what, where + "decoded size " + std::to_string(size) + " does not fit the frame");
  if (stream_bytes == bytes) {
    fail_if(charls_jpegls_decoder_decode_to_buffer(decoder.get(), out, size, 0));
  } else {
    std::vector<uint8_t> narrow(size);
    fail_if(charls_jpegls_decoder_decode_to_buffer(decoder.get(), narrow.data(), size, 0));
    for (size_t i = 0; i < samples; ++i) out[2 * i] = narrow[i], out[2 * i + 1] = 0;
  }
  // A non-interleaved scan comes out one component plane after another.
  l.planar = l.samples > 1 && mode == charls::interleave_mode::none ? 1 : 0;
}

}  // namespace

UninitialisedBytes decode_jpegls_frames(const std::vector<Codestream>& frames, PixelLayout& l,
                                        const std::string& what) {
  if (l.bits_allocated != 8 && l.bits_allocated != 16)
    throw ImageError(Kind::Unsupported, what, "JPEG-LS with BitsAllocated " + std::to_string(l.bits_allocated));
  if (int64_t(frames.size()) != l.frames)
    throw ImageError(Kind::Corrupt, what,
                     std::to_string(frames.size()) + " JPEG-LS streams for " + std::to_string(l.frames) + " frames");
  UninitialisedBytes out(size_t(l.total_bytes()), uint8_t(0));
  for (size_t f = 0; f < frames.size(); ++f) decode_frame(frames[f], l, out.data() + f * size_t(l.frame_bytes()), what, f);
  return out;
}

}  // namespace mm::dicom
