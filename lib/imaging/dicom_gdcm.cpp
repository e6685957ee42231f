#include "imaging/dicom_gdcm.h"

#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmTrace.h>

#include <mutex>
#include <sstream>

namespace mm::dicom {

using Kind = ImageError::Kind;

namespace {
// GDCM's names are padded to even length ("RGB ").
std::string photometric_name(const gdcm::Image& image) {
  std::string s = gdcm::PhotometricInterpretation::GetPIString(image.GetPhotometricInterpretation());
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}
}  // namespace

GdcmPixels decode_with_gdcm(const uint8_t* data, size_t size, const std::string& what, uint64_t max_bytes) {
  static std::once_flag quiet;
  std::call_once(quiet, [] {  // errors reach the caller as exceptions, not as console noise
    gdcm::Trace::SetDebug(false);
    gdcm::Trace::SetWarning(false);
    gdcm::Trace::SetError(false);
  });
  std::istringstream stream(std::string(reinterpret_cast<const char*>(data), size));
  gdcm::ImageReader reader;
  reader.SetStream(stream);
  if (!reader.Read()) throw ImageError(Kind::Corrupt, what, "GDCM cannot parse the file as an image");
  const gdcm::Image& image = reader.GetImage();
  const unsigned int* dims = image.GetDimensions();
  const gdcm::PixelFormat& pf = image.GetPixelFormat();

  GdcmPixels out;
  PixelLayout& l = out.layout;
  l.columns = dims[0];
  l.rows = dims[1];
  l.frames = image.GetNumberOfDimensions() > 2 ? dims[2] : 1;
  l.samples = pf.GetSamplesPerPixel();
  l.bits_allocated = pf.GetBitsAllocated();
  l.bits_stored = pf.GetBitsStored();
  l.high_bit = pf.GetHighBit();
  l.is_signed = pf.GetPixelRepresentation() == 1;
  l.planar = image.GetPlanarConfiguration();
  l.photometric = photometric_name(image);
  // Validate the layout before allocating what it asks for. The photometric is
  // not known to be final until decoding, so check it afterwards.
  PixelLayout sizing = l;
  sizing.photometric = l.samples == 3 ? "RGB" : "MONOCHROME2";
  validate(sizing, what);
  const uint64_t length = image.GetBufferLength();
  if (length > max_bytes || int64_t(length) < l.total_bytes())
    throw ImageError(length > max_bytes ? Kind::TooLarge : Kind::Corrupt, what,
                     "GDCM reports " + std::to_string(length) + " bytes of decoded pixel data (limit " +
                         std::to_string(max_bytes) + ", layout needs " + std::to_string(l.total_bytes()) + ")");
  out.buffer.resize(length);
  if (!image.GetBuffer(reinterpret_cast<char*>(out.buffer.data())))
    throw ImageError(Kind::Corrupt, what, "GDCM cannot decode the pixel data");
  // Decoding may update what the image says about itself (a JPEG 2000 stream's
  // colour transform, for one), so read the photometric again.
  l.photometric = photometric_name(image);
  l.planar = image.GetPlanarConfiguration();
  return out;
}

}  // namespace mm::dicom
