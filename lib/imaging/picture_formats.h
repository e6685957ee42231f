#pragma once
// The picture readers behind decode_picture (picture_decode.h), one file each:
// png_reader.cpp, jpeg_reader.cpp, tiff_reader.cpp (the libraries directly) and
// bmp_reader.cpp (ITK's BMPImageIO, the one place that includes ITK's headers,
// which are slow to compile).
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/image.h"
#include "imaging/picture_decode.h"

namespace mm::picture {

// The sample types the readers store, before they become floats.
enum class SampleType { U8, I8, U16, I16, U32, I32, F32 };

// Converts n samples to r.data and records the type's range and name in r.
void store_samples(SampleType type, const void* src, size_t n, RawImage& r);

ImageError too_large(const std::string& path, uint64_t bytes, uint64_t max_bytes);

// Runs calls into a library that reports errors by longjmp to `resume` (libpng,
// libjpeg); false when one did. Nothing in step's frames may need a destructor:
// longjmp skips them.
template <class Step>
bool runs_without_longjmp(std::jmp_buf& resume, const Step& step) {
  if (setjmp(resume)) return false;
  step();
  return true;
}

RawImage read_png(const std::string& path, uint64_t max_bytes);
RawImage read_jpeg(const std::string& path, uint64_t max_bytes, int64_t draft_side);
RawImage read_tiff(const std::string& path, uint64_t max_bytes);
RawImage read_bmp(const std::string& path, uint64_t max_bytes);

}  // namespace mm::picture
