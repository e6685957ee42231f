#include "imaging/dicom_reader.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>

#include "data/file_kind.h"
#include "imaging/dicom_j2k.h"
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
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
    // Problems reach the caller as ImageError; DCMTK's console log would only repeat them.
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  });
}

std::string get_string(DcmItem& item, const DcmTagKey& tag) {
  OFString s;
  if (item.findAndGetOFString(tag, s).bad()) return {};
  return std::string(s.c_str());
}

// A LUT descriptor value may be US or SS (the first mapped value follows the pixel sign).
bool get_descriptor(DcmItem& item, const DcmTagKey& tag, int64_t (&desc)[3]) {
  DcmElement* e = nullptr;
  if (item.findAndGetElement(tag, e).bad() || e->getVM() < 3) return false;
  for (unsigned long i = 0; i < 3; ++i) {
    if (e->ident() == EVR_SS) {  // entries and bits are unsigned whatever the VR says
      Sint16 v;
      if (e->getSint16(v, i).bad()) return false;
      desc[i] = i == 1 ? v : int64_t(Uint16(v));
    } else {
      Uint16 v;
      if (e->getUint16(v, i).bad()) return false;
      desc[i] = v;
    }
  }
  return true;
}

// segmented_tag: where the segmented form of the table would be (palettes only).
dicom::Lut read_lut(DcmItem& item, const DcmTagKey& descriptor_tag, const DcmTagKey& data_tag,
                    const std::string& what, const DcmTagKey& segmented_tag = DCM_UndefinedTagKey) {
  dicom::Lut lut;
  int64_t desc[3];
  if (!get_descriptor(item, descriptor_tag, desc)) return lut;
  const Uint16* words = nullptr;
  unsigned long count = 0;
  const int64_t entries = desc[0] == 0 ? 65536 : desc[0];
  lut.first_mapped = desc[1];
  lut.bits = int(desc[2]);
  if (item.findAndGetUint16Array(data_tag, words, &count).bad() || words == nullptr) {
    if (segmented_tag == DCM_UndefinedTagKey || item.findAndGetUint16Array(segmented_tag, words, &count).bad() ||
        words == nullptr)
      return lut;
    lut.data = dicom::expand_segmented_lut(std::vector<uint16_t>(words, words + count), lut.bits, 65536, what);
    if (lut.data.empty()) throw ImageError(Kind::Corrupt, what, "empty segmented palette table");
    for (uint16_t v : lut.data)
      if (lut.bits < 16 && v >> lut.bits) lut.bits = 16;
    return lut;
  }
  if (lut.bits <= 8 && int64_t(count) * 2 == entries + (entries & 1)) {
    // 8-bit entries packed two to a word (in the word's byte order, little-endian here)
    for (int64_t i = 0; i < entries; ++i) lut.data.push_back(uint16_t(words[i / 2] >> (8 * (i % 2)) & 0xFF));
    return lut;
  }
  if (int64_t(count) < entries)
    throw ImageError(Kind::Corrupt, what,
                     "lookup table holds " + std::to_string(count) + " of " + std::to_string(entries) + " entries");
  lut.data.assign(words, words + entries);
  for (uint16_t v : lut.data)  // 8-bit tables stored in 16-bit words sometimes use all 16 bits
    if (lut.bits < 16 && v >> lut.bits) lut.bits = 16;
  return lut;
}

std::vector<std::pair<double, double>> file_windows(DcmItem& ds) {
  std::vector<std::pair<double, double>> out;
  DcmElement *c = nullptr, *w = nullptr;
  if (ds.findAndGetElement(DCM_WindowCenter, c).bad() || ds.findAndGetElement(DCM_WindowWidth, w).bad())
    return out;
  const unsigned long n = std::min(c->getVM(), w->getVM());
  for (unsigned long i = 0; i < n; ++i) {
    Float64 center, width;
    if (ds.findAndGetFloat64(DCM_WindowCenter, center, i).bad() ||
        ds.findAndGetFloat64(DCM_WindowWidth, width, i).bad())
      break;
    if (width > 0) out.emplace_back(center, width);
  }
  return out;
}

// The Image Pixel and Modality LUT attributes from the dataset (after any decompression).
PixelLayout read_layout(DcmItem& ds, PixelLayout::Kind kind, const std::string& what) {
  PixelLayout l;
  l.kind = kind;
  Uint16 rows = 0, columns = 0, samples = 1, allocated = 0, stored = 0, high = 0, representation = 0, planar = 0;
  if (ds.findAndGetUint16(DCM_Rows, rows).bad() || ds.findAndGetUint16(DCM_Columns, columns).bad())
    throw ImageError(Kind::Corrupt, what, "pixel data without Rows or Columns");
  ds.findAndGetUint16(DCM_SamplesPerPixel, samples);
  if (ds.findAndGetUint16(DCM_BitsAllocated, allocated).bad())
    throw ImageError(Kind::Corrupt, what, "pixel data without BitsAllocated");
  if (ds.findAndGetUint16(DCM_BitsStored, stored).bad()) stored = allocated;
  if (ds.findAndGetUint16(DCM_HighBit, high).bad()) high = Uint16(stored - 1);
  ds.findAndGetUint16(DCM_PixelRepresentation, representation);
  ds.findAndGetUint16(DCM_PlanarConfiguration, planar);
  l.rows = rows;
  l.columns = columns;
  l.samples = samples;
  l.bits_allocated = allocated;
  l.bits_stored = kind == PixelLayout::Kind::Integer ? stored : allocated;
  l.high_bit = kind == PixelLayout::Kind::Integer ? high : allocated - 1;
  l.is_signed = representation == 1;
  l.planar = samples > 1 ? planar : 0;
  l.photometric = get_string(ds, DCM_PhotometricInterpretation);
  if (l.photometric.empty()) l.photometric = samples == 3 ? "RGB" : "MONOCHROME2";  // ACR-NEMA files omit it
  Sint32 frames = 1;
  if (ds.tagExistsWithValue(DCM_NumberOfFrames) && ds.findAndGetSint32(DCM_NumberOfFrames, frames).bad())
    throw ImageError(Kind::Corrupt, what, "unreadable NumberOfFrames '" + get_string(ds, DCM_NumberOfFrames) + "'");
  l.frames = frames;

  if (l.monochrome() && kind == PixelLayout::Kind::Integer) {
    DcmItem* mlut = nullptr;
    if (ds.findAndGetSequenceItem(DCM_ModalityLUTSequence, mlut, 0).good() && mlut)
      l.modality_lut = read_lut(*mlut, DCM_LUTDescriptor, DCM_LUTData, what);
    Float64 v;
    if (ds.findAndGetFloat64(DCM_RescaleSlope, v).good()) l.slope = v;
    if (ds.findAndGetFloat64(DCM_RescaleIntercept, v).good()) l.intercept = v;
  }
  if (l.photometric == "PALETTE COLOR") {
    l.palette[0] = read_lut(ds, DCM_RedPaletteColorLookupTableDescriptor, DCM_RedPaletteColorLookupTableData, what,
                            DCM_SegmentedRedPaletteColorLookupTableData);
    l.palette[1] = read_lut(ds, DCM_GreenPaletteColorLookupTableDescriptor, DCM_GreenPaletteColorLookupTableData, what,
                            DCM_SegmentedGreenPaletteColorLookupTableData);
    l.palette[2] = read_lut(ds, DCM_BluePaletteColorLookupTableDescriptor, DCM_BluePaletteColorLookupTableData, what,
                            DCM_SegmentedBluePaletteColorLookupTableData);
  }
  return l;
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

// Parses through a file stream, not a memory buffer: DCMTK then refuses element
// lengths larger than what remains of the file instead of allocating them, and
// defers loading values over 4 KiB (pixel data) until they are used, which is
// after our own size checks.
std::unique_ptr<DcmFileFormat> parse(const std::string& path, const std::string& what) {
  uint8_t head[132] = {};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ImageError(Kind::Io, what, "cannot open");
    in.read(reinterpret_cast<char*>(head), sizeof head);
    if (!looks_like_dicom(head, size_t(in.gcount())))
      throw ImageError(Kind::NotRecognized, what, "no DICM prefix and no plausible first data element");
  }
  auto file = std::make_unique<DcmFileFormat>();
  // EXS_Unknown and ERM_autoDetect: the meta header's transfer syntax, or for a
  // bare dataset (no preamble or meta) one guessed from the first element.
  const OFCondition status = file->loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
  if (status.bad()) throw ImageError(Kind::Corrupt, what, std::string("DCMTK cannot parse it: ") + status.text());
  return file;
}

// The DICOM identification attributes every frame carries.
Image frame_template(DcmItem& ds, const std::string& what) {
  Image t;
  t.source_path = what;
  t.format = "dicom";
  t.study_uid = get_string(ds, DCM_StudyInstanceUID);
  t.series_uid = get_string(ds, DCM_SeriesInstanceUID);
  t.sop_uid = get_string(ds, DCM_SOPInstanceUID);
  t.sop_class_uid = get_string(ds, DCM_SOPClassUID);
  t.modality = get_string(ds, DCM_Modality);
  t.photometric = get_string(ds, DCM_PhotometricInterpretation);
  return t;
}

bool is_jpeg2000(E_TransferSyntax x) {
  return x == EXS_JPEG2000LosslessOnly || x == EXS_JPEG2000 || x == EXS_JPEG2000MulticomponentLosslessOnly ||
         x == EXS_JPEG2000Multicomponent;
}

// One codestream per frame from the encapsulated fragments: DCMTK finds each
// frame's first fragment (offset table, or one fragment per frame); failing
// that, a fragment starting with a J2K SOC+SIZ marker pair or a JP2 signature
// starts a frame.
std::vector<std::vector<uint8_t>> j2k_frame_bytes(DcmElement* pixels, E_TransferSyntax xfer, int64_t frames,
                                                  const std::string& what) {
  auto* pd = dynamic_cast<DcmPixelData*>(pixels);
  DcmPixelSequence* seq = nullptr;
  if (!pd || pd->getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || !seq || seq->card() < 2)
    throw ImageError(Kind::Corrupt, what, "JPEG 2000 pixel data without fragments");
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
  if (starts.empty())
    for (unsigned long i = 1; i < items; ++i) {
      const auto& b = fragments[i];
      const bool soc = b.size() >= 4 && b[0] == 0xFF && b[1] == 0x4F && b[2] == 0xFF && b[3] == 0x51;
      const bool jp2 = b.size() >= 8 && std::memcmp(b.data(), "\x00\x00\x00\x0cjP  ", 8) == 0;
      if (soc || jp2 || i == 1) starts.push_back(Uint32(i));
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

// Decoded pixel bytes (little-endian) and the layout that describes them.
struct Decoded {
  PixelLayout layout;
  std::vector<uint8_t> owned;  // when we decoded (JPEG 2000) or rearranged the bytes
  const uint8_t* bytes = nullptr;
  size_t size = 0;
};

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
                       "no pixel data (Modality " + get_string(ds, DCM_Modality) + ", SOP class " +
                           get_string(ds, DCM_SOPClassUID) + ")");
  }
  // Size checks use the attributes as stored, before DCMTK allocates anything for decoding.
  PixelLayout stored = read_layout(ds, kind, what);
  stored.photometric = stored.samples == 3 ? "RGB" : "MONOCHROME2";  // any valid one: only sizes matter here
  check_size(stored, opt, what);

  // DCMTK reads a dataset whose transfer syntax UID it does not know (HTJ2K,
  // the 2023 deflated-frame syntaxes) as explicit little endian: refuse it here.
  OFString meta_uid;
  if (file.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, meta_uid).good() &&
      DcmXfer(meta_uid.c_str()).getXfer() == EXS_Unknown)
    throw ImageError(Kind::Unsupported, what, "transfer syntax " + std::string(meta_uid.c_str()));
  const DcmXfer xfer(ds.getOriginalXfer());
  if (xfer.isEncapsulated()) {
    if (is_jpeg2000(xfer.getXfer())) {  // DCMTK has no JPEG 2000 decoder: OpenJPEG's turn
      d.layout = read_layout(ds, kind, what);
      dicom::validate(d.layout, what);
      const auto frame_bytes = j2k_frame_bytes(pixels, xfer.getXfer(), d.layout.frames, what);
      std::vector<dicom::Codestream> streams;
      for (const auto& b : frame_bytes) streams.push_back({b.data(), b.size()});
      d.owned = dicom::decode_j2k_frames(streams, d.layout, what);
      d.bytes = d.owned.data();
      d.size = d.owned.size();
      return d;
    }
    const OFCondition c = ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    if (c.bad() || !ds.canWriteXfer(EXS_LittleEndianExplicit))
      throw ImageError(c == EC_CannotChangeRepresentation ? Kind::Unsupported : Kind::Corrupt, what,
                       std::string(xfer.getXferName()) + ": DCMTK cannot decode it: " + c.text());
    ds.findAndGetElement(DCM_PixelData, pixels);
  }
  // Read the layout again: a decoder may have changed the photometric (YBR -> RGB) or planar configuration.
  d.layout = read_layout(ds, kind, what);
  d.layout.ybr422_subsampled = !xfer.isEncapsulated() && d.layout.photometric == "YBR_FULL_422";
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

std::vector<Image> read_dicom_as(const std::string& path, const std::string& what, const DicomOptions& opt) {
  init_dcmtk_once();
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw ImageError(Kind::Io, what, "cannot open");
  if (uint64_t(st.st_size) > opt.max_file_bytes)
    throw ImageError(Kind::TooLarge, what, "file of " + std::to_string(st.st_size) + " bytes");
  std::unique_ptr<DcmFileFormat> file = parse(path, what);
  DcmDataset& ds = *file->getDataset();
  Decoded d = decode(*file, opt, what);
  dicom::validate(d.layout, what);
  check_size(d.layout, opt, what);
  if (opt.frame >= d.layout.frames)
    throw ImageError(Kind::BadOption, what,
                     "frame " + std::to_string(opt.frame) + " requested; the file has " + std::to_string(d.layout.frames));
  const Image proto = frame_template(ds, what);
  const auto windows = file_windows(ds);
  std::vector<Image> out;
  const int64_t first = opt.frame >= 0 ? opt.frame : 0, last = opt.frame >= 0 ? opt.frame + 1 : d.layout.frames;
  for (int64_t f = first; f < last; ++f) {
    Image img = dicom::convert_frame(d.bytes, d.size, d.layout, f, what);
    Image meta = proto;
    meta.height = img.height, meta.width = img.width, meta.channels = img.channels;
    meta.pixels = std::move(img.pixels);
    meta.frame_index = d.layout.frames > 1 ? f : -1;
    dicom::finish_frame(meta, d.layout, opt.window, windows, opt.invert_monochrome1);
    out.push_back(std::move(meta));
  }
  return out;
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
