// Tests for ops/winograd: the F(2x2,3x3) and F(4x4,3x3) convs against conv2d_forward's
// im2col path (itself checked against a double reference and PyTorch in test_ops_conv.cpp),
// with the BatchNorm + ReLU epilogue, and conv2d_forward_eval's choice.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/error.h"
#include "ops/conv2d.h"
#include "ops/winograd.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

Conv2dShape conv3x3(int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout) {
  Conv2dShape s;
  s.B = B; s.H = H; s.W = W; s.Cin = Cin; s.Cout = Cout;
  s.KH = s.KW = 3; s.pad = 1;
  return s;
}

// max |got - want| / max |want|: Winograd's error is absolute at the scale of the
// outputs (the transforms mix a tile's pixels), so a per-element relative bound would
// be dominated by outputs that happen to be near zero.
double max_err_over_max(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::fabs(double(got[i]) - want[i]));
    mag = std::max(mag, std::fabs(double(want[i])));
  }
  return err / mag;
}

struct Case {
  Conv2dShape s;
  std::vector<float> x, w, bias, scale, shift;
  explicit Case(const Conv2dShape& shape, uint32_t seed) : s(shape) {
    x = normal_values(s.B * s.H * s.W * s.Cin, seed);
    w = normal_values(s.Cout * s.Cin * 9, seed + 1, 1.0f / std::sqrt(9.0f * s.Cin));  // outputs ~ N(0,1)
    bias = normal_values(s.Cout, seed + 2, 0.5f);
    scale = normal_values(s.Cout, seed + 3);
    shift = normal_values(s.Cout, seed + 4);
  }
  int64_t out_numel() const { return s.B * s.H * s.W * s.Cout; }
  // im2col conv, then the epilogue as block.cpp's eval BatchNorm + ReLU would apply it.
  std::vector<float> reference(const ConvEpilogue& e) const {
    std::vector<float> out(static_cast<size_t>(out_numel()));
    conv2d_forward(out.data(), x.data(), w.data(), bias.data(), s, nullptr);
    for (size_t i = 0; i < out.size(); ++i) {
      const size_t c = i % size_t(s.Cout);
      float v = (e.scale ? out[i] * e.scale[c] : out[i]) + (e.shift ? e.shift[c] : 0.0f);
      out[i] = e.relu && v < 0.f ? 0.f : v;
    }
    return out;
  }
  std::vector<float> winograd(int m, const ConvEpilogue& e, bool own_workspace) const {
    std::vector<float> out(static_cast<size_t>(out_numel()), 1e30f), ws;  // must be overwritten
    if (own_workspace) ws.resize(size_t(winograd_workspace_floats(s, m)), 1e30f);
    conv3x3_winograd_forward(out.data(), x.data(), w.data(), bias.data(), s, m, own_workspace ? ws.data() : nullptr,
                             e);
    return out;
  }
};

// Odd and tile-ragged H/W, batch > 1, channel counts off multiples of 8 and across the
// 64-channel transform blocks, 1x1 images, a 7x7 stage-4-like grid.
const Conv2dShape kShapes[] = {conv3x3(2, 7, 9, 5, 11),  conv3x3(3, 13, 6, 19, 10), conv3x3(1, 1, 1, 3, 4),
                               conv3x3(2, 5, 3, 70, 67), conv3x3(2, 7, 7, 96, 96),  conv3x3(1, 10, 12, 1, 1)};

// Bounds on max|err| / max|out| against im2col. Measured over these shapes: m = 2 up to
// 4.5e-7, m = 4 up to 7e-6 (at 96 input channels; the transforms' coefficients up to 8 and
// 1/24 amplify float rounding, and the error grows with the number of input channels).
double tolerance(int m) { return m == 2 ? 2e-6 : 2e-5; }

}  // namespace

TEST_CASE("winograd conv3x3 matches im2col, plain and with the BatchNorm+ReLU epilogue") {
  uint32_t seed = 100;
  for (const Conv2dShape& s : kShapes) {
    const Case c(s, seed += 10);
    INFO("B " << s.B << " H " << s.H << " W " << s.W << " Cin " << s.Cin << " Cout " << s.Cout);
    const ConvEpilogue plain{}, bn_relu{c.scale.data(), c.shift.data(), true};
    const std::vector<float> want_plain = c.reference(plain), want_bn = c.reference(bn_relu);
    for (int m : {2, 4}) {
      INFO("m " << m);
      const double e_plain = max_err_over_max(c.winograd(m, plain, false), want_plain);
      const double e_bn = max_err_over_max(c.winograd(m, bn_relu, true), want_bn);
      MESSAGE("winograd F(" << m << "x" << m << ",3x3) B" << s.B << " " << s.H << "x" << s.W << " " << s.Cin << "->"
                            << s.Cout << ": max err / max out " << e_plain << " plain, " << e_bn << " bn+relu");
      CHECK(e_plain <= tolerance(m));
      CHECK(e_bn <= tolerance(m));
    }
  }
}

TEST_CASE("conv2d_forward_eval: Winograd where chosen, else im2col + epilogue, within Winograd's bound") {
  const Case c(conv3x3(2, 14, 14, 48, 48), 7);
  const ConvEpilogue bn_relu{c.scale.data(), c.shift.data(), true};
  std::vector<float> out(static_cast<size_t>(c.out_numel())), ws(static_cast<size_t>(conv2d_workspace_floats(c.s)), 1e30f);
  conv2d_forward_eval(out.data(), c.x.data(), c.w.data(), c.bias.data(), c.s, ws.data(), bn_relu);
  const int m = winograd_tile_for(c.s);
  CHECK(max_err_over_max(out, c.reference(bn_relu)) <= (m ? tolerance(m) : 0.0));

  // Not a 3x3 pad-1 stride-1 conv: never Winograd, so exactly im2col + epilogue.
  Conv2dShape s1 = c.s;
  s1.KH = s1.KW = 1;
  s1.pad = 0;
  CHECK(winograd_tile_for(s1) == 0);
  Conv2dShape s2 = c.s;
  s2.stride = 2;
  CHECK(winograd_tile_for(s2) == 0);
}

TEST_CASE("pre-transformed Winograd weights give the per-call forward bit for bit, and a cleared cache follows new weights") {
  uint32_t seed = 300;
  for (const Conv2dShape& s : kShapes) {
    Case c(s, seed += 10);
    INFO("B " << s.B << " H " << s.H << " W " << s.W << " Cin " << s.Cin << " Cout " << s.Cout);
    const ConvEpilogue bn_relu{c.scale.data(), c.shift.data(), true};
    WinogradWeightCache cache;
    for (int m : {2, 4}) {
      INFO("m " << m);
      const std::vector<float> per_call = c.winograd(m, bn_relu, true);
      // Transformed once, by hand and through the cache (asked for from several threads at once).
      std::vector<float> uw(size_t(winograd_weight_floats(s, m)));
      winograd_transform_weights(uw.data(), c.w.data(), c.bias.data(), s, m, bn_relu);
      std::vector<float> got(per_call.size(), 1e30f);
      conv3x3_winograd_forward_transformed(got.data(), c.x.data(), uw.data(), s, m, nullptr, true);
      CHECK(got == per_call);
      const float* from_cache[4] = {};
#pragma omp parallel for num_threads(4)
      for (int t = 0; t < 4; ++t) from_cache[t] = cache.get(c.w.data(), c.bias.data(), s, m, bn_relu);
      for (const float* p : from_cache) CHECK(p == from_cache[0]);
      CHECK(std::equal(uw.begin(), uw.end(), from_cache[0]));
    }
    // Another conv's weights in the same cache entry: refused.
    const std::vector<float> other = c.w;
    CHECK_THROWS_AS(cache.get(other.data(), c.bias.data(), s, 2, bn_relu), Error);

    // New weights in place (and a new BatchNorm scale): after clear() the cache transforms
    // them, matching the per-call path exactly and im2col within Winograd's bound.
    for (float& v : c.w) v = -0.5f * v;
    for (float& v : c.scale) v = std::fabs(v) + 0.25f;
    for (float& v : c.shift) v = std::fabs(v);  // with the scale > 0: outputs pass the ReLU at 1 channel too
    cache.clear();
    for (int m : {2, 4}) {
      INFO("after the change, m " << m);
      std::vector<float> got(size_t(c.out_numel()), 1e30f);
      conv3x3_winograd_forward_transformed(got.data(), c.x.data(), cache.get(c.w.data(), c.bias.data(), s, m, bn_relu),
                                           s, m, nullptr, true);
      CHECK(got == c.winograd(m, bn_relu, false));
      CHECK(max_err_over_max(got, c.reference(bn_relu)) <= tolerance(m));
    }
  }
}

TEST_CASE("conv2d_forward_eval with a Winograd weight cache equals it without") {
  const Case c(conv3x3(2, 14, 14, 48, 48), 17);
  const ConvEpilogue bn_relu{c.scale.data(), c.shift.data(), true};
  std::vector<float> want(size_t(c.out_numel())), got(want.size(), 1e30f);
  std::vector<float> ws(size_t(conv2d_workspace_floats(c.s)), 1e30f);
  conv2d_forward_eval(want.data(), c.x.data(), c.w.data(), c.bias.data(), c.s, ws.data(), bn_relu);
  WinogradWeightCache cache;
  for (int call = 0; call < 2; ++call) {  // the first builds, the second reuses
    std::fill(got.begin(), got.end(), 1e30f);
    conv2d_forward_eval(got.data(), c.x.data(), c.w.data(), c.bias.data(), c.s, ws.data(), bn_relu, &cache);
    CHECK(got == want);
  }

  // 7x7 at batch 1 (16 F(2x2) tiles): im2col per call, F(2x2) with transformed weights, in the
  // workspace conv2d_workspace_floats sized.
  const Case small(conv3x3(1, 7, 7, 24, 24), 27);
  const int m = winograd_tile_for(small.s, true);
  if (!std::getenv("MM_WINOGRAD")) {  // the measured choice (MM_WINOGRAD overrides it)
    CHECK(winograd_tile_for(small.s) == 0);
    CHECK(m == 2);
  }
  const ConvEpilogue small_bn{small.scale.data(), small.shift.data(), true};
  std::vector<float> out(size_t(small.out_numel()), 1e30f), small_ws(size_t(conv2d_workspace_floats(small.s)), 1e30f);
  WinogradWeightCache small_cache;
  conv2d_forward_eval(out.data(), small.x.data(), small.w.data(), small.bias.data(), small.s, small_ws.data(), small_bn,
                      &small_cache);
  if (m) CHECK(out == small.winograd(m, small_bn, false));
  CHECK(max_err_over_max(out, small.reference(small_bn)) <= (m ? tolerance(m) : 0.0));
}
