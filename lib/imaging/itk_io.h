#pragma once
// The one place that includes ITK (its headers are slow to compile): reads a
// PNG/JPEG/TIFF/BMP picture into floats. PNG and BMP go through the ImageIO of
// that format, after checks for what ITK 5.2 would crash or spin on; JPEG and
// TIFF through libjpeg and libtiff directly (itk_io.cpp says why).
// (NIfTI is decoded by nifti_header.h: ITK's NiftiImageIO could hang on a
// hostile header.)
#include <cstdint>
#include <string>
#include <vector>

namespace mm::itkio {

enum class Format { Png, Jpeg, Tiff, Bmp };

struct RawImage {
  std::vector<int64_t> dims;  // x fastest; as many as the file has
  int components = 1;         // per voxel: 1 grey, 2 complex (read as magnitude), 3 RGB, 4 RGBA
  bool complex = false;       // components were (re, im) pairs and data holds their magnitude
  std::vector<float> data;    // product(dims) * (complex ? 1 : components), components interleaved
  // The stored component type's range (integers), or 0/0 for float data.
  double type_min = 0, type_max = 0;
  std::string component_type;  // ITK's name: "unsigned_char", "short", "float", ...
  int64_t voxels() const;
  int channels() const { return complex ? 1 : components; }
};

// Throws ImageError: NotRecognized when the format's ImageIO cannot read the
// file, TooLarge when the decoded data would exceed max_bytes (checked from the
// header before reading), Corrupt when reading fails or a check refuses the file.
RawImage read_with_itk(const std::string& path, Format format, uint64_t max_bytes);

}  // namespace mm::itkio
