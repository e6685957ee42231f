// bf16 CPU inference (lib/ops/gemm_bf16, lib/model/cpu_bf16_model) against float32.
//
// Tolerances. bf16 keeps 8 significant bits, so rounding an operand costs at most
// 2^-9 of it and a product of two rounded operands at most ~2^-8. A GEMM or conv
// output of K products therefore differs from float32 by at most
//   2^-8 · Σ_k |x_k·w_k|   (+ float32 accumulation, ~1e-6 of the same sum),
// and the ops are checked against 2^-7 of that sum, per element. Against a double
// reference over the bf16-rounded operands they must agree to 1e-5 of the sum
// (only the float32 accumulation differs). Whole-model figures are stated per case.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "core/half.h"
#include "model/cpu_bf16_model.h"
#include "model/medmamba.h"
#include "model/model_file.h"
#include "ops/conv2d.h"
#include "ops/gemm_bf16.h"
#include "ops/linear.h"
#include "ops/selective_scan.h"
#include "brain_mri_agreement.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

bool bf16_missing() {
  const std::string why = bf16_unavailable_reason();
  if (!why.empty()) MESSAGE("skipped: no bf16 path here: " << why);
  return !why.empty();
}

std::vector<float> rounded(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = bf16_to_float(float_to_bf16(v[i]));
  return r;
}

std::vector<uint16_t> as_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  to_bf16(r.data(), v.data(), int64_t(v.size()));
  return r;
}

std::vector<float> absolute(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = std::fabs(v[i]);
  return r;
}

// Every element: |got - want| <= rel * bound + 1e-6.
void check_within(const char* what, const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<float>& bound, double rel) {
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]), lim = rel * bound[i] + 1e-6;
    worst = std::max(worst, err / lim);
    if (err > lim) ++bad;
  }
  INFO(what << ": worst error / allowed = " << worst);
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("bf16: to_bf16 rounds to nearest even, as float_to_bf16 and torch") {
  std::vector<float> v = normal_values(1000, 1, 100.f);
  // Ties: 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7 and goes to the even 1.
  v.push_back(1.f + 1.f / 256.f);
  v.push_back(1.f + 3.f / 256.f);  // halfway, rounds up to the even 1 + 2^-6
  v.push_back(0.f);
  v.push_back(-3.5f);
  const std::vector<uint16_t> b = as_bf16(v);
  int differ = 0;
  for (size_t i = 0; i < v.size(); ++i) differ += b[i] != float_to_bf16(v[i]);
  CHECK(differ == 0);
  CHECK(bf16_to_float(b[1000]) == 1.f);
  CHECK(bf16_to_float(b[1001]) == 1.f + 4.f / 256.f);
}

TEST_CASE("bf16: Bf16Linear equals float32 within 2^-7 of sum|x*w|, and the bf16 product to 1e-5") {
  if (bf16_missing()) return;
  const int64_t M = 37, K = 96, N = 40;
  const std::vector<float> x = normal_values(M * K, 2), w = normal_values(N * K, 3, 0.1f), b = normal_values(N, 4);
  std::vector<float> ref(size_t(M * N)), bound(size_t(M * N)), ref_rounded(size_t(M * N));
  linear_forward(ref.data(), x.data(), w.data(), b.data(), M, K, N);
  linear_forward(bound.data(), absolute(x).data(), absolute(w).data(), nullptr, M, K, N);
  const std::vector<float> xr = rounded(x), wr = rounded(w);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = b[size_t(n)];
      for (int64_t k = 0; k < K; ++k) s += double(xr[size_t(m * K + k)]) * wr[size_t(n * K + k)];
      ref_rounded[size_t(m * N + n)] = float(s);
    }
  const std::vector<uint16_t> xb = as_bf16(x);

  Bf16Linear lin(w.data(), b.data(), K, N);
  std::vector<float> out(size_t(M * N));
  lin.forward(out.data(), xb.data(), M);
  check_within("against float32", out, ref, bound, 1.0 / 128);
  check_within("against the bf16 operands in double", out, ref_rounded, bound, 1e-5);

  SUBCASE("ReLU epilogue and bf16 output: one more rounding of the result (2^-9 of it)") {
    Bf16Linear relu(w.data(), b.data(), K, N, Bf16Epilogue::Relu);
    std::vector<uint16_t> ob(size_t(M * N));
    relu.forward_bf16(ob.data(), xb.data(), M);
    std::vector<float> got(ob.size()), want(ob.size()), lim(ob.size());
    for (size_t i = 0; i < ob.size(); ++i) {
      got[i] = bf16_to_float(ob[i]);
      want[i] = std::max(ref_rounded[i], 0.f);
      lim[i] = bound[i] * 2.56e-3f + std::fabs(want[i]);  // times 1/256: 1e-5·sum + 2^-8·|out|
    }
    check_within("relu, bf16 out", got, want, lim, 1.0 / 256);
  }
}

// Where the CPU has no native bf16 the convolution widens its operands to float32 (the same
// products), and this checks that path against the same bound.
TEST_CASE("bf16: Bf16Conv2d (3x3 pad 1 with a folded BatchNorm and ReLU; 4x4 stride 4) against float32") {
  const std::string why = bf16_conv_unavailable_reason();
  if (!why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  const bool native = bf16_unavailable_reason().empty();
  MESSAGE(std::string(native ? "native bf16 convolution" : "bf16 operands widened to float32"));
  struct Case { int64_t B, H, Cin, Cout, k, stride, pad; bool fold; };
  for (const Case c : {Case{2, 7, 24, 24, 3, 1, 1, true}, Case{2, 16, 3, 16, 4, 4, 0, false}}) {
    CAPTURE(c.k);
    Conv2dShape s;
    s.B = c.B; s.H = s.W = c.H; s.Cin = c.Cin; s.Cout = c.Cout; s.KH = s.KW = c.k; s.stride = c.stride; s.pad = c.pad;
    const int64_t out_n = s.B * s.out_h() * s.out_w() * s.Cout;
    const std::vector<float> x = normal_values(s.B * s.H * s.W * s.Cin, 5);
    const std::vector<float> w = normal_values(s.Cout * s.col_k(), 6, 0.2f), b = normal_values(s.Cout, 7);
    const std::vector<float> scale = c.fold ? normal_values(s.Cout, 8) : std::vector<float>(size_t(s.Cout), 1.f);
    const std::vector<float> shift = c.fold ? normal_values(s.Cout, 9) : std::vector<float>(size_t(s.Cout), 0.f);
    std::vector<float> ref(static_cast<size_t>(out_n)), bound(static_cast<size_t>(out_n));
    conv2d_forward(ref.data(), x.data(), w.data(), b.data(), s, nullptr);
    conv2d_forward(bound.data(), absolute(x).data(), absolute(w).data(), nullptr, s, nullptr);
    for (int64_t i = 0; i < out_n; ++i) {
      const size_t o = size_t(i % s.Cout);
      ref[size_t(i)] = ref[size_t(i)] * scale[o] + shift[o];
      if (c.fold) ref[size_t(i)] = std::max(ref[size_t(i)], 0.f);
      bound[size_t(i)] *= std::fabs(scale[o]);
    }
    Bf16Conv2d conv(s, w.data(), b.data(), c.fold ? scale.data() : nullptr, c.fold ? shift.data() : nullptr,
                    c.fold ? Bf16Epilogue::Relu : Bf16Epilogue::None);
    std::vector<float> out(static_cast<size_t>(out_n));
    conv.forward(out.data(), as_bf16(x).data(), s.B, s.H, s.W);
    check_within("conv against float32", out, ref, bound, 1.0 / 128);
    // bf16 out: the float32 out rounded to bf16 (to 2^-8 relative, as summation orders may differ).
    std::vector<uint16_t> out16(static_cast<size_t>(out_n));
    conv.forward_bf16(out16.data(), as_bf16(x).data(), s.B, s.H, s.W);
    int bad = 0;
    for (int64_t i = 0; i < out_n; ++i)
      bad += std::fabs(bf16_to_float(out16[size_t(i)]) - out[size_t(i)]) >
             std::fabs(out[size_t(i)]) / 256 + 1e-5f * bound[size_t(i)];
    CHECK(bad == 0);
  }
}

TEST_CASE("bf16: the scan with the coarse exp stays within 1e-5 (rel. L2) of the exact one") {
  const SS2DScanShape s{2, 12, 12, 40, 16, 3};  // 40 channels: a full and a partial lane block
  const int64_t BL = s.B * s.H * s.W, KC = 4 * (s.R + 2 * s.N);
  const std::vector<float> u = normal_values(BL * s.D, 11), dbl = normal_values(BL * KC, 12, 0.5f);
  const std::vector<float> dtw = normal_values(4 * s.D * s.R, 13, 0.3f), dtb = normal_values(4 * s.D, 14);
  std::vector<float> A_logs(size_t(4 * s.D * s.N)), Ds(size_t(4 * s.D), 1.f);
  for (size_t i = 0; i < A_logs.size(); ++i) A_logs[i] = std::log(float(i % size_t(s.N) + 1));  // the reference init
  const SS2DScanWeights w{nullptr, dtw.data(), dtb.data(), A_logs.data(), Ds.data()};
  std::vector<float> exact(size_t(BL * s.D)), coarse(size_t(BL * s.D));
  ss2d_scan_forward_from_dbl(s, u.data(), w, dbl.data(), exact.data());
  ss2d_scan_forward_from_dbl(s, u.data(), w, dbl.data(), coarse.data(), nullptr, /*coarse_exp=*/true);
  const double err = rel_l2(coarse.data(), exact.data(), int64_t(exact.size()));
  MESSAGE("scan, coarse against exact exp: relative L2 error " << err);
  CHECK(err > 0);
  CHECK(err < 1e-5);
}

TEST_CASE("bf16: the small fixture model's logits agree with float32") {
  if (bf16_missing()) return;
  const SafetensorsFile f = load_fixture("model_small.safetensors");
  ModelConfig cfg = ModelConfig::from_json(f.metadata.at("config"));
  MedMamba model(cfg);
  std::map<std::string, Tensor> state;
  for (const ParamEntry& e : model.table().entries()) state[e.name] = f.at(e.name);
  model.load_state(state);
  const Tensor& input = f.at("input");
  const Tensor want = model.forward(input, /*train=*/false);
  CpuBf16Model bf16(model);
  const Tensor got = bf16.forward(input);
  REQUIRE(got.shape() == want.shape());
  const double err = rel_l2(got.f32(), want.f32(), want.numel());
  MESSAGE("fixture logits, bf16 against float32: relative L2 error " << err);
  CHECK(err < 2e-2);
  // A second call with another batch size reuses nothing stale.
  const Tensor one = bf16.forward(input.slice_view(0, {1, input.dim(1), input.dim(2), input.dim(3)}).clone());
  for (int64_t k = 0; k < one.dim(1); ++k) CHECK(one.f32()[k] == doctest::Approx(got.f32()[k]).epsilon(1e-5));
}

TEST_CASE("bf16: a model file stored in BF16 loads directly: the same logits as its float32 twin rounded to bf16") {
  if (bf16_missing()) return;
  const SafetensorsFile f = load_fixture("model_small.safetensors");
  ModelMeta meta;
  meta.config = ModelConfig::from_json(f.metadata.at("config"));
  meta.preprocess.input_size = meta.config.image_size;
  MedMamba model(meta.config);
  std::map<std::string, Tensor> state;
  for (const ParamEntry& e : model.table().entries()) state[e.name] = f.at(e.name);
  model.load_state(state);
  const std::string path = "/tmp/mm-test-bf16-" + std::to_string(::getpid()) + ".safetensors";
  save_model(path, model, meta, DType::BF16);
  LoadedModel stored = load_model(path);
  std::remove(path.c_str());
  // Every float32 parameter rounded to bf16, as the file holds it.
  float* p = model.params().f32();
  for (int64_t i = 0; i < model.params().numel(); ++i) p[i] = bf16_to_float(float_to_bf16(p[i]));
  const Tensor& input = f.at("input");
  const Tensor want = CpuBf16Model(model).forward(input), got = CpuBf16Model(stored.model).forward(input);
  REQUIRE(got.numel() == want.numel());
  int differ = 0;
  for (int64_t i = 0; i < got.numel(); ++i) differ += got.f32()[i] != want.f32()[i];
  CHECK(differ == 0);
}

#ifdef MM_HAVE_IMAGING
TEST_CASE("bf16: brain-MRI model, every 13th test image (101): top-1 agreement with float32 >= 99.5%") {
  if (bf16_missing()) return;
  check_agreement(brain_mri_agreement<CpuBf16Model>(13), "bf16", 99.5);
}

// The full test split (1,311 images, 2.5 minutes on this shared 2-core machine): mm-tests -tc='*all 1?311*' --no-skip
TEST_CASE("bf16: brain-MRI model, all 1,311 test images: agreement >= 99.5%, accuracy within 0.5 points" *
          doctest::skip()) {
  if (bf16_missing()) return;
  check_agreement(brain_mri_agreement<CpuBf16Model>(1), "bf16", 99.5);
}
#endif
