// SS2D selective scan: against the PyTorch/float64 fixtures, against an independent double
// reference written here from the spec, and by finite differences on every input.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <omp.h>

#include "ops/gemm.h"
#include "ops/selective_scan.h"
#include "ops/selective_scan_detail.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

// Inputs, parameters and gradient buffers of one scan problem.
struct ScanCase {
  SS2DScanShape s;
  std::vector<float> u, xpw, dtw, dtb, A_logs, Ds, dout;

  int64_t act() const { return s.B * s.H * s.W * s.D; }
  SS2DScanWeights weights() const {
    return {xpw.data(), dtw.data(), dtb.data(), A_logs.data(), Ds.data()};
  }
};

// Distributions of make_fixtures.py (Δ roughly 0.05 .. 1.5, A_logs around log(n+1) - 1).
ScanCase random_case(SS2DScanShape s, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(-3.f, 1.f);
  ScanCase c;
  c.s = s;
  const int64_t D = s.D, N = s.N, R = s.R;
  for (int64_t i = 0; i < c.act(); ++i) { float x = 1.5f * nd(rng); c.u.push_back(x / (1.f + std::exp(-x))); }
  for (int64_t i = 0; i < 4 * (R + 2 * N) * D; ++i) c.xpw.push_back(nd(rng) / std::sqrt(float(D)));
  for (int64_t i = 0; i < 4 * D * R; ++i) c.dtw.push_back(0.5f * nd(rng));
  for (int64_t i = 0; i < 4 * D; ++i) c.dtb.push_back(ud(rng));
  for (int64_t i = 0; i < 4 * D * N; ++i) c.A_logs.push_back(std::log(float(i % N + 1)) + 0.5f * nd(rng) - 1.f);
  for (int64_t i = 0; i < 4 * D; ++i) c.Ds.push_back(1.f + 0.7f * nd(rng));
  for (int64_t i = 0; i < c.act(); ++i) c.dout.push_back(nd(rng));
  return c;
}

// Straight from the spec, in double: sum over directions and positions, one channel at a time.
std::vector<double> reference_forward(const ScanCase& c) {
  const SS2DScanShape& s = c.s;
  const int64_t B = s.B, H = s.H, W = s.W, D = s.D, N = s.N, R = s.R, L = H * W, RN = R + 2 * N;
  std::vector<double> out(size_t(c.act()), 0.0), dbl(RN), h(D * N);
  auto position = [&](int64_t k, int64_t l) {  // sequence index -> spatial index h*W + w
    if (k >= 2) l = L - 1 - l;
    return k % 2 == 0 ? l : (l % H) * W + l / H;
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < 4; ++k) {
      std::fill(h.begin(), h.end(), 0.0);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t p = position(k, l);
        const float* ul = c.u.data() + (b * L + p) * D;
        for (int64_t r = 0; r < RN; ++r) {
          dbl[r] = 0;
          for (int64_t d = 0; d < D; ++d) dbl[r] += double(c.xpw[(k * RN + r) * D + d]) * ul[d];
        }
        for (int64_t d = 0; d < D; ++d) {
          double x = c.dtb[k * D + d];
          for (int64_t r = 0; r < R; ++r) x += double(c.dtw[(k * D + d) * R + r]) * dbl[r];
          const double dl = x > 20 ? x : std::log1p(std::exp(x));
          double y = double(c.Ds[k * D + d]) * ul[d];
          for (int64_t n = 0; n < N; ++n) {
            const double A = -std::exp(double(c.A_logs[(k * D + d) * N + n]));
            double& hn = h[d * N + n];
            hn = std::exp(dl * A) * hn + dl * dbl[R + n] * ul[d];
            y += dbl[R + N + n] * hn;
          }
          out[(b * L + p) * D + d] += y;
        }
      }
    }
  return out;
}

struct Grads {
  std::vector<float> du, dxpw, ddtw, ddtb, dA_logs, dDs;
  explicit Grads(const ScanCase& c)
      : du(c.u.size()), dxpw(c.xpw.size()), ddtw(c.dtw.size()), ddtb(c.dtb.size()),
        dA_logs(c.A_logs.size()), dDs(c.Ds.size()) {}
  SS2DScanGrads ptrs() { return {dxpw.data(), ddtw.data(), ddtb.data(), dA_logs.data(), dDs.data()}; }
};

Grads backward(const ScanCase& c) {
  Grads g(c);
  ss2d_scan_backward(c.s, c.u.data(), c.weights(), c.dout.data(), g.du.data(), g.ptrs());
  return g;
}

// Our forward vs the double reference, then every gradient vs central differences of the
// double reference's sum(out * dout), and a few by differences of our own float forward
// (skipped where float noise swamps eps = 1e-2 steps). probes <= 0 checks every element.
void check_against_reference(ScanCase c, int probes, float fwd_rtol = 1e-5f, bool own_fd = true) {
  const SS2DScanShape& s = c.s;
  CAPTURE(s.B); CAPTURE(s.H); CAPTURE(s.W); CAPTURE(s.D); CAPTURE(s.N); CAPTURE(s.R);
  std::vector<float> out(size_t(c.act()));
  ss2d_scan_forward(s, c.u.data(), c.weights(), out.data());
  const std::vector<double> ref = reference_forward(c);
  std::vector<float> ref_f(ref.begin(), ref.end());
  check_close("out vs double reference", out.data(), ref_f.data(), c.act(), fwd_rtol, 1e-5f);

  Grads g = backward(c);

  // With the states saved by forward, backward skips a pass and must give the same gradients.
  {
    std::vector<float> states(size_t(ss2d_scan_states_floats(s)), -1.f), out2(out.size());
    ss2d_scan_forward(s, c.u.data(), c.weights(), out2.data(), nullptr, states.data());
    check_close("out when saving states", out2.data(), out.data(), c.act(), 0.f, 0.f);
    Grads g2(c);
    ss2d_scan_backward(s, c.u.data(), c.weights(), c.dout.data(), g2.du.data(), g2.ptrs(), nullptr, states.data());
    const std::pair<const std::vector<float>*, const std::vector<float>*> pairs[] = {
        {&g2.du, &g.du}, {&g2.dxpw, &g.dxpw}, {&g2.ddtw, &g.ddtw},
        {&g2.ddtb, &g.ddtb}, {&g2.dA_logs, &g.dA_logs}, {&g2.dDs, &g.dDs}};
    for (const auto& [got, want] : pairs)
      check_close("grad with saved states", got->data(), want->data(), int64_t(want->size()), 1e-6f, 1e-7f);
  }

  auto loss = [&] {
    const std::vector<double> o = reference_forward(c);
    double sum = 0;
    for (size_t i = 0; i < o.size(); ++i) sum += o[i] * c.dout[i];
    return sum;
  };
  auto fd = [&](const char* what, std::vector<float>& x, const std::vector<float>& dx) {
    const int p = probes > 0 ? probes : int(x.size());
    fd_check(what, x.data(), dx.data(), int64_t(x.size()), loss, 1e-3f, 2e-3f, 2e-4f, p);
  };
  fd("du", c.u, g.du);
  fd("dx_proj_weight", c.xpw, g.dxpw);
  fd("ddt_projs_weight", c.dtw, g.ddtw);
  fd("ddt_projs_bias", c.dtb, g.ddtb);
  fd("dA_logs", c.A_logs, g.dA_logs);
  fd("dDs", c.Ds, g.dDs);

  if (!own_fd) return;
  // The same through our own float forward (sum accumulated in double), coarser steps.
  auto own_loss = [&] {
    ss2d_scan_forward(s, c.u.data(), c.weights(), out.data());
    double sum = 0;
    for (int64_t i = 0; i < c.act(); ++i) sum += double(out[i]) * c.dout[i];
    return sum;
  };
  fd_check("du (own forward)", c.u.data(), g.du.data(), c.act(), own_loss);
  fd_check("dA_logs (own forward)", c.A_logs.data(), g.dA_logs.data(), int64_t(c.A_logs.size()), own_loss);
  fd_check("ddt_projs_weight (own forward)", c.dtw.data(), g.ddtw.data(), int64_t(c.dtw.size()), own_loss);
}

}  // namespace

TEST_CASE("ss2d_scan matches the float64 reference fixtures, forward and backward") {
  for (std::string name : {"ops/ss2d_scan.safetensors", "ops/ss2d_scan_n4.safetensors"}) {
    CAPTURE(name);
    auto f = load_fixture(name);
    const Tensor& ut = f.at("u");
    SS2DScanShape s{ut.dim(0), ut.dim(1), ut.dim(2), ut.dim(3), f.at("A_logs").dim(1), 0};
    s.R = f.at("x_proj_weight").dim(1) - 2 * s.N;
    REQUIRE(f.at("dt_projs_weight").dim(2) == s.R);
    const SS2DScanWeights w{f.at("x_proj_weight").f32(), f.at("dt_projs_weight").f32(),
                            f.at("dt_projs_bias").f32(), f.at("A_logs").f32(), f.at("Ds").f32()};
    const int64_t n = ut.numel();

    std::vector<float> out(size_t(n), -1.f);
    ss2d_scan_forward(s, ut.f32(), w, out.data());
    check_close("out", out.data(), f.at("out").f32(), n, 1e-4f, 1e-5f);

    std::vector<float> du(size_t(n), 0.f), dxpw(size_t(f.at("x_proj_weight").numel()), 0.f),
        ddtw(size_t(f.at("dt_projs_weight").numel()), 0.f), ddtb(size_t(f.at("dt_projs_bias").numel()), 0.f),
        dA(size_t(f.at("A_logs").numel()), 0.f), dD(size_t(f.at("Ds").numel()), 0.f);
    ss2d_scan_backward(s, ut.f32(), w, f.at("dout").f32(), du.data(),
                       {dxpw.data(), ddtw.data(), ddtb.data(), dA.data(), dD.data()});
    check_close("du", du.data(), f.at("du").f32(), n, 1e-3f, 1e-5f);
    check_close("dx_proj_weight", dxpw.data(), f.at("dx_proj_weight").f32(), int64_t(dxpw.size()), 1e-3f, 1e-5f);
    check_close("ddt_projs_weight", ddtw.data(), f.at("ddt_projs_weight").f32(), int64_t(ddtw.size()), 1e-3f, 1e-5f);
    check_close("ddt_projs_bias", ddtb.data(), f.at("ddt_projs_bias").f32(), int64_t(ddtb.size()), 1e-3f, 1e-5f);
    check_close("dA_logs", dA.data(), f.at("dA_logs").f32(), int64_t(dA.size()), 1e-3f, 1e-5f);
    check_close("dDs", dD.data(), f.at("dDs").f32(), int64_t(dD.size()), 1e-3f, 1e-5f);
  }
}

TEST_CASE("ss2d_scan forward and gradients match a double reference and finite differences") {
  SUBCASE("tiny, every element checked") {
    check_against_reference(random_case({2, 3, 5, 20, 4, 2}, 1), 0);
  }
  SUBCASE("batch 1: several channel blocks and groups, partial block, two backward segments") {
    check_against_reference(random_case({1, 5, 9, 70, 16, 3}, 2), 24);
  }
  SUBCASE("batch 3, H > W, three backward segments") {
    check_against_reference(random_case({3, 10, 7, 40, 16, 3}, 3), 16);
  }
  SUBCASE("batch 8: two channel blocks share one dB/dC buffer") {
    check_against_reference(random_case({8, 3, 4, 40, 4, 2}, 6), 12);
  }
  SUBCASE("extreme values: softplus above its threshold and far below, decays that underflow") {
    ScanCase c = random_case({2, 4, 5, 24, 16, 2}, 7);
    for (size_t i = 0; i < c.dtb.size(); ++i) c.dtb[i] = -30.f + 60.f * float(i) / float(c.dtb.size() - 1);
    for (float& a : c.A_logs) a += 3.f;  // A down to about -700: exp(Δ·A) underflows for large Δ
    // Δ up to 30 makes float rounding of Δ·A visible (a naive float loop is off by 2e-5 too).
    check_against_reference(c, 16, 1e-4f, false);
  }
}

TEST_CASE("ss2d_scan: the AVX-512 forward kernel equals the portable one (exact exp) and stays within 1e-5 (coarse)") {
  if (!scan_detail::avx512_forward_available()) {
    MESSAGE("no AVX512F/DQ on this CPU: only the portable kernel runs here");
    return;
  }
  // Channel counts with partial vectors and blocks, N not a multiple of 4 (the state groups),
  // batch > 1, non-square grids, several runs of positions; one case with decays near 2^-125.
  for (SS2DScanShape s : {SS2DScanShape{2, 9, 7, 40, 16, 3}, SS2DScanShape{1, 5, 11, 70, 5, 2},
                          SS2DScanShape{3, 6, 6, 24, 4, 2}, SS2DScanShape{1, 12, 12, 96, 16, 6}}) {
    CAPTURE(s.D); CAPTURE(s.N); CAPTURE(s.H); CAPTURE(s.W);
    ScanCase c = random_case(s, 21);
    if (s.N == 4)
      for (float& a : c.A_logs) a += 3.f;  // A down to about -200: exp(Δ·A) small, never below 2^-125 here
    const int64_t BL = s.B * s.H * s.W, KC = 4 * (s.R + 2 * s.N);
    std::vector<float> dbl(size_t(BL * KC));
    sgemm(false, true, BL, KC, s.D, 1.f, c.u.data(), s.D, c.xpw.data(), s.D, 0.f, dbl.data(), KC);
    std::vector<float> portable(size_t(c.act())), fast(size_t(c.act()), -1.f);
    std::vector<float> states_p(size_t(ss2d_scan_states_floats(s))), states_f(states_p.size(), -1.f);
    scan_detail::forward_from_dbl(s, c.u.data(), c.weights(), dbl.data(), portable.data(), states_p.data(), false, false);
    scan_detail::forward_from_dbl(s, c.u.data(), c.weights(), dbl.data(), fast.data(), states_f.data(), false, true);
    check_close("out, exact exp", fast.data(), portable.data(), c.act(), 0.f, 0.f);
    check_close("saved states", states_f.data(), states_p.data(), int64_t(states_p.size()), 0.f, 0.f);
    scan_detail::forward_from_dbl(s, c.u.data(), c.weights(), dbl.data(), fast.data(), nullptr, true, true);
    const double err = rel_l2(fast.data(), portable.data(), c.act());
    MESSAGE("AVX-512 coarse exp against the exact one: relative L2 error " << err);
    CHECK(err < 2e-4);
  }
}

// The coarse path's decay exp errs by at most 3.6e-4·|x - round(x)| (x = Δ·A·log2 e), so a state
// that decays slowly, and so remembers thousands of steps, must not pile the errors up:
// Δ around 1e-3 (dt bias -7) over a 56x56 grid, as in MedMamba-T's first stage.
TEST_CASE("ss2d_scan: the AVX-512 coarse (inference) forward stays within 2e-5 of the exact one on slow decays") {
  if (!scan_detail::avx512_forward_available()) {
    MESSAGE("no AVX512F/DQ on this CPU: only the portable kernel runs here");
    return;
  }
  const SS2DScanShape s{1, 56, 56, 32, 16, 2};
  ScanCase c = random_case(s, 8);
  for (float& b : c.dtb) b -= 6.f;  // softplus(-7 .. -5): Δ 1e-3 .. 7e-3
  const int64_t BL = s.B * s.H * s.W, KC = 4 * (s.R + 2 * s.N);
  std::vector<float> dbl(size_t(BL * KC));
  sgemm(false, true, BL, KC, s.D, 1.f, c.u.data(), s.D, c.xpw.data(), s.D, 0.f, dbl.data(), KC);
  std::vector<float> exact(size_t(c.act())), coarse(size_t(c.act()));
  scan_detail::forward_from_dbl(s, c.u.data(), c.weights(), dbl.data(), exact.data(), nullptr, false, true);
  scan_detail::forward_from_dbl(s, c.u.data(), c.weights(), dbl.data(), coarse.data(), nullptr, true, true);
  const double err = rel_l2(coarse.data(), exact.data(), c.act());
  MESSAGE("AVX-512 coarse exp against the exact one, slow decays: relative L2 error " << err);
  CHECK(err < 2e-5);
}

TEST_CASE("ss2d_scan backward accumulates into its outputs and skips null gradients") {
  const ScanCase c = random_case({2, 4, 3, 36, 8, 2}, 4);
  const Grads once = backward(c);
  Grads twice = backward(c);
  ss2d_scan_backward(c.s, c.u.data(), c.weights(), c.dout.data(), twice.du.data(), twice.ptrs());
  auto doubled = [](std::vector<float> v) { for (float& x : v) x *= 2.f; return v; };
  check_close("du x2", twice.du.data(), doubled(once.du).data(), int64_t(once.du.size()), 1e-5f, 1e-7f);
  check_close("dA_logs x2", twice.dA_logs.data(), doubled(once.dA_logs).data(), int64_t(once.dA_logs.size()), 1e-6f, 1e-7f);
  check_close("dx_proj_weight x2", twice.dxpw.data(), doubled(once.dxpw).data(), int64_t(once.dxpw.size()), 1e-6f, 1e-7f);

  // The result does not depend on the number of threads.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Grads serial = backward(c);
  omp_set_num_threads(threads);
  check_close("du, 1 thread", serial.du.data(), once.du.data(), int64_t(once.du.size()), 0.f, 0.f);
  check_close("dx_proj_weight, 1 thread", serial.dxpw.data(), once.dxpw.data(), int64_t(once.dxpw.size()), 0.f, 0.f);
  check_close("dA_logs, 1 thread", serial.dA_logs.data(), once.dA_logs.data(), int64_t(once.dA_logs.size()), 0.f, 0.f);

  // Only dDs requested: the same values, nothing else touched.
  std::vector<float> dDs(c.Ds.size(), 0.f);
  SS2DScanGrads only_D;
  only_D.Ds = dDs.data();
  ss2d_scan_backward(c.s, c.u.data(), c.weights(), c.dout.data(), nullptr, only_D);
  check_close("dDs alone", dDs.data(), once.dDs.data(), int64_t(dDs.size()), 0.f, 0.f);

  // Caller-provided workspaces give identical results.
  std::vector<float> ws(size_t(ss2d_scan_backward_workspace_floats(c.s)));
  Grads g(c);
  ss2d_scan_backward(c.s, c.u.data(), c.weights(), c.dout.data(), g.du.data(), g.ptrs(), ws.data());
  check_close("du with workspace", g.du.data(), once.du.data(), int64_t(g.du.size()), 0.f, 0.f);
  std::vector<float> out1(size_t(c.act())), out2(size_t(c.act()));
  std::vector<float> fws(size_t(ss2d_scan_forward_workspace_floats(c.s)));
  ss2d_scan_forward(c.s, c.u.data(), c.weights(), out1.data());
  ss2d_scan_forward(c.s, c.u.data(), c.weights(), out2.data(), fws.data());
  check_close("out with workspace", out2.data(), out1.data(), c.act(), 0.f, 0.f);
}

// Timing at MedMamba-T shapes; skipped by default: mm-tests -tc='bench ss2d_scan*' --no-skip
TEST_CASE("bench ss2d_scan at MedMamba-T shapes" * doctest::skip()) {
  using clock = std::chrono::steady_clock;
  struct Stage { const char* name; SS2DScanShape s; };
  for (Stage st : {Stage{"stage 1", {8, 56, 56, 96, 16, 3}}, Stage{"stage 2", {8, 28, 28, 192, 16, 6}},
                   Stage{"stage 3", {8, 14, 14, 384, 16, 12}}, Stage{"stage 4", {8, 7, 7, 768, 16, 24}},
                   Stage{"stage 1, batch 1", {1, 56, 56, 96, 16, 3}}}) {
    const ScanCase c = random_case(st.s, 5);
    std::vector<float> out(size_t(c.act()));
    std::vector<float> fws(size_t(ss2d_scan_forward_workspace_floats(c.s)));
    std::vector<float> bws(size_t(ss2d_scan_backward_workspace_floats(c.s)));
    Grads g(c);
    // Per call, in ms: the fastest wall time of a few runs (robust to other load on the
    // machine) and the mean process CPU time (all threads).
    auto time_ms = [&](auto&& fn) {
      fn();  // warm-up
      const int reps = 7;
      double best = 1e30;
      const std::clock_t c0 = std::clock();
      for (int r = 0; r < reps; ++r) {
        const auto t0 = clock::now();
        fn();
        best = std::min(best, std::chrono::duration<double, std::milli>(clock::now() - t0).count());
      }
      const double cpu = 1e3 * double(std::clock() - c0) / CLOCKS_PER_SEC / reps;
      return std::pair<double, double>(best, cpu);
    };
    const auto fwd = time_ms([&] { ss2d_scan_forward(c.s, c.u.data(), c.weights(), out.data(), fws.data()); });
    const auto fwd_alloc = time_ms([&] { ss2d_scan_forward(c.s, c.u.data(), c.weights(), out.data()); });
    const auto bwd = time_ms([&] {
      ss2d_scan_backward(c.s, c.u.data(), c.weights(), c.dout.data(), g.du.data(), g.ptrs(), bws.data());
    });
    std::vector<float> states(size_t(ss2d_scan_states_floats(c.s)));
    const auto fwd_states = time_ms([&] {
      ss2d_scan_forward(c.s, c.u.data(), c.weights(), out.data(), fws.data(), states.data());
    });
    const auto bwd_states = time_ms([&] {
      ss2d_scan_backward(c.s, c.u.data(), c.weights(), c.dout.data(), g.du.data(), g.ptrs(), bws.data(),
                         states.data());
    });
    std::printf("ss2d_scan %s B=%lld H=W=%lld D=%lld N=%lld R=%lld (best wall ms, mean process cpu ms):\n"
                "  forward %.2f (cpu %.2f), with internal alloc %.2f, saving states %.2f\n"
                "  backward %.2f (cpu %.2f), with saved states %.2f (cpu %.2f)\n",
                st.name, (long long)c.s.B, (long long)c.s.H, (long long)c.s.D, (long long)c.s.N,
                (long long)c.s.R, fwd.first, fwd.second, fwd_alloc.first, fwd_states.first, bwd.first,
                bwd.second, bwd_states.first, bwd_states.second);
  }
}

// The inference scan (forward from a given dbl) over one MedMamba-T forward at 224 px, batch 8
// (blocks per stage 2, 2, 4, 2), exact and coarse exp, 1 thread and OpenMP's default; skipped
// by default:
// mm-tests -tc='bench inference ss2d_scan*' --no-skip
TEST_CASE("bench inference ss2d_scan, one MedMamba-T forward" * doctest::skip()) {
  using clock = std::chrono::steady_clock;
  struct Stage { SS2DScanShape s; int blocks; };
  const Stage stages[] = {{{8, 56, 56, 96, 16, 3}, 2}, {{8, 28, 28, 192, 16, 6}, 2},
                          {{8, 14, 14, 384, 16, 12}, 4}, {{8, 7, 7, 768, 16, 24}, 2}};
  const int threads = omp_get_max_threads();
  for (int nt : {1, threads})
  for (bool coarse : {false, true}) {
    omp_set_num_threads(nt);
    double total = 0;
    for (const Stage& st : stages) {
      const ScanCase c = random_case(st.s, 5);
      const int64_t BL = st.s.B * st.s.H * st.s.W, KC = 4 * (st.s.R + 2 * st.s.N);
      std::vector<float> dbl(size_t(BL * KC)), out(size_t(c.act()));
      sgemm(false, true, BL, KC, st.s.D, 1.f, c.u.data(), st.s.D, c.xpw.data(), st.s.D, 0.f, dbl.data(), KC);
      double best = 1e30;
      for (int r = 0; r < 11; ++r) {
        const auto t0 = clock::now();
        ss2d_scan_forward_from_dbl(st.s, c.u.data(), c.weights(), dbl.data(), out.data(), nullptr, coarse);
        best = std::min(best, std::chrono::duration<double, std::milli>(clock::now() - t0).count());
      }
      std::printf("  D=%lld: %.2f ms x %d\n", (long long)st.s.D, best, st.blocks);
      total += best * st.blocks;
    }
    std::printf("inference scan, %s exp, %d thread(s): %.1f ms per forward (best of 11 per shape)\n",
                coarse ? "coarse" : "exact", nt, total);
  }
  omp_set_num_threads(threads);
}
