#pragma once
// Shared by the DICOM reader tests that read one file two ways (test_dicom_native.cpp:
// our native path against DCMTK's; test_imaging_dicom_jpeg_lossless.cpp: our JPEG Lossless
// decoder against DCMTK's codec) and require the same outcome.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"

namespace mm::test {

// "ok", or the kind of the ImageError read() threw.
inline std::string read_outcome(const std::function<std::vector<Image>()>& read, std::vector<Image>& images) {
  try {
    images = read();
    return "ok";
  } catch (const ImageError& e) {
    return image_error_kind_name(e.kind);
  }
}

// The same Images: pixels bit for bit, window, identification.
inline void check_same_images(const std::vector<Image>& got, const std::vector<Image>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const Image &a = got[i], &b = want[i];
    REQUIRE(a.height == b.height);
    REQUIRE(a.width == b.width);
    REQUIRE(a.channels == b.channels);
    CHECK(std::memcmp(a.pixels.data(), b.pixels.data(), a.pixels.size() * sizeof(float)) == 0);
    CHECK(a.window_low == b.window_low);
    CHECK(a.window_high == b.window_high);
    CHECK(a.window_source == b.window_source);
    CHECK(a.frame_index == b.frame_index);
    CHECK(a.study_uid == b.study_uid);
    CHECK(a.series_uid == b.series_uid);
    CHECK(a.sop_uid == b.sop_uid);
    CHECK(a.sop_class_uid == b.sop_class_uid);
    CHECK(a.modality == b.modality);
    CHECK(a.photometric == b.photometric);
  }
}

}  // namespace mm::test
