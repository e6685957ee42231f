// GradOut::Overwrite (kernels/cuda_ops.h): every training backward op that can write its
// input gradient instead of adding into it gives the values that adding into zeros gives.
// The overwritten buffer starts as NaNs, so an element the op fails to write shows up. The
// accumulating mode itself is checked against the CPU ops in the other test_cuda_train_*.cpp.
#include <limits>
#include <random>
#include <vector>

#include "cuda_train_test_util.h"

#ifdef MM_HAVE_CUDA

#include "cuda_train_gemm_conv.h"

using namespace mm;
using namespace mm::test;

namespace {

using cuda::GradOut;

// Elementwise ops do the same float operations either way: only the zero added differs.
constexpr double kSameValues = 0.0;
// A GEMM with beta 0 may take another cuBLAS kernel than with beta 1, summing in another order.
constexpr double kGemmOrder = 1e-12;

// op(dx, mode) run into zeros (Accumulate) and into NaNs (Overwrite); the results must agree.
template <class Op>
void check_overwrite(const char* what, int64_t n, double threshold, Op op) {
  Tensor added = dev(Vec(size_t(n), 0.f));
  Tensor written = dev(Vec(size_t(n), std::numeric_limits<float>::quiet_NaN()));
  op(added.as<float>(), GradOut::Accumulate);
  op(written.as<float>(), GradOut::Overwrite);
  check_nmse(what, from_gpu(written), from_gpu(added), threshold);
}

}  // namespace

TEST_CASE("cuda train op: GradOut::Overwrite of activations, gate and layout moves equals adding into zeros") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(41);
  for (const int64_t n : {3 * 10007, 4 * 10007}) {  // one element a thread, then float4s
    CAPTURE(n);
    const Tensor x = dev(random_vector(size_t(n), rng, 3.f)), z = dev(random_vector(size_t(n), rng, 3.f)),
                 dout = dev(random_vector(size_t(n), rng));
    check_overwrite("relu dx", n, kSameValues,
                    [&](float* dx, GradOut m) { cuda::relu_backward(dx, in(dout), in(x), n, kStream, m); });
    check_overwrite("silu dx", n, kSameValues,
                    [&](float* dx, GradOut m) { cuda::silu_backward(dx, in(dout), in(x), n, kStream, m); });
    check_overwrite("gate dyn", n, kSameValues, [&](float* d, GradOut m) {
      cuda::gate_backward(d, nullptr, in(dout), in(x), in(z), n, kStream, m);
    });
    check_overwrite("gate dz", n, kSameValues, [&](float* d, GradOut m) {
      cuda::gate_backward(nullptr, d, in(dout), in(x), in(z), n, kStream, m);
    });
  }
  for (const int64_t c : {40, 6}) {
    CAPTURE(c);
    const int64_t P = 2 * 7 * 7 + 1;
    const Tensor l = dev(random_vector(size_t(P * c), rng)), r = dev(random_vector(size_t(P * c), rng)),
                 x = dev(random_vector(size_t(P * 2 * c), rng));
    check_overwrite("split dx", P * 2 * c, kSameValues, [&](float* dx, GradOut m) {
      cuda::split_halves_backward(dx, in(l), in(r), P, c, kStream, m);
    });
    check_overwrite("shuffle dl", P * c, kSameValues, [&](float* d, GradOut m) {
      cuda::concat_shuffle_backward(d, nullptr, in(x), P, c, kStream, m);
    });
    check_overwrite("shuffle ds", P * c, kSameValues, [&](float* d, GradOut m) {
      cuda::concat_shuffle_backward(nullptr, d, in(x), P, c, kStream, m);
    });
  }
  // Half of dx would be left as it was.
  const Tensor half = dev(Vec(8, 1.f));
  Tensor dx = dev_empty(16);
  CHECK_THROWS(cuda::split_halves_backward(dx.as<float>(), in(half), nullptr, 2, 4, kStream, GradOut::Overwrite));
}

TEST_CASE("cuda train op: GradOut::Overwrite of LayerNorm and BatchNorm dx equals adding into zeros") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(42);
  // 96 channels take the lane-group kernel, 42 (not float4s) the warp-per-row one.
  for (const auto& shape : {std::pair<int64_t, int64_t>{3 * 13 * 11, 96}, {11, 42}, {3 * 29 * 31, 48}}) {
    const int64_t N = shape.first, C = shape.second;
    CAPTURE(N);
    CAPTURE(C);
    const Tensor x = dev(random_vector(size_t(N * C), rng, 2.f, 0.5f)), dout = dev(random_vector(size_t(N * C), rng)),
                 w = dev(random_vector(size_t(C), rng, 0.3f, 1.f)), b = dev(random_vector(size_t(C), rng, 0.2f));
    Tensor row_mean = dev_empty(N), row_rstd = dev_empty(N), out = dev_empty(N * C);
    cuda::layernorm_forward(out.as<float>(), row_mean.as<float>(), row_rstd.as<float>(), in(x), in(w), in(b), N, C,
                            kStream);
    check_overwrite("layernorm dx", N * C, kSameValues, [&](float* dx, GradOut m) {
      cuda::layernorm_backward(dx, nullptr, nullptr, in(dout), in(x), in(w), in(row_mean), in(row_rstd), N, C,
                               kStream, m);
    });

    Tensor mean = dev_empty(C), rstd = dev_empty(C);
    cuda::batchnorm_forward_train(out.as<float>(), mean.as<float>(), rstd.as<float>(), nullptr, nullptr, in(x), in(w),
                                  in(b), N, C, kStream);
    check_overwrite("batchnorm (train) dx", N * C, kSameValues, [&](float* dx, GradOut m) {
      cuda::batchnorm_backward_train(dx, nullptr, nullptr, in(dout), in(x), in(w), in(mean), in(rstd), N, C,
                                     kStream, m);
    });
    const Tensor running_var = dev(random_vector(size_t(C), rng, 0.1f, 1.f));
    check_overwrite("batchnorm (eval) dx", N * C, kSameValues, [&](float* dx, GradOut m) {
      cuda::batchnorm_backward_eval(dx, nullptr, nullptr, in(dout), in(x), in(mean), in(running_var), in(w), N, C,
                                    kStream, m);
    });
  }
}

TEST_CASE("cuda train op: GradOut::Overwrite of linear, convolution and depthwise dx equals adding into zeros") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(43);
  {
    const int64_t N = 77, Cin = 40, Cout = 96;
    const Tensor dout = dev(random_vector(size_t(N * Cout), rng)), w = dev(random_vector(size_t(Cout * Cin), rng));
    check_overwrite("linear dx", N * Cin, kGemmOrder, [&](float* dx, GradOut m) {
      cuda::linear_backward(dx, nullptr, nullptr, in(dout), nullptr, in(w), N, Cin, Cout, kStream, m);
    });
  }
  for (const int64_t k : {3, 1}) {
    CAPTURE(k);
    cuda::ConvShape c;
    c.B = 2, c.H = 9, c.W = 7, c.Cin = 24, c.Cout = 24, c.KH = c.KW = k, c.pad = k / 2;
    const int64_t n = c.B * c.H * c.W * c.Cin;
    const Tensor x = dev(random_vector(size_t(n), rng)), dout = dev(random_vector(size_t(n), rng)),
                 w = dev(random_vector(size_t(c.Cout * c.col_k()), rng, 0.2f));
    Tensor ws = dev_empty(std::max<int64_t>(cuda::conv2d_workspace_floats(c), 1));
    check_overwrite("conv2d dx", n, kGemmOrder, [&](float* dx, GradOut m) {
      cuda::conv2d_backward(dx, nullptr, nullptr, in(dout), in(x), in(w), c, ws.as<float>(), kStream, m);
    });
  }
  {
    const int64_t B = 2, H = 9, W = 7, C = 40, n = B * H * W * C;
    const Tensor dout = dev(random_vector(size_t(n), rng)), w = dev(random_vector(size_t(9 * C), rng, 0.3f));
    check_overwrite("depthwise dx", n, kSameValues, [&](float* dx, GradOut m) {
      cuda::dwconv3x3_backward(dx, nullptr, nullptr, in(dout), nullptr, in(w), B, H, W, C, kStream, m);
    });
  }
}

#endif  // MM_HAVE_CUDA
