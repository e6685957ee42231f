// Tests for ops/batchnorm: PyTorch fixtures, a double reference, finite differences,
// and the conv -> BN fold helper.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <vector>

#include "ops/batchnorm.h"
#include "ops/conv2d.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

std::vector<float> randn_bn(int64_t n, uint32_t seed, float scale = 1.0f, float shift = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng) + shift;
  return v;
}

std::vector<float> uniform_bn(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double dot_bn(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

struct BnCase {
  int64_t N, C;
  std::vector<float> x, weight, bias, rm, rv, dout;
  BnCase(int64_t n, int64_t c, uint32_t seed) : N(n), C(c) {
    x = randn_bn(N * C, seed, 1.5f, 0.7f);  // non-zero mean
    weight = uniform_bn(C, seed + 1, 0.5f, 1.5f);
    bias = randn_bn(C, seed + 2, 0.5f);
    rm = randn_bn(C, seed + 3, 0.5f);
    rv = uniform_bn(C, seed + 4, 0.5f, 2.0f);
    dout = randn_bn(N * C, seed + 5);
  }
};

bool fixture_exists_bn(const std::string& rel) { return std::ifstream(fixture_path(rel)).good(); }

}  // namespace

TEST_CASE("batchnorm train: forward and running stats match a double reference") {
  BnCase k(37, 5, 1);
  std::vector<float> out(k.x.size(), 1e30f), mean(k.C), rstd(k.C), rm = k.rm, rv = k.rv;
  batchnorm_forward_train(out.data(), mean.data(), rstd.data(), rm.data(), rv.data(), k.x.data(),
                          k.weight.data(), k.bias.data(), k.N, k.C);
  for (int64_t c = 0; c < k.C; ++c) {
    double m = 0, v = 0;
    for (int64_t r = 0; r < k.N; ++r) m += k.x[size_t(r * k.C + c)];
    m /= k.N;
    for (int64_t r = 0; r < k.N; ++r) v += std::pow(k.x[size_t(r * k.C + c)] - m, 2);
    const double var_b = v / k.N, var_u = v / (k.N - 1), rs = 1 / std::sqrt(var_b + 1e-5);
    CHECK(mean[size_t(c)] == doctest::Approx(m).epsilon(1e-6));
    CHECK(rstd[size_t(c)] == doctest::Approx(rs).epsilon(1e-6));
    CHECK(rm[size_t(c)] == doctest::Approx(0.9 * k.rm[size_t(c)] + 0.1 * m).epsilon(1e-6));
    CHECK(rv[size_t(c)] == doctest::Approx(0.9 * k.rv[size_t(c)] + 0.1 * var_u).epsilon(1e-6));
    for (int64_t r = 0; r < k.N; ++r) {
      const double want = (k.x[size_t(r * k.C + c)] - m) * rs * k.weight[size_t(c)] + k.bias[size_t(c)];
      CHECK(out[size_t(r * k.C + c)] == doctest::Approx(want).epsilon(1e-5).scale(1.0));
    }
  }
}

TEST_CASE("batchnorm train fd: dx, dweight, dbias (through the batch statistics)") {
  BnCase k(12, 3, 2);
  std::vector<float> out(k.x.size()), mean(k.C), rstd(k.C);
  auto loss = [&]() {
    batchnorm_forward_train(out.data(), mean.data(), rstd.data(), nullptr, nullptr, k.x.data(),
                            k.weight.data(), k.bias.data(), k.N, k.C);
    return dot_bn(out, k.dout);
  };
  loss();
  std::vector<float> dx(k.x.size(), 0.0f), dw(k.C, 0.0f), db(k.C, 0.0f);
  batchnorm_backward_train(dx.data(), dw.data(), db.data(), k.dout.data(), k.x.data(),
                           k.weight.data(), mean.data(), rstd.data(), k.N, k.C);
  fd_check("dx", k.x.data(), dx.data(), int64_t(dx.size()), loss, 1e-2f, 2e-2f, 2e-3f, 24);
  fd_check("dweight", k.weight.data(), dw.data(), k.C, loss, 1e-2f, 1e-2f, 1e-3f);
  fd_check("dbias", k.bias.data(), db.data(), k.C, loss, 1e-2f, 1e-2f, 1e-3f);

  // Accumulation, and nullptr skipping.
  std::vector<float> dx2 = dx;
  batchnorm_backward_train(dx2.data(), nullptr, nullptr, k.dout.data(), k.x.data(), k.weight.data(),
                           mean.data(), rstd.data(), k.N, k.C);
  for (size_t i = 0; i < dx.size(); ++i) CHECK(dx2[i] == doctest::Approx(2 * dx[i]).epsilon(1e-6).scale(1e-6));
}

TEST_CASE("batchnorm eval fd: dx, dweight, dbias") {
  BnCase k(10, 4, 3);
  std::vector<float> out(k.x.size());
  auto loss = [&]() {
    batchnorm_forward_eval(out.data(), k.x.data(), k.rm.data(), k.rv.data(), k.weight.data(),
                           k.bias.data(), k.N, k.C);
    return dot_bn(out, k.dout);
  };
  std::vector<float> dx(k.x.size(), 0.0f), dw(k.C, 0.0f), db(k.C, 0.0f);
  batchnorm_backward_eval(dx.data(), dw.data(), db.data(), k.dout.data(), k.x.data(), k.rm.data(),
                          k.rv.data(), k.weight.data(), k.N, k.C);
  fd_check("dx", k.x.data(), dx.data(), int64_t(dx.size()), loss, 1e-2f, 1e-2f, 1e-3f, 24);
  fd_check("dweight", k.weight.data(), dw.data(), k.C, loss, 1e-2f, 1e-2f, 1e-3f);
  fd_check("dbias", k.bias.data(), db.data(), k.C, loss, 1e-2f, 1e-2f, 1e-3f);
}

TEST_CASE("batchnorm without affine parameters") {
  BnCase k(20, 3, 4);
  std::vector<float> out(k.x.size()), out1(k.x.size()), mean(k.C), rstd(k.C);
  std::vector<float> ones(k.C, 1.0f), zeros(k.C, 0.0f);
  batchnorm_forward_train(out.data(), mean.data(), rstd.data(), nullptr, nullptr, k.x.data(),
                          nullptr, nullptr, k.N, k.C);
  batchnorm_forward_train(out1.data(), mean.data(), rstd.data(), nullptr, nullptr, k.x.data(),
                          ones.data(), zeros.data(), k.N, k.C);
  check_close("out", out.data(), out1.data(), int64_t(out.size()), 1e-6f, 1e-6f);
}

TEST_CASE("batchnorm fixture: batchnorm_train") {
  const std::string rel = "ops/batchnorm_train.safetensors";
  if (!fixture_exists_bn(rel)) {
    FAIL_CHECK("missing fixture " << rel);
    return;
  }
  auto f = load_fixture(rel);
  const Tensor x = f.at("x").to(DType::F32), w = f.at("weight").to(DType::F32),
               b = f.at("bias").to(DType::F32), dout = f.at("dout").to(DType::F32);
  const int64_t C = x.dim(-1), N = x.numel() / C;
  const float eps = f.metadata.count("eps") ? std::stof(f.metadata.at("eps")) : 1e-5f;
  const float momentum = f.metadata.count("momentum") ? std::stof(f.metadata.at("momentum")) : 0.1f;
  Tensor rm = f.at("running_mean").to(DType::F32).clone(), rv = f.at("running_var").to(DType::F32).clone();
  Tensor out = Tensor::empty(x.shape()), mean = Tensor::empty({C}), rstd = Tensor::empty({C});
  batchnorm_forward_train(out.f32(), mean.f32(), rstd.f32(), rm.f32(), rv.f32(), x.f32(), w.f32(),
                          b.f32(), N, C, eps, momentum);
  check_close("out", out, f.at("out"), 1e-4f, 1e-5f);
  check_close("new_running_mean", rm, f.at("new_running_mean"), 1e-4f, 1e-5f);
  check_close("new_running_var", rv, f.at("new_running_var"), 1e-4f, 1e-5f);

  Tensor dx = Tensor::zeros(x.shape()), dw = Tensor::zeros({C}), db = Tensor::zeros({C});
  batchnorm_backward_train(dx.f32(), dw.f32(), db.f32(), dout.f32(), x.f32(), w.f32(), mean.f32(),
                           rstd.f32(), N, C);
  check_close("dx", dx, f.at("dx"), 1e-3f, 1e-4f);
  check_close("dweight", dw, f.at("dweight"), 1e-3f, 1e-4f);
  check_close("dbias", db, f.at("dbias"), 1e-3f, 1e-4f);
}

TEST_CASE("batchnorm fixture: batchnorm_eval") {
  const std::string rel = "ops/batchnorm_eval.safetensors";
  if (!fixture_exists_bn(rel)) {
    FAIL_CHECK("missing fixture " << rel);
    return;
  }
  auto f = load_fixture(rel);
  const Tensor x = f.at("x").to(DType::F32), w = f.at("weight").to(DType::F32),
               b = f.at("bias").to(DType::F32), dout = f.at("dout").to(DType::F32),
               rm = f.at("running_mean").to(DType::F32), rv = f.at("running_var").to(DType::F32);
  const int64_t C = x.dim(-1), N = x.numel() / C;
  const float eps = f.metadata.count("eps") ? std::stof(f.metadata.at("eps")) : 1e-5f;
  Tensor out = Tensor::empty(x.shape());
  batchnorm_forward_eval(out.f32(), x.f32(), rm.f32(), rv.f32(), w.f32(), b.f32(), N, C, eps);
  check_close("out", out, f.at("out"), 1e-4f, 1e-5f);
  Tensor dx = Tensor::zeros(x.shape()), dw = Tensor::zeros({C}), db = Tensor::zeros({C});
  batchnorm_backward_eval(dx.f32(), dw.f32(), db.f32(), dout.f32(), x.f32(), rm.f32(), rv.f32(),
                          w.f32(), N, C, eps);
  check_close("dx", dx, f.at("dx"), 1e-3f, 1e-4f);
  check_close("dweight", dw, f.at("dweight"), 1e-3f, 1e-4f);
  check_close("dbias", db, f.at("dbias"), 1e-3f, 1e-4f);
}

TEST_CASE("batchnorm fold into a preceding conv equals conv then eval BN") {
  const Conv2dShape s{2, 5, 6, 4, 3, 3, 3, 1, 1};
  const int64_t P = s.B * s.out_h() * s.out_w();
  auto x = randn_bn(s.B * s.H * s.W * s.Cin, 50);
  auto w = randn_bn(s.Cout * s.col_k(), 51, 0.3f);
  auto cb = randn_bn(s.Cout, 52);
  BnCase bn(1, s.Cout, 53);
  std::vector<float> y(P * s.Cout), want(y.size()), got(y.size());
  conv2d_forward(y.data(), x.data(), w.data(), cb.data(), s, nullptr);
  batchnorm_forward_eval(want.data(), y.data(), bn.rm.data(), bn.rv.data(), bn.weight.data(),
                         bn.bias.data(), P, s.Cout);
  batchnorm_fold_into_conv(w.data(), cb.data(), s.Cout, s.col_k(), bn.weight.data(), bn.bias.data(),
                           bn.rm.data(), bn.rv.data());
  conv2d_forward(got.data(), x.data(), w.data(), cb.data(), s, nullptr);
  check_close("folded", got.data(), want.data(), int64_t(got.size()), 1e-5f, 1e-5f);
}

// Run with: mm-tests -tc='batchnorm bench*' --no-skip
TEST_CASE("batchnorm bench: B=8, 56x56, C=48 (train forward + backward)" * doctest::skip()) {
  BnCase k(8 * 56 * 56, 48, 60);
  std::vector<float> out(k.x.size()), mean(k.C), rstd(k.C), dx(k.x.size()), dw(k.C), db(k.C);
  auto best = [](auto&& fn) {
    fn();
    double b = 1e30;
    for (int r = 0; r < 20; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      b = std::min(b, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return b;
  };
  const double tf = best([&] {
    batchnorm_forward_train(out.data(), mean.data(), rstd.data(), k.rm.data(), k.rv.data(), k.x.data(),
                            k.weight.data(), k.bias.data(), k.N, k.C);
  });
  const double tb = best([&] {
    batchnorm_backward_train(dx.data(), dw.data(), db.data(), k.dout.data(), k.x.data(), k.weight.data(),
                             mean.data(), rstd.data(), k.N, k.C);
  });
  const double te = best([&] {
    batchnorm_forward_eval(out.data(), k.x.data(), k.rm.data(), k.rv.data(), k.weight.data(), k.bias.data(), k.N, k.C);
  });
  std::printf("batchnorm (N=%ld, C=%ld): train forward %.3f ms, backward %.3f ms, eval forward %.3f ms\n",
              long(k.N), long(k.C), tf * 1e3, tb * 1e3, te * 1e3);
}
