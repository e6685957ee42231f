#include "imaging/dicom_parse.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcistrmf.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <vector>

#include "core/byte_order.h"
#include "data/file_kind.h"
#include "imaging/dicom_vr.h"

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {

// The file meta group as written: where the dataset starts and the transfer
// syntax UID, read by us from the first bytes (explicit VR little endian, PS3.10
// 7.1), because after a failed parse DCMTK may hold meta elements with lengths
// the file cannot have, and allocates them when their values are read.
struct FileMeta {
  size_t dataset_offset = 0;
  std::string transfer_syntax;
};

std::optional<FileMeta> scan_file_meta(const std::string& path) {
  std::vector<uint8_t> b(64 * 1024);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(b.data()), std::streamsize(b.size()));
  b.resize(size_t(in.gcount()));
  if (b.size() < 132 || std::memcmp(b.data() + 128, "DICM", 4) != 0) return std::nullopt;
  FileMeta meta;
  size_t at = 132;
  while (at + 8 <= b.size() && load_le16(&b[at]) == 0x0002) {
    const unsigned element = load_le16(&b[at + 2]);
    uint64_t length;
    if (has_four_byte_length(char(b[at + 4]), char(b[at + 5]))) {
      if (at + 12 > b.size()) return std::nullopt;
      length = load_le32(&b[at + 8]);
      at += 12;
    } else {
      length = load_le16(&b[at + 6]);
      at += 8;
    }
    if (length > b.size() - at) return std::nullopt;
    if (element == 0x0010) {
      meta.transfer_syntax.assign(reinterpret_cast<const char*>(b.data() + at), size_t(length));
      while (!meta.transfer_syntax.empty() && (meta.transfer_syntax.back() == '\0' || meta.transfer_syntax.back() == ' '))
        meta.transfer_syntax.pop_back();
    }
    at += size_t(length);
  }
  if (meta.transfer_syntax.empty()) return std::nullopt;
  meta.dataset_offset = at;
  return meta;
}

// A dataset written in another encoding than its file meta says (pydicom's
// SC_rgb_jpeg.dcm: the meta says JPEG baseline, whose datasets are explicit VR,
// the dataset is implicit VR): read again in the encoding DCMTK detects from
// the first element, as pydicom does. The pixel fragments, which DCMTK then
// files under that encoding, are filed again under the meta's syntax so that
// its decoder is found. False when there is no meta to go by or that fails too.
bool reread_in_detected_encoding(DcmFileFormat& file, const std::string& path) {
  const std::optional<FileMeta> meta = scan_file_meta(path);
  if (!meta) return false;
  const E_TransferSyntax declared = DcmXfer(meta->transfer_syntax.c_str()).getXfer();
  // The meta DCMTK read may be the damaged part: replace it by what was scanned.
  DcmMetaInfo& info = *file.getMetaInfo();
  info.clear();
  if (info.putAndInsertString(DCM_TransferSyntaxUID, meta->transfer_syntax.c_str()).bad()) return false;
  DcmInputFileStream in(path.c_str(), offile_off_t(meta->dataset_offset));
  DcmDataset& ds = *file.getDataset();
  ds.clear();
  ds.transferInit();
  const OFCondition status = ds.read(in, EXS_Unknown, EGL_noChange, 4096);
  ds.transferEnd();
  if (status.bad() || declared == EXS_Unknown || ds.getOriginalXfer() == declared) return status.good();
  DcmElement* pixels = nullptr;
  DcmPixelSequence* fragments = nullptr;
  auto* pd = ds.findAndGetElement(DCM_PixelData, pixels).good() ? dynamic_cast<DcmPixelData*>(pixels) : nullptr;
  if (pd && DcmXfer(declared).isEncapsulated() &&
      pd->getEncapsulatedRepresentation(ds.getOriginalXfer(), nullptr, fragments).good() && fragments)
    pd->putOriginalRepresentation(declared, nullptr, new DcmPixelSequence(*fragments));
  return true;
}

}  // namespace

std::unique_ptr<DcmFileFormat> parse_file(const std::string& path, const std::string& what) {
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
  if (status.bad() && !reread_in_detected_encoding(*file, path))
    throw ImageError(Kind::Corrupt, what, std::string("DCMTK cannot parse it: ") + status.text());
  return file;
}

}  // namespace mm::dicom
