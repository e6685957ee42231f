// PNG/TIFF/BMP/JPEG through read_images, and its detection by content.
#ifdef MM_HAVE_IMAGING
#include <fstream>
#include <nlohmann/json.hpp>

#include "imaging/image_reader.h"
#include "test_util.h"

using namespace mm;

namespace {

std::string picture(const std::string& name) { return std::string(MM_FIXTURE_DIR) + "/pictures/" + name; }

// The pattern test/reference/make_picture_fixtures.py drew.
float pattern(int64_t y, int64_t x, int64_t c, int scale = 1) { return float((x * 7 + y * 13 + c * 50) % 256 * scale); }

void check_pattern(const Image& img, int64_t channels, int scale = 1) {
  REQUIRE(img.height == 6);
  REQUIRE(img.width == 8);
  REQUIRE(img.channels == channels);
  for (int64_t y = 0; y < 6; ++y)
    for (int64_t x = 0; x < 8; ++x)
      for (int64_t c = 0; c < channels; ++c) CHECK(img.at(y, x, c) == pattern(y, x, c, scale));
}

ImageError::Kind error_kind(const std::string& path) {
  try {
    read_images(path);
  } catch (const ImageError& e) {
    return e.kind;
  }
  FAIL("no error for " << path);
  return ImageError::Kind::Io;
}

}  // namespace

TEST_CASE("pictures: PNG, TIFF, BMP decode to their pixels; alpha dropped; 16 bits kept") {
  const Image grey = read_images(picture("grey.png")).at(0);
  check_pattern(grey, 1);
  CHECK(grey.format == "png");
  CHECK(grey.window_low == 0);
  CHECK(grey.window_high == 255);
  check_pattern(read_images(picture("rgb.png")).at(0), 3);
  check_pattern(read_images(picture("rgba.png")).at(0), 3);
  const Image deep = read_images(picture("grey16.png")).at(0);
  check_pattern(deep, 1, 257);
  CHECK(deep.window_high == 65535);
  check_pattern(read_images(picture("grey.tif")).at(0), 1);
  check_pattern(read_images(picture("rgb.bmp")).at(0), 3);
}

TEST_CASE("pictures: JPEG decodes as Pillow does; the format comes from content, not the name") {
  std::ifstream in(picture("pictures.json"));
  const nlohmann::json ref = nlohmann::json::parse(in);
  const Image jpg = read_images(picture("rgb.jpg")).at(0);
  CHECK(jpg.format == "jpeg");
  const std::vector<float> want = ref.at("rgb_jpg_pillow").get<std::vector<float>>();
  CHECK(jpg.pixels == want);
  const Image named = read_images(picture("png_named.jpg")).at(0);
  CHECK(named.format == "png");
  check_pattern(named, 1);
}

TEST_CASE("read_images: dispatch by content and typed errors") {
  const std::string data = std::string(MM_SHARED_DATA_DIR) + "/";
  CHECK(read_images(data + "dicom/pydicom/test_files/CT_small.dcm").at(0).format == "dicom");
  CHECK(error_kind(data + "dicom/pydicom/test_files/ExplVR_LitEndNoMeta.dcm") == ImageError::Kind::NoImage);
  CHECK(read_images(data + "nifti/niivue/tests/nifti_space/RAS.nii.gz").at(0).format == "nifti");
  CHECK(read_images(data + "nifti/niivue/ras.hdr").at(0).format == "nifti");
  CHECK(error_kind(data + "medmnist/breastmnist.npz") == ImageError::Kind::Unsupported);
  CHECK(error_kind(data + "README.md") == ImageError::Kind::NotRecognized);
  CHECK(error_kind(data + "no/such/file.dcm") == ImageError::Kind::Io);
  CHECK(error_kind(data + "nifti/NIFTI-Reader-JS/data/not-nifti.nii") != ImageError::Kind::Io);
}

#endif  // MM_HAVE_IMAGING
