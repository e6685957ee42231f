#pragma once
// One entry point for every image file we read: the kind is decided by content
// (see data/file_kind.h), not by extension, and the file becomes one or more
// Images (DICOM frames, NIfTI slices, TIFF pages) or an ImageError naming the
// file and the reason.
#include <string>
#include <vector>

#include "data/file_kind.h"
#include "data/image.h"
#include "imaging/dicom_reader.h"
#include "imaging/nifti_reader.h"

namespace mm {

struct ReadOptions {
  DicomOptions dicom;
  NiftiOptions nifti;
  WindowOptions picture_window;  // PNG/JPEG/TIFF/BMP; Default: the stored type's full range (0..255 for 8 bits)
  uint64_t max_bytes = uint64_t(2) << 30;  // PNG/JPEG/TIFF/BMP decoded size limit
  // > 0: JPEG and JPEG 2000 (in DICOM too; replaces dicom.draft_side) decode at a
  // reduced resolution whose sides stay at least this many pixels (imaging/draft.h).
  int64_t draft_side = 0;
};

// PNG, JPEG and TIFF (each page an Image) through libpng, libjpeg and libtiff, BMP
// through ITK (imaging/picture_decode.h). Grey+alpha and RGBA drop the alpha channel.
std::vector<Image> read_picture(const std::string& path, FileKind kind, const ReadOptions& options = {});

std::vector<Image> read_images(const std::string& path, const ReadOptions& options = {});
// The same with a pipeline's hints applied to options (ReadHints::draft_side): what
// the tools' readers (ImagesReader, ImageFileReader) call.
std::vector<Image> read_images(const std::string& path, const ReadOptions& options, const ReadHints& hints);

}  // namespace mm
