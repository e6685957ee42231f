// The small ops of the model against PyTorch fixtures, plus finite-difference checks.
#include <vector>

#include "core/error.h"
#include "ops/activations.h"
#include "ops/cross_entropy.h"
#include "ops/layernorm.h"
#include "ops/layout.h"
#include "ops/linear.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

constexpr float kFwdRtol = 1e-5f, kFwdAtol = 1e-6f, kGradRtol = 1e-4f, kGradAtol = 1e-5f;

// sum(out * dout) in double: the scalar whose gradient the fixtures store.
double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

std::vector<float> copy(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

}  // namespace

TEST_CASE("linear matches PyTorch, forward and backward") {
  auto f = load_fixture("ops/linear.safetensors");
  const int64_t N = f.at("x").dim(0), Cin = f.at("x").dim(1), Cout = f.at("weight").dim(0);
  std::vector<float> x = copy(f.at("x")), w = copy(f.at("weight")), b = copy(f.at("bias"));
  std::vector<float> out(N * Cout), dx(N * Cin, 0.f), dw(Cout * Cin, 0.f), db(Cout, 0.f);
  linear_forward(out.data(), x.data(), w.data(), b.data(), N, Cin, Cout);
  check_close("out", out.data(), f.at("out").f32(), N * Cout, kFwdRtol, kFwdAtol);
  const float* dout = f.at("dout").f32();
  linear_backward(dx.data(), dw.data(), db.data(), dout, x.data(), w.data(), N, Cin, Cout);
  check_close("dx", dx.data(), f.at("dx").f32(), N * Cin, kGradRtol, kGradAtol);
  check_close("dweight", dw.data(), f.at("dweight").f32(), Cout * Cin, kGradRtol, kGradAtol);
  check_close("dbias", db.data(), f.at("dbias").f32(), Cout, kGradRtol, kGradAtol);
  auto loss = [&] {
    linear_forward(out.data(), x.data(), w.data(), b.data(), N, Cin, Cout);
    return dot(out.data(), dout, N * Cout);
  };
  fd_check("linear dx", x.data(), dx.data(), N * Cin, loss);
  fd_check("linear dweight", w.data(), dw.data(), Cout * Cin, loss);
}

TEST_CASE("layernorm matches PyTorch, forward and backward") {
  auto f = load_fixture("ops/layernorm.safetensors");
  const int64_t N = f.at("x").dim(0), C = f.at("x").dim(1);
  std::vector<float> x = copy(f.at("x")), w = copy(f.at("weight")), b = copy(f.at("bias"));
  std::vector<float> out(N * C), mean(N), rstd(N), dx(N * C, 0.f), dw(C, 0.f), db(C, 0.f);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  check_close("out", out.data(), f.at("out").f32(), N * C, 1e-5f, 1e-5f);
  const float* dout = f.at("dout").f32();
  layernorm_backward(dx.data(), dw.data(), db.data(), dout, x.data(), w.data(), mean.data(), rstd.data(), N, C);
  check_close("dx", dx.data(), f.at("dx").f32(), N * C, kGradRtol, kGradAtol);
  check_close("dweight", dw.data(), f.at("dweight").f32(), C, kGradRtol, kGradAtol);
  check_close("dbias", db.data(), f.at("dbias").f32(), C, kGradRtol, kGradAtol);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return dot(out.data(), dout, N * C);
  };
  fd_check("layernorm dx", x.data(), dx.data(), N * C, loss, 1e-2f, 3e-2f, 2e-3f);
  fd_check("layernorm dweight", w.data(), dw.data(), C, loss);
}

TEST_CASE("relu, silu, softplus match PyTorch, forward and backward") {
  struct Act {
    const char* name;
    void (*fwd)(float*, const float*, int64_t);
    void (*bwd)(float*, const float*, const float*, int64_t);
  };
  for (Act act : {Act{"relu", relu_forward, relu_backward}, Act{"silu", silu_forward, silu_backward},
                  Act{"softplus", softplus_forward, softplus_backward}}) {
    CAPTURE(act.name);
    auto f = load_fixture(std::string("ops/") + act.name + ".safetensors");
    const int64_t n = f.at("x").numel();
    std::vector<float> x = copy(f.at("x")), out(n), dx(n, 0.f);
    act.fwd(out.data(), x.data(), n);
    check_close("out", out.data(), f.at("out").f32(), n, 2e-6f, 1e-6f);
    act.bwd(dx.data(), f.at("dout").f32(), x.data(), n);
    check_close("dx", dx.data(), f.at("dx").f32(), n, 2e-6f, 1e-6f);
    if (std::string(act.name) != "relu") {  // relu's kink makes central differences meaningless there
      auto loss = [&] {
        act.fwd(out.data(), x.data(), n);
        return dot(out.data(), f.at("dout").f32(), n);
      };
      fd_check(act.name, x.data(), dx.data(), n, loss, 1e-2f);
    }
  }
}

TEST_CASE("channel shuffle of concat(l, s) matches PyTorch") {
  auto f = load_fixture("ops/channel_shuffle.safetensors");
  const Tensor& l = f.at("l");
  const int64_t c = l.dim(3), P = l.numel() / c;
  std::vector<float> out(P * 2 * c), dl(P * c, 0.f), ds(P * c, 0.f);
  concat_shuffle_forward(out.data(), l.f32(), f.at("s").f32(), P, c);
  check_close("out", out.data(), f.at("out").f32(), P * 2 * c, 0.f, 0.f);
  concat_shuffle_backward(dl.data(), ds.data(), f.at("dout").f32(), P, c);
  check_close("dl", dl.data(), f.at("dl").f32(), P * c, 0.f, 0.f);
  check_close("ds", ds.data(), f.at("ds").f32(), P * c, 0.f, 0.f);
}

TEST_CASE("split halves is the inverse of concatenation") {
  const int64_t P = 5, c = 3;
  std::vector<float> x(P * 2 * c), l(P * c), r(P * c), dx(P * 2 * c, 0.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  split_halves_forward(l.data(), r.data(), x.data(), P, c);
  CHECK(l[c] == x[2 * c]);
  CHECK(r[0] == x[c]);
  split_halves_backward(dx.data(), l.data(), r.data(), P, c);
  check_close("roundtrip", dx.data(), x.data(), P * 2 * c, 0.f, 0.f);
}

TEST_CASE("patch merging (gather, LayerNorm, reduction) matches PyTorch") {
  auto f = load_fixture("ops/patch_merging.safetensors");
  const Tensor& xt = f.at("x");
  const int64_t B = xt.dim(0), H = xt.dim(1), W = xt.dim(2), C = xt.dim(3);
  const int64_t Po = B * (H / 2) * (W / 2);
  std::vector<float> x = copy(xt), nw = copy(f.at("norm_weight")), nb = copy(f.at("norm_bias")),
                     rw = copy(f.at("reduction_weight"));
  std::vector<float> gath(Po * 4 * C), ln(Po * 4 * C), mean(Po), rstd(Po), out(Po * 2 * C);
  auto forward = [&] {
    patch_gather_forward(gath.data(), x.data(), B, H, W, C);
    layernorm_forward(ln.data(), mean.data(), rstd.data(), gath.data(), nw.data(), nb.data(), Po, 4 * C);
    linear_forward(out.data(), ln.data(), rw.data(), nullptr, Po, 4 * C, 2 * C);
  };
  forward();
  check_close("out", out.data(), f.at("out").f32(), Po * 2 * C, 1e-5f, 1e-5f);
  std::vector<float> dln(Po * 4 * C, 0.f), dgath(Po * 4 * C, 0.f), dx(x.size(), 0.f);
  std::vector<float> dnw(4 * C, 0.f), dnb(4 * C, 0.f), drw(rw.size(), 0.f);
  const float* dout = f.at("dout").f32();
  linear_backward(dln.data(), drw.data(), nullptr, dout, ln.data(), rw.data(), Po, 4 * C, 2 * C);
  layernorm_backward(dgath.data(), dnw.data(), dnb.data(), dln.data(), gath.data(), nw.data(), mean.data(),
                     rstd.data(), Po, 4 * C);
  patch_gather_backward(dx.data(), dgath.data(), B, H, W, C);
  check_close("dx", dx.data(), f.at("dx").f32(), dx.size(), kGradRtol, kGradAtol);
  check_close("dnorm_weight", dnw.data(), f.at("dnorm_weight").f32(), 4 * C, kGradRtol, kGradAtol);
  check_close("dnorm_bias", dnb.data(), f.at("dnorm_bias").f32(), 4 * C, kGradRtol, kGradAtol);
  check_close("dreduction_weight", drw.data(), f.at("dreduction_weight").f32(), drw.size(), kGradRtol, kGradAtol);
  auto loss = [&] { forward(); return dot(out.data(), dout, int64_t(out.size())); };
  fd_check("patch merging dx", x.data(), dx.data(), int64_t(x.size()), loss, 1e-2f, 3e-2f, 2e-3f);
}

TEST_CASE("global average pooling matches PyTorch") {
  auto f = load_fixture("ops/avgpool.safetensors");
  const Tensor& x = f.at("x");
  const int64_t B = x.dim(0), C = x.dim(3), P = x.numel() / (B * C);
  std::vector<float> out(B * C), dx(x.numel(), 0.f);
  avgpool_forward(out.data(), x.f32(), B, P, C);
  check_close("out", out.data(), f.at("out").f32(), B * C, 1e-5f, 1e-6f);
  avgpool_backward(dx.data(), f.at("dout").f32(), B, P, C);
  check_close("dx", dx.data(), f.at("dx").f32(), x.numel(), 1e-5f, 1e-7f);
}

TEST_CASE("cross-entropy matches PyTorch, and rejects out-of-range labels") {
  auto f = load_fixture("ops/cross_entropy.safetensors");
  const Tensor& logits = f.at("logits");
  const int64_t B = logits.dim(0), K = logits.dim(1);
  std::vector<float> z = copy(logits), probs(B * K), dz(B * K, 0.f);
  const int64_t* labels = f.at("labels").as<int64_t>();
  const float loss = cross_entropy_forward(probs.data(), z.data(), labels, B, K);
  CHECK(loss == doctest::Approx(f.at("loss").f32()[0]).epsilon(1e-6));
  cross_entropy_backward(dz.data(), probs.data(), labels, B, K);
  check_close("dlogits", dz.data(), f.at("dlogits").f32(), B * K, 1e-5f, 1e-7f);
  fd_check("cross-entropy", z.data(), dz.data(), B * K,
           [&] { return double(cross_entropy_forward(nullptr, z.data(), labels, B, K)); }, 1e-2f);
  const int64_t bad = K;
  CHECK_THROWS_WITH_AS(cross_entropy_forward(nullptr, z.data(), &bad, 1, K),
                       doctest::Contains("out of range"), mm::Error);
}
