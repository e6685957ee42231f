#pragma once
// What every reader (DICOM, NIfTI, PNG/JPEG/TIFF/BMP, MedMNIST npz) produces and
// preprocessing consumes: one 2-D image of float pixels, H x W x C interleaved
// (C = 1 grey or 3 RGB), in the file's own units (Hounsfield units after the
// DICOM modality LUT, 0..255 for 8-bit PNG, scaled NIfTI values...), plus the
// intensity window that maps those units to [0, 1] and where the image came from.
//
// Keeping the readers' output in physical units and carrying the window beside it
// lets a caller inspect real values, and makes the window one linear clamp that
// preprocessing applies before resizing (as a viewer's rendering would).
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace mm {

struct Image {
  int64_t height = 0, width = 0, channels = 0;  // channels: 1 or 3
  std::vector<float> pixels;                     // size height*width*channels, row-major, channels last

  // Preprocessing maps window_low to 0 and window_high to 1, clamping outside.
  // window_low == window_high is a step: values above it map to 1, the rest to 0
  // (DICOM's width-1 window; a constant image under min-max becomes all 0).
  double window_low = 0, window_high = 1;
  std::string window_source;  // how it was chosen: "file[0]", "explicit", "min-max", "full range", ...

  // Where it came from.
  std::string source_path;
  std::string format;  // "dicom", "nifti", "png", "jpeg", "tiff", "bmp", "npz"
  int64_t frame_index = -1;   // DICOM multi-frame: 0-based frame; -1 when the file has one frame
  int64_t slice_index = -1;   // NIfTI: 0-based slice along slice_axis (canonical RAS orientation)
  int slice_axis = -1;        // NIfTI: 0 sagittal (x), 1 coronal (y), 2 axial (z)
  int64_t volume_index = -1;  // NIfTI 4-D: which volume
  int64_t item_index = -1;    // npz: row of the array
  // DICOM identification (empty elsewhere).
  std::string study_uid, series_uid, sop_uid, sop_class_uid;
  std::string modality;
  std::string photometric;  // as stored in the file, before conversion to grey or RGB
  // What a caller may print beside the image: a reader's fallback (NIfTI: the
  // orientation came from a weaker source than the header names, and why). Empty when none.
  std::string warning;

  float& at(int64_t y, int64_t x, int64_t c = 0) { return pixels[size_t((y * width + x) * channels + c)]; }
  float at(int64_t y, int64_t x, int64_t c = 0) const { return pixels[size_t((y * width + x) * channels + c)]; }
  int64_t numel() const { return height * width * channels; }
};

// What a caller asks of a reader beyond the file (the readers' own options aside).
struct ReadHints {
  // > 0: JPEG and JPEG 2000 may be decoded at a reduced resolution whose sides
  // stay at least this many pixels (imaging/draft.h), e.g. the model's input
  // size; 0: full size.
  int64_t draft_side = 0;
};

// How the readers choose Image::window_low/high. Default picks per format; see
// docs/input-formats.md for what each format does and why.
struct WindowOptions {
  enum class Mode {
    Default,   // DICOM: File when the file has a VOI (LUT or window), else MinMax. NIfTI: MinMax over the volume.
               // 8-bit images: FullRange.
    File,      // DICOM: the file's n-th VOI LUT (Sequence item: its output replaces the pixels, window
               // [0, 2^bits-1]; preferred, as pydicom does) or else its n-th WindowCenter/WindowWidth pair
               // (index below); error when the file has neither
    Explicit,  // center and width below, in the image's units (DICOM linear VOI function)
    MinMax,    // the data's minimum and maximum (per frame for DICOM, per volume for NIfTI)
    FullRange  // "none": no VOI window, the stored type's whole range (DICOM BitsStored through the
               // modality LUT; 0..255 for 8-bit pictures) maps linearly to [0, 1]
  };
  Mode mode = Mode::Default;
  int file_index = 0;
  double center = 0, width = 1;
};

// The window of the DICOM linear VOI function (PS3.3 C.11.2.1.2.1) as the
// interval it maps onto [0, 1]: below c-0.5-(w-1)/2 is 0, above c-0.5+(w-1)/2 is 1.
void set_window_center_width(Image& img, double center, double width);
// Smallest and largest of n values; NaNs ignored; (0, 0) when there are none.
std::pair<double, double> min_max_ignoring_nan(const float* values, size_t n);
// Smallest and largest pixel value (over all channels); NaNs ignored; (0, 0) when empty.
std::pair<double, double> pixel_min_max(const Image& img);

// Reader failures. Each names the file and the reason; kind lets a caller tell
// "this file holds no image" (e.g. DICOM SR, RTPLAN) from a broken file.
struct ImageError : Error {
  enum class Kind {
    Io,             // cannot open or read the file
    NotRecognized,  // not a format we read
    NoImage,        // a valid file without pixel data (DICOM SR, RTSTRUCT, RTPLAN, ...)
    Unsupported,    // a valid image in a variant we do not decode
    Corrupt,        // truncated or inconsistent data
    TooLarge,       // would need more memory than the reader's limit allows
    BadOption       // the requested frame/slice/window does not exist in this file
  };
  Kind kind;
  ImageError(Kind k, const std::string& path, const std::string& reason);
};
const char* image_error_kind_name(ImageError::Kind k);  // "no image", "corrupt", ...

}  // namespace mm
