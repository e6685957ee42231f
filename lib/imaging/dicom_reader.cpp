#include "imaging/dicom_reader.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

#include "core/error.h"
#include "data/input_stages.h"
#include "imaging/dicom_attributes.h"
#include "imaging/dicom_dictionary.h"
#include "imaging/dicom_parse.h"
#include "imaging/dicom_frames.h"
#include "imaging/dicom_j2k.h"
#include "imaging/dicom_jpeg_baseline.h"
#include "imaging/dicom_jpeg_lossless.h"
#include "imaging/dicom_jpegls.h"
#include "imaging/dicom_jpegls_decoder.h"
#include "imaging/dicom_native.h"
#include "imaging/dicom_pixels.h"

namespace mm {

using Kind = ImageError::Kind;
using dicom::PixelLayout;

namespace {

void init_dcmtk_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Decoders are registered once per process; registration is not thread-safe.
    // JPEG colour: YBR_* streams converted to RGB as the photometric says (the
    // standard's rule, and what pydicom's references do), RGB ones left alone.
    DJDecoderRegistration::registerCodecs(EDC_photometricInterpretation);
    DcmRLEDecoderRegistration::registerCodecs();
    // Problems reach the caller as ImageError; DCMTK's console log would only repeat them.
    // Only the loggers of what the reader calls are quieted: the root logger stays the
    // program's (mm-serve logs through OFLog, and dcmnet's lines must still show).
    for (const char* name : {"dcmtk.dcmdata", "dcmtk.dcmjpeg", "dcmtk.dcmjpls", "dcmtk.dcmimgle", "dcmtk.dcmimage",
                             "dcmtk.ofstd"})
      OFLog::getLogger(name).setLogLevel(OFLogger::FATAL_LOG_LEVEL);
  });
}

// Checks the decoded size against the limit before anything that big is allocated.
void check_size(const PixelLayout& l, const DicomOptions& opt, const std::string& what) {
  dicom::validate(l, what);  // bounds rows, columns, frames: the products below cannot overflow
  const uint64_t decoded = uint64_t(l.total_bytes());
  const uint64_t output = uint64_t(l.rows * l.columns) * (l.monochrome() ? 1 : 3) * 4 *
                          uint64_t(opt.frame >= 0 ? 1 : l.frames);
  if (decoded > opt.max_decoded_bytes || output > opt.max_decoded_bytes)
    throw ImageError(Kind::TooLarge, what,
                     std::to_string(l.rows) + " x " + std::to_string(l.columns) + " x " + std::to_string(l.frames) +
                         " frames needs " + std::to_string(std::max(decoded, output)) + " bytes (limit " +
                         std::to_string(opt.max_decoded_bytes) + ")");
}

// The DICOM identification attributes every frame carries.
Image frame_template(DcmItem& ds, const std::string& what) {
  Image t;
  t.source_path = what;
  t.format = "dicom";
  t.study_uid = dicom::get_string(ds, DCM_StudyInstanceUID);
  t.series_uid = dicom::get_string(ds, DCM_SeriesInstanceUID);
  t.sop_uid = dicom::get_string(ds, DCM_SOPInstanceUID);
  t.sop_class_uid = dicom::get_string(ds, DCM_SOPClassUID);
  t.modality = dicom::get_string(ds, DCM_Modality);
  t.photometric = dicom::get_string(ds, DCM_PhotometricInterpretation);
  return t;
}

bool is_jpeg2000(E_TransferSyntax x) {
  return x == EXS_JPEG2000LosslessOnly || x == EXS_JPEG2000 || x == EXS_JPEG2000MulticomponentLosslessOnly ||
         x == EXS_JPEG2000Multicomponent;
}

// Who decodes the pixel data. DCMTK 3.6.7 parses a dataset whose transfer
// syntax it does not know (HTJ2K, the 2023 deflated-frame syntax) as explicit
// VR little endian, which those syntaxes are, and keeps the fragments of
// encapsulated pixel data under that key: we decode those, and JPEG 2000,
// JPEG-LS and 1-bit RLE (which DCMTK lacks, gets wrong or refuses), from the
// fragments; JPEG Lossless too, for speed, leaving to DCMTK what we do not take.
// JPEG-LS goes to our decoder first (OwnJpegLs), for speed, then to CharLS.
enum class Route { Dcmtk, Jpeg2000, JpegLs, OwnJpegLs, JpegLossless, JpegBaseline, Deflated, RleBits };

struct Encoding {
  Route route = Route::Dcmtk;
  E_TransferSyntax fragments_key = EXS_Unknown;  // under which DCMTK holds the fragments
  bool native_frames = false;                    // decoded frames are as stored natively (YBR 4:2:2 stays subsampled)
};

Encoding encoding_of_syntax(const DcmXfer& parsed, const PixelLayout& stored) {
  if (is_jpeg2000(parsed.getXfer())) return {Route::Jpeg2000, parsed.getXfer(), false};
  if (parsed.getXfer() == EXS_JPEGLSLossless || parsed.getXfer() == EXS_JPEGLSLossy)
    return {Route::JpegLs, parsed.getXfer(), false};
  if (parsed.getXfer() == EXS_JPEGProcess14SV1 || parsed.getXfer() == EXS_JPEGProcess14)
    return {Route::JpegLossless, parsed.getXfer(), false};
  if (parsed.getXfer() == EXS_RLELossless && stored.bits_allocated == 1) return {Route::RleBits, parsed.getXfer(), true};
  return {Route::Dcmtk, parsed.getXfer(), !parsed.isEncapsulated()};
}

Encoding encoding_of(DcmFileFormat& file, DcmElement* pixels, const PixelLayout& stored, const std::string& what) {
  const DcmXfer parsed(file.getDataset()->getOriginalXfer());
  OFString meta_uid;
  if (file.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, meta_uid).good() &&
      DcmXfer(meta_uid.c_str()).getXfer() == EXS_Unknown) {
    const std::string uid = meta_uid.c_str();
    if (uid == "1.2.840.10008.1.2.4.201" || uid == "1.2.840.10008.1.2.4.202" || uid == "1.2.840.10008.1.2.4.203")
      return {Route::Jpeg2000, EXS_LittleEndianExplicit, false};  // HTJ2K: OpenJPEG 2.5 decodes it
    if (uid == "1.2.840.10008.1.2.8.1") return {Route::Deflated, EXS_LittleEndianExplicit, true};
    throw ImageError(Kind::Unsupported, what, "transfer syntax " + uid + " (no decoder for it)");
  }
  if (!meta_uid.empty() && DcmXfer(meta_uid.c_str()).isEncapsulated() && !parsed.isEncapsulated()) {
    // Re-filed by reread_in_detected_encoding, or native data under an encapsulated syntax.
    auto* pd = dynamic_cast<DcmPixelData*>(pixels);
    DcmPixelSequence* fragments = nullptr;
    if (!pd || pd->getEncapsulatedRepresentation(DcmXfer(meta_uid.c_str()).getXfer(), nullptr, fragments).bad())
      throw ImageError(Kind::Corrupt, what,
                       std::string("the file meta says ") + DcmXfer(meta_uid.c_str()).getXferName() +
                           ", the pixel data is not encapsulated");
    return encoding_of_syntax(DcmXfer(meta_uid.c_str()), stored);
  }
  return encoding_of_syntax(parsed, stored);
}

// One buffer per frame from the encapsulated fragments: DCMTK finds each
// frame's first fragment (offset table, or one fragment per frame); failing
// that, a fragment starting with a J2K SOC+SIZ marker pair or a JP2 signature
// (JPEG 2000), or with SOI and a marker (JPEG-LS and JPEG, whose coded data
// cannot hold FF D8), starts a frame.
std::vector<std::vector<uint8_t>> encapsulated_frames(DcmElement* pixels, const Encoding& enc, int64_t frames,
                                                      const std::string& what) {
  auto* pd = dynamic_cast<DcmPixelData*>(pixels);
  DcmPixelSequence* seq = nullptr;
  if (!pd || pd->getEncapsulatedRepresentation(enc.fragments_key, nullptr, seq).bad() || !seq || seq->card() < 2)
    throw ImageError(Kind::Corrupt, what, "encapsulated pixel data without fragments");
  const unsigned long items = seq->card();
  std::vector<std::vector<uint8_t>> fragments(items);
  for (unsigned long i = 1; i < items; ++i) {  // item 0 is the basic offset table
    DcmPixelItem* item = nullptr;
    Uint8* bytes = nullptr;
    if (seq->getItem(item, i).bad() || !item) throw ImageError(Kind::Corrupt, what, "unreadable pixel fragment");
    if (item->getLength() > 0 && (item->getUint8Array(bytes).bad() || !bytes))
      throw ImageError(Kind::Corrupt, what, "unreadable pixel fragment");
    fragments[i].assign(bytes, bytes + item->getLength());
  }
  std::vector<Uint32> starts;
  for (int64_t f = 0; f < frames; ++f) {
    Uint32 start = 0;
    if (DcmCodec::determineStartFragment(Uint32(f), Sint32(frames), seq, start).bad() || start < 1 || start >= items) {
      starts.clear();
      break;
    }
    starts.push_back(start);
  }
  if (starts.empty() && (enc.route == Route::Jpeg2000 || enc.route == Route::JpegLs || enc.route == Route::OwnJpegLs ||
                         enc.route == Route::JpegLossless))
    for (unsigned long i = 1; i < items; ++i) {
      const auto& b = fragments[i];
      const bool soc = b.size() >= 4 && b[0] == 0xFF && b[1] == 0x4F && b[2] == 0xFF && b[3] == 0x51;
      const bool jp2 = b.size() >= 8 && std::memcmp(b.data(), "\x00\x00\x00\x0cjP  ", 8) == 0;
      const bool soi = b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF;
      if ((enc.route == Route::Jpeg2000 ? soc || jp2 : soi) || i == 1) starts.push_back(Uint32(i));
    }
  if (int64_t(starts.size()) != frames)
    throw ImageError(Kind::Corrupt, what,
                     "cannot split " + std::to_string(items - 1) + " fragments into " + std::to_string(frames) + " frames");
  std::vector<std::vector<uint8_t>> out(starts.size());
  for (size_t f = 0; f < starts.size(); ++f) {
    const unsigned long end = f + 1 < starts.size() ? starts[f + 1] : items;
    for (unsigned long i = starts[f]; i < end; ++i) out[f].insert(out[f].end(), fragments[i].begin(), fragments[i].end());
  }
  return out;
}

// DCMTK 3.6.7's JPEG decoder first walks a fragment's markers for the sample
// precision (DJCodecDecoder::scanJpegDataForBitDepth) and never steps past a
// TEM marker (FF 01): it loops forever there (fuzz_dicom found it). This walks
// as it does and says whether it would reach one.
bool dcmtk_precision_scan_hangs(const uint8_t* data, size_t size) {
  auto length_at = [&](size_t at) { return size_t(data[at + 2] << 8 | data[at + 3]); };
  for (size_t at = 0; at + 4 < size;) {
    if (data[at] != 0xFF) return false;  // DCMTK stops: not a marker
    const uint8_t m = data[at + 1];
    if ((m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)) return false;  // SOFn: it has the precision
    if (m == 0x01) return true;
    if (m == 0xFF) at += 1;                                        // a fill byte
    else if ((m >= 0xD0 && m <= 0xD9) || (m > 0x02 && m <= 0xBF)) at += 2;  // RSTn, SOI, EOI, reserved
    else if (m >= 0xC4) at += length_at(at) + 2;                   // a segment
    else return false;                                             // FF 00, FF 02: DCMTK stops
  }
  return false;
}

// Decoded pixel bytes (little-endian) and the layout that describes them.
struct Decoded {
  PixelLayout layout;
  UninitialisedBytes owned;  // when we decoded or rearranged the bytes
  const uint8_t* bytes = nullptr;
  size_t size = 0;
};

// Our decoder for what DCMTK's codec or CharLS would decode, when the options
// want ours tried first; nullopt: theirs only.
std::optional<Route> own_route(const Encoding& enc, const DicomOptions& opt) {
  if (enc.route == Route::JpegLossless && opt.own_jpeg_lossless) return Route::JpegLossless;
  if (enc.route == Route::JpegLs && opt.own_jpegls) return Route::OwnJpegLs;
  if (enc.route == Route::Dcmtk && opt.own_jpeg_baseline && !enc.native_frames &&
      (enc.fragments_key == EXS_JPEGProcess1 || enc.fragments_key == EXS_JPEGProcess2_4))
    return Route::JpegBaseline;
  return std::nullopt;
}

// One codestream per frame, decoded by the route's decoder (not Route::Dcmtk)
// into the native layout; the decoder may set layout.planar.
UninitialisedBytes decode_streams(Route route, const std::vector<dicom::Codestream>& streams, PixelLayout& layout,
                                  const std::string& what, int64_t draft_side) {
  switch (route) {
    case Route::Jpeg2000: return dicom::decode_j2k_frames(streams, layout, what, draft_side);
    case Route::JpegLs: return dicom::decode_jpegls_frames(streams, layout, what);
    case Route::OwnJpegLs: return dicom::decode_own_jpegls_frames(streams, layout, what);
    case Route::JpegLossless: return dicom::decode_jpeg_lossless_frames(streams, layout, what);
    case Route::JpegBaseline: return dicom::decode_jpeg_baseline_frames(streams, layout, what, draft_side);
    case Route::Deflated: return dicom::inflate_frames(streams, layout, what);
    case Route::RleBits: return dicom::decode_rle_bit_frames(streams, layout, what);
    case Route::Dcmtk: break;
  }
  MM_CHECK(false, "decode_streams: DCMTK decodes this route itself");
  return {};
}

// The frames DCMTK does not decode, from their fragments.
void decode_fragments(DcmDataset& ds, DcmElement* pixels, const Encoding& enc, Decoded& d, const std::string& what,
                      int64_t draft_side) {
  d.layout = dicom::read_layout(ds, PixelLayout::Kind::Integer, what);
  d.layout.ybr422_subsampled = enc.native_frames && d.layout.photometric.find("_422") != std::string::npos;
  dicom::validate(d.layout, what);
  const auto frame_bytes = encapsulated_frames(pixels, enc, d.layout.frames, what);
  std::vector<dicom::Codestream> streams;
  for (const auto& b : frame_bytes) streams.push_back({b.data(), b.size()});
  d.owned = decode_streams(enc.route, streams, d.layout, what, draft_side);
  d.bytes = d.owned.data();
  d.size = d.owned.size();
}

Decoded decode(DcmFileFormat& file, const DicomOptions& opt, const std::string& what) {
  DcmDataset& ds = *file.getDataset();
  Decoded d;
  DcmElement* pixels = nullptr;
  PixelLayout::Kind kind = PixelLayout::Kind::Integer;
  if (ds.findAndGetElement(DCM_PixelData, pixels).bad()) {
    if (ds.findAndGetElement(DCM_FloatPixelData, pixels).good()) kind = PixelLayout::Kind::Float32;
    else if (ds.findAndGetElement(DCM_DoubleFloatPixelData, pixels).good()) kind = PixelLayout::Kind::Float64;
    else
      throw ImageError(Kind::NoImage, what,
                       "no pixel data (Modality " + dicom::get_string(ds, DCM_Modality) + ", SOP class " +
                           dicom::get_string(ds, DCM_SOPClassUID) + ")");
  }
  // Size checks use the attributes as stored, before DCMTK allocates anything for decoding.
  PixelLayout stored = dicom::read_layout(ds, kind, what);
  stored.photometric = stored.samples == 3 ? "RGB" : "MONOCHROME2";  // any valid one: only sizes matter here
  check_size(stored, opt, what);

  Encoding enc = encoding_of(file, pixels, stored, what);
  if (const std::optional<Route> own = own_route(enc, opt)) {
    // Ours when it takes the stream; otherwise (or when it finds damage) DCMTK
    // or CharLS decodes or reports it, as before ours existed.
    Encoding ours = enc;
    ours.route = *own;
    try {
      decode_fragments(ds, pixels, ours, d, what, opt.draft_side);
      return d;
    } catch (const ImageError&) {
      d = Decoded{};
    }
  }
  if (enc.route == Route::JpegLossless) {
    enc.route = Route::Dcmtk;
  } else if (enc.route != Route::Dcmtk) {
    decode_fragments(ds, pixels, enc, d, what, opt.draft_side);
    return d;
  }
  const DcmXfer xfer(enc.fragments_key);
  if (xfer.isEncapsulated()) {
    DcmPixelSequence* fragments = nullptr;
    auto* pd = dynamic_cast<DcmPixelData*>(pixels);
    if (pd && pd->getEncapsulatedRepresentation(enc.fragments_key, nullptr, fragments).good() && fragments)
      for (unsigned long i = 1; i < fragments->card(); ++i) {
        DcmPixelItem* item = nullptr;
        Uint8* bytes = nullptr;
        if (fragments->getItem(item, i).good() && item && item->getLength() > 0 &&
            item->getUint8Array(bytes).good() && bytes && dcmtk_precision_scan_hangs(bytes, item->getLength()))
          throw ImageError(Kind::Corrupt, what, "a TEM marker where DCMTK's JPEG decoder looks for the precision");
      }
    const OFCondition c = ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    if (c.bad() || !ds.canWriteXfer(EXS_LittleEndianExplicit))
      throw ImageError(c == EC_CannotChangeRepresentation ? Kind::Unsupported : Kind::Corrupt, what,
                       std::string(xfer.getXferName()) + ": DCMTK cannot decode it: " + c.text());
    ds.findAndGetElement(DCM_PixelData, pixels);
  }
  // Read the layout again: a decoder may have changed the photometric (YBR -> RGB) or planar configuration.
  d.layout = dicom::read_layout(ds, kind, what);
  d.layout.ybr422_subsampled = enc.native_frames && d.layout.photometric.find("_422") != std::string::npos;
  // getUint16Array returns words in this machine's byte order, which is what
  // "little-endian" means for the converter on the x86/ARM hosts we build for.
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the pixel converter assumes a little-endian host");
  OFCondition got;
  const void* bytes = nullptr;
  if (kind == PixelLayout::Kind::Float32) {
    const Float32* f = nullptr;
    got = pixels->getFloat32Array(const_cast<Float32*&>(f));
    bytes = f;
  } else if (kind == PixelLayout::Kind::Float64) {
    const Float64* f = nullptr;
    got = pixels->getFloat64Array(const_cast<Float64*&>(f));
    bytes = f;
  } else if (d.layout.bits_allocated > 8) {
    Uint16* w = nullptr;
    got = pixels->getUint16Array(w);
    bytes = w;
  } else {
    Uint8* b = nullptr;
    got = pixels->getUint8Array(b);
    bytes = b;
  }
  if (got.bad() || bytes == nullptr) throw ImageError(Kind::Corrupt, what, std::string("pixel data unreadable: ") + got.text());
  d.bytes = static_cast<const uint8_t*>(bytes);
  d.size = pixels->getLength();
  if (kind == PixelLayout::Kind::Integer && d.layout.bits_allocated == 32 && xfer.isBigEndian()) {
    // DCMTK swaps OW data as 16-bit words; a big-endian 32-bit value also needs its two words exchanged.
    d.owned.assign(d.bytes, d.bytes + d.size);
    for (size_t i = 0; i + 4 <= d.owned.size(); i += 4) {
      std::swap(d.owned[i], d.owned[i + 2]);
      std::swap(d.owned[i + 1], d.owned[i + 3]);
    }
    d.bytes = d.owned.data();
  }
  return d;
}

}  // namespace

std::vector<Image> read_dicom(const std::string& path, const DicomOptions& opt) { return read_dicom_as(path, path, opt); }

namespace {

// Every frame (or the one asked for) of decoded pixel bytes as Images.
std::vector<Image> frames_as_images(const uint8_t* bytes, size_t size, const PixelLayout& layout,
                                    const dicom::FileVoi& voi, const Image& proto, const DicomOptions& opt,
                                    const std::string& what, std::optional<TimedStage>& stage) {
  dicom::validate(layout, what);
  check_size(layout, opt, what);
  if (opt.frame >= layout.frames)
    throw ImageError(Kind::BadOption, what,
                     "frame " + std::to_string(opt.frame) + " requested; the file has " + std::to_string(layout.frames));
  std::vector<Image> out;
  const int64_t first = opt.frame >= 0 ? opt.frame : 0, last = opt.frame >= 0 ? opt.frame + 1 : layout.frames;
  for (int64_t f = first; f < last; ++f) {
    stage.emplace(InputStage::Convert);
    Image img = dicom::convert_frame(bytes, size, layout, f, what);
    Image meta = proto;
    meta.height = img.height, meta.width = img.width, meta.channels = img.channels;
    meta.pixels = std::move(img.pixels);
    meta.frame_index = layout.frames > 1 ? f : -1;
    stage.emplace(InputStage::Voi);
    dicom::finish_frame(meta, layout, opt.window, voi, opt.invert_monochrome1);
    out.push_back(std::move(meta));
  }
  return out;
}

// Files past this size are left to DCMTK, which loads pixel data only when used.
constexpr uint64_t kNativePathMaxBytes = uint64_t(256) << 20;

// The Images of a file the native path took; nullopt when its encapsulated
// frame is one our decoder (as DCMTK's path would route it) does not take or
// finds damaged: DCMTK's path then decodes or reports it.
std::optional<std::vector<Image>> native_images(dicom::NativeFile& native, const DicomOptions& opt,
                                                const std::string& what, std::optional<TimedStage>& stage) {
  Image proto;
  proto.source_path = what;
  proto.format = "dicom";
  proto.study_uid = std::move(native.study_uid);
  proto.series_uid = std::move(native.series_uid);
  proto.sop_uid = std::move(native.sop_uid);
  proto.sop_class_uid = std::move(native.sop_class_uid);
  proto.modality = std::move(native.modality);
  proto.photometric = native.layout.photometric;
  const dicom::Codestream pixels = native.pixels();
  if (!native.encapsulated)
    return frames_as_images(pixels.data, pixels.size, native.layout, native.voi, proto, opt, what, stage);
  // JPEG 2000 goes to OpenJPEG on either path; here without DCMTK's parse.
  const Encoding enc = encoding_of_syntax(DcmXfer(native.transfer_syntax.c_str()), native.layout);
  const std::optional<Route> own = enc.route == Route::Jpeg2000 ? std::optional<Route>(enc.route) : own_route(enc, opt);
  if (!own) return std::nullopt;
  stage.emplace(InputStage::PixelData);
  UninitialisedBytes decoded;
  try {
    check_size(native.layout, opt, what);  // before the decoder allocates
    decoded = decode_streams(*own, {pixels}, native.layout, what, opt.draft_side);
  } catch (const ImageError&) {
    return std::nullopt;
  }
  return frames_as_images(decoded.data(), decoded.size(), native.layout, native.voi, proto, opt, what, stage);
}

}  // namespace

std::vector<Image> read_dicom_as(const std::string& path, const std::string& what, const DicomOptions& opt) {
  init_dcmtk_once();
  std::optional<TimedStage> stage(std::in_place, InputStage::Parse);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw ImageError(Kind::Io, what, "cannot open");
  if (uint64_t(st.st_size) > opt.max_file_bytes)
    throw ImageError(Kind::TooLarge, what, "file of " + std::to_string(st.st_size) + " bytes");
  dicom::require_data_dictionary(what);
  if (opt.native_fast_path) {
    stage.reset();  // read_native_file times its own stages
    std::optional<dicom::NativeFile> native =
        dicom::read_native_file(path, std::min<uint64_t>(opt.max_file_bytes, kNativePathMaxBytes));
    if (native) {
      std::optional<std::vector<Image>> images = native_images(*native, opt, what, stage);
      if (images) return std::move(*images);
    }
    stage.emplace(InputStage::Parse);
  }
  std::unique_ptr<DcmFileFormat> file = dicom::parse_file(path, what);
  DcmDataset& ds = *file->getDataset();
  // As stored: DCMTK's JPEG codec rewrites a YBR photometric to RGB as it converts the colours.
  const std::string stored_photometric = dicom::get_string(ds, DCM_PhotometricInterpretation);
  stage.emplace(InputStage::PixelData);
  Decoded d = decode(*file, opt, what);
  stage.emplace(InputStage::Parse);
  Image proto = frame_template(ds, what);
  proto.photometric = stored_photometric;
  const dicom::FileVoi voi = dicom::read_voi(ds, d.layout.is_signed, what);
  return frames_as_images(d.bytes, d.size, d.layout, voi, proto, opt, what, stage);
}

std::vector<Image> read_dicom_bytes(const uint8_t* data, size_t size, const std::string& what,
                                    const DicomOptions& opt) {
  // Through a temporary file: see parse() for why DCMTK reads files, not buffers.
  char name[] = "/tmp/mm_dicom_XXXXXX";
  const int fd = mkstemp(name);
  if (fd < 0) throw ImageError(Kind::Io, what, "cannot create a temporary file");
  struct Remove {
    const char* n;
    ~Remove() { unlink(n); }
  } remove_on_exit{name};
  for (size_t done = 0; done < size;) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) {
      close(fd);
      throw ImageError(Kind::Io, what, "cannot write a temporary file");
    }
    done += size_t(n);
  }
  close(fd);
  return read_dicom_as(name, what, opt);
}

}  // namespace mm
