// The LayerNorm forward (rows 16 at a time with AVX-512, each over 8-float vectors with AVX2)
// against double, and its strided and gated inference forms against layernorm_forward (PyTorch agreement: test_ops_basic.cpp,
// "layernorm matches PyTorch").
#include <cstring>
#include <random>
#include <vector>

#include "ops/activations.h"
#include "ops/layernorm.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

std::vector<float> values(int64_t n, unsigned seed, float scale, float offset = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = offset + scale * nd(rng);
  return v;
}

// LayerNorm in double.
std::vector<float> double_layernorm(const std::vector<float>& x, const std::vector<float>& w,
                                    const std::vector<float>& b, int64_t N, int64_t C) {
  std::vector<float> out(x.size());
  for (int64_t n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int64_t c = 0; c < C; ++c) m += x[size_t(n * C + c)];
    m /= double(C);
    for (int64_t c = 0; c < C; ++c) v += (x[size_t(n * C + c)] - m) * (x[size_t(n * C + c)] - m);
    const double r = 1.0 / std::sqrt(v / double(C) + 1e-5);
    for (int64_t c = 0; c < C; ++c)
      out[size_t(n * C + c)] = float((x[size_t(n * C + c)] - m) * r * w[size_t(c)] + b[size_t(c)]);
  }
  return out;
}

bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, size_t(n) * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("layernorm_forward: within 1e-6 of double; a row's result does not depend on its row group") {
  // 37 rows: two groups of 16 (one AVX-512 pass each) and a tail of 5 (row by row); widths of
  // MedMamba's norms and odd ones.
  for (int64_t C : {int64_t(3), int64_t(48), int64_t(96), int64_t(101), int64_t(384)}) {
    CAPTURE(C);
    const int64_t N = 37;
    const std::vector<float> x = values(N * C, 1, 2.f, 0.5f), w = values(C, 2, 0.3f, 1.f), b = values(C, 3, 0.1f);
    std::vector<float> out(static_cast<size_t>(N * C)), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    const std::vector<float> want = double_layernorm(x, w, b, N, C);
    check_close("layernorm against double", out.data(), want.data(), N * C, 1e-6f, 1e-6f);
    // Rows 21..36 as one full group: rows 32..36, the tail above, come out the same.
    std::vector<float> shifted(static_cast<size_t>(16 * C)), smean(16), srstd(16);
    layernorm_forward(shifted.data(), smean.data(), srstd.data(), x.data() + 21 * C, w.data(), b.data(), 16, C);
    CHECK(same_bits(shifted.data(), out.data() + 21 * C, 16 * C));
    CHECK(same_bits(smean.data(), mean.data() + 21, 16));
    CHECK(same_bits(srstd.data(), rstd.data() + 21, 16));
  }
}

TEST_CASE("layernorm_forward_rows: strided rows equal layernorm_forward of a copy; the gate within 1e-6 of silu()") {
  const int64_t N = 53, c = 48, ld = 2 * c;  // ln_1 on the right half of (N, 2c) rows
  const std::vector<float> x = values(N * ld, 4, 1.5f), w = values(c, 5, 0.3f, 1.f), b = values(c, 6, 0.1f);
  std::vector<float> right(size_t(N * c));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < c; ++j) right[size_t(n * c + j)] = x[size_t(n * ld + c + j)];
  std::vector<float> got(size_t(N * c)), want(size_t(N * c));
  layernorm_forward_rows(got.data(), x.data() + c, ld, nullptr, w.data(), b.data(), N, c);
  layernorm_forward(want.data(), nullptr, nullptr, right.data(), w.data(), b.data(), N, c);
  CHECK(same_bits(got.data(), want.data(), N * c));

  const std::vector<float> z = values(N * c, 7, 3.f);
  layernorm_forward_rows(got.data(), right.data(), c, z.data(), w.data(), b.data(), N, c);
  for (size_t i = 0; i < want.size(); ++i) want[i] *= silu(z[i]);
  check_close("layernorm * silu(z)", got.data(), want.data(), N * c, 1e-6f, 1e-30f);
}
