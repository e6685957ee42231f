#include "imaging/dicom_j2k.h"

#include <openjpeg-2.5/openjpeg.h>  // by path: ITK's include directory has its own, older openjpeg.h

#include <algorithm>
#include <cstring>
#include <memory>

#include "imaging/draft.h"

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

// One frame's codestream with its main header read. Not movable: OpenJPEG holds
// pointers to reader and error.
struct OpenedFrame {
  MemoryReader reader{nullptr, 0};
  std::string error;
  std::unique_ptr<opj_codec_t, CodecDeleter> codec;
  std::unique_ptr<opj_stream_t, StreamDeleter> stream;
  std::unique_ptr<opj_image_t, ImageDeleter> image;
  int levels = 0;  // wavelet decomposition levels, the fewest of the components': how often it can be halved
  // The stream's samples are the pixel values we read: signed, or unsigned under
  // an unsigned dataset, and of at most BitsStored bits. A lower resolution level
  // averages the coded values, which is right only then: averaged two's
  // complement bit patterns coded as unsigned are not averaged pixels, and an
  // average of words with bits above BitsStored (or one that overshoots, which
  // OpenJPEG clamps to the stream's precision) would wrap when masked to it.
  bool samples_are_values = false;

  OpenedFrame() = default;
  OpenedFrame(const OpenedFrame&) = delete;
  OpenedFrame& operator=(const OpenedFrame&) = delete;
};

// Opens frame's codestream and checks it against the dataset's layout, before
// OpenJPEG allocates for it. The sample bits are the same whichever signedness
// the stream and PixelRepresentation claim; when they disagree, the samples are
// read as signed (sets l.is_signed): an encoder that marks two's complement data
// unsigned, or a dataset that marks a signed stream unsigned, both leave a CT's
// air at bit pattern 0xF800, which is -2048, not 63488.
void open_frame(OpenedFrame& f, const Codestream& cs, PixelLayout& l, const std::string& what,
                const std::string& where) {
  if (cs.size < 12) throw ImageError(Kind::Corrupt, what, where + ": empty codestream");
  // A raw codestream starts with SOC SIZ (FF4F FF51); a JP2 file with its signature box.
  const bool jp2 = std::memcmp(cs.data, "\x00\x00\x00\x0cjP  ", 8) == 0;
  f.codec.reset(opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K));
  opj_set_error_handler(f.codec.get(), remember_error, &f.error);
  opj_set_warning_handler(f.codec.get(), ignore, nullptr);
  opj_set_info_handler(f.codec.get(), ignore, nullptr);
  opj_dparameters_t params;
  opj_set_default_decoder_parameters(&params);
  if (!opj_setup_decoder(f.codec.get(), &params)) throw ImageError(Kind::Corrupt, what, where + ": decoder setup failed");
  f.reader = MemoryReader{cs.data, cs.size};
  f.stream.reset(opj_stream_default_create(OPJ_TRUE));
  opj_stream_set_user_data(f.stream.get(), &f.reader, nullptr);
  opj_stream_set_user_data_length(f.stream.get(), cs.size);
  opj_stream_set_read_function(f.stream.get(), read_cb);
  opj_stream_set_skip_function(f.stream.get(), skip_cb);
  opj_stream_set_seek_function(f.stream.get(), seek_cb);
  opj_image_t* raw_image = nullptr;
  if (!opj_read_header(f.stream.get(), f.codec.get(), &raw_image))
    throw ImageError(Kind::Corrupt, what, where + ": " + (f.error.empty() ? "bad header" : f.error));
  f.image.reset(raw_image);
  const opj_image_t& image = *f.image;
  const int64_t w = int64_t(image.x1) - image.x0, h = int64_t(image.y1) - image.y0;
  if (w != l.columns || h != l.rows || int(image.numcomps) != l.samples)
    throw ImageError(Kind::Corrupt, what,
                     where + ": stream is " + std::to_string(w) + " x " + std::to_string(h) + " x " +
                         std::to_string(image.numcomps) + ", the dataset says " + std::to_string(l.columns) + " x " +
                         std::to_string(l.rows) + " x " + std::to_string(l.samples));
  for (int c = 0; c < l.samples; ++c) {
    const opj_image_comp_t& comp = image.comps[c];
    if (comp.dx != 1 || comp.dy != 1 || comp.prec < 1 || comp.prec > 24)
      throw ImageError(Kind::Unsupported, what, where + ": subsampled components or precision " + std::to_string(comp.prec));
  }
  const bool dataset_signed = l.is_signed;
  if (image.comps[0].sgnd) l.is_signed = true;
  f.samples_are_values = true;
  for (int c = 0; c < l.samples; ++c)
    f.samples_are_values = f.samples_are_values && (image.comps[c].sgnd || !dataset_signed) &&
                           int(image.comps[c].prec) <= l.bits_stored;
  opj_codestream_info_v2_t* info = opj_get_cstr_info(f.codec.get());
  if (info == nullptr) throw ImageError(Kind::Corrupt, what, where + ": no coding style");
  f.levels = 32;
  for (OPJ_UINT32 c = 0; c < info->nbcomps && info->m_default_tile_info.tccp_info; ++c)
    f.levels = std::min(f.levels, int(info->m_default_tile_info.tccp_info[c].numresolutions) - 1);
  opj_destroy_cstr_info(&info);
}

// Decodes an opened frame, halved `halvings` times (its first resolution levels
// only), into `out`: l.rows x l.columns samples, the halved size.
void decode_frame(OpenedFrame& f, int halvings, const PixelLayout& l, uint8_t* out, const std::string& what,
                  const std::string& where) {
  if (halvings > 0 && !opj_set_decoded_resolution_factor(f.codec.get(), OPJ_UINT32(halvings)))
    throw ImageError(Kind::Corrupt, what, where + ": " + (f.error.empty() ? "cannot skip resolution levels" : f.error));
  opj_image_t& image = *f.image;
  if (!opj_decode(f.codec.get(), f.stream.get(), &image) || !opj_end_decompress(f.codec.get(), f.stream.get()))
    throw ImageError(Kind::Corrupt, what, where + ": " + (f.error.empty() ? "decoding failed" : f.error));
  const int bytes = l.bits_allocated / 8;
  const int64_t n = l.columns * l.rows;
  for (int c = 0; c < l.samples; ++c) {
    const OPJ_INT32* src = image.comps[c].data;
    if (src == nullptr) throw ImageError(Kind::Corrupt, what, where + ": component without data");
    if (int64_t(image.comps[c].w) != l.columns || int64_t(image.comps[c].h) != l.rows)
      throw ImageError(Kind::Corrupt, what, where + ": a component of " + std::to_string(image.comps[c].w) + " x " +
                                                std::to_string(image.comps[c].h) + " samples, expected " +
                                                std::to_string(l.columns) + " x " + std::to_string(l.rows));
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

// ceil(x / 2^n), OpenJPEG's rounding of a halved image's corner.
int64_t halved(int64_t x, int n) { return (x + (int64_t(1) << n) - 1) >> n; }

}  // namespace

UninitialisedBytes decode_j2k_frames(const std::vector<Codestream>& frames, PixelLayout& l, const std::string& what,
                                     int64_t draft_side) {
  if (l.bits_allocated == 1) {  // 1-bit images (SEG) decode to one byte per sample
    l.bits_allocated = 8, l.bits_stored = 1, l.high_bit = 0;
  }
  if (l.bits_allocated != 8 && l.bits_allocated != 16 && l.bits_allocated != 32)
    throw ImageError(Kind::Unsupported, what, "JPEG 2000 with BitsAllocated " + std::to_string(l.bits_allocated));
  if (int64_t(frames.size()) != l.frames || frames.empty())
    throw ImageError(Kind::Corrupt, what,
                     std::to_string(frames.size()) + " JPEG 2000 codestreams for " + std::to_string(l.frames) + " frames");
  const PixelLayout full = l;
  l.planar = 0;  // interleaved, whatever the dataset said
  auto where = [](size_t f) { return "JPEG 2000 frame " + std::to_string(f); };
  auto opened = std::make_unique<OpenedFrame>();
  open_frame(*opened, frames[0], l, what, where(0));
  // Every frame is halved alike (frame 0's levels decide); the corner offsets round as OpenJPEG's do.
  const int halvings =
      opened->samples_are_values ? std::min(draft_halvings(l.columns, l.rows, draft_side, 31), opened->levels) : 0;
  if (halvings > 0) {
    const opj_image_t& image = *opened->image;
    l.columns = halved(image.x1, halvings) - halved(image.x0, halvings);
    l.rows = halved(image.y1, halvings) - halved(image.y0, halvings);
  }
  UninitialisedBytes out(size_t(l.total_bytes()), uint8_t(0));
  for (size_t f = 0; f < frames.size(); ++f) {
    if (f > 0) {
      opened = std::make_unique<OpenedFrame>();
      PixelLayout check = full;
      open_frame(*opened, frames[f], check, what, where(f));
      l.is_signed = l.is_signed || check.is_signed;
      if (opened->levels < halvings || (halvings > 0 && !opened->samples_are_values)) {  // every frame at full size
        PixelLayout again = full;
        UninitialisedBytes whole = decode_j2k_frames(frames, again, what, 0);
        l = again;
        return whole;
      }
    }
    decode_frame(*opened, halvings, l, out.data() + f * size_t(l.frame_bytes()), what, where(f));
  }
  if (l.photometric == "YBR_ICT" || l.photometric == "YBR_RCT") l.photometric = "RGB";  // the decoder undid the transform
  return out;
}

}  // namespace mm::dicom
