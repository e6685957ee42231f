// JPEG is read with libjpeg directly, not through ITK 5.2's JPEGImageIO: as Debian
// builds it, that one's setjmp handlers resume with stale registers, so a libjpeg
// error can take the process down (mm-predict segfaults on a bad marker after the
// scan; under ASan, on a truncated header too, or exits).
#include <cstdio>
#include <memory>
#include <vector>

#include "imaging/draft.h"
#include "imaging/jpeg_errors.h"
#include "imaging/picture_formats.h"

namespace mm::picture {

using Kind = ImageError::Kind;

RawImage read_jpeg(const std::string& path, uint64_t max_bytes, int64_t draft_side) {
  const std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!file) throw ImageError(Kind::Io, path, "cannot open");
  JpegErrors errors;
  jpeg_decompress_struct cinfo;
  cinfo.err = errors.manager();
  jpeg_create_decompress(&cinfo);
  const std::unique_ptr<jpeg_decompress_struct, void (*)(jpeg_decompress_struct*)> destroy(&cinfo, jpeg_destroy_decompress);
  const auto corrupt = [&] { return ImageError(Kind::Corrupt, path, std::string("JPEG: ") + errors.message); };
  if (!runs_without_longjmp(errors.resume, [&] {
        jpeg_stdio_src(&cinfo, file.get());
        jpeg_read_header(&cinfo, TRUE);
        // Draft: libjpeg's DCT scaling to 1/2, 1/4 or 1/8, as Pillow's Image.draft asks it.
        cinfo.scale_num = 1;
        cinfo.scale_denom = 1u << draft_halvings(cinfo.image_width, cinfo.image_height, draft_side, 3);
        jpeg_calc_output_dimensions(&cinfo);
      }))
    throw corrupt();
  RawImage r;
  r.dims = {int64_t(cinfo.output_width), int64_t(cinfo.output_height)};
  r.components = cinfo.output_components;
  if (r.components != 1 && r.components != 3 && r.components != 4)  // grey, RGB, CMYK (read as RGBA, as ITK did)
    throw ImageError(Kind::Unsupported, path, std::to_string(r.components) + " components per voxel");
  const uint64_t row_bytes = uint64_t(cinfo.output_width) * r.components;
  const uint64_t float_bytes = row_bytes * cinfo.output_height * sizeof(float);
  if (float_bytes > max_bytes) throw too_large(path, float_bytes, max_bytes);
  std::vector<uint8_t> raw(row_bytes * cinfo.output_height);
  // Not jpeg_finish_decompress: what follows the last scan does not change the pixels.
  if (!runs_without_longjmp(errors.resume, [&] {
        jpeg_start_decompress(&cinfo);
        while (cinfo.output_scanline < cinfo.output_height) {
          JSAMPROW row = raw.data() + cinfo.output_scanline * row_bytes;
          jpeg_read_scanlines(&cinfo, &row, 1);
        }
      }))
    throw corrupt();
  store_samples(SampleType::U8, raw.data(), raw.size(), r);
  return r;
}

}  // namespace mm::picture
