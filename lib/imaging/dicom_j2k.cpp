#include "imaging/dicom_j2k.h"

#include <openjpeg-2.5/openjpeg.h>  // by path: ITK's include directory has its own, older openjpeg.h

#include <cstring>
#include <memory>

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {

// OpenJPEG reads from a memory block through these callbacks.
struct MemoryReader {
  const uint8_t* data;
  size_t size, pos = 0;
};

OPJ_SIZE_T read_cb(void* buffer, OPJ_SIZE_T n, void* user) {
  auto* r = static_cast<MemoryReader*>(user);
  if (r->pos >= r->size) return OPJ_SIZE_T(-1);
  n = std::min<OPJ_SIZE_T>(n, r->size - r->pos);
  std::memcpy(buffer, r->data + r->pos, n);
  r->pos += n;
  return n;
}
OPJ_OFF_T skip_cb(OPJ_OFF_T n, void* user) {
  auto* r = static_cast<MemoryReader*>(user);
  if (n < 0 || OPJ_SIZE_T(n) > r->size - r->pos) return -1;
  r->pos += size_t(n);
  return n;
}
OPJ_BOOL seek_cb(OPJ_OFF_T to, void* user) {
  auto* r = static_cast<MemoryReader*>(user);
  if (to < 0 || OPJ_SIZE_T(to) > r->size) return OPJ_FALSE;
  r->pos = size_t(to);
  return OPJ_TRUE;
}

void remember_error(const char* msg, void* user) {
  auto* last = static_cast<std::string*>(user);
  *last = msg;
  while (!last->empty() && last->back() == '\n') last->pop_back();
}
void ignore(const char*, void*) {}

struct CodecDeleter {
  void operator()(opj_codec_t* c) const { opj_destroy_codec(c); }
};
struct StreamDeleter {
  void operator()(opj_stream_t* s) const { opj_stream_destroy(s); }
};
struct ImageDeleter {
  void operator()(opj_image_t* i) const { opj_image_destroy(i); }
};

// Decodes one frame into `out` (frame_bytes bytes). The sample bits are the
// same whichever signedness the stream and PixelRepresentation claim; when they
// disagree, the samples are read as signed (sets l.is_signed): an encoder that
// marks two's complement data unsigned, or a dataset that marks a signed stream
// unsigned, both leave a CT's air at bit pattern 0xF800, which is -2048, not 63488.
void decode_frame(const Codestream& cs, PixelLayout& l, uint8_t* out, const std::string& what, int64_t frame) {
  const std::string where = "JPEG 2000 frame " + std::to_string(frame);
  if (cs.size < 12) throw ImageError(Kind::Corrupt, what, where + ": empty codestream");
  // A raw codestream starts with SOC SIZ (FF4F FF51); a JP2 file with its signature box.
  const bool jp2 = std::memcmp(cs.data, "\x00\x00\x00\x0cjP  ", 8) == 0;
  std::unique_ptr<opj_codec_t, CodecDeleter> codec(opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K));
  std::string error;
  opj_set_error_handler(codec.get(), remember_error, &error);
  opj_set_warning_handler(codec.get(), ignore, nullptr);
  opj_set_info_handler(codec.get(), ignore, nullptr);
  opj_dparameters_t params;
  opj_set_default_decoder_parameters(&params);
  if (!opj_setup_decoder(codec.get(), &params)) throw ImageError(Kind::Corrupt, what, where + ": decoder setup failed");
  MemoryReader reader{cs.data, cs.size};
  std::unique_ptr<opj_stream_t, StreamDeleter> stream(opj_stream_default_create(OPJ_TRUE));
  opj_stream_set_user_data(stream.get(), &reader, nullptr);
  opj_stream_set_user_data_length(stream.get(), cs.size);
  opj_stream_set_read_function(stream.get(), read_cb);
  opj_stream_set_skip_function(stream.get(), skip_cb);
  opj_stream_set_seek_function(stream.get(), seek_cb);
  opj_image_t* raw_image = nullptr;
  if (!opj_read_header(stream.get(), codec.get(), &raw_image))
    throw ImageError(Kind::Corrupt, what, where + ": " + (error.empty() ? "bad header" : error));
  std::unique_ptr<opj_image_t, ImageDeleter> image(raw_image);
  // Check the stream against the dataset before OpenJPEG allocates for it.
  const int64_t w = int64_t(image->x1) - image->x0, h = int64_t(image->y1) - image->y0;
  if (w != l.columns || h != l.rows || int(image->numcomps) != l.samples)
    throw ImageError(Kind::Corrupt, what,
                     where + ": stream is " + std::to_string(w) + " x " + std::to_string(h) + " x " +
                         std::to_string(image->numcomps) + ", the dataset says " + std::to_string(l.columns) + " x " +
                         std::to_string(l.rows) + " x " + std::to_string(l.samples));
  for (int c = 0; c < l.samples; ++c) {
    const opj_image_comp_t& comp = image->comps[c];
    if (comp.dx != 1 || comp.dy != 1 || comp.prec < 1 || comp.prec > 24)
      throw ImageError(Kind::Unsupported, what, where + ": subsampled components or precision " + std::to_string(comp.prec));
  }
  if (image->comps[0].sgnd) l.is_signed = true;
  if (!opj_decode(codec.get(), stream.get(), image.get()) || !opj_end_decompress(codec.get(), stream.get()))
    throw ImageError(Kind::Corrupt, what, where + ": " + (error.empty() ? "decoding failed" : error));
  const int bytes = l.bits_allocated / 8;
  const int64_t n = w * h;
  for (int c = 0; c < l.samples; ++c) {
    const OPJ_INT32* src = image->comps[c].data;
    if (src == nullptr) throw ImageError(Kind::Corrupt, what, where + ": component without data");
    if (l.samples == 1 && bytes == 2) {  // grey 16-bit (CT, MR): a loop the compiler vectorises
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t v = uint16_t(uint32_t(src[i]));
        std::memcpy(out + 2 * i, &v, 2);  // little-endian host (checked by the reader), as below
      }
      continue;
    }
    for (int64_t i = 0; i < n; ++i) {
      // Two's complement truncated to BitsAllocated: the dataset's PixelRepresentation
      // and BitsStored then say how to read it, as for every other codec.
      const uint32_t v = uint32_t(src[i]);
      uint8_t* dst = out + (i * l.samples + c) * bytes;
      for (int b = 0; b < bytes; ++b) dst[b] = uint8_t(v >> (8 * b));
    }
  }
}

}  // namespace

UninitialisedBytes decode_j2k_frames(const std::vector<Codestream>& frames, PixelLayout& l, const std::string& what) {
  if (l.bits_allocated == 1) {  // 1-bit images (SEG) decode to one byte per sample
    l.bits_allocated = 8, l.bits_stored = 1, l.high_bit = 0;
  }
  if (l.bits_allocated != 8 && l.bits_allocated != 16 && l.bits_allocated != 32)
    throw ImageError(Kind::Unsupported, what, "JPEG 2000 with BitsAllocated " + std::to_string(l.bits_allocated));
  if (int64_t(frames.size()) != l.frames)
    throw ImageError(Kind::Corrupt, what,
                     std::to_string(frames.size()) + " JPEG 2000 codestreams for " + std::to_string(l.frames) + " frames");
  l.planar = 0;  // interleaved, whatever the dataset said
  UninitialisedBytes out(size_t(l.total_bytes()), uint8_t(0));
  for (size_t f = 0; f < frames.size(); ++f)
    decode_frame(frames[f], l, out.data() + f * size_t(l.frame_bytes()), what, int64_t(f));
  if (l.photometric == "YBR_ICT" || l.photometric == "YBR_RCT") l.photometric = "RGB";  // the decoder undid the transform
  return out;
}

}  // namespace mm::dicom
