// Every CUDA inference op against the CPU op it replaces, in float32, bfloat16 and float16,
// by normalized MSE. Inputs are rounded to the op's element type first, so the CPU
// reference sees the same inputs and the threshold measures the op's own error (mostly the
// rounding of its output). The CUDA ops are inference only: there is no backward to check.
#include <algorithm>
#include <random>
#include <vector>

#include "test_cuda_util.h"

#ifdef MM_HAVE_CUDA

#include "core/error.h"
#include "cuda_ops.h"
#include "ops/activations.h"
#include "ops/batchnorm.h"
#include "ops/conv2d.h"
#include "ops/depthwise_conv.h"
#include "ops/layernorm.h"
#include "ops/layout.h"
#include "ops/linear.h"
#include "ops/selective_scan.h"

using namespace mm;
using namespace mm::test;

namespace {

constexpr DType kTypes[] = {DType::F32, DType::BF16, DType::F16};

// What rounding the output to dt costs in normalized MSE, with a margin.
double output_nmse(DType dt) { return dt == DType::F32 ? 1e-10 : dt == DType::F16 ? 1e-6 : 2e-5; }
// GEMMs: float32 runs on TF32 tensor cores (10-bit mantissa inputs).
double gemm_nmse(DType dt) { return dt == DType::F32 ? 1e-5 : output_nmse(dt); }

cuda::Stream kDefaultStream = nullptr;  // legacy stream: the test's copies order after the ops

}  // namespace

// Row lengths cover the lane-group kernels (one to eight 16-byte packs a lane: 48 is ln_1 at
// MedMamba-T's stage 1, 2048 in bf16 is eight packs on 32 lanes) and the warp-per-row kernel
// (42 is not in packs; 2048 in float32 is too long for a group). Odd row counts leave lanes
// of the last group without a row.
TEST_CASE("cuda op: layernorm on strided rows (ln_1 on the right half) matches layernorm_forward") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(1);
  for (int64_t c : {40, 48, 96, 384, 1000, 2048, 42}) {
    const int64_t P = c > 500 ? 37 : 2 * 7 * 7 + 1, C = 2 * c;
    CAPTURE(c);
    const auto w = random_vector(c, rng, 0.3f, 1.f), b = random_vector(c, rng, 0.2f);
    const Tensor dw = to_gpu(w, DType::F32), db = to_gpu(b, DType::F32);
    for (DType dt : kTypes) {
      CAPTURE(std::string(dtype_name(dt)));
      const auto x = rounded(random_vector(size_t(P * C), rng, 2.f, 0.5f), dt);
      std::vector<float> right(size_t(P * c)), want(size_t(P * c));
      for (int64_t p = 0; p < P; ++p)
        for (int64_t j = 0; j < c; ++j) right[size_t(p * c + j)] = x[size_t(p * C + c + j)];
      layernorm_forward(want.data(), nullptr, nullptr, right.data(), w.data(), b.data(), P, c);
      Tensor dx = to_gpu(x, dt), dout = Tensor::empty({P * c}, dt, Device::CUDA);
      cuda::layernorm(dt, dout.data(), static_cast<char*>(dx.data()) + c * dtype_size(dt), C, dw.as<float>(),
                      db.as<float>(), P, c, kDefaultStream);
      check_nmse("layernorm", from_gpu(dout), want, output_nmse(dt));
    }
  }
}

TEST_CASE("cuda op: merge_layernorm matches patch_gather_forward + layernorm_forward") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(2);
  // C = 20: groups in float32 only; 384: 4C = 1536 is a group in bf16, a warp per row in float32
  for (int64_t C : {24, 20, 384}) {
    const int64_t B = 2, H = 6, W = 4, Po = B * (H / 2) * (W / 2);
    CAPTURE(C);
    const auto w = random_vector(4 * C, rng, 0.3f, 1.f), b = random_vector(4 * C, rng, 0.2f);
    for (DType dt : kTypes) {
      CAPTURE(std::string(dtype_name(dt)));
      const auto x = rounded(random_vector(size_t(B * H * W * C), rng), dt);
      std::vector<float> gathered(size_t(Po * 4 * C)), want(gathered.size());
      patch_gather_forward(gathered.data(), x.data(), B, H, W, C);
      layernorm_forward(want.data(), nullptr, nullptr, gathered.data(), w.data(), b.data(), Po, 4 * C);
      Tensor dx = to_gpu(x, dt), dout = Tensor::empty({Po * 4 * C}, dt, Device::CUDA);
      cuda::merge_layernorm(dt, dout.data(), dx.data(), to_gpu(w, DType::F32).as<float>(),
                            to_gpu(b, DType::F32).as<float>(), B, H, W, C, kDefaultStream);
      check_nmse("merge_layernorm", from_gpu(dout), want, output_nmse(dt));
    }
  }
}

TEST_CASE("cuda op: layernorm_gate matches layernorm_forward(y) * silu(z)") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(3);
  for (int64_t D : {72, 96, 768, 36}) {
    const int64_t P = 3 * 5 * 5;
    CAPTURE(D);
    const auto w = random_vector(D, rng, 0.3f, 1.f), b = random_vector(D, rng, 0.2f);
    const auto y = random_vector(size_t(P * D), rng, 3.f, 1.f);
    for (DType dt : kTypes) {
      CAPTURE(std::string(dtype_name(dt)));
      const auto xz = rounded(random_vector(size_t(P * 2 * D), rng), dt);  // z = xz[:, D:]
      std::vector<float> want(size_t(P * D));
      layernorm_forward(want.data(), nullptr, nullptr, y.data(), w.data(), b.data(), P, D);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t j = 0; j < D; ++j) want[size_t(p * D + j)] *= silu(xz[size_t(p * 2 * D + D + j)]);
      Tensor dxz = to_gpu(xz, dt), dout = Tensor::empty({P * D}, dt, Device::CUDA);
      cuda::layernorm_gate(dt, dout.data(), to_gpu(y, DType::F32).as<float>(),
                           static_cast<char*>(dxz.data()) + D * dtype_size(dt), 2 * D,
                           to_gpu(w, DType::F32).as<float>(), to_gpu(b, DType::F32).as<float>(), P, D, kDefaultStream);
      check_nmse("layernorm_gate", from_gpu(dout), want, output_nmse(dt));
    }
  }
}

// D = 48: 8 channels a thread in bf16/fp16, 4 in float32; 20: 4; 6: 1. B·H image rows are
// walked 8 to a thread, so these shapes have runs of rows that cross from one image to the next.
TEST_CASE("cuda op: dwconv3x3_silu matches dwconv3x3_forward + silu_forward") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(4);
  struct Shape { int64_t B, H, W, D; };
  for (const Shape sh : {Shape{2, 5, 7, 48}, Shape{5, 3, 4, 20}, Shape{3, 6, 2, 6}}) {
    const int64_t B = sh.B, H = sh.H, W = sh.W, D = sh.D, P = B * H * W;
    CAPTURE(D);
    const auto w = random_vector(D * 9, rng, 0.3f), bias = random_vector(D, rng, 0.1f);
    for (DType dt : kTypes) {
      CAPTURE(std::string(dtype_name(dt)));
      const auto xz = rounded(random_vector(size_t(P * 2 * D), rng), dt);  // x = xz[:, :D]
      std::vector<float> xin(size_t(P * D)), want(size_t(P * D));
      for (int64_t p = 0; p < P; ++p)
        for (int64_t j = 0; j < D; ++j) xin[size_t(p * D + j)] = xz[size_t(p * 2 * D + j)];
      dwconv3x3_forward(want.data(), xin.data(), w.data(), bias.data(), B, H, W, D);
      silu_forward(want.data(), want.data(), P * D);
      std::vector<float> w_taps(w.size());  // (3,3,D), the kernel's layout
      for (int64_t c = 0; c < D; ++c)
        for (int64_t k = 0; k < 9; ++k) w_taps[size_t(k * D + c)] = w[size_t(c * 9 + k)];
      Tensor dxz = to_gpu(xz, dt), dout = Tensor::empty({P * D}, dt, Device::CUDA);
      // The y it zeroes on the way (the scan's output): every element, nothing past it.
      Tensor zero = to_gpu(std::vector<float>(size_t(P * D + 4), 7.f), DType::F32);
      cuda::dwconv3x3_silu(dt, dout.data(), dxz.data(), 2 * D, to_gpu(w_taps, DType::F32).as<float>(),
                           to_gpu(bias, DType::F32).as<float>(), B, H, W, D, kDefaultStream, zero.as<float>());
      check_nmse("dwconv3x3_silu", from_gpu(dout), want, output_nmse(dt));
      const std::vector<float> z = from_gpu(zero);
      CHECK(std::count(z.begin(), z.begin() + P * D, 0.f) == P * D);
      CHECK(std::count(z.begin() + P * D, z.end(), 7.f) == 4);
    }
  }
}

// The conv branch's first conv on the CPU: want (P,c) = ReLU(conv3x3(BN(x[:, :c])) + bias), x (P,2c),
// wt (co,ci,kh,kw); with_bn false: no BN (the block's second conv). Returns the weights in the
// GPU's (co,kh,kw,ci) layout in w_khkwci and the BN as scale/shift.
namespace {
struct ConvBranchCase {
  std::vector<float> x, wt, bias, want, w_khkwci, scale, shift;
};
ConvBranchCase conv_branch_case(std::mt19937& rng, DType dt, int64_t B, int64_t H, int64_t W, int64_t c, bool with_bn) {
  const int64_t C = 2 * c, P = B * H * W;
  ConvBranchCase k;
  const auto bn_w = random_vector(c, rng, 0.2f, 1.f), bn_b = random_vector(c, rng, 0.2f);
  const auto rm = random_vector(c, rng, 0.3f), rv = random_vector(c, rng, 0.2f, 1.2f);
  k.scale.resize(size_t(c));
  k.shift.resize(size_t(c));
  for (int64_t i = 0; i < c; ++i) {
    k.scale[size_t(i)] = bn_w[size_t(i)] / std::sqrt(rv[size_t(i)] + 1e-5f);
    k.shift[size_t(i)] = bn_b[size_t(i)] - rm[size_t(i)] * k.scale[size_t(i)];
  }
  k.x = rounded(random_vector(size_t(P * C), rng), dt);
  k.wt = rounded(random_vector(size_t(c * c * 9), rng, 0.1f), dt);  // (co,ci,kh,kw)
  k.bias = rounded(random_vector(size_t(c), rng, 0.1f), dt);
  std::vector<float> left(size_t(P * c)), normed(size_t(P * c));
  k.want.resize(size_t(P * c));
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < c; ++j) left[size_t(p * c + j)] = k.x[size_t(p * C + j)];
  if (with_bn)
    batchnorm_forward_eval(normed.data(), left.data(), rm.data(), rv.data(), bn_w.data(), bn_b.data(), P, c);
  else
    normed = left;
  Conv2dShape cs;
  cs.B = B; cs.H = H; cs.W = W; cs.Cin = c; cs.Cout = c; cs.KH = cs.KW = 3; cs.pad = 1;
  conv2d_forward(k.want.data(), normed.data(), k.wt.data(), k.bias.data(), cs, nullptr);
  relu_forward(k.want.data(), k.want.data(), P * c);
  k.w_khkwci.resize(k.wt.size());  // the layout of im2col3x3's columns
  for (int64_t co = 0; co < c; ++co)
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t t = 0; t < 9; ++t) k.w_khkwci[size_t((co * 9 + t) * c + ci)] = k.wt[size_t((co * c + ci) * 9 + t)];
  return k;
}
}  // namespace

// c = 20: 4 channels a thread; 48: 8 in bf16/fp16; 6: 1. Without BN: the block's second conv.
TEST_CASE("cuda op: BN -> conv3x3 -> ReLU as im2col3x3 + GEMM matches the CPU ops") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(5);
  cuda::GemmRunner gemm(/*allow_tf32=*/true);
  for (int64_t c : {20, 48, 6})
    for (bool with_bn : {true, false}) {
      const int64_t B = 2, H = 6, W = 5, C = 2 * c, P = B * H * W;  // left half of a (P,C) input
      CAPTURE(c);
      CAPTURE(with_bn);
      for (DType dt : kTypes) {
        CAPTURE(std::string(dtype_name(dt)));
        const ConvBranchCase k = conv_branch_case(rng, dt, B, H, W, c, with_bn);
        Tensor dx = to_gpu(k.x, dt), col = Tensor::empty({P * 9 * c}, dt, Device::CUDA);
        Tensor dout = Tensor::empty({P * c}, dt, Device::CUDA), dw = to_gpu(k.w_khkwci, dt), db = to_gpu(k.bias, dt);
        const Tensor dscale = to_gpu(k.scale, DType::F32), dshift = to_gpu(k.shift, DType::F32);
        cuda::im2col3x3(dt, col.data(), dx.data(), C, with_bn ? dscale.as<float>() : nullptr,
                        with_bn ? dshift.as<float>() : nullptr, B, H, W, c, kDefaultStream);
        cuda::GemmArgs a;
        a.M = P; a.N = c; a.K = 9 * c; a.x = col.data(); a.ldx = 9 * c; a.x_type = dt; a.w = dw.data();
        a.out = dout.data(); a.ldo = c; a.out_type = dt; a.bias = db.data(); a.relu = true;
        gemm.run(a, kDefaultStream);
        // The BN'd input is rounded to dt in the im2col matrix: twice the output rounding.
        check_nmse("conv3x3", from_gpu(dout), k.want, 3 * gemm_nmse(dt));
      }
    }
}

// The implicit-GEMM conv (bf16/fp16): several 256-pixel tiles (the last one partial), tiles
// that cross image rows and images, a tile over three images (7x7), wide rows (W = 70: a halo
// of 398 rows); 48-channel output tiles (48, 96, 192) and 64-channel ones (32, 16, 128: two
// tiles); chunks of 48, 32, 16 and 64 channels, one chunk or several (96: 2, 128: 2, 192: 3).
TEST_CASE("cuda op: conv3x3_implicit (BN -> conv3x3 -> ReLU without im2col) matches the CPU ops") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(15);
  struct Shape { int64_t B, H, W, c; };
  for (const Shape sh : {Shape{4, 9, 13, 48}, Shape{3, 7, 7, 96}, Shape{1, 14, 14, 32}, Shape{2, 5, 3, 16},
                         Shape{1, 6, 11, 128}, Shape{2, 4, 70, 48}, Shape{2, 8, 5, 192}})
    for (bool with_bn : {true, false})
      for (DType dt : {DType::BF16, DType::F16, DType::F32}) {  // F32: TF32 tensor cores
        const int64_t B = sh.B, H = sh.H, W = sh.W, c = sh.c, C = 2 * c, P = B * H * W;
        CAPTURE(c);
        CAPTURE(H);
        CAPTURE(with_bn);
        CAPTURE(std::string(dtype_name(dt)));
        const ConvBranchCase k = conv_branch_case(rng, dt, B, H, W, c, with_bn);
        Tensor dx = to_gpu(k.x, dt), dw = to_gpu(k.w_khkwci, dt), db = to_gpu(k.bias, dt);
        Tensor dout = Tensor::empty({P * c}, dt, Device::CUDA);
        const Tensor dscale = to_gpu(k.scale, DType::F32), dshift = to_gpu(k.shift, DType::F32);
        REQUIRE(cuda::conv3x3_implicit_supported(dt, dout.data(), c, dx.data(), C, dw.data(), B, H, W, c, c));
        cuda::conv3x3_implicit(dt, dout.data(), c, dx.data(), C, with_bn ? dscale.as<float>() : nullptr,
                               with_bn ? dshift.as<float>() : nullptr, dw.data(), db.data(), /*relu=*/true, B, H, W,
                               c, c, kDefaultStream);
        check_nmse("conv3x3_implicit", from_gpu(dout), k.want, 3 * gemm_nmse(dt));
      }
  CHECK_FALSE(cuda::conv3x3_implicit_supported(DType::F64, nullptr, 48, nullptr, 96, nullptr, 1, 4, 4, 48, 48));
  CHECK_FALSE(cuda::conv3x3_implicit_supported(DType::BF16, nullptr, 20, nullptr, 40, nullptr, 1, 4, 4, 20, 20));
  CHECK_FALSE(cuda::conv3x3_implicit_supported(DType::F32, nullptr, 48, nullptr, 98, nullptr, 1, 4, 4, 48, 48));
  // A row of 4096 pixels: the halo of a tile does not fit in shared memory.
  CHECK(cuda::conv3x3_implicit_supported(DType::BF16, nullptr, 64, nullptr, 64, nullptr, 1, 4, 256, 64, 64));
  CHECK_FALSE(cuda::conv3x3_implicit_supported(DType::BF16, nullptr, 64, nullptr, 64, nullptr, 1, 4, 4096, 64, 64));
}

// k = 4: 16-byte loads of 4 image values; k = 2: one value at a time.
TEST_CASE("cuda op: patchify + GEMM matches the 4x4 stride-4 conv2d_forward of the patch embedding") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(6);
  cuda::GemmRunner gemm(true);
  for (int64_t k : {4, 2}) {
    const int64_t B = 2, Cin = 3, S = 16, C0 = 24, P = B * (S / k) * (S / k), K = Cin * k * k;
    CAPTURE(k);
    const auto img = random_vector(size_t(B * Cin * S * S), rng);
    std::vector<float> nhwc(img.size());
    nchw_to_nhwc(nhwc.data(), img.data(), B, Cin, S, S);
    for (DType dt : kTypes) {
      CAPTURE(std::string(dtype_name(dt)));
      const auto wt = rounded(random_vector(size_t(C0 * K), rng, 0.2f), dt);
      const auto bias = rounded(random_vector(size_t(C0), rng, 0.1f), dt);
      // The GPU rounds the image to dt inside patchify: give the CPU the same rounding.
      const auto nhwc_r = rounded(nhwc, dt);
      std::vector<float> want(size_t(P * C0));
      Conv2dShape cs;
      cs.B = B; cs.H = S; cs.W = S; cs.Cin = Cin; cs.Cout = C0; cs.KH = cs.KW = k; cs.stride = k;
      conv2d_forward(want.data(), nhwc_r.data(), wt.data(), bias.data(), cs, nullptr);
      Tensor dimg = to_gpu(img, DType::F32), col = Tensor::empty({P * K}, dt, Device::CUDA);
      Tensor dout = Tensor::empty({P * C0}, dt, Device::CUDA), dw = to_gpu(wt, dt), db = to_gpu(bias, dt);
      cuda::patchify(dt, col.data(), dimg.as<float>(), B, Cin, S, k, kDefaultStream);
      cuda::GemmArgs a;
      a.M = P; a.N = C0; a.K = K; a.x = col.data(); a.ldx = a.K; a.x_type = dt; a.w = dw.data();
      a.out = dout.data(); a.ldo = C0; a.out_type = dt; a.bias = db.data();
      gemm.run(a, kDefaultStream);
      check_nmse("patch embedding", from_gpu(dout), want, gemm_nmse(dt));
    }
  }
}

TEST_CASE("cuda op: GEMM matches linear_forward (activation and float32 outputs, bias, ReLU)") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(7);
  const int64_t M = 150, K = 72, N = 40;
  cuda::GemmRunner gemm(true);
  for (DType dt : kTypes)
    for (DType out_t : {dt, DType::F32})
      for (bool relu : {false, true}) {
        CAPTURE(std::string(dtype_name(dt)));
        CAPTURE(std::string(dtype_name(out_t)));
        CAPTURE(relu);
        const auto x = rounded(random_vector(size_t(M * K), rng), dt);
        const auto w = rounded(random_vector(size_t(N * K), rng, 0.1f), dt);
        const auto bias = rounded(random_vector(size_t(N), rng, 0.5f), out_t);
        std::vector<float> want(size_t(M * N));
        linear_forward(want.data(), x.data(), w.data(), bias.data(), M, K, N);
        if (relu) relu_forward(want.data(), want.data(), M * N);
        Tensor dx = to_gpu(x, dt), dw = to_gpu(w, dt), db = to_gpu(bias, out_t);
        Tensor dout = Tensor::empty({M * N}, out_t, Device::CUDA);
        cuda::GemmArgs a;
        a.M = M; a.N = N; a.K = K; a.x = dx.data(); a.ldx = K; a.x_type = dt; a.w = dw.data();
        a.out = dout.data(); a.ldo = N; a.out_type = out_t; a.bias = db.data(); a.relu = relu;
        gemm.run(a, kDefaultStream);
        check_nmse("gemm", from_gpu(dout), want, gemm_nmse(out_t == DType::F32 ? dt : out_t));
      }
}

// c = 24: 8 and 16 bytes a thread; 61·3 elements: one element a thread.
TEST_CASE("cuda op: shuffle_residual matches concat_shuffle_forward + residual") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(8);
  for (int64_t c : {24, 3}) {
    const int64_t P = 61;
    CAPTURE(c);
    for (DType dt : kTypes) {
      CAPTURE(std::string(dtype_name(dt)));
      const auto l = rounded(random_vector(size_t(P * c), rng), dt);
      const auto s = rounded(random_vector(size_t(P * c), rng), dt);
      const auto x = rounded(random_vector(size_t(P * 2 * c), rng), dt);
      std::vector<float> want(size_t(P * 2 * c));
      concat_shuffle_forward(want.data(), l.data(), s.data(), P, c);
      for (size_t i = 0; i < want.size(); ++i) want[i] += x[i];
      Tensor dout = Tensor::empty({P * 2 * c}, dt, Device::CUDA);
      Tensor dl = to_gpu(l, dt), ds = to_gpu(s, dt), dx = to_gpu(x, dt);
      cuda::shuffle_residual(dt, dout.data(), dl.data(), ds.data(), dx.data(), P, c, kDefaultStream);
      check_nmse("shuffle_residual", from_gpu(dout), want, output_nmse(dt));
    }
  }
}

TEST_CASE("cuda op: avgpool matches avgpool_forward") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(9);
  const int64_t B = 3, L = 49, C = 40;
  for (DType dt : kTypes) {
    CAPTURE(std::string(dtype_name(dt)));
    const auto x = rounded(random_vector(size_t(B * L * C), rng, 1.f, 0.3f), dt);
    std::vector<float> want(size_t(B * C));
    avgpool_forward(want.data(), x.data(), B, L, C);
    Tensor dx = to_gpu(x, dt), dout = Tensor::empty({B * C}, dt, Device::CUDA);
    cuda::avgpool(dt, dout.data(), dx.data(), B, L, C, kDefaultStream);
    check_nmse("avgpool", from_gpu(dout), want, output_nmse(dt));
  }
}

// One scan test case: its weights (distributions like the CPU scan test's: Δ roughly
// 0.05 .. 1.5 for dt_bias_low = -3, A_logs around log(n+1) - 1) and the GPU's dbl
// layout, where each direction's dt block is padded with zeros to Rp columns.
struct ScanCase { int64_t B, H, W, D, R; };
struct ScanCaseWeights {
  std::vector<float> xpw, xpw_padded, dtw, dtb, A_logs, Ds;
  int64_t RNp = 0;
};

static ScanCaseWeights make_scan_weights(const ScanCase& k, std::mt19937& rng, float dt_bias_low) {
  const int64_t N = cuda::kScanStates, RN = k.R + 2 * N;
  ScanCaseWeights w;
  w.xpw = random_vector(size_t(4 * RN * k.D), rng, 1.f / std::sqrt(float(k.D)));
  const int64_t Rp = cuda::scan_padded_rank(k.R);
  w.RNp = Rp + 2 * N;
  w.xpw_padded.assign(size_t(4 * w.RNp * k.D), 0.f);
  for (int64_t d4 = 0; d4 < 4; ++d4)
    for (int64_t j = 0; j < RN; ++j)
      for (int64_t c = 0; c < k.D; ++c)
        w.xpw_padded[size_t((d4 * w.RNp + (j < k.R ? j : j - k.R + Rp)) * k.D + c)] = w.xpw[size_t((d4 * RN + j) * k.D + c)];
  w.dtw = random_vector(size_t(4 * k.D * k.R), rng, 0.5f);
  w.dtb.resize(size_t(4 * k.D));
  w.A_logs.resize(size_t(4 * k.D * N));
  std::uniform_real_distribution<float> ud(dt_bias_low, 1.f);
  for (float& v : w.dtb) v = ud(rng);
  std::normal_distribution<float> nd;
  for (size_t i = 0; i < w.A_logs.size(); ++i) w.A_logs[i] = std::log(float(i % N + 1)) + 0.5f * nd(rng) - 1.f;
  w.Ds = random_vector(size_t(4 * k.D), rng, 0.7f, 1.f);
  return w;
}

// A random input u rounded to dt, the CPU scan's output for it, and the x_proj
// projection (as the model's GEMM computes it) that the GPU scan reads.
struct ScanCaseInputs {
  std::vector<float> u, want, dbl;
};

static ScanCaseInputs make_scan_inputs(const ScanCase& k, const ScanCaseWeights& w, DType dt, std::mt19937& rng) {
  const int64_t P = k.B * k.H * k.W;
  ScanCaseInputs in;
  in.u = rounded(random_vector(size_t(P * k.D), rng), dt);
  in.want.resize(size_t(P * k.D));
  in.dbl.resize(size_t(P * 4 * w.RNp));
  ss2d_scan_forward(SS2DScanShape{k.B, k.H, k.W, k.D, cuda::kScanStates, k.R}, in.u.data(),
                    SS2DScanWeights{w.xpw.data(), w.dtw.data(), w.dtb.data(), w.A_logs.data(), w.Ds.data()},
                    in.want.data());
  linear_forward(in.dbl.data(), in.u.data(), w.xpw_padded.data(), nullptr, P, k.D, 4 * w.RNp);
  return in;
}

TEST_CASE("cuda op: ss2d_scan matches ss2d_scan_forward (every lane split, dt ranks, non-square grids)") {
  MM_REQUIRE_GPU_OR_SKIP();
  const ScanCase cases[] = {{2, 5, 7, 40, 3}, {1, 8, 8, 64, 12}, {1, 4, 6, 24, 24}, {2, 3, 3, 16, 1}, {1, 2, 3, 8, 7}};
  std::mt19937 rng(10);
  for (const ScanCase& k : cases) {
    const int64_t P = k.B * k.H * k.W;
    const ScanCaseWeights w = make_scan_weights(k, rng, -3.f);
    for (DType dt : kTypes) {
      const ScanCaseInputs in = make_scan_inputs(k, w, dt, rng);
      const std::vector<float>& want = in.want;
      Tensor du = to_gpu(in.u, dt), ddbl = to_gpu(in.dbl, DType::F32), ddtw = to_gpu(w.dtw, DType::F32);
      Tensor ddtb = to_gpu(w.dtb, DType::F32), dA = to_gpu(w.A_logs, DType::F32), dD = to_gpu(w.Ds, DType::F32);
      Tensor dy = Tensor::zeros({P * k.D}, DType::F32, Device::CUDA);
      for (int lanes : {1, 2, 4}) {
        CAPTURE(std::string(dtype_name(dt)));
        CAPTURE(lanes);
        CAPTURE(k.H);
        CAPTURE(k.W);
        CAPTURE(k.R);
        dy.zero_();
        cuda::ScanArgs a;
        a.B = k.B; a.H = k.H; a.W = k.W; a.D = k.D; a.R = k.R;
        a.u_type = dt; a.u = du.data(); a.dbl = ddbl.as<float>();
        a.dt_w = ddtw.as<float>(); a.dt_b = ddtb.as<float>(); a.A_logs = dA.as<float>(); a.Ds = dD.as<float>();
        a.y = dy.as<float>(); a.lanes_per_channel = lanes;
        cuda::ss2d_scan(a, kDefaultStream);
        check_nmse("ss2d_scan", from_gpu(dy), want, 1e-8);
      }
    }
  }
}

TEST_CASE("cuda op: segmented ss2d_scan (long sequences, several segment counts) matches ss2d_scan_forward") {
  MM_REQUIRE_GPU_OR_SKIP();
  // MedMamba-T's first stage at batch 1 (L = 3,136, where batch-1 inference segments), two
  // images on a non-square grid whose length (703) is no multiple of the 16-step chunk, and a
  // short sequence (segment counts clamp to whole chunks: 2 or 3 segments).
  const ScanCase cases[] = {{1, 56, 56, 32, 3}, {2, 19, 37, 24, 6}, {1, 5, 9, 16, 1}};
  std::mt19937 rng(11);
  for (const ScanCase& k : cases) {
    const int64_t P = k.B * k.H * k.W;
    // dt_bias down to -6 gives some channels Δ ~ 0.003: slow decays, whose state carries
    // across many segments (what the combine pass must get right).
    const ScanCaseWeights w = make_scan_weights(k, rng, -6.f);
    Tensor ddtw = to_gpu(w.dtw, DType::F32), ddtb = to_gpu(w.dtb, DType::F32);
    Tensor dA = to_gpu(w.A_logs, DType::F32), dD = to_gpu(w.Ds, DType::F32);
    for (DType dt : kTypes) {
      CAPTURE(std::string(dtype_name(dt)));
      CAPTURE(k.H);
      CAPTURE(k.W);
      const ScanCaseInputs in = make_scan_inputs(k, w, dt, rng);
      const std::vector<float>& want = in.want;
      Tensor du = to_gpu(in.u, dt), ddbl = to_gpu(in.dbl, DType::F32);
      Tensor dy = Tensor::zeros({P * k.D}, DType::F32, Device::CUDA);
      auto args = [&](int lanes, int segments) {
        cuda::ScanArgs a;
        a.B = k.B; a.H = k.H; a.W = k.W; a.D = k.D; a.R = k.R;
        a.u_type = dt; a.u = du.data(); a.dbl = ddbl.as<float>();
        a.dt_w = ddtw.as<float>(); a.dt_b = ddtb.as<float>(); a.A_logs = dA.as<float>(); a.Ds = dD.as<float>();
        a.y = dy.as<float>(); a.lanes_per_channel = lanes; a.segments = segments;
        return a;
      };
      double worst = 0;
      auto run = [&](cuda::ScanArgs a, bool with_workspace) {
        const int64_t floats = cuda::ss2d_scan_workspace_floats(a);
        Tensor ws = Tensor::zeros({std::max<int64_t>(floats, 1)}, DType::F32, Device::CUDA);
        if (with_workspace) a.workspace = ws.as<float>();
        dy.zero_();
        cuda::ss2d_scan(a, kDefaultStream);
        const auto got = from_gpu(dy);
        worst = std::max(worst, nmse(got, want));
        check_nmse("segmented ss2d_scan", got, want, 1e-8);
        return floats;
      };
      for (int lanes : {1, 2, 4})
        for (int segments : {2, 3, 7, 16, 64}) {
          CAPTURE(lanes);
          CAPTURE(segments);
          CHECK(run(args(lanes, segments), true) > 0);  // it did segment
        }
      // The automatic choice (segments = 0), with and without a workspace (without one it
      // falls back to the whole-sequence scan).
      run(args(0, 0), true);
      run(args(0, 0), false);
      // An explicit segment count without a workspace is refused.
      CHECK_THROWS_AS(cuda::ss2d_scan(args(1, 4), kDefaultStream), Error);
      MESSAGE("segmented ss2d_scan " << k.B << "x" << k.H << "x" << k.W << " D=" << k.D << " " << std::string(dtype_name(dt))
                                     << ": worst normalized MSE " << worst);
    }
  }
}

#else  // built without CUDA

TEST_CASE("cuda ops: skipped, built without CUDA") { MESSAGE("skipped: this build has no CUDA backend"); }

#endif
