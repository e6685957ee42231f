#pragma once
// How mm-eval and mm-train read a labelled sample's file: exactly one image,
// from the reader the file's content calls for (default options: a DICOM's own
// window, a NIfTI's middle axial slice).
#include <string>
#include <vector>

#include "data/image.h"
#ifdef MM_HAVE_IMAGING
#include "imaging/image_reader.h"
#endif

inline mm::Image read_labelled_sample(const std::string& file, const mm::ReadHints& hints) {
#ifdef MM_HAVE_IMAGING
  std::vector<mm::Image> images = mm::read_images(file, {}, hints);
  if (images.size() != 1)
    throw mm::ImageError(mm::ImageError::Kind::BadOption, file,
                         std::to_string(images.size()) + " frames or pages; a labelled sample needs exactly one image");
  return std::move(images[0]);
#else
  (void)hints;
  throw mm::ImageError(mm::ImageError::Kind::Unsupported, file, "built without the image readers (DCMTK, ITK)");
#endif
}
