#include "imaging/dicom_attributes.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcsequen.h>

#include <algorithm>

namespace mm::dicom {

using Kind = ImageError::Kind;

std::string get_string(DcmItem& item, const DcmTagKey& tag) {
  OFString s;
  if (item.findAndGetOFString(tag, s).bad()) return {};
  return std::string(s.c_str());
}

namespace {

// A LUT descriptor value may be US or SS: the first mapped value follows the
// pixel sign (PS3.3 C.11.1.1.1), whatever VR the writer gave it.
bool get_descriptor(DcmItem& item, const DcmTagKey& tag, bool signed_pixels, int64_t (&desc)[3]) {
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
      desc[i] = i == 1 && signed_pixels ? int64_t(Sint16(v)) : int64_t(v);
    }
  }
  return true;
}

// segmented_tag: where the segmented form of the table would be (palettes only).
Lut read_lut(DcmItem& item, const DcmTagKey& descriptor_tag, const DcmTagKey& data_tag, bool signed_pixels,
             const std::string& what, const DcmTagKey& segmented_tag = DCM_UndefinedTagKey) {
  Lut lut;
  int64_t desc[3];
  if (!get_descriptor(item, descriptor_tag, signed_pixels, desc)) return lut;
  const Uint16* words = nullptr;
  unsigned long count = 0;
  const int64_t entries = desc[0] == 0 ? 65536 : desc[0];
  lut.first_mapped = desc[1];
  lut.bits = int(desc[2]);
  if (item.findAndGetUint16Array(data_tag, words, &count).bad() || words == nullptr) {
    if (segmented_tag == DCM_UndefinedTagKey || item.findAndGetUint16Array(segmented_tag, words, &count).bad() ||
        words == nullptr)
      return lut;
    lut.data = expand_segmented_lut(std::vector<uint16_t>(words, words + count), lut.bits, 65536, what);
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

}  // namespace

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
      l.modality_lut = read_lut(*mlut, DCM_LUTDescriptor, DCM_LUTData, l.is_signed, what);
    Float64 v;
    if (ds.findAndGetFloat64(DCM_RescaleSlope, v).good()) l.slope = v;
    if (ds.findAndGetFloat64(DCM_RescaleIntercept, v).good()) l.intercept = v;
  }
  if (l.photometric == "PALETTE COLOR") {
    l.palette[0] = read_lut(ds, DCM_RedPaletteColorLookupTableDescriptor, DCM_RedPaletteColorLookupTableData, l.is_signed, what,
                            DCM_SegmentedRedPaletteColorLookupTableData);
    l.palette[1] = read_lut(ds, DCM_GreenPaletteColorLookupTableDescriptor, DCM_GreenPaletteColorLookupTableData, l.is_signed, what,
                            DCM_SegmentedGreenPaletteColorLookupTableData);
    l.palette[2] = read_lut(ds, DCM_BluePaletteColorLookupTableDescriptor, DCM_BluePaletteColorLookupTableData, l.is_signed, what,
                            DCM_SegmentedBluePaletteColorLookupTableData);
  }
  return l;
}


FileVoi read_voi(DcmItem& ds, bool signed_pixels, const std::string& what) {
  FileVoi voi;
  DcmElement *c = nullptr, *w = nullptr;
  if (ds.findAndGetElement(DCM_WindowCenter, c).good() && ds.findAndGetElement(DCM_WindowWidth, w).good()) {
    const unsigned long n = std::min(c->getVM(), w->getVM());
    for (unsigned long i = 0; i < n; ++i) {
      Float64 center, width;
      if (ds.findAndGetFloat64(DCM_WindowCenter, center, i).bad() ||
          ds.findAndGetFloat64(DCM_WindowWidth, width, i).bad())
        break;
      if (width > 0) voi.windows.emplace_back(center, width);
    }
  }
  const std::string function = get_string(ds, DCM_VOILUTFunction);
  if (function == "LINEAR_EXACT" || function == "SIGMOID") voi.function = function;
  DcmSequenceOfItems* seq = nullptr;
  if (ds.findAndGetSequence(DCM_VOILUTSequence, seq).good() && seq) {
    for (unsigned long i = 0; i < seq->card(); ++i) {
      Lut lut = read_lut(*seq->getItem(i), DCM_LUTDescriptor, DCM_LUTData, signed_pixels, what);
      if (!lut.empty()) voi.luts.push_back(std::move(lut));
    }
  }
  return voi;
}

}  // namespace mm::dicom
