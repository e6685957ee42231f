// The vectorisable elementwise math of lib/ops/vector_math.h.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/vector_math.h"
#include "test_util.h"

using namespace mm;

namespace {

// silu_vectorisable as it was written before its factor was picked with integer masks: the
// select form, which gcc compiles to scalar code without AVX-512.
float silu_select_form(float x) {
  const float e = exp2_nonpos(-std::fabs(x) * 1.44269504088896341f);
  const float r = 1.f / (1.f + e);
  return x * (x >= 0.f ? r : e * r);
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST_CASE("silu_vectorisable: the select form's values bit for bit, vectorised or not, and SiLU to 2e-7·(1 + |x|)") {
  std::vector<float> x = {0.f, -0.f, 1e-30f, -1e-30f, 1e-8f, -1e-8f, 0.5f, -0.5f, 17.f, -17.f, 88.f, -88.f, 200.f,
                          -200.f, 1e30f, -1e30f};
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 4.f);
  for (int i = 0; i < 20000; ++i) x.push_back(nd(rng));
  const int64_t n = int64_t(x.size());
  std::vector<float> vec(x.size());
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) vec[size_t(i)] = silu_vectorisable(x[size_t(i)]);
  int64_t differ = 0;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[size_t(i)], want = silu_select_form(xi);
    if (!same_bits(vec[size_t(i)], want) || !same_bits(silu_vectorisable(xi), want)) ++differ;
    // Accuracy where exp(-|x|) is above the clamp at 2^-125 (SiLU of -88 is -1e-36), relative
    // to 1 + |x|: the float rounding of -|x|·log2(e) alone moves exp(-|x|) by ~4e-8·|x|.
    const double ref = double(xi) / (1.0 + std::exp(-double(xi)));
    if (std::fabs(xi) < 80.f && ref != 0.0)
      worst = std::max(worst, std::fabs(double(want) - ref) / std::fabs(ref) / (1.0 + std::fabs(xi)));
  }
  CHECK(differ == 0);
  MESSAGE("silu_vectorisable against x·sigmoid(x) in double: worst relative error / (1 + |x|) " << worst);
  CHECK(worst < 2e-7);
}
