#pragma once
// Shared helpers for the doctest suite: fixtures, comparisons, finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace mm::test {

// A per-process scratch path, removed when the guard goes out of scope.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& name) : path("/tmp/mm-test-" + std::to_string(::getpid()) + "-" + name) {}
  ~TempFile() { std::remove(path.c_str()); }
};

inline std::string fixture_path(const std::string& rel) { return std::string(MM_FIXTURE_DIR) + "/" + rel; }
inline SafetensorsFile load_fixture(const std::string& rel) { return read_safetensors(fixture_path(rel)); }

// Max over elements of |got-want| / (atol + rtol*|want|) must be <= 1.
// Reports the worst element on failure.
inline void check_close(const std::string& what, const float* got, const float* want, int64_t n,
                        float rtol, float atol) {
  double worst = 0; int64_t wi = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = std::fabs(double(got[i]) - double(want[i]));
    const double err = diff == 0.0 ? 0.0 : diff / (atol + rtol * std::fabs(double(want[i])));
    if (!(err <= worst)) { worst = err; wi = i; }  // NaN counts as worst
  }
  INFO(what << ": worst element " << wi << " got " << (n ? got[wi] : 0) << " want " << (n ? want[wi] : 0)
            << " (rtol " << rtol << ", atol " << atol << ")");
  CHECK(worst <= 1.0);
}

inline void check_close(const std::string& what, const Tensor& got, const Tensor& want, float rtol,
                        float atol) {
  INFO(what << ": got shape " << shape_str(got.shape()) << " want " << shape_str(want.shape()));
  REQUIRE(got.numel() == want.numel());
  Tensor g = got.to(DType::F32), w = want.to(DType::F32);
  check_close(what, g.f32(), w.f32(), got.numel(), rtol, atol);
}

// n values drawn from N(0, scale^2) by mt19937(seed): reproducible test inputs.
inline std::vector<float> normal_values(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

// Relative error ||a-b|| / max(||b||, tiny): a whole-tensor measure used for model-level checks.
inline double rel_l2(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) { double d = double(a[i]) - b[i]; num += d * d; den += double(b[i]) * b[i]; }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Central finite-difference check of an analytic gradient.
// loss(): recomputes a scalar from the current contents of x (in double for accuracy where possible).
// Probes `probes` evenly spaced elements of x.
inline void fd_check(const std::string& what, float* x, const float* analytic_grad, int64_t n,
                     const std::function<double()>& loss, float eps = 1e-2f, float rtol = 2e-2f,
                     float atol = 1e-3f, int probes = 12) {
  for (int p = 0; p < probes && p < n; ++p) {
    int64_t i = (n <= probes) ? p : (int64_t(p) * (n - 1)) / (probes - 1);
    float saved = x[i];
    x[i] = saved + eps; double lp = loss();
    x[i] = saved - eps; double lm = loss();
    x[i] = saved;
    double num = (lp - lm) / (2.0 * eps);
    INFO(what << " element " << i << ": analytic " << analytic_grad[i] << " numeric " << num);
    CHECK(std::fabs(num - analytic_grad[i]) <= atol + rtol * std::fabs(num));
  }
}

}  // namespace mm::test
