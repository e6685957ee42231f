// Tests for ops/conv2d and ops/depthwise_conv: PyTorch fixtures, a naive double
// reference, finite differences, and (skipped by default) a timing of stage 1's 3x3 conv.
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <vector>

#include "ops/conv2d.h"
#include "ops/depthwise_conv.h"
#include "ops/gemm_bf16.h"
#include "ops/vector_math.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

std::vector<float> randn(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

bool fixture_exists(const std::string& rel) { return std::ifstream(fixture_path(rel)).good(); }

// Naive conv in double, with PyTorch's definition; returns out (B,OH,OW,Cout).
std::vector<double> conv_ref(const std::vector<float>& x, const std::vector<float>& w,
                             const std::vector<float>& bias, const Conv2dShape& s) {
  const int64_t OH = s.out_h(), OW = s.out_w();
  std::vector<double> out(s.B * OH * OW * s.Cout);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t co = 0; co < s.Cout; ++co) {
          double acc = bias.empty() ? 0.0 : bias[size_t(co)];
          for (int64_t ci = 0; ci < s.Cin; ++ci)
            for (int64_t kh = 0; kh < s.KH; ++kh)
              for (int64_t kw = 0; kw < s.KW; ++kw) {
                const int64_t ih = oh * s.stride - s.pad + kh, iw = ow * s.stride - s.pad + kw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                acc += double(w[size_t(((co * s.Cin + ci) * s.KH + kh) * s.KW + kw)]) *
                       x[size_t(((b * s.H + ih) * s.W + iw) * s.Cin + ci)];
              }
          out[size_t(((b * OH + oh) * OW + ow) * s.Cout + co)] = acc;
        }
  return out;
}

// Naive backward in double: dx, dweight, dbias for loss sum(out*dout).
void conv_ref_backward(std::vector<double>& dx, std::vector<double>& dw, std::vector<double>& db,
                       const std::vector<float>& dout, const std::vector<float>& x,
                       const std::vector<float>& w, const Conv2dShape& s) {
  const int64_t OH = s.out_h(), OW = s.out_w();
  dx.assign(x.size(), 0.0);
  dw.assign(w.size(), 0.0);
  db.assign(size_t(s.Cout), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t co = 0; co < s.Cout; ++co) {
          const double g = dout[size_t(((b * OH + oh) * OW + ow) * s.Cout + co)];
          db[size_t(co)] += g;
          for (int64_t ci = 0; ci < s.Cin; ++ci)
            for (int64_t kh = 0; kh < s.KH; ++kh)
              for (int64_t kw = 0; kw < s.KW; ++kw) {
                const int64_t ih = oh * s.stride - s.pad + kh, iw = ow * s.stride - s.pad + kw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                const size_t xi = size_t(((b * s.H + ih) * s.W + iw) * s.Cin + ci);
                const size_t wi = size_t(((co * s.Cin + ci) * s.KH + kh) * s.KW + kw);
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
        }
}

void check_close_d(const std::string& what, const std::vector<float>& got,
                   const std::vector<double>& want, float rtol, float atol) {
  std::vector<float> wf(want.begin(), want.end());
  REQUIRE(got.size() == want.size());
  check_close(what, got.data(), wf.data(), int64_t(got.size()), rtol, atol);
}

// Compares our conv against the naive reference, forward and backward, and checks
// that backward accumulates into pre-filled gradients.
void check_conv_against_reference(const Conv2dShape& s, uint32_t seed) {
  INFO("B " << s.B << " H " << s.H << " W " << s.W << " Cin " << s.Cin << " Cout " << s.Cout
            << " k " << s.KH << "x" << s.KW << " stride " << s.stride << " pad " << s.pad);
  const int64_t P = s.B * s.out_h() * s.out_w();
  auto x = randn(s.B * s.H * s.W * s.Cin, seed);
  auto w = randn(s.Cout * s.col_k(), seed + 1, 0.2f);
  auto bias = randn(s.Cout, seed + 2);
  auto dout = randn(P * s.Cout, seed + 3);
  std::vector<float> ws(conv2d_workspace_floats(s));

  std::vector<float> out(size_t(P * s.Cout), 1e30f);  // forward must overwrite
  conv2d_forward(out.data(), x.data(), w.data(), bias.data(), s, ws.data());
  check_close_d("out", out, conv_ref(x, w, bias, s), 1e-4f, 1e-4f);
  conv2d_forward(out.data(), x.data(), w.data(), nullptr, s, nullptr);
  check_close_d("out (no bias, own workspace)", out, conv_ref(x, w, {}, s), 1e-4f, 1e-4f);

  std::vector<double> rdx, rdw, rdb;
  conv_ref_backward(rdx, rdw, rdb, dout, x, w, s);
  // Pre-fill with 1: backward must add onto it.
  std::vector<float> dx(x.size(), 1.0f), dw(w.size(), 1.0f), db(bias.size(), 1.0f);
  conv2d_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), s, ws.data());
  for (auto* v : {&rdx, &rdw, &rdb})
    for (auto& e : *v) e += 1.0;
  check_close_d("dx", dx, rdx, 1e-4f, 1e-4f);
  check_close_d("dweight", dw, rdw, 1e-4f, 1e-3f);
  check_close_d("dbias", db, rdb, 1e-4f, 1e-3f);

  // Null gradients are skipped; each gradient alone matches.
  std::vector<float> dx2(x.size(), 1.0f);
  conv2d_backward(dx2.data(), nullptr, nullptr, dout.data(), nullptr, w.data(), s, nullptr);
  check_close("dx alone", dx2.data(), dx.data(), int64_t(dx.size()), 1e-6f, 1e-6f);
  std::vector<float> dw2(w.size(), 1.0f);
  conv2d_backward(nullptr, dw2.data(), nullptr, dout.data(), x.data(), nullptr, s, ws.data());
  check_close("dweight alone", dw2.data(), dw.data(), int64_t(dw.size()), 1e-6f, 1e-6f);
}

// Finite-difference check of dx, dweight, dbias on a tiny case.
void fd_check_conv(const Conv2dShape& s, uint32_t seed) {
  const int64_t P = s.B * s.out_h() * s.out_w();
  auto x = randn(s.B * s.H * s.W * s.Cin, seed);
  auto w = randn(s.Cout * s.col_k(), seed + 1, 0.5f);
  auto bias = randn(s.Cout, seed + 2);
  auto dout = randn(P * s.Cout, seed + 3);
  std::vector<float> out(P * s.Cout);
  auto loss = [&]() {
    conv2d_forward(out.data(), x.data(), w.data(), bias.data(), s, nullptr);
    return dot(out, dout);
  };
  std::vector<float> dx(x.size(), 0.0f), dw(w.size(), 0.0f), db(bias.size(), 0.0f);
  conv2d_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), s, nullptr);
  fd_check("dx", x.data(), dx.data(), int64_t(x.size()), loss, 1e-2f, 1e-2f, 1e-3f, 24);
  fd_check("dweight", w.data(), dw.data(), int64_t(w.size()), loss, 1e-2f, 1e-2f, 1e-3f, 24);
  fd_check("dbias", bias.data(), db.data(), int64_t(bias.size()), loss, 1e-2f, 1e-2f, 1e-3f);
}

void run_conv_fixture(const std::string& name) {
  const std::string rel = "ops/" + name + ".safetensors";
  if (!fixture_exists(rel)) {
    FAIL_CHECK("missing fixture " << rel << " (run test/reference/make_fixtures.py)");
    return;
  }
  auto f = load_fixture(rel);
  const Tensor x = f.at("x").to(DType::F32), w = f.at("weight").to(DType::F32),
               bias = f.at("bias").to(DType::F32), dout = f.at("dout").to(DType::F32);
  Conv2dShape s;
  s.B = x.dim(0); s.H = x.dim(1); s.W = x.dim(2); s.Cin = x.dim(3);
  s.Cout = w.dim(0); s.KH = w.dim(2); s.KW = w.dim(3);
  REQUIRE(w.dim(1) == s.Cin);
  s.stride = f.metadata.count("stride") ? std::stoll(f.metadata.at("stride")) : 1;
  s.pad = f.metadata.count("pad") ? std::stoll(f.metadata.at("pad")) : 0;
  INFO(name << ": x " << shape_str(x.shape()) << " weight " << shape_str(w.shape()) << " stride "
            << s.stride << " pad " << s.pad);
  std::vector<float> ws(conv2d_workspace_floats(s));

  Tensor out = Tensor::empty({s.B, s.out_h(), s.out_w(), s.Cout});
  conv2d_forward(out.f32(), x.f32(), w.f32(), bias.f32(), s, ws.data());
  check_close("out", out, f.at("out"), 1e-4f, 1e-5f);

  Tensor dx = Tensor::zeros(x.shape()), dw = Tensor::zeros(w.shape()), db = Tensor::zeros(bias.shape());
  conv2d_backward(dx.f32(), dw.f32(), db.f32(), dout.f32(), x.f32(), w.f32(), s, ws.data());
  check_close("dx", dx, f.at("dx"), 1e-3f, 1e-4f);
  check_close("dweight", dw, f.at("dweight"), 1e-3f, 1e-4f);
  check_close("dbias", db, f.at("dbias"), 1e-3f, 1e-4f);
}

// ---- depthwise reference ----

std::vector<double> dw_ref(const std::vector<float>& x, const std::vector<float>& w,
                           const std::vector<float>& bias, int64_t B, int64_t H, int64_t W,
                           int64_t C) {
  std::vector<double> out(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t ww = 0; ww < W; ++ww)
        for (int64_t c = 0; c < C; ++c) {
          double acc = bias[size_t(c)];
          for (int64_t kh = 0; kh < 3; ++kh)
            for (int64_t kw = 0; kw < 3; ++kw) {
              const int64_t ih = h + kh - 1, iw = ww + kw - 1;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              acc += double(w[size_t(c * 9 + kh * 3 + kw)]) * x[size_t(((b * H + ih) * W + iw) * C + c)];
            }
          out[size_t(((b * H + h) * W + ww) * C + c)] = acc;
        }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- conv2d

TEST_CASE("conv2d fd: 3x3 pad 1") { fd_check_conv({2, 5, 4, 3, 4, 3, 3, 1, 1}, 11); }
TEST_CASE("conv2d fd: 4x4 stride 4 (patch embedding)") { fd_check_conv({2, 8, 12, 3, 5, 4, 4, 4, 0}, 21); }
TEST_CASE("conv2d fd: 1x1") { fd_check_conv({2, 3, 5, 6, 4, 1, 1, 1, 0}, 31); }
TEST_CASE("conv2d fd: 3x3 stride 2 pad 1, odd size") { fd_check_conv({1, 7, 6, 2, 3, 3, 3, 2, 1}, 41); }

TEST_CASE("conv2d matches a naive reference") {
  check_conv_against_reference({2, 5, 4, 3, 4, 3, 3, 1, 1}, 101);
  check_conv_against_reference({2, 8, 12, 3, 5, 4, 4, 4, 0}, 102);
  check_conv_against_reference({2, 3, 5, 6, 4, 1, 1, 1, 0}, 103);
  check_conv_against_reference({1, 7, 6, 2, 3, 3, 3, 2, 1}, 104);
  check_conv_against_reference({1, 6, 5, 4, 3, 1, 1, 2, 0}, 105);  // strided 1x1: im2col path
  check_conv_against_reference({1, 4, 4, 3, 2, 5, 3, 1, 2}, 106);  // non-square kernel, pad > 1
  check_conv_against_reference({2, 5, 6, 1, 3, 3, 3, 1, 1}, 108);  // one input channel
  check_conv_against_reference({1, 9, 7, 2, 3, 2, 2, 3, 0}, 109);  // stride > kernel: skipped pixels
  // Several im2col chunks, the last one partial.
  Conv2dShape big{2, 40, 40, 48, 8, 3, 3, 1, 1};
  REQUIRE(conv2d_workspace_floats(big) < big.B * big.out_h() * big.out_w() * big.col_k());
  check_conv_against_reference(big, 107);
}

TEST_CASE("conv2d workspace") {
  CHECK(conv2d_workspace_floats({8, 56, 56, 48, 48, 1, 1, 1, 0}) == 0);
  const Conv2dShape s{8, 56, 56, 48, 48, 3, 3, 2, 1};  // stride 2: im2col only, never Winograd
  const int64_t ws = conv2d_workspace_floats(s);
  CHECK(ws > 0);
  // Bounded im2col chunk of whole output rows plus two weight-sized buffers, not B*H*W*K.
  const int64_t chunk = ws - 2 * s.Cout * s.col_k();
  CHECK(chunk % (s.out_w() * s.col_k()) == 0);
  CHECK(chunk <= int64_t(1) << 20);
  // Stride 1: the buffer also holds conv2d_forward_eval's Winograd scratch where it takes
  // that path, still bounded whatever the batch.
  const Conv2dShape s1{8, 56, 56, 48, 48, 3, 3, 1, 1}, s1_big_batch{64, 56, 56, 48, 48, 3, 3, 1, 1};
  if (const int m = winograd_tile_for(s1)) CHECK(conv2d_workspace_floats(s1) >= winograd_workspace_floats(s1, m));
  CHECK(conv2d_workspace_floats(s1_big_batch) == conv2d_workspace_floats(s1));
}

TEST_CASE("conv2d fixture: conv2d_patch4") { run_conv_fixture("conv2d_patch4"); }
TEST_CASE("conv2d fixture: conv2d_3x3") { run_conv_fixture("conv2d_3x3"); }
TEST_CASE("conv2d fixture: conv2d_1x1") { run_conv_fixture("conv2d_1x1"); }

// ---------------------------------------------------------------- depthwise

TEST_CASE("dwconv3x3 fd and naive reference") {
  for (auto [B, H, W, C] : std::vector<std::array<int64_t, 4>>{{2, 4, 5, 3}, {1, 1, 3, 17}, {1, 3, 1, 2}}) {
    INFO("B " << B << " H " << H << " W " << W << " C " << C);
    auto x = randn(B * H * W * C, 7);
    auto w = randn(C * 9, 8, 0.5f);
    auto bias = randn(C, 9);
    auto dout = randn(B * H * W * C, 10);
    std::vector<float> out(x.size(), 1e30f);
    dwconv3x3_forward(out.data(), x.data(), w.data(), bias.data(), B, H, W, C);
    check_close_d("out", out, dw_ref(x, w, bias, B, H, W, C), 1e-5f, 1e-5f);

    auto loss = [&]() {
      dwconv3x3_forward(out.data(), x.data(), w.data(), bias.data(), B, H, W, C);
      return dot(out, dout);
    };
    std::vector<float> dx(x.size(), 0.0f), dw(w.size(), 0.0f), db(bias.size(), 0.0f);
    dwconv3x3_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), B, H, W, C);
    fd_check("dx", x.data(), dx.data(), int64_t(x.size()), loss, 1e-2f, 1e-2f, 1e-3f, 24);
    fd_check("dweight", w.data(), dw.data(), int64_t(w.size()), loss, 1e-2f, 1e-2f, 1e-3f, 24);
    fd_check("dbias", bias.data(), db.data(), int64_t(bias.size()), loss, 1e-2f, 1e-2f, 1e-3f);

    // Accumulation, and skipping with nullptr.
    std::vector<float> dx2 = dx;
    dwconv3x3_backward(dx2.data(), nullptr, nullptr, dout.data(), nullptr, w.data(), B, H, W, C);
    for (size_t i = 0; i < dx.size(); ++i) dx[i] *= 2.0f;
    check_close("dx accumulates", dx2.data(), dx.data(), int64_t(dx.size()), 1e-6f, 1e-6f);
  }
}

TEST_CASE("dwconv3x3_silu_forward equals dwconv3x3_forward then SiLU, bit for bit, and hands over every finished row") {
  // C: one full 32-channel chunk and a tail (40), tails only (17), several chunks (96); edges.
  for (auto [B, H, W, C] : std::vector<std::array<int64_t, 4>>{{2, 4, 5, 40}, {1, 1, 3, 17}, {1, 6, 7, 96}, {1, 3, 1, 2}}) {
    INFO("B " << B << " H " << H << " W " << W << " C " << C);
    const auto x = randn(B * H * W * C, 17), w = randn(C * 9, 18, 0.5f), bias = randn(C, 19);
    std::vector<float> conv(x.size()), want(x.size()), got(x.size(), 1e30f);
    dwconv3x3_forward(conv.data(), x.data(), w.data(), bias.data(), B, H, W, C);
    for (size_t i = 0; i < conv.size(); ++i) want[i] = silu_vectorisable(conv[i]);
    std::vector<uint16_t> got_bf16(x.size(), 0xFFFF), want_bf16(x.size());
    dwconv3x3_silu_forward(got.data(), x.data(), w.data(), bias.data(), B, H, W, C,
                           [&](int64_t p, const float* row) { to_bf16(got_bf16.data() + p * C, row, C); });
    check_close("u", got.data(), want.data(), int64_t(want.size()), 0.f, 0.f);
    to_bf16(want_bf16.data(), want.data(), int64_t(want.size()));
    CHECK(got_bf16 == want_bf16);
    // silu_vectorisable is SiLU to ~2e-7: against x·sigmoid(x) in double.
    for (size_t i = 0; i < conv.size(); ++i) {
      const double z = conv[i], ref = z / (1.0 + std::exp(-z));
      REQUIRE(std::fabs(got[i] - ref) <= 1e-6 * std::fabs(ref) + 1e-30);
    }
    // Without a bias and without the bf16 copy.
    dwconv3x3_forward(conv.data(), x.data(), w.data(), nullptr, B, H, W, C);
    dwconv3x3_silu_forward(got.data(), x.data(), w.data(), nullptr, B, H, W, C);
    for (size_t i = 0; i < conv.size(); ++i) REQUIRE(got[i] == silu_vectorisable(conv[i]));
  }
}

TEST_CASE("dwconv3x3 fixture") {
  const std::string rel = "ops/dwconv3x3.safetensors";
  if (!fixture_exists(rel)) {
    FAIL_CHECK("missing fixture " << rel << " (run test/reference/make_fixtures.py)");
    return;
  }
  auto f = load_fixture(rel);
  const Tensor x = f.at("x").to(DType::F32), w = f.at("weight").to(DType::F32),
               bias = f.at("bias").to(DType::F32), dout = f.at("dout").to(DType::F32);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  REQUIRE(w.numel() == C * 9);
  Tensor out = Tensor::empty(x.shape());
  dwconv3x3_forward(out.f32(), x.f32(), w.f32(), bias.f32(), B, H, W, C);
  check_close("out", out, f.at("out"), 1e-4f, 1e-5f);
  Tensor dx = Tensor::zeros(x.shape()), dw = Tensor::zeros(w.shape()), db = Tensor::zeros(bias.shape());
  dwconv3x3_backward(dx.f32(), dw.f32(), db.f32(), dout.f32(), x.f32(), w.f32(), B, H, W, C);
  check_close("dx", dx, f.at("dx"), 1e-3f, 1e-4f);
  check_close("dweight", dw, f.at("dweight"), 1e-3f, 1e-4f);
  check_close("dbias", db, f.at("dbias"), 1e-3f, 1e-4f);
}

// ---------------------------------------------------------------- timing
// Run with: mm-tests -tc='conv2d bench*' --no-skip
// Times every conv shape of MedMamba-T at batch 8, 224x224 (best of 10 after a
// warm-up); the "per batch" line weights each shape by its count in the model.

namespace {

template <class Fn>
double best_seconds(Fn&& fn, int reps = 10) {
  fn();  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

TEST_CASE("conv2d bench: MedMamba-T conv shapes at B=8, 224x224" * doctest::skip()) {
  struct Case { const char* name; Conv2dShape s; int count; };
  const int64_t B = 8;
  std::vector<Case> cases = {{"patch 4x4/4 3->96 @224", {B, 224, 224, 3, 96, 4, 4, 4, 0}, 1}};
  const int depths[4] = {2, 2, 4, 2};
  for (int i = 0; i < 4; ++i) {
    const int64_t hw = 56 >> i, c = 48 << i;
    cases.push_back({"3x3", {B, hw, hw, c, c, 3, 3, 1, 1}, 2 * depths[i]});
    cases.push_back({"1x1", {B, hw, hw, c, c, 1, 1, 1, 0}, depths[i]});
  }
  double total_f = 0, total_b = 0;
  std::printf("%-24s %4s %5s %8s %8s %9s %8s %9s\n", "conv (B=8)", "HW", "C", "GFLOP", "fwd ms",
              "fwd GF/s", "bwd ms", "bwd GF/s");
  for (const Case& k : cases) {
    const Conv2dShape& s = k.s;
    const int64_t P = s.B * s.out_h() * s.out_w();
    auto x = randn(s.B * s.H * s.W * s.Cin, 1), w = randn(s.Cout * s.col_k(), 2, 0.05f);
    auto bias = randn(s.Cout, 3), dout = randn(P * s.Cout, 4);
    std::vector<float> out(P * s.Cout), dx(x.size()), dw(w.size()), db(bias.size());
    std::vector<float> ws(conv2d_workspace_floats(s));
    const double gf = double(s.flops()) * 1e-9;
    const double tf = best_seconds([&] { conv2d_forward(out.data(), x.data(), w.data(), bias.data(), s, ws.data()); });
    const double tb = best_seconds([&] {
      conv2d_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), s, ws.data());
    });
    std::printf("%-24s %4ld %5ld %8.3f %8.2f %9.1f %8.2f %9.1f   x%d\n", k.name, long(s.H), long(s.Cout),
                gf, tf * 1e3, gf / tf, tb * 1e3, 2 * gf / tb, k.count);
    total_f += k.count * tf;
    total_b += k.count * tb;
  }
  std::printf("all convs per batch of 8: forward %.1f ms, backward %.1f ms\n", total_f * 1e3, total_b * 1e3);

  std::vector<float> xin = randn(8 * 56 * 56 * 96, 5), dwo(xin.size()), dxi(xin.size());
  auto dww = randn(96 * 9, 6), dwb = randn(96, 7), dwdw = randn(96 * 9, 8), dwdb = randn(96, 9);
  const double td = best_seconds([&] { dwconv3x3_forward(dwo.data(), xin.data(), dww.data(), dwb.data(), 8, 56, 56, 96); });
  const double tdb = best_seconds([&] {
    dwconv3x3_backward(dxi.data(), dwdw.data(), dwdb.data(), dwo.data(), xin.data(), dww.data(), 8, 56, 56, 96);
  });
  std::printf("dwconv3x3 B=8 56x56 C=96: forward %.2f ms, backward %.2f ms\n", td * 1e3, tdb * 1e3);
}
