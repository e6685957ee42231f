// The CUDA training backend's GEMM, Linear, dense and depthwise convolutions against the CPU
// ops they mirror (lib/ops/linear, conv2d, depthwise_conv; gemm_f32 against a naive double
// loop), forward and every gradient, in float32 by normalized MSE.
//
// Gradient buffers start non-zero on both sides, and what is compared is the increment
// (final - initial): an op that overwrote instead of accumulating would fail. Each backward
// also runs a second time from the same start and must give the same bits (no atomics).
#include <algorithm>
#include <cstring>
#include <functional>
#include <random>
#include <utility>
#include <vector>

#include "test_cuda_util.h"

#ifdef MM_HAVE_CUDA

#include "cuda_train_gemm_conv.h"
#include "cuda_train_ops.h"
#include "fast_divmod.h"
#include "ops/conv2d.h"
#include "ops/depthwise_conv.h"
#include "ops/linear.h"

using namespace mm;
using namespace mm::test;

namespace {

cuda::Stream kDefaultStream = nullptr;  // legacy stream: the test's copies order after the ops

constexpr double kGemmNmse = 1e-9;      // fp32 GEMMs and sums in another order than the CPU's

// The GEMM tolerance per compute: operands rounded to TF32 (2^-11 relative) or bf16 (2^-8),
// products summed in float32.
double gemm_nmse(cuda::GemmCompute c) {
  return c == cuda::GemmCompute::F32 ? kGemmNmse : c == cuda::GemmCompute::TF32 ? 1e-6 : 1e-4;
}

constexpr cuda::GemmCompute kAllComputes[] = {cuda::GemmCompute::F32, cuda::GemmCompute::TF32,
                                              cuda::GemmCompute::BF16};
constexpr double kElementNmse = 1e-10;  // depthwise conv: short sums per element

float* gpu_f32(Tensor& t) { return t.as<float>(); }

// A gradient buffer: the same non-zero start on the CPU and the GPU.
struct GradBuffer {
  std::vector<float> start, cpu;
  Tensor gpu;
  GradBuffer(size_t n, std::mt19937& rng) : start(random_vector(n, rng, 0.5f)), cpu(start), gpu(to_gpu(start, DType::F32)) {}
  float* cpu_ptr() { return cpu.data(); }
  float* gpu_ptr() { return gpu.as<float>(); }
  std::vector<float> gpu_result() const { return from_gpu(gpu); }
  void reset_gpu() { gpu = to_gpu(start, DType::F32); }
  // The increments of both sides, compared.
  void check(const std::string& what, double threshold) const {
    std::vector<float> got = gpu_result(), want = cpu;
    for (size_t i = 0; i < start.size(); ++i) {
      got[i] -= start[i];
      want[i] -= start[i];
    }
    check_nmse(what + " (increment over a non-zero start)", got, want, threshold);
  }
};

// Bit-for-bit equality of two runs' outputs.
void check_same_bits(const std::string& what, const std::vector<float>& a, const std::vector<float>& b) {
  INFO(what << ": two runs from the same start must give identical bits");
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Runs a backward that accumulates into the given GPU buffers twice from their start and
// checks the two results are bit-identical; leaves the first run's results in place.
void check_backward_deterministic(const std::string& what, std::vector<GradBuffer*> grads,
                                  const std::function<void()>& backward) {
  std::vector<std::vector<float>> first;
  for (GradBuffer* g : grads) first.push_back(g->gpu_result());
  for (GradBuffer* g : grads) g->reset_gpu();
  backward();
  for (size_t i = 0; i < grads.size(); ++i) check_same_bits(what, grads[i]->gpu_result(), first[i]);
}

}  // namespace

TEST_CASE("FastDivmod gives n / d and n % d exactly over 0 <= n < 2^31, 1 <= d < 2^31 (host side, the same code)") {
  std::mt19937 rng(31);
  int64_t wrong = 0;
  const auto check = [&](uint32_t d, uint32_t n) {
    const cuda::FastDivmod f(d);
    const uint32_t q = f.div(n);
    wrong += q != n / d || f.mod(n, q) != n % d;
  };
  for (uint32_t d = 1; d < 1200; ++d) {
    for (uint32_t n = 0; n < 2000; ++n) check(d, n);
    for (uint32_t n : {d * 1000 - 1, d * 1000, 0x7fffffffu - d, 0x7fffffffu}) check(d, n);
  }
  for (int k = 0; k < 200000; ++k) {
    const uint32_t d = 1 + rng() % 0x7ffffffeu, n = rng() % 0x80000000u;
    check(d, n);
    check(d, d - 1);
    check(d, d);
    check(d, 0x7fffffffu);
  }
  CHECK(wrong == 0);
}

TEST_CASE("cuda train op: gemm_f32 matches a naive loop for every transpose pair, beta 0 and 1, padded strides") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(11);
  const int64_t M = 37, N = 53, K = 29;
  const float alpha = 0.75f;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (float beta : {0.f, 1.f}) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(beta);
        // Stored shapes: A (M,K) or (K,M); B (K,N) or (N,K); every row stride padded.
        const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, lda = a_cols + 3;
        const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N, ldb = b_cols + 5;
        const int64_t ldc = N + 2;
        const auto A = random_vector(size_t(a_rows * lda), rng), B = random_vector(size_t(b_rows * ldb), rng);
        const auto C0 = random_vector(size_t(M * ldc), rng);
        std::vector<float> want = C0;  // padding columns stay as they were
        for (int64_t i = 0; i < M; ++i) {
          for (int64_t j = 0; j < N; ++j) {
            double sum = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double a = ta ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)];
              const double b = tb ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)];
              sum += a * b;
            }
            want[size_t(i * ldc + j)] = float(alpha * sum + beta * double(C0[size_t(i * ldc + j)]));
          }
        }
        Tensor dA = to_gpu(A, DType::F32), dB = to_gpu(B, DType::F32), dC = to_gpu(C0, DType::F32);
        cuda::gemm_f32(ta, tb, M, N, K, alpha, dA.as<float>(), lda, dB.as<float>(), ldb, beta, gpu_f32(dC), ldc,
                       kDefaultStream);
        check_nmse("gemm_f32", from_gpu(dC), want, kGemmNmse);
      }
    }
  }
}

namespace {

void check_linear(int64_t N, int64_t Cin, int64_t Cout, uint32_t seed,
                  cuda::GemmCompute compute = cuda::GemmCompute::F32) {
  CAPTURE(N);
  CAPTURE(int(compute));
  const cuda::GemmComputeScope scope(compute);
  const double kGemmNmse = gemm_nmse(compute);
  std::mt19937 rng(seed);
  const auto x = random_vector(size_t(N * Cin), rng), w = random_vector(size_t(Cout * Cin), rng, 0.2f);
  const auto bias = random_vector(size_t(Cout), rng, 0.1f), dout = random_vector(size_t(N * Cout), rng);
  const Tensor gx = to_gpu(x, DType::F32), gw = to_gpu(w, DType::F32), gb = to_gpu(bias, DType::F32);
  const Tensor gdout = to_gpu(dout, DType::F32);

  for (bool with_bias : {true, false}) {
    CAPTURE(with_bias);
    std::vector<float> want(size_t(N * Cout));
    linear_forward(want.data(), x.data(), w.data(), with_bias ? bias.data() : nullptr, N, Cin, Cout);
    Tensor gout = Tensor::empty({N * Cout}, DType::F32, Device::CUDA);
    cuda::linear_forward(gpu_f32(gout), gx.as<float>(), gw.as<float>(), with_bias ? gb.as<float>() : nullptr, N,
                         Cin, Cout, kDefaultStream);
    check_nmse("linear forward", from_gpu(gout), want, kGemmNmse);
  }

  GradBuffer dx(size_t(N * Cin), rng), dw(size_t(Cout * Cin), rng), db(size_t(Cout), rng);
  linear_backward(dx.cpu_ptr(), dw.cpu_ptr(), db.cpu_ptr(), dout.data(), x.data(), w.data(), N, Cin, Cout);
  const auto backward = [&] {
    cuda::linear_backward(dx.gpu_ptr(), dw.gpu_ptr(), db.gpu_ptr(), gdout.as<float>(), gx.as<float>(),
                          gw.as<float>(), N, Cin, Cout, kDefaultStream);
  };
  backward();
  dx.check("linear dx", kGemmNmse);
  dw.check("linear dweight", kGemmNmse);
  db.check("linear dbias", kGemmNmse);
  check_backward_deterministic("linear backward", {&dx, &dw, &db}, backward);

  // One gradient at a time gives the same bits as all three together.
  const std::vector<float> dw_all = dw.gpu_result(), db_all = db.gpu_result();
  dw.reset_gpu();
  db.reset_gpu();
  cuda::linear_backward(nullptr, dw.gpu_ptr(), nullptr, gdout.as<float>(), gx.as<float>(), gw.as<float>(), N, Cin,
                        Cout, kDefaultStream);
  cuda::linear_backward(nullptr, nullptr, db.gpu_ptr(), gdout.as<float>(), nullptr, nullptr, N, Cin, Cout,
                        kDefaultStream);
  check_same_bits("linear dweight alone", dw.gpu_result(), dw_all);
  check_same_bits("linear dbias alone", db.gpu_result(), db_all);

  // Under bf16 GEMMs, a dout its producer wrote in bf16 gives the bits of the float32 dout.
  if (compute == cuda::GemmCompute::BF16) {
    const auto grads = [&](cuda::GemmOperand d) {
      dx.reset_gpu();
      dw.reset_gpu();
      cuda::linear_backward(dx.gpu_ptr(), dw.gpu_ptr(), nullptr, d, cuda::f32_operand(gx.as<float>(), Cin),
                            gw.as<float>(), N, Cin, Cout, kDefaultStream);
      return std::make_pair(dx.gpu_result(), dw.gpu_result());
    };
    const auto f32 = grads(cuda::f32_operand(gdout.as<float>(), Cout));
    Tensor dout16 = to_gpu(std::vector<float>(size_t(N * Cout + 1) / 2, 0.f), DType::F32);
    const auto bf16 = grads(cuda::bf16_operand_copy(gdout.as<float>(), N, Cout, Cout,
                                                     reinterpret_cast<uint16_t*>(gpu_f32(dout16)), kDefaultStream));
    check_same_bits("linear dx from a bf16 dout", bf16.first, f32.first);
    check_same_bits("linear dweight from a bf16 dout", bf16.second, f32.second);
  }
}

}  // namespace

TEST_CASE("cuda train op: linear forward and backward match linear_forward/linear_backward (N=77, Cin=40, Cout=96)") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_linear(77, 40, 96, 21);
}

TEST_CASE("cuda train op: linear over many rows (several partial-sum parts for dbias) matches the CPU") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_linear(3001, 48, 40, 22);  // 12 parts of 251 rows
}

TEST_CASE("cuda train op: a bf16 GEMM reads a weight inside Bf16TwinScope from its twin, with the same bits") {
  MM_REQUIRE_GPU_OR_SKIP();
  const cuda::GemmComputeScope scope(cuda::GemmCompute::BF16);
  std::mt19937 rng(23);
  const int64_t N = 45, Cin = 40, Cout = 24, pad = 16;
  // The weight sits inside a larger buffer, as a parameter in the model's flat buffer.
  const auto params = random_vector(size_t(pad + Cout * Cin + pad), rng, 0.2f), x = random_vector(size_t(N * Cin), rng);
  std::vector<float> doubled = params;
  for (float& v : doubled) v *= 2.f;  // its bf16 rounding is exactly twice params' rounding
  const Tensor gparams = to_gpu(params, DType::F32), gdoubled = to_gpu(doubled, DType::F32), gx = to_gpu(x, DType::F32);
  const int64_t n = int64_t(params.size());
  Tensor twin = Tensor::empty({n}, DType::BF16, Device::CUDA), twin2 = Tensor::empty({n}, DType::BF16, Device::CUDA);
  cuda::bf16_operand_copy(gparams.as<float>(), 1, n, n, static_cast<uint16_t*>(twin.data()), kDefaultStream);
  cuda::bf16_operand_copy(gdoubled.as<float>(), 1, n, n, static_cast<uint16_t*>(twin2.data()), kDefaultStream);

  const float* w = gparams.as<float>() + pad;
  const auto forward = [&] {
    Tensor out = Tensor::empty({N * Cout}, DType::F32, Device::CUDA);
    cuda::linear_forward(gpu_f32(out), gx.as<float>(), w, nullptr, N, Cin, Cout, kDefaultStream);
    return from_gpu(out);
  };
  const std::vector<float> plain = forward();
  {
    const cuda::Bf16TwinScope twin_scope(gparams.as<float>(), n, static_cast<const uint16_t*>(twin.data()));
    check_same_bits("linear forward, weight from its twin", forward(), plain);
  }
  std::vector<float> twice = plain;
  for (float& v : twice) v *= 2.f;
  {
    // A twin that is not the weight's rounding shows which one the GEMM read.
    const cuda::Bf16TwinScope twin_scope(gparams.as<float>(), n, static_cast<const uint16_t*>(twin2.data()));
    check_same_bits("linear forward, weight from the doubled twin", forward(), twice);
  }
  check_same_bits("linear forward after the scope", forward(), plain);
}
namespace {

Conv2dShape cpu_shape(const cuda::ConvShape& c) {
  Conv2dShape s;
  s.B = c.B, s.H = c.H, s.W = c.W, s.Cin = c.Cin, s.Cout = c.Cout, s.KH = c.KH, s.KW = c.KW, s.stride = c.stride,
  s.pad = c.pad;
  return s;
}

void check_conv(const cuda::ConvShape& c, uint32_t seed, cuda::GemmCompute compute = cuda::GemmCompute::F32) {
  CAPTURE(int(compute));
  const cuda::GemmComputeScope scope(compute);
  const double kGemmNmse = gemm_nmse(compute);
  std::mt19937 rng(seed);
  const Conv2dShape s = cpu_shape(c);
  const int64_t in_n = c.B * c.H * c.W * c.Cin, out_n = c.B * c.out_h() * c.out_w() * c.Cout;
  const int64_t w_n = c.Cout * c.col_k();
  const auto x = random_vector(size_t(in_n), rng), w = random_vector(size_t(w_n), rng, 0.2f);
  const auto bias = random_vector(size_t(c.Cout), rng, 0.1f), dout = random_vector(size_t(out_n), rng);
  const Tensor gx = to_gpu(x, DType::F32), gw = to_gpu(w, DType::F32), gb = to_gpu(bias, DType::F32);
  const Tensor gdout = to_gpu(dout, DType::F32);
  const int64_t ws_n = cuda::conv2d_workspace_floats(c);
  if (c.KH == 1 && c.KW == 1 && c.stride == 1 && c.pad == 0) CHECK(ws_n == 0);
  else CHECK(ws_n >= c.B * c.out_h() * c.out_w() * c.col_k() + 2 * c.Cout * c.col_k());  // im2col, weights in its order
  Tensor ws = Tensor::empty({std::max<int64_t>(ws_n, 1)}, DType::F32, Device::CUDA);

  std::vector<float> want(static_cast<size_t>(out_n));
  conv2d_forward(want.data(), x.data(), w.data(), bias.data(), s, nullptr);
  Tensor gout = Tensor::empty({out_n}, DType::F32, Device::CUDA);
  cuda::conv2d_forward(gpu_f32(gout), gx.as<float>(), gw.as<float>(), gb.as<float>(), c, gpu_f32(ws), kDefaultStream);
  check_nmse("conv2d forward", from_gpu(gout), want, kGemmNmse);

  GradBuffer dx(size_t(in_n), rng), dw(size_t(w_n), rng), db(size_t(c.Cout), rng);
  conv2d_backward(dx.cpu_ptr(), dw.cpu_ptr(), db.cpu_ptr(), dout.data(), x.data(), w.data(), s, nullptr);
  const auto backward = [&] {
    cuda::conv2d_backward(dx.gpu_ptr(), dw.gpu_ptr(), db.gpu_ptr(), gdout.as<float>(), gx.as<float>(),
                          gw.as<float>(), c, gpu_f32(ws), kDefaultStream);
  };
  backward();
  dx.check("conv2d dx", kGemmNmse);
  dw.check("conv2d dweight", kGemmNmse);
  db.check("conv2d dbias", kGemmNmse);
  check_backward_deterministic("conv2d backward", {&dx, &dw, &db}, backward);

  // dx alone (no im2col of x before it) gives the same bits.
  const std::vector<float> dx_all = dx.gpu_result();
  dx.reset_gpu();
  cuda::conv2d_backward(dx.gpu_ptr(), nullptr, nullptr, gdout.as<float>(), gx.as<float>(), gw.as<float>(), c,
                        gpu_f32(ws), kDefaultStream);
  check_same_bits("conv2d dx alone", dx.gpu_result(), dx_all);

  // Under bf16 GEMMs, dout's bf16 rounding from its producer (dout_bf16) gives the same bits.
  if (compute == cuda::GemmCompute::BF16 && !(c.KH == 1 && c.KW == 1 && c.stride == 1 && c.pad == 0)) {
    const auto run = [&](const uint16_t* d16) {
      for (GradBuffer* g : {&dx, &dw, &db}) g->reset_gpu();
      cuda::conv2d_backward(dx.gpu_ptr(), dw.gpu_ptr(), db.gpu_ptr(), gdout.as<float>(), gx.as<float>(),
                            gw.as<float>(), c, gpu_f32(ws), kDefaultStream, cuda::GradOut::Accumulate, nullptr, d16);
      return std::vector<std::vector<float>>{dx.gpu_result(), dw.gpu_result(), db.gpu_result()};
    };
    const auto plain = run(nullptr);
    Tensor dout16 = to_gpu(std::vector<float>(size_t(out_n + 1) / 2, 0.f), DType::F32);
    auto* d16 = reinterpret_cast<uint16_t*>(gpu_f32(dout16));
    cuda::bf16_operand_copy(gdout.as<float>(), 1, out_n, out_n, d16, kDefaultStream);
    const auto given = run(d16);
    check_same_bits("conv2d dx from a bf16 dout", given[0], plain[0]);
    check_same_bits("conv2d dweight from a bf16 dout", given[1], plain[1]);
    check_same_bits("conv2d dbias with a bf16 dout", given[2], plain[2]);
  }
}

cuda::ConvShape conv_shape(int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k, int64_t stride,
                           int64_t pad) {
  cuda::ConvShape c;
  c.B = B, c.H = H, c.W = W, c.Cin = Cin, c.Cout = Cout, c.KH = k, c.KW = k, c.stride = stride, c.pad = pad;
  return c;
}

}  // namespace

TEST_CASE("cuda train op: conv2d 4x4 stride 4 patch embedding (Cin=3, S=32) matches conv2d_forward/backward") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_conv(conv_shape(2, 32, 32, 3, 48, 4, 4, 0), 31);
}

TEST_CASE("cuda train op: conv2d 3x3 pad 1 (C=24, 7x7, B=2) matches conv2d_forward/backward") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_conv(conv_shape(2, 7, 7, 24, 24, 3, 1, 1), 32);
}

TEST_CASE("cuda train op: conv2d 1x1 (Cin=40, Cout=96, 5x7, B=2) matches conv2d_forward/backward") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_conv(conv_shape(2, 5, 7, 40, 96, 1, 1, 0), 33);
}

TEST_CASE("cuda train op: conv2d 3x3 stride 2 pad 1 on odd sizes and 3x3 on 28x28 match conv2d_forward/backward") {
  MM_REQUIRE_GPU_OR_SKIP();
  SUBCASE("stride 2, 9x7") { check_conv(conv_shape(1, 9, 7, 8, 12, 3, 2, 1), 34); }
  SUBCASE("28x28, C=48, several dbias parts") { check_conv(conv_shape(2, 28, 28, 48, 40, 3, 1, 1), 35); }
  SUBCASE("4x4 stride 4 on 30x30 (the last rows and columns unread)") { check_conv(conv_shape(1, 30, 30, 3, 16, 4, 4, 0), 36); }
  SUBCASE("3x3 with Cin=6 (channels copied one at a time)") { check_conv(conv_shape(2, 6, 5, 6, 10, 3, 1, 1), 39); }
}

TEST_CASE("cuda train op: a 3x3 conv through a ConvInputMap gives the bits of the conv of the BatchNorm's output") {
  MM_REQUIRE_GPU_OR_SKIP();
  // x as the left halves of rows 2C apart (as a block's BN0 reads its input) or packed, with
  // and without the ReLU, in every GEMM compute: forward and dweight must not tell whether
  // the BatchNorm's output was written out or mapped by the conv's im2col.
  const cuda::ConvShape c = conv_shape(2, 9, 7, 24, 16, 3, 1, 1);
  const int64_t N = c.B * c.H * c.W, C = c.Cin, out_n = N * c.Cout;
  std::mt19937 rng(41);
  const auto w = random_vector(size_t(c.Cout * c.col_k()), rng, 0.2f), bias = random_vector(size_t(c.Cout), rng, 0.1f);
  const auto gamma = random_vector(size_t(C), rng, 0.3f, 1.f), beta = random_vector(size_t(C), rng, 0.5f);
  const auto dout = random_vector(size_t(out_n), rng);
  const Tensor gw = to_gpu(w, DType::F32), gb = to_gpu(bias, DType::F32), gg = to_gpu(gamma, DType::F32);
  const Tensor gbeta = to_gpu(beta, DType::F32), gdout = to_gpu(dout, DType::F32);
  Tensor ws = Tensor::empty({cuda::conv2d_workspace_floats(c)}, DType::F32, Device::CUDA);
  for (cuda::GemmCompute compute : kAllComputes) {
    const cuda::GemmComputeScope scope(compute);
    for (const int64_t ld : {int64_t(0), 2 * C}) {
      for (const bool relu : {false, true}) {
        CAPTURE(int(compute));
        CAPTURE(ld);
        CAPTURE(relu);
        const int64_t ldx = ld ? ld : C;
        const Tensor gx = to_gpu(random_vector(size_t(N * ldx), rng, 1.f, 0.3f), DType::F32);
        const auto device = [](int64_t n) { return Tensor::empty({n}, DType::F32, Device::CUDA); };
        Tensor mean = device(C), rstd = device(C), map = device(2 * C), bn = device(N * C);
        cuda::batchnorm_train_map(gpu_f32(map), gpu_f32(map) + C, gpu_f32(mean), gpu_f32(rstd), nullptr, nullptr,
                                  gx.as<float>(), gg.as<float>(), gbeta.as<float>(), N, C, kDefaultStream, ld);
        cuda::batchnorm_forward_saved(gpu_f32(bn), gx.as<float>(), gpu_f32(mean), gpu_f32(rstd), gg.as<float>(),
                                      gbeta.as<float>(), N, C, kDefaultStream, relu, ld);
        const cuda::ConvInputMap in{gpu_f32(map), gpu_f32(map) + C, relu, ld};
        Tensor want = device(out_n), got = device(out_n);
        cuda::conv2d_forward(gpu_f32(want), gpu_f32(bn), gw.as<float>(), gb.as<float>(), c, gpu_f32(ws),
                             kDefaultStream);
        cuda::conv2d_forward(gpu_f32(got), gx.as<float>(), gw.as<float>(), gb.as<float>(), c, gpu_f32(ws),
                             kDefaultStream, &in);
        check_same_bits("conv2d forward through the map", from_gpu(got), from_gpu(want));
        const std::vector<float> zeros(w.size(), 0.f);
        Tensor dw_want = to_gpu(zeros, DType::F32), dw_got = to_gpu(zeros, DType::F32);
        cuda::conv2d_backward(nullptr, gpu_f32(dw_want), nullptr, gdout.as<float>(), gpu_f32(bn), gw.as<float>(), c,
                              gpu_f32(ws), kDefaultStream);
        cuda::conv2d_backward(nullptr, gpu_f32(dw_got), nullptr, gdout.as<float>(), gx.as<float>(), gw.as<float>(), c,
                              gpu_f32(ws), kDefaultStream, cuda::GradOut::Accumulate, &in);
        check_same_bits("conv2d dweight through the map", from_gpu(dw_got), from_gpu(dw_want));
      }
    }
  }
}

TEST_CASE("cuda train op: linear and conv2d with TF32 and bf16 tensor-core GEMMs stay within their tolerance of the CPU") {
  MM_REQUIRE_GPU_OR_SKIP();
  for (cuda::GemmCompute compute : kAllComputes) {
    check_linear(301, 96, 40, 23, compute);
    check_conv(conv_shape(2, 14, 14, 48, 48, 3, 1, 1), 37, compute);
    check_conv(conv_shape(2, 32, 32, 3, 48, 4, 4, 0), 38, compute);
    check_conv(conv_shape(1, 9, 7, 6, 12, 3, 2, 1), 40, compute);
  }
  CHECK(cuda::gemm_compute() == cuda::GemmCompute::F32);
}

namespace {

void check_dwconv(int64_t B, int64_t H, int64_t W, int64_t C, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t n = B * H * W * C;
  const auto x = random_vector(size_t(n), rng), w = random_vector(size_t(C * 9), rng, 0.3f);
  const auto bias = random_vector(size_t(C), rng, 0.1f), dout = random_vector(size_t(n), rng);
  const Tensor gx = to_gpu(x, DType::F32), gw = to_gpu(w, DType::F32), gb = to_gpu(bias, DType::F32);
  const Tensor gdout = to_gpu(dout, DType::F32);

  for (bool with_bias : {true, false}) {
    CAPTURE(with_bias);
    std::vector<float> want(static_cast<size_t>(n));
    dwconv3x3_forward(want.data(), x.data(), w.data(), with_bias ? bias.data() : nullptr, B, H, W, C);
    Tensor gout = Tensor::empty({n}, DType::F32, Device::CUDA);
    cuda::dwconv3x3_forward(gpu_f32(gout), gx.as<float>(), gw.as<float>(), with_bias ? gb.as<float>() : nullptr, B,
                            H, W, C, kDefaultStream);
    check_nmse("dwconv3x3 forward", from_gpu(gout), want, kElementNmse);

    // With SiLU from the same pass (the training block's u): both outputs are the bits of the
    // conv alone and of silu_forward after it.
    Tensor fused = Tensor::empty({n}, DType::F32, Device::CUDA), fused_silu = Tensor::empty({n}, DType::F32, Device::CUDA);
    Tensor silu_after = Tensor::empty({n}, DType::F32, Device::CUDA);
    cuda::dwconv3x3_forward(gpu_f32(fused), gx.as<float>(), gw.as<float>(), with_bias ? gb.as<float>() : nullptr, B,
                            H, W, C, kDefaultStream, gpu_f32(fused_silu));
    cuda::silu_forward(gpu_f32(silu_after), gout.as<float>(), n, kDefaultStream);
    check_same_bits("dwconv3x3 forward, fused with SiLU", from_gpu(fused), from_gpu(gout));
    check_same_bits("dwconv3x3's SiLU output", from_gpu(fused_silu), from_gpu(silu_after));
    // And SiLU's bf16 rounding beside it (for the scan's bf16 GEMMs): a bf16 GEMM's rounding.
    const std::vector<float> halves(size_t(n + 1) / 2, 0.f);
    Tensor silu16 = to_gpu(halves, DType::F32), want16 = to_gpu(halves, DType::F32);
    cuda::dwconv3x3_forward(gpu_f32(fused), gx.as<float>(), gw.as<float>(), with_bias ? gb.as<float>() : nullptr, B,
                            H, W, C, kDefaultStream, gpu_f32(fused_silu), reinterpret_cast<uint16_t*>(gpu_f32(silu16)));
    cuda::bf16_operand_copy(silu_after.as<float>(), 1, n, n, reinterpret_cast<uint16_t*>(gpu_f32(want16)),
                            kDefaultStream);
    check_same_bits("dwconv3x3's SiLU output in bf16", from_gpu(silu16), from_gpu(want16));
  }

  GradBuffer dx(size_t(n), rng), dw(size_t(C * 9), rng), db(size_t(C), rng);
  dwconv3x3_backward(dx.cpu_ptr(), dw.cpu_ptr(), db.cpu_ptr(), dout.data(), x.data(), w.data(), B, H, W, C);
  const auto backward = [&] {
    cuda::dwconv3x3_backward(dx.gpu_ptr(), dw.gpu_ptr(), db.gpu_ptr(), gdout.as<float>(), gx.as<float>(),
                             gw.as<float>(), B, H, W, C, kDefaultStream);
  };
  backward();
  dx.check("dwconv3x3 dx", kElementNmse);
  dw.check("dwconv3x3 dweight", kElementNmse);
  db.check("dwconv3x3 dbias", kElementNmse);
  check_backward_deterministic("dwconv3x3 backward", {&dx, &dw, &db}, backward);

  // dbias alone and dweight alone give the same bits as together.
  const std::vector<float> dw_all = dw.gpu_result(), db_all = db.gpu_result();
  dw.reset_gpu();
  db.reset_gpu();
  cuda::dwconv3x3_backward(nullptr, dw.gpu_ptr(), nullptr, gdout.as<float>(), gx.as<float>(), gw.as<float>(), B, H,
                           W, C, kDefaultStream);
  cuda::dwconv3x3_backward(nullptr, nullptr, db.gpu_ptr(), gdout.as<float>(), gx.as<float>(), gw.as<float>(), B, H,
                           W, C, kDefaultStream);
  check_same_bits("dwconv3x3 dweight alone", dw.gpu_result(), dw_all);
  check_same_bits("dwconv3x3 dbias alone", db.gpu_result(), db_all);

  // dx written in bf16 (the training block's dxin under bf16 GEMMs): the rounding a bf16 GEMM
  // makes of the float32 dx.
  Tensor dx32 = Tensor::empty({n}, DType::F32, Device::CUDA);
  cuda::dwconv3x3_backward(gpu_f32(dx32), nullptr, nullptr, gdout.as<float>(), gx.as<float>(), gw.as<float>(), B, H,
                           W, C, kDefaultStream, cuda::GradOut::Overwrite);
  const std::vector<float> halves(size_t(n + 1) / 2, 0.f);  // zeroed: an odd n leaves half a float unwritten
  Tensor got16 = to_gpu(halves, DType::F32), want16 = to_gpu(halves, DType::F32);
  cuda::dwconv3x3_backward_dx_bf16(reinterpret_cast<uint16_t*>(gpu_f32(got16)), gdout.as<float>(), gw.as<float>(), B,
                                   H, W, C, kDefaultStream);
  cuda::bf16_operand_copy(dx32.as<float>(), 1, n, n, reinterpret_cast<uint16_t*>(gpu_f32(want16)), kDefaultStream);
  check_same_bits("dwconv3x3 dx in bf16", from_gpu(got16), from_gpu(want16));
}

}  // namespace

TEST_CASE("cuda train op: dwconv3x3 (C=40, 9x7, B=2) matches dwconv3x3_forward/backward") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_dwconv(2, 9, 7, 40, 41);
}

TEST_CASE("cuda train op: dwconv3x3 over many pixels (several partial-sum parts, C=48, 28x28, B=4) matches the CPU") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_dwconv(4, 28, 28, 48, 42);
}

TEST_CASE("cuda train op: dwconv3x3 with C=6 (one channel a thread) matches the CPU") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_dwconv(2, 5, 6, 6, 44);
}

TEST_CASE("cuda train op: dwconv3x3 on a 1-pixel-wide image (every tap but the centre column clipped)") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_dwconv(3, 5, 1, 40, 43);
}

#endif  // MM_HAVE_CUDA
