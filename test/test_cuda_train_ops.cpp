// The CUDA training ops (kernels/cuda_train_ops.h) against the CPU ops they mirror (lib/ops),
// in float32, on random inputs of odd shapes; the loss and optimiser ops are in
// test_cuda_train_loss_optim.cpp. Every gradient buffer starts non-zero, so each backward
// check also checks that backward accumulates. The reductions (LayerNorm/BatchNorm parameter
// gradients and statistics) are also run twice and compared bit for bit.
#include <algorithm>
#include <array>
#include <random>
#include <tuple>
#include <vector>

#include "cuda_train_test_util.h"

#ifdef MM_HAVE_CUDA

#include "cuda_train_gemm_conv.h"
#include "ops/activations.h"
#include "ops/batchnorm.h"
#include "ops/layernorm.h"
#include "ops/layout.h"

using namespace mm;
using namespace mm::test;

// Rows of 2C: the fill value in the left halves, x's rows (N,C) in the right halves, for the
// norms that read or write one half of wider rows in place (their ld).
static Vec widen(const Vec& x, int64_t N, int64_t C, float fill) {
  Vec wide(size_t(N * 2 * C), fill);
  for (int64_t r = 0; r < N; ++r)
    std::copy(x.begin() + r * C, x.begin() + (r + 1) * C, wide.begin() + r * 2 * C + C);
  return wide;
}
static Vec half_of(const Vec& wide, int64_t N, int64_t C, int half) {
  Vec out(size_t(N * C));
  for (int64_t r = 0; r < N; ++r)
    std::copy(wide.begin() + r * 2 * C + half * C, wide.begin() + r * 2 * C + (half + 1) * C, out.begin() + r * C);
  return out;
}

// Whether write, a kernel that writes rows·cols values rounded to bf16, gives the bits that
// bf16_operand_copy (the rounding a bf16 GEMM makes of its float32 operands) makes of f32.
template <class WriteBf16>
static bool same_bits_as_gemm_rounding(const Tensor& f32, int64_t rows, int64_t cols, WriteBf16 write) {
  const int64_t halves = (rows * cols + 1) / 2;  // zeroed: an odd count leaves half a float unwritten
  Tensor got = dev(Vec(size_t(halves), 0.f)), want = dev(Vec(size_t(halves), 0.f));
  write(reinterpret_cast<uint16_t*>(got.as<float>()));
  cuda::bf16_operand_copy(in(f32), rows, cols, cols, reinterpret_cast<uint16_t*>(want.as<float>()), kStream);
  return same_bits(from_gpu(got), from_gpu(want));
}

TEST_CASE("cuda train op: layernorm forward and backward match the CPU op") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(11);
  // Rows of C/4 float4s in groups of G lanes holding K each: 96 (G 8, K 3), 40 (4, 3), 24 (2, 3),
  // 4 (1, 1), 768 (32, 6), 1000 (32, 8, the last slots empty); 1536 and 42 (not float4s) take
  // the warp-per-row kernels.
  for (const auto& shape : {std::pair<int64_t, int64_t>{3 * 13 * 11, 96}, {2 * 7 * 7 + 3, 40}, {37, 24}, {9, 4},
                            {7, 768}, {3, 1000}, {5, 1536}, {11, 42}}) {
    const int64_t N = shape.first, C = shape.second;
    CAPTURE(N);
    CAPTURE(C);
    const Vec x = random_vector(size_t(N * C), rng, 2.f, 0.5f), w = random_vector(size_t(C), rng, 0.3f, 1.f),
              b = random_vector(size_t(C), rng, 0.2f), dout = random_vector(size_t(N * C), rng);
    Vec out(x.size()), mean(size_t(N), 0), rstd(size_t(N), 0);
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    const Tensor tx = dev(x), tw = dev(w), tb = dev(b), tdout = dev(dout);
    Tensor tout = dev_empty(N * C), tmean = dev_empty(N), trstd = dev_empty(N);
    cuda::layernorm_forward(tout.as<float>(), tmean.as<float>(), trstd.as<float>(), in(tx), in(tw), in(tb), N, C,
                            kStream);
    check_nmse("out", from_gpu(tout), out, kElementwise);
    check_nmse("mean", from_gpu(tmean), mean, kElementwise);
    check_nmse("rstd", from_gpu(trstd), rstd, kElementwise);
    // With the SS2D gate fused: gate_forward's bits after the plain LayerNorm, with and
    // without the LayerNorm's own output.
    const Tensor tz = dev(random_vector(size_t(N * C), rng, 3.f));
    Tensor gate_after = dev_empty(N * C), fused = dev_empty(N * C), fused_out = dev_empty(N * C);
    cuda::gate_forward(gate_after.as<float>(), in(tout), in(tz), N * C, kStream);
    cuda::layernorm_gate_forward(fused_out.as<float>(), fused.as<float>(), nullptr, nullptr, in(tx), in(tz), in(tw),
                                 in(tb), N, C, kStream);
    CHECK(same_bits(from_gpu(fused), from_gpu(gate_after)));
    CHECK(same_bits(from_gpu(fused_out), from_gpu(tout)));
    Tensor gate_only = dev_empty(N * C), gmean = dev_empty(N), grstd = dev_empty(N);
    cuda::layernorm_gate_forward(nullptr, gate_only.as<float>(), gmean.as<float>(), grstd.as<float>(), in(tx), in(tz),
                                 in(tw), in(tb), N, C, kStream);
    CHECK(same_bits(from_gpu(gate_only), from_gpu(gate_after)));
    CHECK(same_bits(from_gpu(gmean), from_gpu(tmean)));
    CHECK(same_bits(from_gpu(grstd), from_gpu(trstd)));
    // The output and the gated product written in bf16, for the bf16 GEMMs they feed: the bits
    // of those GEMMs' own rounding.
    CHECK(same_bits_as_gemm_rounding(tout, N, C, [&](uint16_t* rounded) {
      cuda::layernorm_forward_bf16(rounded, nullptr, nullptr, in(tx), in(tw), in(tb), N, C, kStream);
    }));
    CHECK(same_bits_as_gemm_rounding(gate_after, N, C, [&](uint16_t* rounded) {
      cuda::layernorm_gate_forward_bf16(nullptr, rounded, nullptr, nullptr, in(tx), in(tz), in(tw), in(tb), N, C,
                                        kStream);
    }));

    // Backward from the CPU's saved statistics, so both sides see the same inputs.
    const Tensor smean = dev(mean), srstd = dev(rstd);
    Grad gx(x.size(), rng), gw(w.size(), rng), gb(b.size(), rng);
    const Vec gw0 = gw.result(), gb0 = gb.result();
    layernorm_backward(gx.h(), gw.h(), gb.h(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
    cuda::layernorm_backward(gx.d(), gw.d(), gb.d(), in(tdout), in(tx), in(tw), in(smean), in(srstd), N, C,
                             kStream);
    gx.check("dx", kElementwise);
    gw.check("dweight", kReduction);
    gb.check("dbias", kReduction);

    // x as the right halves of rows 2C apart (ld), and dx added into those halves only: the
    // packed op's bits.
    {
      const Tensor wide = dev(widen(x, N, C, 7.f));
      Tensor sout = dev_empty(N * C), smean2 = dev_empty(N), srstd2 = dev_empty(N);
      cuda::layernorm_forward(sout.as<float>(), smean2.as<float>(), srstd2.as<float>(), in(wide) + C, in(tw), in(tb),
                              N, C, kStream, 2 * C);
      CHECK(same_bits(from_gpu(sout), from_gpu(tout)));
      CHECK(same_bits(from_gpu(smean2), from_gpu(tmean)));
      CHECK(same_bits(from_gpu(srstd2), from_gpu(trstd)));
      const Vec dx0 = random_vector(size_t(N * C), rng);
      Tensor packed_dx = dev(dx0), wide_dx = dev(widen(dx0, N, C, 3.f));
      Tensor pw = dev(gw0), pb = dev(gb0), ww = dev(gw0), wb = dev(gb0);
      cuda::layernorm_backward(packed_dx.as<float>(), pw.as<float>(), pb.as<float>(), in(tdout), in(tx), in(tw),
                               in(smean), in(srstd), N, C, kStream);
      cuda::layernorm_backward(wide_dx.as<float>() + C, ww.as<float>(), wb.as<float>(), in(tdout), in(wide) + C,
                               in(tw), in(smean), in(srstd), N, C, kStream, cuda::GradOut::Accumulate, 2 * C);
      const Vec got = from_gpu(wide_dx);
      CHECK(same_bits(half_of(got, N, C, 1), from_gpu(packed_dx)));
      CHECK(same_bits(half_of(got, N, C, 0), Vec(size_t(N * C), 3.f)));
      CHECK(same_bits(from_gpu(ww), from_gpu(pw)));
      CHECK(same_bits(from_gpu(wb), from_gpu(pb)));
    }

    // The SS2D gate's backward folded in: gate_backward on the forward's output, then the plain
    // backward, bit for bit, dz included.
    {
      const Vec dx0 = random_vector(size_t(N * C), rng);
      const Tensor tdg = dev(random_vector(size_t(N * C), rng));
      Tensor dyn = dev_empty(N * C), udz = dev_empty(N * C), fdz = dev_empty(N * C);
      Tensor ux = dev(dx0), uw = dev(gw0), ub = dev(gb0), fx = dev(dx0), fw = dev(gw0), fb = dev(gb0);
      cuda::gate_backward(dyn.as<float>(), udz.as<float>(), in(tdg), in(tout), in(tz), N * C, kStream,
                          cuda::GradOut::Overwrite);
      cuda::layernorm_backward(ux.as<float>(), uw.as<float>(), ub.as<float>(), in(dyn), in(tx), in(tw), in(tmean),
                               in(trstd), N, C, kStream);
      cuda::layernorm_gate_backward(fx.as<float>(), fw.as<float>(), fb.as<float>(), fdz.as<float>(), in(tdg), in(tz),
                                    in(tx), in(tw), in(tb), in(tmean), in(trstd), N, C, kStream);
      CHECK(same_bits(from_gpu(fx), from_gpu(ux)));
      CHECK(same_bits(from_gpu(fdz), from_gpu(udz)));
      CHECK(same_bits(from_gpu(fw), from_gpu(uw)));
      CHECK(same_bits(from_gpu(fb), from_gpu(ub)));
      // dz written in bf16, for in_proj's bf16 GEMMs: their rounding of dz, and the other
      // results' bits unchanged.
      Tensor bx = dev(dx0), bw = dev(gw0), bb = dev(gb0);
      CHECK(same_bits_as_gemm_rounding(fdz, N, C, [&](uint16_t* rounded) {
        cuda::layernorm_gate_backward_bf16(bx.as<float>(), bw.as<float>(), bb.as<float>(), rounded, in(tdg), in(tz),
                                           in(tx), in(tw), in(tb), in(tmean), in(trstd), N, C, kStream);
      }));
      CHECK(same_bits(from_gpu(bx), from_gpu(fx)));
      CHECK(same_bits(from_gpu(bw), from_gpu(fw)));
      CHECK(same_bits(from_gpu(bb), from_gpu(fb)));
    }

    // Deterministic: the same call from the same start gives the same bits.
    Tensor again_w = dev(gw0), again_b = dev(gb0);
    cuda::layernorm_backward(nullptr, again_w.as<float>(), again_b.as<float>(), in(tdout), in(tx), in(tw),
                             in(smean), in(srstd), N, C, kStream);
    CHECK(same_bits(from_gpu(again_w), gw.result()));
    CHECK(same_bits(from_gpu(again_b), gb.result()));
  }
}

TEST_CASE("cuda train op: batchnorm train forward, running statistics, recompute and backward match the CPU op") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(12);
  // N > 1024 spans several 256-row partial-sum chunks, the last one short; the second case has no affine.
  for (const auto& shape : {std::tuple<int64_t, int64_t, bool>{3 * 29 * 31, 48, true}, {2 * 5 * 7, 40, false}}) {
    const int64_t N = std::get<0>(shape), C = std::get<1>(shape);
    const bool affine = std::get<2>(shape);
    CAPTURE(N);
    CAPTURE(C);
    const Vec x = random_vector(size_t(N * C), rng, 1.5f, 0.7f), w = random_vector(size_t(C), rng, 0.3f, 1.f),
              b = random_vector(size_t(C), rng, 0.2f), dout = random_vector(size_t(N * C), rng);
    const Vec rm0 = random_vector(size_t(C), rng, 0.1f), rv0 = random_vector(size_t(C), rng, 0.1f, 1.f);
    const float* w_host = affine ? w.data() : nullptr;
    const float* b_host = affine ? b.data() : nullptr;
    Vec out(x.size()), mean(size_t(C), 0), rstd(size_t(C), 0), rm = rm0, rv = rv0;
    batchnorm_forward_train(out.data(), mean.data(), rstd.data(), rm.data(), rv.data(), x.data(), w_host, b_host, N, C);

    const Tensor tx = dev(x), tw = dev(w), tb = dev(b), tdout = dev(dout);
    const float* w_dev = affine ? in(tw) : nullptr;
    const float* b_dev = affine ? in(tb) : nullptr;
    Tensor tout = dev_empty(N * C), tmean = dev_empty(C), trstd = dev_empty(C), trm = dev(rm0), trv = dev(rv0);
    auto forward = [&] {
      cuda::batchnorm_forward_train(tout.as<float>(), tmean.as<float>(), trstd.as<float>(), trm.as<float>(),
                                    trv.as<float>(), in(tx), w_dev, b_dev, N, C, kStream);
    };
    forward();
    check_nmse("out", from_gpu(tout), out, kElementwise);
    check_nmse("mean", from_gpu(tmean), mean, kReduction);
    check_nmse("rstd", from_gpu(trstd), rstd, kReduction);
    check_nmse("running_mean", from_gpu(trm), rm, kReduction);
    check_nmse("running_var", from_gpu(trv), rv, kReduction);
    const Vec out1 = from_gpu(tout), mean1 = from_gpu(tmean), rstd1 = from_gpu(trstd);
    forward();
    CHECK(same_bits(from_gpu(tout), out1));
    CHECK(same_bits(from_gpu(tmean), mean1));
    CHECK(same_bits(from_gpu(trstd), rstd1));
    // Backward passes recompute the output from the saved statistics: the same bits.
    Tensor again = dev_empty(N * C);
    cuda::batchnorm_forward_saved(again.as<float>(), in(tx), in(tmean), in(trstd), w_dev, b_dev, N, C, kStream);
    CHECK(same_bits(from_gpu(again), out1));
    // With the ReLU fused (the block's BatchNorm + ReLU pairs): relu_forward's bits after either.
    Tensor relu_after = dev_empty(N * C), fused = dev_empty(N * C), fused_stats = dev_empty(2 * C);
    cuda::relu_forward(relu_after.as<float>(), in(again), N * C, kStream);
    cuda::batchnorm_forward_saved(fused.as<float>(), in(tx), in(tmean), in(trstd), w_dev, b_dev, N, C, kStream, true);
    CHECK(same_bits(from_gpu(fused), from_gpu(relu_after)));
    cuda::batchnorm_forward_train(fused.as<float>(), fused_stats.as<float>(), fused_stats.as<float>() + C, nullptr,
                                  nullptr, in(tx), w_dev, b_dev, N, C, kStream, true);
    CHECK(same_bits(from_gpu(fused), from_gpu(relu_after)));
    // Applied from its map and rounded to bf16 (the 1x1 conv's input under bf16 GEMMs): a bf16
    // GEMM's rounding of the output, with and without the ReLU.
    Tensor map = dev_empty(2 * C);
    cuda::batchnorm_saved_map(map.as<float>(), map.as<float>() + C, in(tmean), in(trstd), w_dev, b_dev, C, kStream);
    for (bool relu : {false, true}) {
      CAPTURE(relu);
      CHECK(same_bits_as_gemm_rounding(relu ? relu_after : again, N, C, [&](uint16_t* rounded) {
        cuda::batchnorm_apply_bf16(rounded, in(tx), in(map), in(map) + C, N, C, kStream, relu);
      }));
    }

    const Tensor smean = dev(mean), srstd = dev(rstd);
    Grad gx(x.size(), rng), gw(size_t(C), rng), gb(size_t(C), rng);
    const Vec gx0 = gx.result(), gw0 = gw.result(), gb0 = gb.result();
    batchnorm_backward_train(gx.h(), gw.h(), gb.h(), dout.data(), x.data(), w_host, mean.data(), rstd.data(), N, C);
    cuda::batchnorm_backward_train(gx.d(), gw.d(), gb.d(), in(tdout), in(tx), w_dev, in(smean), in(srstd), N, C,
                                   kStream);
    gx.check("dx", kReduction);
    gw.check("dweight", kReduction);
    gb.check("dbias", kReduction);
    Tensor ax = dev(gx0), aw = dev(gw0), ab = dev(gb0);
    cuda::batchnorm_backward_train(ax.as<float>(), aw.as<float>(), ab.as<float>(), in(tdout), in(tx), w_dev, in(smean),
                                   in(srstd), N, C, kStream);
    CHECK(same_bits(from_gpu(ax), gx.result()));
    CHECK(same_bits(from_gpu(aw), gw.result()));
    CHECK(same_bits(from_gpu(ab), gb.result()));

    // dx's bf16 rounding written beside it (a 3x3 conv backward's dout): a bf16 GEMM's rounding
    // of dx, which keeps its bits; accumulating and overwriting.
    for (cuda::GradOut mode : {cuda::GradOut::Accumulate, cuda::GradOut::Overwrite}) {
      CAPTURE(int(mode));
      Tensor plain = dev(gx0), twin = dev(gx0), pw = dev(gw0), tw2 = dev(gw0);
      cuda::batchnorm_backward_train(plain.as<float>(), pw.as<float>(), nullptr, in(tdout), in(tx), w_dev, in(smean),
                                     in(srstd), N, C, kStream, mode);
      CHECK(same_bits_as_gemm_rounding(plain, N, C, [&](uint16_t* rounded) {
        cuda::batchnorm_backward_train(twin.as<float>(), tw2.as<float>(), nullptr, in(tdout), in(tx), w_dev,
                                       in(smean), in(srstd), N, C, kStream, mode, {}, 0, rounded);
      }));
      CHECK(same_bits(from_gpu(twin), from_gpu(plain)));
      CHECK(same_bits(from_gpu(tw2), from_gpu(pw)));
    }

    // Skipped gradients: dx alone still matches.
    Tensor only_dx = dev(gx0);
    cuda::batchnorm_backward_train(only_dx.as<float>(), nullptr, nullptr, in(tdout), in(tx), w_dev, in(smean),
                                   in(srstd), N, C, kStream);
    CHECK(same_bits(from_gpu(only_dx), gx.result()));

    // The ReLU after it folded into backward (the block's pairs): relu_backward on the fused
    // forward's output, then the plain backward, bit for bit.
    Tensor masked = dev_empty(N * C), ux = dev(gx0), uw = dev(gw0), ub = dev(gb0), fx = dev(gx0), fw = dev(gw0),
           fb = dev(gb0);
    cuda::relu_backward(masked.as<float>(), in(tdout), in(fused), N * C, kStream, cuda::GradOut::Overwrite);
    cuda::batchnorm_backward_train(ux.as<float>(), uw.as<float>(), ub.as<float>(), in(masked), in(tx), w_dev,
                                   in(tmean), in(trstd), N, C, kStream);
    cuda::batchnorm_backward_train(fx.as<float>(), fw.as<float>(), fb.as<float>(), in(tdout), in(tx), w_dev,
                                   in(tmean), in(trstd), N, C, kStream, cuda::GradOut::Accumulate,
                                   cuda::BatchNormRelu{true, b_dev});
    CHECK(same_bits(from_gpu(fx), from_gpu(ux)));
    CHECK(same_bits(from_gpu(fw), from_gpu(uw)));
    CHECK(same_bits(from_gpu(fb), from_gpu(ub)));
    CHECK_FALSE(same_bits(from_gpu(fx), gx.result()));  // the mask did something

    // x as the right halves of rows 2C apart (ld), dx added into those halves only: the
    // packed ops' bits, forward, recompute and backward.
    const Tensor wide = dev(widen(x, N, C, 5.f));
    Tensor sout = dev_empty(N * C), sstats = dev_empty(2 * C), ssaved = dev_empty(N * C);
    cuda::batchnorm_forward_train(sout.as<float>(), sstats.as<float>(), sstats.as<float>() + C, nullptr, nullptr,
                                  in(wide) + C, w_dev, b_dev, N, C, kStream, true, 2 * C);
    CHECK(same_bits(from_gpu(sout), from_gpu(fused)));
    CHECK(same_bits(from_gpu(sstats), from_gpu(fused_stats)));
    cuda::batchnorm_forward_saved(ssaved.as<float>(), in(wide) + C, in(tmean), in(trstd), w_dev, b_dev, N, C, kStream,
                                  false, 2 * C);
    CHECK(same_bits(from_gpu(ssaved), out1));
    Tensor wide_dx = dev(widen(gx0, N, C, 3.f)), sw = dev(gw0), sbias = dev(gb0);
    cuda::batchnorm_backward_train(wide_dx.as<float>() + C, sw.as<float>(), sbias.as<float>(), in(tdout), in(wide) + C,
                                   w_dev, in(tmean), in(trstd), N, C, kStream, cuda::GradOut::Accumulate,
                                   cuda::BatchNormRelu{true, b_dev}, 2 * C);
    const Vec got = from_gpu(wide_dx);
    CHECK(same_bits(half_of(got, N, C, 1), from_gpu(fx)));
    CHECK(same_bits(half_of(got, N, C, 0), Vec(size_t(N * C), 3.f)));
    CHECK(same_bits(from_gpu(sw), from_gpu(fw)));
    CHECK(same_bits(from_gpu(sbias), from_gpu(fb)));
  }
}

TEST_CASE("cuda train op: batchnorm eval forward and backward match the CPU op") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(13);
  const int64_t N = 3 * 29 * 31, C = 96;
  const Vec x = random_vector(size_t(N * C), rng, 1.5f, 0.7f), w = random_vector(size_t(C), rng, 0.3f, 1.f),
            b = random_vector(size_t(C), rng, 0.2f), dout = random_vector(size_t(N * C), rng),
            rm = random_vector(size_t(C), rng, 0.3f), rv = random_vector(size_t(C), rng, 0.2f, 1.5f);
  Vec out(x.size());
  batchnorm_forward_eval(out.data(), x.data(), rm.data(), rv.data(), w.data(), b.data(), N, C);
  const Tensor tx = dev(x), tw = dev(w), tb = dev(b), tdout = dev(dout), trm = dev(rm), trv = dev(rv);
  Tensor tout = dev_empty(N * C);
  cuda::batchnorm_forward_eval(tout.as<float>(), in(tx), in(trm), in(trv), in(tw), in(tb), N, C, kStream);
  check_nmse("out", from_gpu(tout), out, kElementwise);
  Tensor relu_after = dev_empty(N * C), fused = dev_empty(N * C);
  cuda::relu_forward(relu_after.as<float>(), in(tout), N * C, kStream);
  cuda::batchnorm_forward_eval(fused.as<float>(), in(tx), in(trm), in(trv), in(tw), in(tb), N, C, kStream, true);
  CHECK(same_bits(from_gpu(fused), from_gpu(relu_after)));

  Grad gx(x.size(), rng), gw(size_t(C), rng), gb(size_t(C), rng);
  const Vec gw0 = gw.result();
  batchnorm_backward_eval(gx.h(), gw.h(), gb.h(), dout.data(), x.data(), rm.data(), rv.data(), w.data(), N, C);
  cuda::batchnorm_backward_eval(gx.d(), gw.d(), gb.d(), in(tdout), in(tx), in(trm), in(trv), in(tw), N, C, kStream);
  gx.check("dx", kElementwise);
  gw.check("dweight", kReduction);
  gb.check("dbias", kReduction);
  Tensor aw = dev(gw0);
  cuda::batchnorm_backward_eval(nullptr, aw.as<float>(), nullptr, in(tdout), in(tx), in(trm), in(trv), in(tw), N, C,
                                kStream);
  CHECK(same_bits(from_gpu(aw), gw.result()));

  // The ReLU folded into backward: relu_backward on the fused forward's output, then the
  // plain backward, bit for bit.
  Tensor masked = dev_empty(N * C), ux = dev_empty(N * C), uw = dev(gw0), fx = dev_empty(N * C), fw = dev(gw0);
  cuda::relu_backward(masked.as<float>(), in(tdout), in(fused), N * C, kStream, cuda::GradOut::Overwrite);
  cuda::batchnorm_backward_eval(ux.as<float>(), uw.as<float>(), nullptr, in(masked), in(tx), in(trm), in(trv), in(tw),
                                N, C, kStream, cuda::GradOut::Overwrite);
  cuda::batchnorm_backward_eval(fx.as<float>(), fw.as<float>(), nullptr, in(tdout), in(tx), in(trm), in(trv), in(tw),
                                N, C, kStream, cuda::GradOut::Overwrite, cuda::BatchNormRelu{true, in(tb)});
  CHECK(same_bits(from_gpu(fx), from_gpu(ux)));
  CHECK(same_bits(from_gpu(fw), from_gpu(uw)));
}

// The elementwise kernels take 4 elements a thread (float4) where the sizes allow it, else
// one: each layout test runs both, a size that is a multiple of 4 and one that is not.
TEST_CASE("cuda train op: relu, silu and the SS2D gate, forward and backward, match the CPU") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(14);
  for (const int64_t n : {3 * 10007, 4 * 10007}) {
    CAPTURE(n);
    const Vec x = random_vector(size_t(n), rng, 3.f), z = random_vector(size_t(n), rng, 3.f),
              dout = random_vector(size_t(n), rng);
    const Tensor tx = dev(x), tz = dev(z), tdout = dev(dout);

    Vec relu(x.size()), silu_out(x.size());
    relu_forward(relu.data(), x.data(), n);
    silu_forward(silu_out.data(), x.data(), n);
    Tensor trelu = dev_empty(n);
    cuda::relu_forward(trelu.as<float>(), in(tx), n, kStream);
    check_nmse("relu", from_gpu(trelu), relu, kElementwise);
    Tensor in_place = dev(x);  // out may alias x
    cuda::silu_forward(in_place.as<float>(), in_place.as<float>(), n, kStream);
    check_nmse("silu in place", from_gpu(in_place), silu_out, kElementwise);

    Grad relu_dx(x.size(), rng), silu_dx(x.size(), rng);
    relu_backward(relu_dx.h(), dout.data(), x.data(), n);
    silu_backward(silu_dx.h(), dout.data(), x.data(), n);
    cuda::relu_backward(relu_dx.d(), in(tdout), in(tx), n, kStream);
    cuda::silu_backward(silu_dx.d(), in(tdout), in(tx), n, kStream);
    relu_dx.check("relu dx", kElementwise);
    silu_dx.check("silu dx", kElementwise);

    // The gate of lib/model/block.cpp: g = yn·SiLU(z); dyn = dg·z·σ(z), dz = dg·yn·SiLU'(z).
    const Vec& yn = x;
    Vec g(size_t(n), 0);
    Grad dyn(size_t(n), rng), dz(size_t(n), rng);
    for (int64_t i = 0; i < n; ++i) {
      g[size_t(i)] = yn[size_t(i)] * silu(z[size_t(i)]);
      const float sg = sigmoid(z[size_t(i)]);
      dyn.want[size_t(i)] += dout[size_t(i)] * z[size_t(i)] * sg;
      dz.want[size_t(i)] += dout[size_t(i)] * yn[size_t(i)] * sg * (1.f + z[size_t(i)] * (1.f - sg));
    }
    Tensor tg = dev_empty(n);
    cuda::gate_forward(tg.as<float>(), in(tx), in(tz), n, kStream);
    check_nmse("gate", from_gpu(tg), g, kElementwise);
    cuda::gate_backward(dyn.d(), dz.d(), in(tdout), in(tx), in(tz), n, kStream);
    dyn.check("gate dyn", kElementwise);
    dz.check("gate dz", kElementwise);
  }
}

TEST_CASE("cuda train op: add_inplace and scale_rows (drop path)") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(15);
  for (const int64_t per : {7 * 7 * 40, 7 * 7 * 5}) {
    CAPTURE(per);
    const int64_t B = 5;
    const Vec a = random_vector(size_t(B * per), rng), x = random_vector(size_t(B * per), rng);
    const Vec scale = {0.f, 1.25f, 1.25f, 0.f, 1.25f};
    Vec want = a;
    for (int64_t i = 0; i < B * per; ++i) want[size_t(i)] = (want[size_t(i)] + x[size_t(i)]) * scale[size_t(i / per)];
    Tensor ta = dev(a);
    const Tensor tx = dev(x), ts = dev(scale);
    cuda::add_inplace(ta.as<float>(), in(tx), B * per, kStream);
    cuda::scale_rows(ta.as<float>(), in(ts), B, per, kStream);
    check_nmse("add then scale", from_gpu(ta), want, kElementwise);
  }
}

TEST_CASE("cuda train op: split_halves and concat_shuffle, forward and backward") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(16);
  for (const int64_t c : {40, 6}) {
    CAPTURE(c);
    const int64_t P = 2 * 7 * 7 + 1;
    const Vec x = random_vector(size_t(P * 2 * c), rng), l = random_vector(size_t(P * c), rng),
              r = random_vector(size_t(P * c), rng);
    const Tensor tx = dev(x), tl = dev(l), tr = dev(r);

    Vec left(size_t(P * c), 0), right(size_t(P * c), 0), shuffled(size_t(P * 2 * c), 0);
    split_halves_forward(left.data(), right.data(), x.data(), P, c);
    concat_shuffle_forward(shuffled.data(), l.data(), r.data(), P, c);
    Tensor tleft = dev_empty(P * c), tright = dev_empty(P * c), tshuf = dev_empty(P * 2 * c);
    cuda::split_halves_forward(tleft.as<float>(), tright.as<float>(), in(tx), P, c, kStream);
    cuda::concat_shuffle_forward(tshuf.as<float>(), in(tl), in(tr), P, c, kStream);
    CHECK(same_bits(from_gpu(tleft), left));
    CHECK(same_bits(from_gpu(tright), right));
    CHECK(same_bits(from_gpu(tshuf), shuffled));

    Grad dx(x.size(), rng), dx_left_only(x.size(), rng), dl(l.size(), rng), dr(r.size(), rng);
    split_halves_backward(dx.h(), l.data(), r.data(), P, c);
    split_halves_backward(dx_left_only.h(), l.data(), nullptr, P, c);
    concat_shuffle_backward(dl.h(), dr.h(), x.data(), P, c);
    cuda::split_halves_backward(dx.d(), in(tl), in(tr), P, c, kStream);
    cuda::split_halves_backward(dx_left_only.d(), in(tl), nullptr, P, c, kStream);
    cuda::concat_shuffle_backward(dl.d(), dr.d(), in(tx), P, c, kStream);
    dx.check("split dx", kElementwise);
    dx_left_only.check("split dx (left only)", kElementwise);
    dl.check("shuffle dl", kElementwise);
    dr.check("shuffle ds", kElementwise);
  }
}

// The block's end, fused (ShuffleResidual): drop path's factors on sb, the shuffle and the
// residual in one pass, the bits of the three ops in turn; backward also copies dout to dx.
// per_image = 7·7·c: a multiple of 4 (float4s) for c = 40, not for c = 6.
TEST_CASE("cuda train op: concat_shuffle with the residual and drop path fused gives the unfused bits") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(18);
  for (const int64_t c : {40, 6}) {
    CAPTURE(c);
    const int64_t B = 3, per = 7 * 7 * c, P = B * 7 * 7;
    const Vec l = random_vector(size_t(P * c), rng), sb = random_vector(size_t(P * c), rng),
              x = random_vector(size_t(P * 2 * c), rng), dout = random_vector(size_t(P * 2 * c), rng);
    const Vec scale = {1.1111112f, 0.f, 1.1111112f};
    const Tensor tl = dev(l), tx = dev(x), ts = dev(scale), tdout = dev(dout);

    Tensor scaled = dev(sb), unfused = dev_empty(P * 2 * c), fused = dev_empty(P * 2 * c);
    cuda::scale_rows(scaled.as<float>(), in(ts), B, per, kStream);
    cuda::concat_shuffle_forward(unfused.as<float>(), in(tl), in(scaled), P, c, kStream);
    cuda::add_inplace(unfused.as<float>(), in(tx), P * 2 * c, kStream);
    const Tensor tsb = dev(sb);
    cuda::ShuffleResidual r;
    r.x = in(tx);
    r.sb_scale = in(ts);
    r.per_image = per;
    cuda::concat_shuffle_forward(fused.as<float>(), in(tl), in(tsb), P, c, kStream, r);
    CHECK(same_bits(from_gpu(fused), from_gpu(unfused)));

    Tensor dl = dev_empty(P * c), ds = dev_empty(P * c), fdl = dev_empty(P * c), fds = dev_empty(P * c);
    Tensor fdx = dev_empty(P * 2 * c);
    cuda::concat_shuffle_backward(dl.as<float>(), ds.as<float>(), in(tdout), P, c, kStream, cuda::GradOut::Overwrite);
    cuda::scale_rows(ds.as<float>(), in(ts), B, per, kStream);
    cuda::ShuffleResidual rb;
    rb.dx = fdx.as<float>();
    rb.sb_scale = in(ts);
    rb.per_image = per;
    cuda::concat_shuffle_backward(fdl.as<float>(), fds.as<float>(), in(tdout), P, c, kStream, cuda::GradOut::Overwrite,
                                  rb);
    CHECK(same_bits(from_gpu(fdl), from_gpu(dl)));
    CHECK(same_bits(from_gpu(fds), from_gpu(ds)));
    CHECK(same_bits(from_gpu(fdx), dout));

    // The convolution branch's last ReLU on l as well: relu_forward before the shuffle, and
    // relu_backward on l's pre-activation after it.
    Tensor relu_l = dev_empty(P * c), unfused_relu = dev_empty(P * 2 * c), fused_relu = dev_empty(P * 2 * c);
    cuda::relu_forward(relu_l.as<float>(), in(tl), P * c, kStream);
    cuda::concat_shuffle_forward(unfused_relu.as<float>(), in(relu_l), in(tsb), P, c, kStream, r);
    cuda::ShuffleResidual rr = r;
    rr.relu_l = true;
    cuda::concat_shuffle_forward(fused_relu.as<float>(), in(tl), in(tsb), P, c, kStream, rr);
    CHECK(same_bits(from_gpu(fused_relu), from_gpu(unfused_relu)));
    CHECK_FALSE(same_bits(from_gpu(fused_relu), from_gpu(fused)));  // l has negative entries

    Tensor mdl = dev_empty(P * c), rdl = dev_empty(P * c);
    cuda::relu_backward(mdl.as<float>(), in(dl), in(tl), P * c, kStream, cuda::GradOut::Overwrite);
    cuda::ShuffleResidual rbr = rb;
    rbr.l_pre = in(tl);
    cuda::concat_shuffle_backward(rdl.as<float>(), fds.as<float>(), in(tdout), P, c, kStream, cuda::GradOut::Overwrite,
                                  rbr);
    CHECK(same_bits(from_gpu(rdl), from_gpu(mdl)));
    CHECK(same_bits(from_gpu(fds), from_gpu(ds)));

    // dsb written in bf16 instead (for out_proj's bf16 GEMMs): a bf16 GEMM's rounding of it.
    Tensor bdl = dev_empty(P * c);
    CHECK(same_bits_as_gemm_rounding(ds, P, c, [&](uint16_t* rounded) {
      cuda::ShuffleResidual rb16 = rbr;
      rb16.dsb_bf16 = rounded;
      cuda::concat_shuffle_backward(bdl.as<float>(), nullptr, in(tdout), P, c, kStream, cuda::GradOut::Overwrite,
                                    rb16);
    }));
    CHECK(same_bits(from_gpu(bdl), from_gpu(mdl)));
  }
}

TEST_CASE("cuda train op: patch_gather, avgpool and the NCHW/NHWC moves, forward and backward") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(17);
  // Odd H and W: the last row and column are not gathered, and their gradient stays as it was.
  for (const auto& shape : {std::array<int64_t, 4>{2, 6, 10, 24}, {3, 7, 5, 40}, {2, 6, 6, 6}}) {
    const int64_t B = shape[0], H = shape[1], W = shape[2], C = shape[3];
    CAPTURE(H);
    CAPTURE(C);
    const int64_t Po = B * (H / 2) * (W / 2);
    const Vec x = random_vector(size_t(B * H * W * C), rng), dout = random_vector(size_t(Po * 4 * C), rng);
    Vec out(dout.size());
    patch_gather_forward(out.data(), x.data(), B, H, W, C);
    const Tensor tx = dev(x), tdout = dev(dout);
    Tensor tout = dev_empty(Po * 4 * C);
    cuda::patch_gather_forward(tout.as<float>(), in(tx), B, H, W, C, kStream);
    CHECK(same_bits(from_gpu(tout), out));
    Grad dx(x.size(), rng);
    patch_gather_backward(dx.h(), dout.data(), B, H, W, C);
    cuda::patch_gather_backward(dx.d(), in(tdout), B, H, W, C, kStream);
    dx.check("patch_gather dx", kElementwise);
  }

  const int64_t B = 3, P = 7 * 7, C = 96;
  const Vec x = random_vector(size_t(B * P * C), rng), dout = random_vector(size_t(B * C), rng);
  Vec pooled(size_t(B * C), 0);
  avgpool_forward(pooled.data(), x.data(), B, P, C);
  const Tensor tx = dev(x), tdout = dev(dout);
  Tensor tpooled = dev_empty(B * C);
  cuda::avgpool_forward(tpooled.as<float>(), in(tx), B, P, C, kStream);
  check_nmse("avgpool", from_gpu(tpooled), pooled, kElementwise);
  Grad dx(x.size(), rng);
  avgpool_backward(dx.h(), dout.data(), B, P, C);
  cuda::avgpool_backward(dx.d(), in(tdout), B, P, C, kStream);
  dx.check("avgpool dx", kElementwise);

  const int64_t H = 17, W = 13, C3 = 3;
  const Vec img = random_vector(size_t(2 * C3 * H * W), rng);
  Vec nhwc(img.size()), back(img.size());
  nchw_to_nhwc(nhwc.data(), img.data(), 2, C3, H, W);
  nhwc_to_nchw(back.data(), nhwc.data(), 2, H, W, C3);
  const Tensor timg = dev(img);
  Tensor tnhwc = dev_empty(int64_t(img.size())), tback = dev_empty(int64_t(img.size()));
  cuda::nchw_to_nhwc(tnhwc.as<float>(), in(timg), 2, C3, H, W, kStream);
  cuda::nhwc_to_nchw(tback.as<float>(), in(tnhwc), 2, H, W, C3, kStream);
  CHECK(same_bits(from_gpu(tnhwc), nhwc));
  CHECK(same_bits(from_gpu(tback), img));
}

#else  // built without CUDA

TEST_CASE("cuda train op: norms, activations, layout skipped, built without CUDA") {
  MESSAGE("skipped: this build has no CUDA backend");
}

#endif  // MM_HAVE_CUDA
