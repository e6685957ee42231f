// init_reference draws every tensor from the reference's distribution: per-tensor mean and
// std against PyTorch's own initialisation of the same model
// (test/reference/make_init_stats_fixture.py). A wrong constant here trains, but slowly:
// BatchNorm weights initialised to 0 instead of 1 once silenced the whole convolution
// branch at the start of every run.
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/medmamba.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

TEST_CASE("init_reference: every tensor's mean and std match PyTorch's initialisation of the reference") {
  std::ifstream in(fixture_path("init_stats.json"));
  REQUIRE(in);
  const nlohmann::json j = nlohmann::json::parse(in);
  ModelConfig cfg;
  cfg.dims = j["config"]["dims"].get<std::vector<int64_t>>();
  cfg.depths = j["config"]["depths"].get<std::vector<int64_t>>();
  cfg.num_classes = j["config"]["num_classes"].get<int64_t>();
  MedMamba m(cfg);
  m.init_reference(3);
  const auto& ref = j["mean_std"];
  int64_t checked = 0;
  for (const ParamEntry& e : m.table().entries()) {
    REQUIRE_MESSAGE(ref.contains(e.name), e.name);
    const double want_mean = ref[e.name][0].get<double>(), want_std = ref[e.name][1].get<double>();
    const float* p = m.params().f32() + e.offset;
    const int64_t n = e.numel();
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; ++i) s += p[i], s2 += double(p[i]) * p[i];
    const double mean = s / double(n), std = std::sqrt(std::max(0.0, s2 / double(n) - mean * mean));
    INFO(e.name << ": mean " << mean << " std " << std << "; PyTorch's mean " << want_mean << " std " << want_std);
    // Sampling noise of a mean is about std/sqrt(n) (tiny tensors get a wider margin); of a std, a few percent.
    CHECK(std::abs(mean - want_mean) <= 5 * (std + want_std) / std::sqrt(double(n)) + 1e-6 + 0.05 * std::abs(want_mean));
    CHECK(std::abs(std - want_std) <= 0.25 * want_std + 1e-6);
    ++checked;
  }
  CHECK(checked == int64_t(m.table().entries().size()));
}
