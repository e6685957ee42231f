// Draft decoding (imaging/draft.h): JPEG's DCT scaling and JPEG 2000's resolution
// levels against Pillow's draft/reduce (test/reference/make_draft_references.py).
#ifdef MM_HAVE_IMAGING
#include "imaging/draft.h"
#include "imaging/image_reader.h"
#include "pixel_reference.h"

using namespace mm;

namespace {

std::string picture(const std::string& name) { return std::string(MM_FIXTURE_DIR) + "/pictures/" + name; }

}  // namespace

TEST_CASE("draft: halvings keep both sides at least the side asked for (Pillow's rule)") {
  CHECK(draft_halvings(512, 512, 224, 31) == 1);   // 256
  CHECK(draft_halvings(447, 1000, 224, 31) == 0);  // 447 / 224 = 1: halving would go below 224
  CHECK(draft_halvings(448, 448, 224, 31) == 1);
  CHECK(draft_halvings(1760, 1760, 224, 31) == 2);  // 440; 220 would be too small
  CHECK(draft_halvings(4096, 4096, 224, 31) == 4);
  CHECK(draft_halvings(4096, 4096, 224, 3) == 3);   // JPEG scales by 1/8 at most
  CHECK(draft_halvings(4096, 4096, 0, 31) == 0);    // no draft
  CHECK(draft_halvings(100, 100, 224, 31) == 0);
}

TEST_CASE("draft: JPEG decodes scaled by libjpeg as Pillow's Image.draft does") {
  const nlohmann::json refs = test::load_pixel_references("draft.json");
  const int64_t side = refs.at("side");
  ReadOptions draft;
  draft.draft_side = side;
  for (const char* name : {"draft_grey.jpg", "draft_rgb.jpg"}) {
    CAPTURE(name);
    const Image full = read_images(picture(name)).at(0);
    CHECK(full.width == 500);
    CHECK(full.height == 470);
    const Image img = read_images(picture(name), draft).at(0);
    CHECK(img.width == 250);
    CHECK(img.height == 235);
    CHECK(img.window_high == 255);  // the stored type's range, as at full size
    const test::PixelComparison c = test::compare_with_reference(img.pixels, refs.at("jpeg").at(name), 0);
    CHECK_MESSAGE(c.exact, c.detail);
  }
}

TEST_CASE("draft: JPEG 2000 and 8-bit JPEG in DICOM decode reduced as Pillow's reduce and draft do") {
  const nlohmann::json refs = test::load_pixel_references("draft.json");
  DicomOptions opt;
  opt.draft_side = refs.at("side");
  opt.invert_monochrome1 = false;  // as the references
  for (const auto& [rel, ref] : refs.at("dicom").items()) {
    CAPTURE(rel);
    const std::vector<Image> images = read_dicom(test::shared_data_path(rel), opt);
    REQUIRE(!images.empty());
    const int64_t halvings = ref.at("halvings"), rows = ref.at("full_rows_columns")[0];
    CHECK(images[0].height == (rows + (int64_t(1) << halvings) - 1) >> halvings);
    const test::PixelComparison c = test::compare_with_reference(test::stack_pixels(images), ref, 0);
    CHECK_MESSAGE(c.exact, c.detail);
  }
}

TEST_CASE("draft: read_images passes the side to DICOM, which keeps full size without it") {
  const std::string ct = test::shared_data_path("dicom/cornerstoneWADOImageLoader/testImages/CT1_J2KR");
  CHECK(read_images(ct).at(0).width == 512);
  ReadOptions draft;
  draft.draft_side = 224;
  CHECK(read_images(ct, draft).at(0).width == 256);
  draft.draft_side = 300;  // 512 / 300 = 1: no level is small enough and large enough
  CHECK(read_images(ct, draft).at(0).width == 512);
}

#endif
