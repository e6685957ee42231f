#include "data/file_kind.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

#include "core/byte_order.h"
#include "core/error.h"

namespace mm {

const char* file_kind_name(FileKind k) {
  switch (k) {
    case FileKind::Unknown: return "unknown";
    case FileKind::Dicom: return "dicom";
    case FileKind::Nifti: return "nifti";
    case FileKind::Png: return "png";
    case FileKind::Jpeg: return "jpeg";
    case FileKind::Tiff: return "tiff";
    case FileKind::Bmp: return "bmp";
    case FileKind::Npz: return "npz";
  }
  return "?";
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  return std::equal(suffix.rbegin(), suffix.rend(), s.rbegin(),
                    [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); });
}

bool starts_with(const uint8_t* p, size_t n, const char* magic, size_t m) {
  return n >= m && std::memcmp(p, magic, m) == 0;
}

bool is_dicom_vr(const uint8_t* p) {
  static const char* vrs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB",
                              "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM",
                              "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"};
  for (const char* vr : vrs)
    if (p[0] == vr[0] && p[1] == vr[1]) return true;
  return false;
}

// A bare dataset starts with an element of a low, even group: the file meta
// (0002), the command group (0000), identifying (0008) or patient (0010) data.
bool plausible_first_element(const uint8_t* p, size_t n, bool little) {
  if (n < 8) return false;
  const uint16_t group = load_u16(p, little), element = load_u16(p + 2, little);
  const bool known_group = group == 0x0000 || group == 0x0002 || group == 0x0008 || group == 0x0010 ||
                           group == 0x0018 || group == 0x0020 || group == 0x0028;
  if (!known_group || element > 0x1000) return false;
  if (is_dicom_vr(p + 4)) return true;                 // explicit VR
  const uint32_t length = load_u32(p + 4, little);     // implicit VR: a 4-byte length
  return length < 0x10000 && (length % 2 == 0 || group == 0x0000);
}

}  // namespace

bool looks_like_dicom(const uint8_t* head, size_t size) {
  if (size >= 132 && std::memcmp(head + 128, "DICM", 4) == 0) return true;
  return plausible_first_element(head, size, true) || plausible_first_element(head, size, false);
}

bool looks_like_nifti_header(const uint8_t* head, size_t size) {
  if (size < 4) return false;
  for (bool little : {true, false}) {
    const uint32_t sizeof_hdr = load_u32(head, little);
    if (sizeof_hdr == 348 || sizeof_hdr == 540) return true;
  }
  return false;
}

FileKind detect_file_kind(const uint8_t* head, size_t size, const std::string& name) {
  // DICM first: a DICOM preamble may itself hold another format's magic (DICOM-TIFF files).
  if (size >= 132 && std::memcmp(head + 128, "DICM", 4) == 0) return FileKind::Dicom;
  if (starts_with(head, size, "\x89PNG\r\n\x1a\n", 8)) return FileKind::Png;
  if (starts_with(head, size, "\xff\xd8\xff", 3)) return FileKind::Jpeg;
  if (starts_with(head, size, "II*\0", 4) || starts_with(head, size, "MM\0*", 4)) return FileKind::Tiff;
  if (starts_with(head, size, "BM", 2) && size >= 26) return FileKind::Bmp;
  if (looks_like_nifti_header(head, size)) return FileKind::Nifti;
  const bool gzip = starts_with(head, size, "\x1f\x8b", 2);
  if (gzip && (ends_with(name, ".nii.gz") || ends_with(name, ".hdr.gz") || ends_with(name, ".img.gz")))
    return FileKind::Nifti;
  if (ends_with(name, ".img")) return FileKind::Nifti;  // Analyze/NIfTI pair: the header is beside it
  if (starts_with(head, size, "PK\3\4", 4) && ends_with(name, ".npz")) return FileKind::Npz;
  if (looks_like_dicom(head, size)) return FileKind::Dicom;
  return FileKind::Unknown;
}

FileKind detect_file_kind(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  std::vector<uint8_t> head(1024);
  in.read(reinterpret_cast<char*>(head.data()), std::streamsize(head.size()));
  head.resize(size_t(in.gcount()));
  return detect_file_kind(head.data(), head.size(), path);
}

}  // namespace mm
