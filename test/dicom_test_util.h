#pragma once
// Shared by the DICOM reader tests that read one file two ways (test_dicom_native.cpp:
// our native path against DCMTK's; test_imaging_dicom_jpeg_lossless.cpp and
// test_imaging_dicom_jpegls.cpp: our decoders against DCMTK's codec and CharLS) and require
// the same outcome.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "data/image.h"
#include "imaging/dicom_reader.h"

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

inline std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The JPEG or JPEG-LS stream of a single-fragment file: SOI to its last EOI.
inline std::vector<uint8_t> only_stream(const std::vector<uint8_t>& file) {
  const uint8_t soi[] = {0xFF, 0xD8, 0xFF};
  const auto begin = std::search(file.begin(), file.end(), std::begin(soi), std::end(soi));
  REQUIRE(begin != file.end());
  size_t end = file.size();
  while (end > 2 && !(file[end - 2] == 0xFF && file[end - 1] == 0xD9)) --end;
  REQUIRE(end > size_t(begin - file.begin()));
  return {begin, file.begin() + std::ptrdiff_t(end)};
}

// read() with the default options (our decoders) and with `reference`: the same outcome, and
// when it is an image, the same Images.
inline void check_same_outcome(const std::function<std::vector<Image>(const DicomOptions&)>& read,
                               const DicomOptions& reference) {
  std::vector<Image> ours, theirs;
  const std::string got = read_outcome([&] { return read(DicomOptions{}); }, ours);
  const std::string want = read_outcome([&] { return read(reference); }, theirs);
  REQUIRE(got == want);
  if (got == "ok") check_same_images(ours, theirs);
}

// check_same_outcome for the file at path under the default and the min-max window: what
// tells our decoders from the reference ones (DCMTK's codec, CharLS).
inline void check_same_file_outcome(const std::string& path, const DicomOptions& reference) {
  for (auto mode : {WindowOptions::Mode::Default, WindowOptions::Mode::MinMax})
    check_same_outcome([&](DicomOptions o) {
      o.window.mode = mode;
      return read_dicom(path, o);
    }, reference);
}

}  // namespace mm::test
