#include "imaging/dicom_native.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "core/byte_order.h"
#include "data/input_stages.h"
#include "imaging/dicom_vr.h"

namespace mm::dicom {

namespace {

constexpr uint32_t kUndefined = 0xFFFFFFFF;
constexpr uint32_t kItem = 0xFFFEE000, kItemEnd = 0xFFFEE00D, kSequenceEnd = 0xFFFEE0DD;
constexpr uint32_t kPixelData = 0x7FE00010;
constexpr int kMaxDepth = 16;

struct Element {
  uint32_t tag = 0;
  char vr[2] = {0, 0};  // explicit VR only
  uint32_t length = 0;
  size_t value = 0;  // offset of the value
};

// Little-endian elements, explicit or implicit VR; every read checked against the end.
class Walker {
 public:
  Walker(const UninitialisedBytes& b, bool explicit_vr) : b_(b), explicit_(explicit_vr) {}

  // The element header at `at`; false when it does not fit or its VR is not two capitals.
  bool header(size_t at, Element& e) const {
    if (at > b_.size() || b_.size() - at < 8) return false;
    e.tag = uint32_t(load_le16(&b_[at])) << 16 | load_le16(&b_[at + 2]);
    if (!explicit_ || e.tag >> 16 == 0xFFFE) {  // items and delimiters carry no VR
      e.vr[0] = e.vr[1] = 0;
      e.length = load_le32(&b_[at + 4]);
      e.value = at + 8;
      return true;
    }
    e.vr[0] = char(b_[at + 4]), e.vr[1] = char(b_[at + 5]);
    if (e.vr[0] < 'A' || e.vr[0] > 'Z' || e.vr[1] < 'A' || e.vr[1] > 'Z') return false;
    if (!has_four_byte_length(e.vr[0], e.vr[1])) {
      e.length = load_le16(&b_[at + 6]);
      e.value = at + 8;
      return true;
    }
    if (b_.size() - at < 12) return false;
    e.length = load_le32(&b_[at + 8]);
    e.value = at + 12;
    return true;
  }

  // An undefined length this walker can follow: a sequence, or encapsulated
  // data inside an item. Not UN: its items are implicit VR whatever the
  // dataset's encoding (PS3.5 6.2.2), which DCMTK handles and this walker does not.
  bool followable(const Element& e) const { return !(explicit_ && e.vr[0] == 'U' && e.vr[1] == 'N'); }

  // Past a defined-length value; false when it runs past the end.
  bool skip_value(const Element& e, size_t& at) const {
    if (e.length > b_.size() - e.value) return false;
    at = e.value + e.length;
    return true;
  }

  // Past an undefined-length value (a sequence, or encapsulated data inside an
  // item), from its first item to after its sequence delimiter.
  bool skip_undefined(size_t& at, int depth) const {
    if (depth > kMaxDepth) return false;
    for (Element item;;) {
      if (!header(at, item)) return false;
      if (item.tag == kSequenceEnd) {
        at = item.value;
        return true;
      }
      if (item.tag != kItem) return false;
      if (item.length != kUndefined) {
        if (!skip_value(item, at)) return false;
        continue;
      }
      at = item.value;  // an undefined-length item: its elements up to the item delimiter
      for (Element e;;) {
        if (!header(at, e)) return false;
        if (e.tag == kItemEnd) {
          at = e.value;
          break;
        }
        at = e.value;
        if (e.length == kUndefined ? !followable(e) || !skip_undefined(at, depth + 1) : !skip_value(e, at))
          return false;
      }
    }
  }

  // Encapsulated pixel data (PS3.5 A.4) from its first item: the Basic Offset
  // Table (whose offsets one frame does not need: DCMTK's path starts frame 0
  // at the first fragment too), fragment items of defined length, the sequence
  // delimiter. Each fragment as (offset, length); at most one per 8 bytes of file.
  bool fragments(size_t& at, std::vector<std::pair<size_t, size_t>>& out) const {
    Element item;
    if (!header(at, item) || item.tag != kItem || item.length == kUndefined || !skip_value(item, at)) return false;
    for (;;) {
      if (!header(at, item)) return false;
      if (item.tag == kSequenceEnd) {
        at = item.value;
        return item.length == 0 && !out.empty();
      }
      if (item.tag != kItem || item.length == kUndefined || !skip_value(item, at)) return false;
      out.emplace_back(item.value, item.length);
    }
  }

 private:
  const UninitialisedBytes& b_;
  bool explicit_;
};

// A string value's first component without padding, as DCMTK's findAndGetOFString gives it.
std::string_view first_component(std::string_view v) {
  v = v.substr(0, v.find('\\'));
  while (!v.empty() && (v.back() == ' ' || v.back() == '\0')) v.remove_suffix(1);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return v;
}

// Backslash-separated numbers (DS, IS); false when one does not parse.
bool parse_numbers(std::string_view v, std::vector<double>& out) {
  out.clear();
  while (!v.empty() && (v.back() == ' ' || v.back() == '\0')) v.remove_suffix(1);
  if (v.empty()) return true;
  for (size_t start = 0;;) {
    const size_t end = std::min(v.find('\\', start), v.size());
    std::string_view s = first_component(v.substr(start, end - start));
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    double x = 0;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
    if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return false;
    out.push_back(x);
    if (end == v.size()) return true;
    start = end + 1;
  }
}

// The attributes this path uses, as found in the dataset.
struct Found {
  std::string_view values[24];
  bool present[24] = {};
};
constexpr uint32_t kTags[] = {
    0x00080016, 0x00080018, 0x00080060, 0x0020000D, 0x0020000E,              // SOP class, SOP instance, modality, study, series
    0x00280002, 0x00280004, 0x00280006, 0x00280008, 0x00280010, 0x00280011,  // samples, photometric, planar, frames, rows, columns
    0x00280100, 0x00280101, 0x00280102, 0x00280103,                          // bits allocated, stored, high bit, representation
    0x00281050, 0x00281051, 0x00281052, 0x00281053, 0x00281056,              // window centre, width, intercept, slope, VOI LUT function
};
enum Slot { kSopClass, kSopInstance, kModality, kStudy, kSeries, kSamples, kPhotometric, kPlanar, kFrames, kRows,
            kColumns, kAllocated, kStored, kHighBit, kRepresentation, kCenter, kWidth, kIntercept, kSlope, kVoiFunction };
static_assert(std::size(kTags) == kVoiFunction + 1, "one slot per tag");

// Tables and data this path leaves to DCMTK: modality and VOI LUT sequences,
// palettes, float pixel data.
bool needs_careful_path(uint32_t tag) {
  return tag == 0x00283000 || tag == 0x00283010 || (tag >= 0x00281101 && tag <= 0x00281223) || tag == 0x7FE00008 ||
         tag == 0x7FE00009;
}

}  // namespace

std::optional<NativeFile> parse_native_file(UninitialisedBytes bytes) {
  const UninitialisedBytes& b = bytes;
  if (b.size() < 132 || std::memcmp(b.data() + 128, "DICM", 4) != 0) return std::nullopt;
  // File meta: always explicit VR little endian.
  const Walker meta_walker(b, true);
  size_t at = 132;
  std::string_view syntax;
  size_t meta_end = 0;  // where the group length says the meta ends: DCMTK goes by it
  for (Element e; meta_walker.header(at, e) && e.tag >> 16 == 0x0002;) {
    if (e.length == kUndefined || !meta_walker.skip_value(e, at)) return std::nullopt;
    if (e.tag == 0x00020000 && e.length == 4) meta_end = at + load_le32(&b[e.value]);
    if (e.tag == 0x00020010) syntax = first_component({reinterpret_cast<const char*>(&b[e.value]), e.length});
  }
  if (meta_end != 0 && meta_end != at) return std::nullopt;
  // The encapsulated syntaxes our decoders take (the reader routes each to its
  // decoder); all are explicit VR little endian.
  static const std::string_view kEncapsulated[] = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
                                                   "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                                                   "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                                                   "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"};
  const bool encapsulated =
      std::find(std::begin(kEncapsulated), std::end(kEncapsulated), syntax) != std::end(kEncapsulated);
  const bool explicit_vr = encapsulated || syntax == "1.2.840.10008.1.2.1";
  if (!explicit_vr && syntax != "1.2.840.10008.1.2") return std::nullopt;

  const Walker walker(b, explicit_vr);
  Found found;
  Element pixels;
  std::vector<std::pair<size_t, size_t>> fragments;  // encapsulated: (offset, length) of each
  uint32_t last_tag = 0;
  for (Element e;;) {
    if (!walker.header(at, e) || e.tag <= last_tag || needs_careful_path(e.tag)) return std::nullopt;
    last_tag = e.tag;
    if (e.tag == kPixelData) {
      if (explicit_vr && std::memcmp(e.vr, "OW", 2) != 0 && std::memcmp(e.vr, "OB", 2) != 0) return std::nullopt;
      // Native data under an encapsulated syntax, or the reverse: DCMTK's path sorts it out.
      if (encapsulated != (e.length == kUndefined)) return std::nullopt;
      at = e.value;
      if (encapsulated ? !walker.fragments(at, fragments) : !walker.skip_value(e, at)) return std::nullopt;
      pixels = e;
      break;
    }
    if (e.length == kUndefined) {
      at = e.value;
      if (!walker.followable(e) || !walker.skip_undefined(at, 0)) return std::nullopt;
      continue;
    }
    if (!walker.skip_value(e, at)) return std::nullopt;
    const auto slot = std::find(std::begin(kTags), std::end(kTags), e.tag);
    if (slot != std::end(kTags)) {
      // An attribute we take stored as UN (written by a system without its tag in the
      // dictionary): DCMTK's path reads such values as bytes, not text; it reads the file.
      if (explicit_vr && std::memcmp(e.vr, "UN", 2) == 0) return std::nullopt;
      const size_t i = size_t(slot - std::begin(kTags));
      found.values[i] = {reinterpret_cast<const char*>(&b[e.value]), e.length};
      found.present[i] = true;
    }
  }

  NativeFile f;
  PixelLayout& l = f.layout;
  auto us = [&](Slot s, int fallback, int& out) {
    if (!found.present[s]) return (out = fallback), true;
    if (found.values[s].size() != 2) return false;  // US, one value
    out = load_le16(reinterpret_cast<const uint8_t*>(found.values[s].data()));
    return true;
  };
  int rows = 0, columns = 0, samples = 1, allocated = 0, stored = 0, high = 0, representation = 0, planar = 0;
  if (!found.present[kRows] || !found.present[kColumns] || !found.present[kAllocated] || !us(kRows, 0, rows) ||
      !us(kColumns, 0, columns) || !us(kSamples, 1, samples) || !us(kAllocated, 0, allocated) ||
      !us(kStored, allocated, stored) || !us(kHighBit, stored - 1, high) || !us(kRepresentation, 0, representation) ||
      !us(kPlanar, 0, planar))
    return std::nullopt;
  l.rows = rows, l.columns = columns, l.samples = samples;
  l.bits_allocated = allocated, l.bits_stored = stored, l.high_bit = high;
  l.is_signed = representation == 1;
  l.photometric = std::string(first_component(found.values[kPhotometric]));
  if (l.photometric.empty()) l.photometric = "MONOCHROME2";  // ACR-NEMA files omit it
  if (samples != 1 || !l.monochrome() || (allocated != 8 && allocated != 16)) return std::nullopt;
  std::vector<double> numbers;
  if (found.present[kFrames]) {
    if (!parse_numbers(found.values[kFrames], numbers) || numbers.size() > 1) return std::nullopt;
    if (!numbers.empty()) {
      if (numbers[0] != double(int64_t(numbers[0])) || numbers[0] < 1 || numbers[0] > 65535) return std::nullopt;
      l.frames = int64_t(numbers[0]);
    }
  }
  for (auto [slot, value] : {std::pair{kSlope, &l.slope}, std::pair{kIntercept, &l.intercept}}) {
    if (!parse_numbers(found.values[slot], numbers)) return std::nullopt;
    if (!numbers.empty()) *value = numbers[0];
  }
  if (found.present[kCenter] && found.present[kWidth]) {
    std::vector<double> widths;
    if (!parse_numbers(found.values[kCenter], numbers) || !parse_numbers(found.values[kWidth], widths))
      return std::nullopt;
    for (size_t i = 0; i < std::min(numbers.size(), widths.size()); ++i)
      if (widths[i] > 0) f.voi.windows.emplace_back(numbers[i], widths[i]);
  }
  const std::string_view function = first_component(found.values[kVoiFunction]);
  if (function == "LINEAR_EXACT" || function == "SIGMOID") f.voi.function = std::string(function);
  try {
    validate(l, "");
  } catch (const ImageError&) {
    return std::nullopt;  // the careful path says what is wrong with it
  }
  if (encapsulated) {
    if (l.frames != 1) return std::nullopt;  // which fragments make which frame: DCMTK's path decides
    f.pixel_offset = fragments[0].first;
    f.pixel_length = fragments[0].second;
    if (fragments.size() > 1)
      for (const auto& [offset, length] : fragments)
        f.joined.insert(f.joined.end(), b.data() + offset, b.data() + offset + length);
  } else {
    if (int64_t(pixels.length) < l.total_bytes()) return std::nullopt;
    f.pixel_offset = pixels.value;
    f.pixel_length = pixels.length;
  }
  f.encapsulated = encapsulated;
  f.transfer_syntax = std::string(syntax);
  f.sop_class_uid = std::string(first_component(found.values[kSopClass]));
  f.sop_uid = std::string(first_component(found.values[kSopInstance]));
  f.modality = std::string(first_component(found.values[kModality]));
  f.study_uid = std::string(first_component(found.values[kStudy]));
  f.series_uid = std::string(first_component(found.values[kSeries]));
  f.bytes = std::move(bytes);
  return f;
}

std::optional<NativeFile> parse_native_file(const std::vector<uint8_t>& bytes) {
  return parse_native_file(UninitialisedBytes(bytes.begin(), bytes.end()));
}

std::optional<NativeFile> read_native_file(const std::string& path, uint64_t max_bytes) {
  UninitialisedBytes bytes;
  {
    TimedStage stage(InputStage::PixelData);  // reading the file is most of what the pixel data costs here
    FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr) return std::nullopt;
    uint8_t head[132];
    const bool dicm = std::fread(head, 1, sizeof head, file) == sizeof head && std::memcmp(head + 128, "DICM", 4) == 0;
    long size = -1;
    if (dicm && std::fseek(file, 0, SEEK_END) == 0) size = std::ftell(file);
    if (size < 132 || uint64_t(size) > max_bytes || std::fseek(file, 0, SEEK_SET) != 0) {
      std::fclose(file);
      return std::nullopt;
    }
    bytes.resize(size_t(size));
    const bool read = std::fread(bytes.data(), 1, bytes.size(), file) == bytes.size();
    std::fclose(file);
    if (!read) return std::nullopt;
  }
  TimedStage stage(InputStage::Parse);
  return parse_native_file(std::move(bytes));
}

}  // namespace mm::dicom
