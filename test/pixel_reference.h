#pragma once
// Compares decoded pixels with the references that
// test/reference/dump_pixel_references.py wrote from pydicom and nibabel:
// SHA-256 of the float32 array, plus shape, min/max/mean and sample values for
// tolerant comparisons (lossy codecs) and for saying what differs.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/image.h"
#include "sha256.h"

namespace mm::test {

inline std::string shared_data_path(const std::string& rel) { return std::string(MM_SHARED_DATA_DIR) + "/" + rel; }

inline nlohmann::json load_pixel_references(const std::string& name) {
  std::ifstream in(std::string(MM_FIXTURE_DIR) + "/pixels/" + name);
  REQUIRE_MESSAGE(in.good(), "missing test/fixtures/pixels/" << name);
  return nlohmann::json::parse(in);
}

// All images' pixels in order, as one float32 array (frames/slices stacked).
inline std::vector<float> stack_pixels(const std::vector<Image>& images) {
  std::vector<float> all;
  for (const Image& img : images) all.insert(all.end(), img.pixels.begin(), img.pixels.end());
  return all;
}

struct PixelComparison {
  bool shape_ok = false, exact = false, close = false;
  double max_sample_diff = 0, mean_diff = 0;
  std::string detail;
};

// tolerance: allowed |difference| of the mean and of each sample value, in
// units of the reference's value range (0 means exact only).
inline PixelComparison compare_with_reference(const std::vector<float>& got, const nlohmann::json& ref,
                                              double tolerance) {
  PixelComparison c;
  int64_t want_n = 1;
  for (int64_t d : ref.at("shape")) want_n *= d;
  c.shape_ok = int64_t(got.size()) == want_n;
  std::ostringstream why;
  if (!c.shape_ok) {
    why << "got " << got.size() << " values, reference shape " << ref.at("shape").dump();
    c.detail = why.str();
    return c;
  }
  c.exact = sha256_hex(got.data(), got.size() * sizeof(float)) == ref.at("sha256").get<std::string>();
  double sum = 0;
  for (float v : got)
    if (std::isfinite(v)) sum += v;
  const double range = std::max(1e-12, ref.at("max").get<double>() - ref.at("min").get<double>());
  c.mean_diff = std::fabs(sum / double(std::max<size_t>(got.size(), 1)) - ref.at("mean").get<double>()) / range;
  for (const auto& s : ref.at("samples")) {
    const double have = got[size_t(s[0].get<int64_t>())];
    if (s[1].is_null()) {  // not finite in the reference
      if (std::isfinite(have)) c.max_sample_diff = INFINITY;
      continue;
    }
    const double want = s[1].get<double>();
    c.max_sample_diff = std::max(c.max_sample_diff, std::fabs(have - want) / range);
  }
  c.close = c.exact || (tolerance > 0 && c.mean_diff <= tolerance && c.max_sample_diff <= 4 * tolerance);
  why << "sha256 " << (c.exact ? "equal" : "differs") << ", mean diff " << c.mean_diff << " and worst sample diff "
      << c.max_sample_diff << " of the value range";
  c.detail = why.str();
  return c;
}

}  // namespace mm::test
