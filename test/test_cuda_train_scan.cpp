// The SS2D selective scan of the CUDA training backend (kernels/cuda_train_scan.h) against
// the CPU scan (lib/ops/selective_scan.h, itself checked against PyTorch fixtures and finite
// differences in test_ops_ss2d_scan.cpp): forward output and saved states, du and every
// weight gradient, by normalized MSE; accumulation into non-zero gradients; determinism.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "test_cuda_util.h"

#ifdef MM_HAVE_CUDA

#include "core/error.h"
#include "cuda_ops.h"
#include "cuda_train_gemm_conv.h"
#include "cuda_train_scan.h"
#include "ops/selective_scan.h"

using namespace mm;
using namespace mm::test;

namespace {

cuda::Stream kDefaultStream = nullptr;  // legacy stream: the test's copies order after the ops

// The float32 mode's exp is the CPU's polynomial; the sums run in another order.
constexpr double kForwardNmse = 1e-8;
constexpr double kGradNmse = 1e-7;
// With TF32/bf16 GEMMs the steps take exp from the hardware (~2e-7 relative, biased), and
// the scan's own GEMMs round their operands to bf16 (2^-8).
constexpr double kFastForwardNmse = 1e-4;
constexpr double kFastGradNmse = 1e-4;

struct ScanProblem {
  SS2DScanShape s;
  std::vector<float> u, xpw, dtw, dtb, A_logs, Ds, dout;
  int64_t act() const { return s.B * s.H * s.W * s.D; }
  SS2DScanWeights weights() const { return {xpw.data(), dtw.data(), dtb.data(), A_logs.data(), Ds.data()}; }
};

// Weights as MedMamba's SS2D initialises them: x_proj and dt_proj uniform ±1/sqrt(fan_in),
// dt_projs_bias the inverse softplus of Δ log-uniform in [1e-3, 0.1], A_logs = log(1..N).
// Ds varies around 1 so that its gradient is not the same sum for every channel.
ScanProblem make_problem(SS2DScanShape s, unsigned seed) {
  std::mt19937 rng(seed);
  auto uniform = [&](int64_t n, float bound) {
    std::uniform_real_distribution<float> ud(-bound, bound);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = ud(rng);
    return v;
  };
  ScanProblem p;
  p.s = s;
  const int64_t D = s.D, N = s.N, R = s.R;
  p.u = random_vector(size_t(p.act()), rng);
  p.xpw = uniform(4 * (R + 2 * N) * D, 1.f / std::sqrt(float(D)));
  p.dtw = uniform(4 * D * R, 1.f / std::sqrt(float(R)));
  std::uniform_real_distribution<double> log_dt(std::log(1e-3), std::log(0.1));
  for (int64_t i = 0; i < 4 * D; ++i) {
    const double dt = std::exp(log_dt(rng));
    p.dtb.push_back(float(dt + std::log(-std::expm1(-dt))));
  }
  for (int64_t i = 0; i < 4 * D * N; ++i) p.A_logs.push_back(std::log(float(i % N + 1)));
  p.Ds = random_vector(size_t(4 * D), rng, 0.3f, 1.f);
  p.dout = random_vector(size_t(p.act()), rng);
  return p;
}

// du and the weight gradients, in this order.
constexpr const char* kGradNames[] = {"du", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"};
using Grads = std::vector<std::vector<float>>;

Grads zero_grads(const SS2DScanShape& s) {
  const int64_t D = s.D, N = s.N, R = s.R;
  return {std::vector<float>(size_t(s.B * s.H * s.W * D)), std::vector<float>(size_t(4 * (R + 2 * N) * D)),
          std::vector<float>(size_t(4 * D * R)),           std::vector<float>(size_t(4 * D)),
          std::vector<float>(size_t(4 * D * N)),           std::vector<float>(size_t(4 * D))};
}

struct CpuResult {
  std::vector<float> out, states;
  Grads grads;
};

CpuResult cpu_scan(const ScanProblem& p, Grads init) {
  CpuResult r;
  r.out.resize(size_t(p.act()));
  r.states.resize(size_t(ss2d_scan_states_floats(p.s)));
  ss2d_scan_forward(p.s, p.u.data(), p.weights(), r.out.data(), nullptr, r.states.data());
  SS2DScanGrads g{init[1].data(), init[2].data(), init[3].data(), init[4].data(), init[5].data()};
  ss2d_scan_backward(p.s, p.u.data(), p.weights(), p.dout.data(), init[0].data(), g, nullptr, r.states.data());
  r.grads = std::move(init);
  return r;
}

// Device copies of a problem, with the states and workspace buffers.
struct GpuScan {
  cuda::ScanTrainShape shape;
  Tensor u, xpw, dtw, dtb, A_logs, Ds, dout, states, workspace;
  const uint16_t* u16 = nullptr;  // u's bf16 rounding, passed to forward and backward when set

  explicit GpuScan(const ScanProblem& p, int64_t segment_chunks = 0, int64_t forward_lanes = 0)
      : shape{p.s.B, p.s.H, p.s.W, p.s.D, p.s.N, p.s.R, segment_chunks, forward_lanes},
        u(to_gpu(p.u, DType::F32)), xpw(to_gpu(p.xpw, DType::F32)), dtw(to_gpu(p.dtw, DType::F32)),
        dtb(to_gpu(p.dtb, DType::F32)), A_logs(to_gpu(p.A_logs, DType::F32)), Ds(to_gpu(p.Ds, DType::F32)),
        dout(to_gpu(p.dout, DType::F32)),
        states(Tensor::empty({cuda::scan_train_states_floats(shape)}, DType::F32, Device::CUDA)),
        workspace(Tensor::empty({cuda::scan_train_workspace_floats(shape)}, DType::F32, Device::CUDA)) {}

  cuda::ScanTrainWeights weights() const {
    return {xpw.as<float>(), dtw.as<float>(), dtb.as<float>(), A_logs.as<float>(), Ds.as<float>()};
  }
  // Returns out; leaves the states for backward.
  std::vector<float> forward() {
    Tensor out = Tensor::empty({u.numel()}, DType::F32, Device::CUDA);
    cuda::scan_train_forward(shape, u.as<float>(), weights(), out.as<float>(), states.as<float>(),
                             workspace.as<float>(), kDefaultStream, u16);
    return from_gpu(out);
  }
  Grads backward(const Grads& init, cuda::GradOut du_out = cuda::GradOut::Accumulate) {
    std::vector<Tensor> g;
    for (const auto& v : init) g.push_back(to_gpu(v, DType::F32));
    cuda::ScanTrainGrads dg;
    dg.x_proj_weight = g[1].as<float>();
    dg.dt_projs_weight = g[2].as<float>();
    dg.dt_projs_bias = g[3].as<float>();
    dg.A_logs = g[4].as<float>();
    dg.Ds = g[5].as<float>();
    cuda::scan_train_backward(shape, u.as<float>(), weights(), dout.as<float>(), g[0].as<float>(), dg,
                              states.as<float>(), workspace.as<float>(), kDefaultStream, du_out, u16);
    Grads result;
    for (const Tensor& t : g) result.push_back(from_gpu(t));
    return result;
  }
};

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s / double(std::max<size_t>(v.size(), 1)));
}

// Forward (out and states) and backward of the GPU against the CPU. With nonzero_init the
// gradient buffers start at random values as large as the gradients themselves, so a
// backward that overwrote instead of accumulating would miss by about half.
// segment_chunks, forward_lanes: as in cuda::ScanTrainShape (0: the kernels' choice).
// compute: the GEMM compute the GPU runs under (the scan's step maths follows it).
void check_against_cpu(SS2DScanShape s, unsigned seed, bool nonzero_init, int64_t segment_chunks = 0,
                       cuda::GemmCompute compute = cuda::GemmCompute::F32, int64_t forward_lanes = 0) {
  const bool fast = compute != cuda::GemmCompute::F32;
  const double forward_nmse = fast ? kFastForwardNmse : kForwardNmse, grad_nmse = fast ? kFastGradNmse : kGradNmse;
  const ScanProblem p = make_problem(s, seed);
  Grads init = zero_grads(s);
  if (nonzero_init) {
    const CpuResult fresh = cpu_scan(p, zero_grads(s));
    std::mt19937 rng(seed + 1000);
    for (size_t i = 0; i < init.size(); ++i)
      init[i] = random_vector(init[i].size(), rng, float(rms(fresh.grads[i])));
  }
  const CpuResult want = cpu_scan(p, init);
  GpuScan gpu(p, segment_chunks, forward_lanes);
  std::vector<float> out;
  Grads got;
  {
    const cuda::GemmComputeScope scope(compute);
    out = gpu.forward();
    got = gpu.backward(init);
  }
  check_nmse("out", out, want.out, forward_nmse);
  check_nmse("states", from_gpu(gpu.states), want.states, forward_nmse);
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(rms(want.grads[i]) > 0);
    check_nmse(kGradNames[i], got[i], want.grads[i], grad_nmse);
  }
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("cuda train op: ss2d scan matches the CPU scan on a 5x7 grid, D=40 (a part channel block), R=3") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_against_cpu({2, 5, 7, 40, 16, 3}, 1, false);
}

TEST_CASE("cuda train op: ss2d scan matches the CPU scan on an 8x8 grid (exactly two chunks), D=64, R=4") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_against_cpu({1, 8, 8, 64, 16, 4}, 2, false);
}

TEST_CASE("cuda train op: ss2d scan matches the CPU scan on a 9x9 grid (a part last chunk), D=48, R=6") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_against_cpu({3, 9, 9, 48, 16, 6}, 3, false);
}

// The kernels' own choice gives one chunk per segment on shapes this small; these join
// segments of several chunks, the last one shorter than the others.
TEST_CASE("cuda train op: ss2d scan matches the CPU scan with segments of 2 and 3 chunks on a 12x11 grid") {
  MM_REQUIRE_GPU_OR_SKIP();
  for (int64_t chunks : {2, 3, 5}) {
    INFO("segment_chunks " << chunks);
    check_against_cpu({2, 12, 11, 40, 16, 3}, 7, false, chunks);
  }
}

// Forward's main kernel splits a channel's states over 1, 2 or 4 lanes and keeps the dt
// weights in registers for ranks up to 8, 16 or 32 (read from memory above): every
// combination, with and without segments, D=40 leaving part of the last channel tile idle.
TEST_CASE("cuda train op: ss2d scan matches the CPU scan with 1, 2 and 4 lanes a channel and dt ranks 3 to 40") {
  MM_REQUIRE_GPU_OR_SKIP();
  for (int64_t lanes : {1, 2, 4})
    for (int64_t R : {3, 12, 24, 40})
      for (int64_t chunks : {0, 2}) {
        INFO("lanes " << lanes << ", R " << R << ", segment_chunks " << chunks);
        check_against_cpu({2, 12, 11, 40, 16, R}, 11, false, chunks, cuda::GemmCompute::F32, lanes);
      }
  for (int64_t lanes : {1, 2, 4}) {  // the hardware exp of the fast modes
    INFO("bf16, lanes " << lanes);
    check_against_cpu({2, 12, 11, 40, 16, 6}, 12, false, 2, cuda::GemmCompute::BF16, lanes);
  }
}

TEST_CASE("cuda train op: ss2d scan in the TF32 and bf16 modes (hardware exp, tensor-core GEMMs) stays near the CPU scan") {
  MM_REQUIRE_GPU_OR_SKIP();
  for (cuda::GemmCompute compute : {cuda::GemmCompute::TF32, cuda::GemmCompute::BF16}) {
    INFO("compute " << int(compute));
    check_against_cpu({2, 12, 11, 40, 16, 3}, 8, false, 2, compute);
    check_against_cpu({2, 28, 28, 64, 16, 4}, 9, true, 0, compute);
  }
}

TEST_CASE("cuda train op: ss2d scan backward accumulates into non-zero du and gradients") {
  MM_REQUIRE_GPU_OR_SKIP();
  check_against_cpu({2, 6, 5, 40, 16, 3}, 4, true);
}

TEST_CASE("cuda train op: ss2d scan forward and backward are bit-for-bit deterministic") {
  MM_REQUIRE_GPU_OR_SKIP();
  const SS2DScanShape s{2, 9, 7, 72, 16, 5};
  GpuScan gpu(make_problem(s, 5));
  const std::vector<float> out1 = gpu.forward();
  const std::vector<float> states1 = from_gpu(gpu.states);
  const Grads g1 = gpu.backward(zero_grads(s));
  const std::vector<float> out2 = gpu.forward();
  CHECK(same_bits(out1, out2));
  CHECK(same_bits(states1, from_gpu(gpu.states)));
  const Grads g2 = gpu.backward(zero_grads(s));
  for (size_t i = 0; i < g1.size(); ++i) {
    INFO(kGradNames[i]);
    CHECK(same_bits(g1[i], g2[i]));
  }
}

TEST_CASE("cuda train op: ss2d scan backward with GradOut::Overwrite writes du as adding into zeros does") {
  MM_REQUIRE_GPU_OR_SKIP();
  const SS2DScanShape s{2, 9, 7, 72, 16, 5};
  GpuScan gpu(make_problem(s, 6));
  gpu.forward();
  const Grads added = gpu.backward(zero_grads(s));
  Grads nan_du = zero_grads(s);  // a du element left unwritten stays NaN
  std::fill(nan_du[0].begin(), nan_du[0].end(), std::numeric_limits<float>::quiet_NaN());
  const Grads written = gpu.backward(nan_du, cuda::GradOut::Overwrite);
  check_nmse("du", written[0], added[0], 0.0);
  for (size_t i = 1; i < added.size(); ++i) {
    INFO(kGradNames[i]);
    CHECK(same_bits(written[i], added[i]));
  }
}

// At D=768 backward takes the batch in slices of 65 images (kScanBatchSlice and up, equal),
// and forward in slices of 130, as many as its own buffers fit in that workspace: 130 + 65.
TEST_CASE("cuda train op: ss2d scan matches the CPU scan with forward's batch slices larger than backward's") {
  MM_REQUIRE_GPU_OR_SKIP();
  const SS2DScanShape s{195, 4, 4, 768, 16, 48};
  REQUIRE(cuda::scan_train_batch_slice({s.B, s.H, s.W, s.D, s.N, s.R}) == 65);
  check_against_cpu(s, 13, false);
}

// The bf16 workspace (ScanTrainShape::bf16) is smaller: backward's dir0 holds only bf16
// copies. Sized exactly and followed by sentinel floats, it gives the bits of the full
// workspace and writes nothing past its end; under another GEMM compute it is refused.
TEST_CASE("cuda train op: ss2d scan in the bf16 workspace gives the full workspace's bits and stays inside it") {
  MM_REQUIRE_GPU_OR_SKIP();
  const SS2DScanShape s{3, 12, 11, 40, 16, 6};
  const ScanProblem p = make_problem(s, 14);
  GpuScan full(p), small(p);
  small.shape.bf16 = true;
  const int64_t n = cuda::scan_train_workspace_floats(small.shape), guard = 4096;
  CHECK(n < cuda::scan_train_workspace_floats(full.shape));
  constexpr float kSentinel = 12345.f;
  small.workspace = to_gpu(std::vector<float>(size_t(n + guard), kSentinel), DType::F32);
  CHECK_THROWS_WITH_AS(small.backward(zero_grads(s)), doctest::Contains("needs bf16 GEMMs"), mm::Error);
  const cuda::GemmComputeScope scope(cuda::GemmCompute::BF16);
  CHECK(same_bits(small.forward(), full.forward()));
  CHECK(same_bits(from_gpu(small.states), from_gpu(full.states)));
  const Grads want = full.backward(zero_grads(s)), got = small.backward(zero_grads(s));
  for (size_t i = 0; i < got.size(); ++i) {
    INFO(kGradNames[i]);
    CHECK(same_bits(got[i], want[i]));
  }
  const std::vector<float> after = from_gpu(small.workspace);
  CHECK(std::all_of(after.begin() + n, after.end(), [=](float x) { return x == kSentinel; }));

  // u's bf16 rounding from its producer (the training block's depthwise conv): the same bits.
  GpuScan given(p);
  given.shape.bf16 = true;
  Tensor u16 = to_gpu(std::vector<float>(size_t(p.act() + 1) / 2, 0.f), DType::F32);
  cuda::bf16_operand_copy(given.u.as<float>(), 1, p.act(), p.act(), reinterpret_cast<uint16_t*>(u16.as<float>()),
                          kDefaultStream);
  given.u16 = reinterpret_cast<const uint16_t*>(u16.as<float>());
  CHECK(same_bits(given.forward(), full.forward()));
  const Grads with_u16 = given.backward(zero_grads(s));
  for (size_t i = 0; i < with_u16.size(); ++i) {
    INFO(kGradNames[i] << ", u16 given");
    CHECK(same_bits(with_u16[i], want[i]));
  }
}

// MedMamba-T's first stage (56x56, d_inner 192, dt_rank 12) at batch 4: large indices, many
// chunks; also reports the GPU times (after a warm-up call).
TEST_CASE("cuda train op: ss2d scan matches the CPU scan at MedMamba-T stage-1 size (B=4, 56x56, D=192)") {
  MM_REQUIRE_GPU_OR_SKIP();
  const SS2DScanShape s{4, 56, 56, 192, 16, 12};
  const ScanProblem p = make_problem(s, 6);
  const CpuResult want = cpu_scan(p, zero_grads(s));
  GpuScan gpu(p);
  gpu.forward();
  gpu.backward(zero_grads(s));
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<float> out = gpu.forward();
  const auto t1 = std::chrono::steady_clock::now();
  const Grads got = gpu.backward(zero_grads(s));
  const auto t2 = std::chrono::steady_clock::now();
  MESSAGE("B=4 56x56 D=192: forward " << std::chrono::duration<double, std::milli>(t1 - t0).count()
                                      << " ms, backward " << std::chrono::duration<double, std::milli>(t2 - t1).count()
                                      << " ms (each including host<->device copies of the test)");
  check_nmse("out", out, want.out, kForwardNmse);
  check_nmse("states", from_gpu(gpu.states), want.states, kForwardNmse);
  for (size_t i = 0; i < got.size(); ++i) check_nmse(kGradNames[i], got[i], want.grads[i], kGradNmse);
}

#endif  // MM_HAVE_CUDA
