// PNG/TIFF/BMP/JPEG through read_images, and its detection by content.
#ifdef MM_HAVE_IMAGING
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "fuzz_regression_checks.h"
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

TEST_CASE("pictures: PNG variants decode as Pillow does; truncated pixel data is an error naming the part") {
  std::ifstream in(picture("pictures.json"));
  const nlohmann::json variants = nlohmann::json::parse(in).at("png_variants");
  for (const auto& [name, ref] : variants.items()) {
    CAPTURE(name);
    const Image img = read_images(picture(name + ".png")).at(0);
    CHECK(img.height == ref.at("height").get<int64_t>());
    CHECK(img.width == ref.at("width").get<int64_t>());
    CHECK(img.channels == ref.at("channels").get<int64_t>());
    CHECK(img.pixels == ref.at("pixels").get<std::vector<float>>());
  }
  // The 8-bit RGB fixture cut inside its IDAT chunk.
  std::ifstream src(picture("rgb_adam7.png"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
  const test::TempFile cut("cut.png");
  std::ofstream(cut.path, std::ios::binary) << bytes.substr(0, bytes.find("IDAT") + 60);
  try {
    read_images(cut.path);
    FAIL("a truncated PNG decoded");
  } catch (const ImageError& e) {
    CHECK(e.kind == ImageError::Kind::Corrupt);
    CHECK(std::string(e.what()).find("PNG pixels: the file ends early") != std::string::npos);
  }
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

TEST_CASE("pictures: the fuzz regressions give a clean error, each for its reason") {
  // fuzz/regressions/fuzz_picture/<name>: inputs that crashed, hung or leaked in ITK's readers.
  const std::map<std::string, std::string> expected = {
      // ITK's RLE8 decoder wrote this run past its row, outside the image (mm-predict:
      // heap corruption, SIGABRT). The stream is now walked before ITK reads it.
      {"bmp-rle8-run-past-row-end.bmp", "BMP RLE run of 12 pixels at row 15, column 10 leaves the 16 x 16 image"},
      // 50 and 102 bytes claiming 16 x 262160 pixels: ITK read every missing row (5 s in the
      // fuzz target; mm-predict classified the garbage).
      {"bmp-header-truncated-claims-262160-rows.bmp", "BMP header truncated"},
      {"bmp-262160-rows-in-102-bytes.bmp", "BMP pixel rows of 12583680 bytes at offset 54 do not fit in the file's 102"},
      // libpng's error in ITK's header parse, which sets no setjmp: abort(). Parsed first now.
      {"png-plte-crc-error.png", "PNG header: PLTE: CRC error"},
      // libjpeg's errors in ITK's JPEGImageIO, whose setjmp handlers resume with stale
      // registers: under ASan a SEGV in jpeg_destroy, or exit(1). Read with libjpeg directly now.
      {"jpeg-app0-length-past-end.jpg", "JPEG: JPEG datastream contains no image"},
      {"jpeg-soi-then-eoi.jpg", "JPEG: JPEG datastream contains no image"},
  };
  test::check_regressions_refused("fuzz_picture", expected, [](const std::string& path) { read_images(path); });
}

TEST_CASE("pictures: fuzz regressions ITK could not read decode now; RLE8 BMP still does") {
  const std::string dir = std::string(MM_SOURCE_DIR) + "/fuzz/regressions/fuzz_picture/";
  const std::string seeds = std::string(MM_SOURCE_DIR) + "/fuzz/seeds/picture/";
  // A bogus DHT after the scan: libjpeg's error there crashed ITK (mm-predict too: SIGSEGV)
  // after all rows were decoded.
  CHECK(read_images(dir + "jpeg-bad-dht-after-scan.jpg").at(0).pixels ==
        read_images(seeds + "grey_baseline.jpg").at(0).pixels);
  // A strip ITK's libtiff 4.0.3 failed to read, leaking its scanline buffer; libtiff 4.5 reads it.
  const Image strip = read_images(dir + "tiff-strip-unreadable-by-itk-libtiff.tif").at(0);
  CHECK(strip.height == 16);
  CHECK(strip.channels == 1);
  // Three pages, the first alone tagged SubFileType 0: ITK made room for one page and wrote
  // three (mm-predict: heap corruption, SIGABRT).
  const std::vector<Image> pages = read_images(dir + "tiff-subfiletype-on-first-of-three-pages.tif");
  REQUIRE(pages.size() == 3);
  for (int64_t p = 0; p < 3; ++p) CHECK(pages[size_t(p)].at(0, 1, 0) == float((p * 40 + 1) % 256));
  // The RLE check refuses no valid stream: two runs a row, palette (v, v, 255 - v) as BGR.
  const Image rle = read_images(seeds + "palette_rle8.bmp").at(0);
  REQUIRE(rle.channels == 3);
  for (int64_t y = 0; y < 16; ++y)
    for (int64_t x = 0; x < 16; ++x) {
      const float v = float(((x < 8 ? 0 : 8) * 13 + y * 7) % 256 / 16 * 16);
      CHECK(rle.at(y, x, 0) == 255 - v);
      CHECK(rle.at(y, x, 1) == v);
    }
}

#endif  // MM_HAVE_IMAGING
