// Preprocessing: the resize against Pillow/torch references on real images
// (test/reference/make_resize_references.py), and the window/channel/normalize steps.
#include <cmath>
#include <cstring>
#include <iterator>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/npz.h"
#include "data/preprocess.h"
#include "test_util.h"
#ifdef MM_HAVE_IMAGING
#include "imaging/image_reader.h"
#endif

using namespace mm;

namespace {

const std::string kDir = std::string(MM_FIXTURE_DIR) + "/preprocess/";

template <class T>
std::vector<T> read_raw(const std::string& name) {
  std::ifstream in(kDir + name, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << name);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

nlohmann::json resize_case(const std::string& name) {
  std::ifstream in(kDir + "resize.json");
  for (const auto& c : nlohmann::json::parse(in))
    if (c.at("name") == name) return c;
  FAIL("no resize case " << name);
  return {};
}

// Every method against its reference; the default (bilinear) also against the
// 8-bit Pillow result torchvision would see, within one grey level.
void check_case(const std::string& name, const Image& input) {
  const nlohmann::json c = resize_case(name);
  const Image unit = apply_window(input);
  const int64_t oh = c.at("output_hw")[0], ow = c.at("output_hw")[1];
  for (const auto& [method, file] : c.at("outputs").items()) {
    CAPTURE(name);
    CAPTURE(method);
    const Image out = resize(unit, oh, ow, interpolation_from_name(method));
    const std::vector<float> want = read_raw<float>(file.get<std::string>());
    REQUIRE(out.pixels.size() == want.size());
    // Pillow's float path accumulates in double and stores float, as we do:
    // equal up to the last bit or two; torch's no-antialias path computes in float.
    const float tol = method == "bilinear-no-antialias" ? 1e-5f : 1e-6f;
    mm::test::check_close(name + " " + method, out.pixels.data(), want.data(), int64_t(want.size()), 0.f, tol);
  }
  const std::vector<uint8_t> u8 = read_raw<uint8_t>(c.at("pil_u8_bilinear").get<std::string>());
  const Image out = resize(unit, oh, ow, Interpolation::Bilinear);
  REQUIRE(out.pixels.size() == u8.size());
  float worst = 0;
  for (size_t i = 0; i < u8.size(); ++i) worst = std::max(worst, std::fabs(out.pixels[i] * 255.f - u8[i]));
  CHECK(worst <= 1.0f);  // Pillow's 8-bit path rounds twice (after each pass)
}

}  // namespace

TEST_CASE("preprocess: resize equals Pillow on a MedMNIST image (upscaling 28 -> 61 x 53)") {
  const MedmnistSplit s = read_medmnist(std::string(MM_SOURCE_DIR) + "/../shared/data/medmnist/pneumoniamnist.npz", "train");
  check_case("pneumonia_train0_up", s.image(0));
}

#ifdef MM_HAVE_IMAGING
TEST_CASE("preprocess: resize equals Pillow on brain MRI JPEGs (downscaling, grey and RGB)") {
  const std::string data = std::string(MM_SHARED_DATA_DIR) + "/";
  const Image grey = read_images(data + "brain-tumor-mri/Testing/notumor/Te-no_0379.jpg").at(0);
  REQUIRE(grey.channels == 1);
  check_case("brain_grey_down", grey);
  const Image rgb = read_images(data + "brain-tumor-mri/Training/glioma/Tr-glTr_0000.jpg").at(0);
  REQUIRE(rgb.channels == 3);
  check_case("brain_rgb_down", rgb);
}
#endif

TEST_CASE("preprocess: window, channels, normalize, shape") {
  Image img;
  img.height = 2, img.width = 2, img.channels = 1;
  img.pixels = {-1000, 0, 40, 5000};  // HU
  set_window_center_width(img, 40, 400);  // DICOM linear: [-160, 239]
  const Image unit = apply_window(img);
  CHECK(unit.pixels[0] == 0.f);
  CHECK(unit.pixels[1] == doctest::Approx(160.0 / 399));
  CHECK(unit.pixels[3] == 1.f);
  Preprocess p;
  p.input_size = 2;  // same size: no resampling
  const Tensor t = preprocess(img, p);
  REQUIRE(t.shape() == Shape{3, 2, 2});
  for (int c = 0; c < 3; ++c) {  // grey -> 3 equal channels, (x - 0.5) / 0.5
    CHECK(t.f32()[c * 4 + 0] == -1.f);
    CHECK(t.f32()[c * 4 + 3] == 1.f);
    CHECK(t.f32()[c * 4 + 1] == doctest::Approx(2 * 160.0 / 399 - 1));
  }
  p.mean = {0.485f, 0.456f, 0.406f};
  p.std = {0.229f, 0.224f, 0.225f};
  const Tensor imagenet = preprocess(img, p);
  CHECK(imagenet.f32()[4 + 3] == doctest::Approx((1 - 0.456) / 0.224));
  // RGB -> grey for a one-channel model (ITU-R 601-2 luma).
  Image rgb;
  rgb.height = rgb.width = 1, rgb.channels = 3;
  rgb.pixels = {255, 0, 0};
  rgb.window_low = 0, rgb.window_high = 255;
  Preprocess one;
  one.input_size = 1, one.mean = {0.f}, one.std = {1.f};
  CHECK(preprocess(rgb, one).f32()[0] == doctest::Approx(0.299));
  // Constant image under min-max: a zero-width window, everything 0.
  Image flat;
  flat.height = flat.width = 3, flat.channels = 1;
  flat.pixels.assign(9, 7.f);
  flat.window_low = flat.window_high = 7;
  for (float v : apply_window(flat).pixels) CHECK(v == 0.f);
  // Resize to the model size: every method gives S x S.
  p.input_size = 5;
  for (const char* m : {"bilinear", "bicubic", "nearest", "bilinear-no-antialias"}) {
    p.interpolation = m;
    CHECK(preprocess(img, p).shape() == Shape{3, 5, 5});
  }
  p.interpolation = "lanczos";
  CHECK_THROWS_AS(preprocess(img, p), Error);
}
