#pragma once
// Decodes a PNG, JPEG, TIFF or BMP picture into floats. PNG, JPEG and TIFF are read
// with libpng, libjpeg and libtiff directly, BMP through ITK's BMPImageIO after checks
// for what ITK 5.2 would crash or spin on (picture_formats.h names each file).
// (NIfTI is decoded by nifti_header.h: ITK's NiftiImageIO could hang on a hostile
// header.)
#include <cstdint>
#include <string>
#include <vector>

namespace mm::picture {

enum class Format { Png, Jpeg, Tiff, Bmp };

struct RawImage {
  std::vector<int64_t> dims;  // x fastest: width, height[, pages]
  int components = 1;         // per pixel: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
  std::vector<float> data;    // product(dims) * components, components interleaved
  // The stored sample type's range (integers), or 0/0 for float samples.
  double type_min = 0, type_max = 0;
  std::string component_type;  // ITK's name of the stored type: "unsigned_char", "short", "float", ...
  int64_t voxels() const;
};

// Throws ImageError: NotRecognized when the file is not of the format, TooLarge
// when the decoded data would exceed max_bytes (checked from the header before
// reading), Unsupported for layouts no reader takes, Corrupt when reading fails
// or a check refuses the file. draft_side > 0: a JPEG is decoded scaled down by 2, 4
// or 8 where both sides stay at least draft_side (imaging/draft.h); other formats
// ignore it.
RawImage decode_picture(const std::string& path, Format format, uint64_t max_bytes, int64_t draft_side = 0);

}  // namespace mm::picture
