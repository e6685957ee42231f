// Each augmentation step against a computation we did not share code with:
// Pillow's rotate and crop+resize (torchvision's PIL path, fixtures from
// test/reference/make_augment_references.py), exact mirror images and shifts,
// a bilinear ramp rotated by hand, and the jitter formulas on real pixels.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "train/augment.h"

using namespace mm;

namespace {

const std::string kDir = std::string(MM_FIXTURE_DIR) + "/augment/";

template <class T>
std::vector<T> read_raw(const std::string& name, size_t n) {
  std::ifstream in(kDir + name, std::ios::binary);
  REQUIRE(in.good());
  std::vector<T> v(n);
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(T)));
  REQUIRE(in.gcount() == std::streamsize(n * sizeof(T)));
  return v;
}

nlohmann::json manifest() {
  std::ifstream in(kDir + "augment.json");
  return nlohmann::json::parse(in);
}

// One grey uint8 image of side s and a 1-channel identity normalisation, so
// the output is the augmented image in [0, 1].
struct GreyCase {
  int64_t s;
  CachedImage img;
  Preprocess p;
  explicit GreyCase(std::vector<uint8_t> pixels, int64_t side) : s(side) {
    img.channels = 1;
    img.u8 = std::move(pixels);
    p.input_size = side;
    p.mean = {0.f};
    p.std = {1.f};
  }
  std::vector<float> run(const AugmentDraw& d) const {
    std::vector<float> out(size_t(s * s));
    apply_augment(img, s, d, p, out.data());
    return out;
  }
  AugmentDraw identity() const {
    AugmentDraw d;
    d.crop = {0, 0, s, s};
    return d;
  }
};

// The cache's dequantisation: q * (1 / 255) in float.
float unit(uint8_t q) { return float(q) * (1.f / 255.f); }

GreyCase pneumonia_case() { return GreyCase(read_raw<uint8_t>("input.u8", 28 * 28), 28); }

std::vector<uint8_t> pattern(int64_t n) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = uint8_t((i * 37 + (i / 7) * 11) % 256);
  return v;
}

}  // namespace

TEST_CASE("augment: rotation equals Pillow's Image.rotate (bilinear, fill 0), torchvision's PIL path") {
  const GreyCase g = pneumonia_case();
  const nlohmann::json m = manifest();
  REQUIRE(m["rotations"].size() == 3);
  for (const auto& r : m["rotations"]) {
    const double angle = r["angle"];
    INFO("angle " << angle);
    const std::vector<float> want = read_raw<float>(r["output"], 28 * 28);
    AugmentDraw d = g.identity();
    d.angle_degrees = angle;
    const std::vector<float> got = g.run(d);
    int64_t filled = 0, worst_i = 0;
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      filled += want[i] == 0.f;
      const double e = std::fabs(double(got[i]) - double(want[i]));
      if (e > worst) worst = e, worst_i = int64_t(i);
    }
    INFO("worst pixel " << worst_i << ": got " << got[size_t(worst_i)] << " want " << want[size_t(worst_i)]);
    CHECK(filled > 10);  // the corners are filled
    CHECK(worst < 2e-5);
  }
}

TEST_CASE("augment: resized crop equals Pillow's crop + resize away from the crop's border") {
  const GreyCase g = pneumonia_case();
  const nlohmann::json m = manifest();
  REQUIRE(m["crops"].size() == 3);
  for (const auto& c : m["crops"]) {
    const CropBox box{c["top"], c["left"], c["height"], c["width"]};
    INFO("crop " << box.top << "," << box.left << " " << box.height << "x" << box.width);
    const std::vector<float> want = read_raw<float>(c["output"], 28 * 28);
    AugmentDraw d = g.identity();
    d.crop = box;
    const std::vector<float> got = g.run(d);
    // Pillow resizes the crop alone (edge pixels repeat); ours samples the
    // whole cached image, so the two agree where the sample point lies
    // between pixel centres of the crop.
    int64_t compared = 0;
    double worst = 0;
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x) {
        const double sx = (x + 0.5) * double(box.width) / 28 - 0.5, sy = (y + 0.5) * double(box.height) / 28 - 0.5;
        if (sx < 0 || sy < 0 || sx > double(box.width - 1) || sy > double(box.height - 1)) continue;
        ++compared;
        worst = std::max(worst, std::fabs(double(got[size_t(y * 28 + x)]) - double(want[size_t(y * 28 + x)])));
      }
    CHECK(compared > 600);
    CHECK(worst < 2e-6);
  }
}

TEST_CASE("augment: flip mirrors and translation shifts whole pixels with fill 0") {
  const GreyCase g(pattern(16 * 16), 16);
  AugmentDraw d = g.identity();
  d.flip = true;
  const std::vector<float> flipped = g.run(d);
  for (int64_t y = 0; y < 16; ++y)
    for (int64_t x = 0; x < 16; ++x) REQUIRE(flipped[size_t(y * 16 + x)] == unit(g.img.u8[size_t(y * 16 + 15 - x)]));
  d = g.identity();
  d.shift_x = 3, d.shift_y = -2;
  const std::vector<float> shifted = g.run(d);
  for (int64_t y = 0; y < 16; ++y)
    for (int64_t x = 0; x < 16; ++x) {
      const int64_t sx = x - 3, sy = y + 2;
      const float want = sx < 0 || sy >= 16 ? 0.f : unit(g.img.u8[size_t(sy * 16 + sx)]);
      REQUIRE(shifted[size_t(y * 16 + x)] == want);
    }
}

TEST_CASE("augment: a drawn rotation of a ramp equals the ramp at the rotated point") {
  // Bilinear interpolation reproduces a linear function exactly, so every
  // pixel whose rotated source lies inside is the ramp at that point.
  const int64_t s = 32;
  CachedImage ramp;
  ramp.channels = 1, ramp.wide = true;
  for (int64_t y = 0; y < s; ++y)
    for (int64_t x = 0; x < s; ++x) ramp.u16.push_back(uint16_t(1000 * x + 700 * y + 500));
  AugmentOptions only_rotate = AugmentOptions::none();
  only_rotate.rotate = true;
  const AugmentDraw d = draw_augment(only_rotate, s, sample_seed(5, 2, 17));
  CHECK(std::fabs(d.angle_degrees) <= 15);
  CHECK(std::fabs(d.angle_degrees) > 1);
  Preprocess p;
  p.input_size = s, p.mean = {0.f}, p.std = {1.f};
  std::vector<float> out(size_t(s * s));
  apply_augment(ramp, s, d, p, out.data());
  const double t = d.angle_degrees * 3.14159265358979323846 / 180, c = s / 2.0;
  int64_t inside = 0, wrong_fill = 0;
  double worst = 0;
  for (int64_t y = 0; y < s; ++y)
    for (int64_t x = 0; x < s; ++x) {
      // Counter-clockwise on screen (y down): the source is the output point turned back.
      const double px = x + 0.5 - c, py = y + 0.5 - c;
      const double qx = c + std::cos(t) * px - std::sin(t) * py, qy = c + std::sin(t) * px + std::cos(t) * py;
      const double ix = qx - 0.5, iy = qy - 0.5;  // pixel-index coordinates
      const float got = out[size_t(y * s + x)];
      if (qx < 0 || qy < 0 || qx >= s || qy >= s) {
        wrong_fill += got != 0.f;
      } else if (ix >= 0 && iy >= 0 && ix <= s - 1 && iy <= s - 1) {
        ++inside;
        worst = std::max(worst, std::fabs(got - (1000 * ix + 700 * iy + 500) / 65535));
      }
    }
  CHECK(wrong_fill == 0);
  CHECK(worst < 1e-5);
  CHECK(inside > 800);
}

TEST_CASE("augment: colour jitter follows torchvision's brightness and contrast on a real image") {
  const GreyCase g = pneumonia_case();
  AugmentOptions only_jitter = AugmentOptions::none();
  only_jitter.jitter = true;
  int orders[2] = {0, 0};
  double b_lo = 2, b_hi = 0, c_lo = 2, c_hi = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const AugmentDraw d = draw_augment(only_jitter, 28, sample_seed(1, 0, i));
    ++orders[d.contrast_first];
    b_lo = std::min(b_lo, d.brightness), b_hi = std::max(b_hi, d.brightness);
    c_lo = std::min(c_lo, d.contrast), c_hi = std::max(c_hi, d.contrast);
    if (i >= 4) continue;
    const std::vector<float> got = g.run(d);
    std::vector<double> x(g.img.u8.begin(), g.img.u8.end());
    for (double& v : x) v /= 255;
    auto brightness = [&] {
      for (double& v : x) v = std::clamp(v * d.brightness, 0.0, 1.0);
    };
    auto contrast = [&] {
      double mean = 0;
      for (double v : x) mean += v / double(x.size());
      for (double& v : x) v = std::clamp(d.contrast * v + (1 - d.contrast) * mean, 0.0, 1.0);
    };
    if (d.contrast_first)
      contrast(), brightness();
    else
      brightness(), contrast();
    double worst = 0;
    for (size_t k = 0; k < x.size(); ++k) worst = std::max(worst, std::fabs(double(got[k]) - x[k]));
    CHECK(worst < 1e-5);
  }
  // With a translation, the contrast's mean is over the whole image before
  // the shift (pixels moved out of view included), and the uncovered pixels
  // stay 0 (the shift comes after the jitter).
  AugmentDraw d = g.identity();
  d.shift_x = 4, d.shift_y = -3, d.brightness = 1.07, d.contrast = 0.83;
  std::vector<double> x(g.img.u8.begin(), g.img.u8.end());
  double mean = 0;
  for (double& v : x) v = std::clamp(v / 255 * d.brightness, 0.0, 1.0), mean += v / double(x.size());
  for (double& v : x) v = std::clamp(d.contrast * v + (1 - d.contrast) * mean, 0.0, 1.0);
  const std::vector<float> got = g.run(d);
  double worst = 0;
  for (int64_t oy = 0; oy < 28; ++oy)
    for (int64_t ox = 0; ox < 28; ++ox) {
      const int64_t sy = oy + 3, sx = ox - 4;
      const double want = sy >= 28 || sx < 0 ? 0.0 : x[size_t(sy * 28 + sx)];
      worst = std::max(worst, std::fabs(double(got[size_t(oy * 28 + ox)]) - want));
    }
  CHECK(worst < 1e-5);
  CHECK(orders[0] > 150);
  CHECK(orders[1] > 150);
  CHECK(b_lo >= 0.9);
  CHECK(b_lo < 0.91);
  CHECK(b_hi <= 1.1);
  CHECK(b_hi > 1.09);
  CHECK(c_lo >= 0.8);
  CHECK(c_hi <= 1.2);
}

TEST_CASE("augment: brightness and contrast equal Pillow's ImageEnhance (torchvision's PIL path) within its 8 bits") {
  const GreyCase g = pneumonia_case();
  const nlohmann::json m = manifest();
  REQUIRE(m["jitters"].size() == 2);
  for (const auto& j : m["jitters"]) {
    AugmentDraw d = g.identity();
    d.brightness = j["brightness"];
    d.contrast = j["contrast"];
    d.contrast_first = j["first"] == "contrast";
    INFO("brightness " << d.brightness << " contrast " << d.contrast << " contrast first " << d.contrast_first);
    const std::vector<uint8_t> want = read_raw<uint8_t>(j["output"], 28 * 28);
    const std::vector<float> got = g.run(d);
    double worst = 0, unchanged = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) * 255 - double(want[i])));
      unchanged = std::max(unchanged, std::fabs(double(g.img.u8[i]) - double(want[i])));
    }
    // Pillow truncates to 8 bits after each step (up to 1 level each, the
    // first scaled by the second factor) and rounds the mean to a level:
    // at most about 1.2 + 0.1 + 1 levels. A wrong mean (0.5) is 6 levels off.
    CHECK(worst < 2.5);
    CHECK(unchanged > 10);  // the factors change the image far more than that
  }
}

TEST_CASE("augment: RandomResizedCrop boxes over many draws, and its centre-crop fallback") {
  SplitMix64 rng(42);
  double scale_sum = 0;
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    const CropBox b = random_resized_crop_box(224, 224, 0.7, 1.0, 3.0 / 4.0, 4.0 / 3.0, rng);
    REQUIRE(b.top >= 0);
    REQUIRE(b.left >= 0);
    REQUIRE(b.top + b.height <= 224);
    REQUIRE(b.left + b.width <= 224);
    const double scale = double(b.height * b.width) / (224.0 * 224.0), ratio = double(b.width) / double(b.height);
    REQUIRE(scale >= 0.7 - 0.01);  // w and h are rounded to whole pixels
    REQUIRE(scale <= 1.0);
    REQUIRE(ratio >= 0.75 - 0.01);
    REQUIRE(ratio <= 4.0 / 3.0 + 0.01);
    scale_sum += scale;
  }
  // Boxes wider or taller than the image are redrawn, which favours small areas.
  CHECK(scale_sum / n > 0.78);
  CHECK(scale_sum / n < 0.85);
  // Areas larger than the image can never fit: torchvision's fallback.
  CHECK(random_resized_crop_box(100, 300, 2, 3, 0.75, 4.0 / 3.0, rng).left == 83);
  CHECK(random_resized_crop_box(100, 300, 2, 3, 0.75, 4.0 / 3.0, rng).width == 133);
  const CropBox tall = random_resized_crop_box(300, 100, 2, 3, 0.75, 4.0 / 3.0, rng);
  CHECK((tall.top == 83 && tall.height == 133 && tall.left == 0 && tall.width == 100));
}

TEST_CASE("augment: options from and to the command-line list; seeds and draws") {
  CHECK(AugmentOptions().to_list() == "crop,flip,rotate,jitter,translate");
  CHECK(AugmentOptions::from_list("translate,flip").to_list() == "flip,translate");
  CHECK_FALSE(AugmentOptions::from_list("none").any());
  CHECK_THROWS_AS(AugmentOptions::from_list("crop,blur"), Error);
  CHECK(sample_seed(1, 0, 5) != sample_seed(1, 1, 5));
  CHECK(sample_seed(1, 0, 5) != sample_seed(1, 0, 6));
  CHECK(sample_seed(1, 0, 5) != sample_seed(2, 0, 5));
  // A step's draw does not depend on which other steps are on.
  AugmentOptions flip_only = AugmentOptions::none();
  flip_only.flip = true;
  int flips = 0;
  for (int64_t i = 0; i < 200; ++i) {
    const uint64_t s = sample_seed(3, 1, i);
    const AugmentDraw all = draw_augment(AugmentOptions{}, 64, s), one = draw_augment(flip_only, 64, s);
    REQUIRE(all.flip == one.flip);
    flips += one.flip;
    REQUIRE(std::abs(all.shift_x) <= 6);  // round(0.1 * 64) at most
    REQUIRE(one.shift_x == 0);
    REQUIRE(one.crop.width == 64);
  }
  CHECK(flips > 70);
  CHECK(flips < 130);
}
