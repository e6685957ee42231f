// int8 CPU inference (lib/ops/gemm_int8, lib/model/cpu_int8_model) against float32.
//
// Tolerances. Symmetric int8 with scale s rounds a value by at most s/2; the weight
// scale is max|w_n|/127 per output channel, the activation scale max|x|/127 over the
// tensor. A product x·w then errs by at most |x|·s_w/2 + |w|·s_x/2 + s_x·s_w/4, so an
// output of K products by at most
//   E = Σ_k (|x_k|·s_w + |w_k|·s_x)/2 + K·s_x·s_w/4   (+ float32 rounding),
// and Int8Linear is checked against 1.01·E + 1e-5 per element. Against a double
// reference over the quantised operands it must agree to 1e-5 relative (s32
// accumulation is exact; only the rescale is float32). Whole-model figures per case.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "model/cpu_int8_model.h"
#include "model/medmamba.h"
#include "ops/gemm_int8.h"
#include "ops/linear.h"
#include "brain_mri_agreement.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

bool int8_missing() {
  const std::string why = int8_model_unavailable_reason();
  if (!why.empty()) MESSAGE("skipped: no int8 path here: " << why);
  return !why.empty();
}

std::vector<float> normal_values(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

}  // namespace

TEST_CASE("int8: quantize_per_channel and quantize_s8 round to nearest and saturate at +-127") {
  const std::vector<float> w{0.5f, -1.f, 0.25f, 0.f, 0.f, 0.f, 3.f, 1.5f, -0.01f};
  const Int8Weights q = quantize_per_channel(w.data(), 3, 3);
  CHECK(q.scale[0] == doctest::Approx(1.f / 127));
  CHECK(q.scale[1] == 1.f);  // an all-zero row
  CHECK(q.scale[2] == doctest::Approx(3.f / 127));
  CHECK(std::vector<int>(q.q.begin(), q.q.end()) == std::vector<int>{64, -127, 32, 0, 0, 0, 127, 64, 0});
  // 40 values: the vector body and the scalar tail; 2.5 and -2.5 go to the even 2 and -2.
  std::vector<float> x(40);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) * 0.5f - 10.f;
  x[3] = 2.5f;
  x[38] = -2.5f;
  x[0] = 1000.f;
  x[39] = -1000.f;
  std::vector<int8_t> xq(x.size());
  quantize_s8(xq.data(), x.data(), int64_t(x.size()), 1.f);
  CHECK(xq[0] == 127);
  CHECK(xq[39] == -127);
  CHECK(xq[3] == 2);
  CHECK(xq[38] == -2);
  for (size_t i = 4; i < 38; ++i) CHECK(xq[i] == int8_t(std::nearbyint(x[i])));
  CHECK(abs_max(x.data(), int64_t(x.size())) == 1000.f);
}

TEST_CASE("int8: Int8Linear equals float32 within the quantisation bound, and the int8 product to 1e-5") {
  if (int8_missing()) return;
  const int64_t M = 37, K = 96, N = 40;
  const std::vector<float> x = normal_values(M * K, 2), w = normal_values(N * K, 3, 0.1f), b = normal_values(N, 4);
  const Int8Weights wq = quantize_per_channel(w.data(), N, K);
  const float sx = abs_max(x.data(), M * K) / 127.f;
  std::vector<int8_t> xq(x.size());
  quantize_s8(xq.data(), x.data(), M * K, sx);
  std::vector<float> ref(size_t(M * N)), bound(size_t(M * N)), ref_q(size_t(M * N));
  linear_forward(ref.data(), x.data(), w.data(), b.data(), M, K, N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double e = 0, s = 0;
      const double sw = wq.scale[size_t(n)];
      for (int64_t k = 0; k < K; ++k) {
        e += (std::fabs(x[size_t(m * K + k)]) * sw + std::fabs(w[size_t(n * K + k)]) * sx) / 2 + sx * sw / 4;
        s += double(xq[size_t(m * K + k)]) * wq.q[size_t(n * K + k)];
      }
      bound[size_t(m * N + n)] = float(1.01 * e + 1e-5);
      ref_q[size_t(m * N + n)] = float(s * sx * sw + b[size_t(n)]);
    }

  auto check = [&](const char* what, const std::vector<float>& got, const std::vector<float>& want, bool relu) {
    int bad_fp32 = 0, bad_q = 0;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const float r = relu ? std::max(ref[i], 0.f) : ref[i], rq = relu ? std::max(want[i], 0.f) : want[i];
      worst = std::max(worst, std::fabs(double(got[i]) - r) / bound[i]);
      bad_fp32 += std::fabs(got[i] - r) > bound[i];
      bad_q += std::fabs(got[i] - rq) > 1e-5 * (std::fabs(rq) + 1.f);
    }
    MESSAGE(std::string(what) << ": worst error against float32 / bound = " << worst);
    CHECK(bad_fp32 == 0);
    CHECK(bad_q == 0);
  };
  std::vector<float> out(size_t(M * N));
  Int8Linear lin(w.data(), b.data(), K, N);
  lin.forward(out.data(), x.data(), M);
  check("dynamic scale", out, ref_q, false);
  CHECK(lin.observed_abs_max() == abs_max(x.data(), M * K));

  SUBCASE("ReLU epilogue, a static scale, and another M reusing nothing stale") {
    Int8Linear relu(w.data(), b.data(), K, N, Int8Epilogue::Relu);
    relu.set_input_scale(sx);
    std::vector<float> half(size_t(M * N));
    relu.forward(half.data(), x.data(), M / 2);  // a different M first
    relu.forward(out.data(), x.data(), M);
    check("static scale, relu", out, ref_q, true);
    for (int64_t i = 0; i < (M / 2) * N; ++i) CHECK(half[size_t(i)] == out[size_t(i)]);
  }
}

TEST_CASE("int8: the small fixture model's logits agree with float32; calibrated scales give the same logits") {
  if (int8_missing()) return;
  const SafetensorsFile f = load_fixture("model_small.safetensors");
  ModelConfig cfg = ModelConfig::from_json(f.metadata.at("config"));
  MedMamba model(cfg);
  std::map<std::string, Tensor> state;
  for (const ParamEntry& e : model.table().entries()) state[e.name] = f.at(e.name);
  model.load_state(state);
  const Tensor& input = f.at("input");
  const Tensor want = model.forward(input, /*train=*/false);
  CpuInt8Model int8(model);
  const Tensor got = int8.forward(input);
  REQUIRE(got.shape() == want.shape());
  const double err = rel_l2(got.f32(), want.f32(), want.numel());
  MESSAGE("fixture logits, int8 against float32: relative L2 error " << err);
  CHECK(err < 5e-2);
  // Calibrated on this very batch, each Linear's static scale is the dynamic one it used.
  const ActivationScales scales = int8.observed_scales();
  int64_t blocks = 0;
  for (int64_t d : cfg.depths) blocks += d;
  CHECK(scales.size() == size_t(5 * blocks + cfg.num_stages() - 1));
  const Tensor calibrated = CpuInt8Model(model, scales).forward(input);
  for (int64_t k = 0; k < got.numel(); ++k) CHECK(calibrated.f32()[k] == doctest::Approx(got.f32()[k]).epsilon(1e-6));
  CHECK_THROWS_WITH_AS(CpuInt8Model(model, ActivationScales{{"layers.9.blocks.0.x_proj", 1.f}}),
                       doctest::Contains("name no Linear layer"), Error);
}

#ifdef MM_HAVE_IMAGING
TEST_CASE("int8: brain-MRI model, every 13th test image (101): top-1 agreement with float32 >= 99%") {
  if (int8_missing()) return;
  check_agreement(brain_mri_agreement<CpuInt8Model>(13), "int8", 99.0);
}

// The full test split (1,311 images): mm-tests -tc='int8*all 1?311*' --no-skip
TEST_CASE("int8: brain-MRI model, all 1,311 test images: agreement >= 99%, accuracy within 0.5 points" *
          doctest::skip()) {
  if (int8_missing()) return;
  check_agreement(brain_mri_agreement<CpuInt8Model>(1), "int8", 99.0);
}
#endif
