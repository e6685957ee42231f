#pragma once
// libjpeg's error handling for our two JPEG readers (jpeg_reader.cpp for pictures,
// dicom_jpeg_baseline.cpp for DICOM frames): an error formats its message and
// longjmps back into picture::runs_without_longjmp; warnings are dropped, so damaged
// data decodes as far as it goes (as DCMTK's codec and Pillow do).
#include <csetjmp>
#include <cstdio>

#include <jpeglib.h>  // after <cstdio>, which it needs

namespace mm::picture {

struct JpegErrors {
  jpeg_error_mgr pub;
  std::jmp_buf resume;
  char message[JMSG_LENGTH_MAX] = "";

  // The error manager for a decompressor; set before jpeg_create_decompress.
  jpeg_error_mgr* manager() {
    jpeg_std_error(&pub);
    pub.error_exit = [](j_common_ptr c) {
      JpegErrors& e = *reinterpret_cast<JpegErrors*>(c->err);
      c->err->format_message(c, e.message);
      std::longjmp(e.resume, 1);
    };
    pub.output_message = [](j_common_ptr) {};
    return &pub;
  }
};

}  // namespace mm::picture
