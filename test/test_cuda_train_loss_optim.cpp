// The CUDA loss and optimiser ops (kernels/cuda_train_ops.h) against the CPU code they mirror:
// cross_entropy_forward/backward (lib/ops/cross_entropy.h), clip_grad_norm and mm::AdamW
// (lib/train/optimizer.h), over a small model's parameter table.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_train_test_util.h"

#ifdef MM_HAVE_CUDA

#include "model/config.h"
#include "model/params.h"
#include "ops/cross_entropy.h"
#include "train/optimizer.h"

using namespace mm;
using namespace mm::test;

TEST_CASE("cuda train op: cross_entropy forward and backward (class weights, label smoothing) match the CPU op") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(18);
  const int64_t B = 13, K = 5;
  const Vec logits = random_vector(size_t(B * K), rng, 3.f), cw = {0.5f, 2.f, 1.f, 1.5f, 0.8f};
  std::vector<int64_t> labels(size_t(B), 0);
  for (int64_t b = 0; b < B; ++b) labels[size_t(b)] = (b * 3 + 1) % K;
  const Tensor tlogits = dev(logits), tcw = dev(cw), tlabels = dev_of(labels, DType::I64);
  for (const auto& variant : {std::pair<bool, float>{false, 0.f}, {true, 0.1f}}) {
    const bool weighted = variant.first;
    const float smoothing = variant.second;
    CAPTURE(weighted);
    CrossEntropyOptions o;
    o.class_weights = weighted ? cw.data() : nullptr;
    o.label_smoothing = smoothing;
    Vec probs(logits.size());
    const float loss = cross_entropy_forward(probs.data(), logits.data(), labels.data(), B, K, o);
    Tensor tloss = dev_empty(1), tprobs = dev_empty(B * K);
    const float* dcw = weighted ? in(tcw) : nullptr;
    cuda::cross_entropy_forward(tloss.as<float>(), tprobs.as<float>(), in(tlogits), tlabels.as<int64_t>(), dcw,
                                smoothing, B, K, kStream);
    CHECK(from_gpu(tloss)[0] == doctest::Approx(loss).epsilon(1e-6));
    check_nmse("probs", from_gpu(tprobs), probs, kElementwise);

    const float dloss = 0.7f;
    Grad dlogits(logits.size(), rng);
    cross_entropy_backward(dlogits.h(), probs.data(), labels.data(), B, K, dloss, o);
    const Tensor cpu_probs = dev(probs);
    cuda::cross_entropy_backward(dlogits.d(), in(cpu_probs), tlabels.as<int64_t>(), dcw, smoothing, dloss, B, K,
                                 kStream);
    dlogits.check("dlogits", kElementwise);
  }
}

namespace {

// A small model's parameter table, and its roles as cuda_train_ops.h defines them
// (0 decayed, 1 trained without decay, 2 never trained; floats of no entry are 2).
struct TinyTable {
  ParamTable table;
  std::vector<uint8_t> roles;
  TinyTable() {
    ModelConfig cfg;
    cfg.dims = {8, 16, 32, 64};
    cfg.depths = {1, 1, 1, 1};
    cfg.num_classes = 3;
    cfg.image_size = 32;
    table = ParamTable::for_config(cfg);
    roles.assign(size_t(table.total_floats()), uint8_t(2));
    for (const ParamEntry& e : table.entries())
      std::fill(roles.begin() + e.offset, roles.begin() + e.offset + e.numel(),
                uint8_t(e.kind == ParamKind::Weight ? 0 : e.kind == ParamKind::NoDecay ? 1 : 2));
  }
  int64_t n() const { return table.total_floats(); }
  // Every float of a never-trained role equal in a and b, bit for bit.
  bool buffers_untouched(const Vec& a, const Vec& b) const {
    for (size_t i = 0; i < roles.size(); ++i)
      if (roles[i] == 2 && std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
    return true;
  }
};

}  // namespace

TEST_CASE("cuda train op: grad_norm and clip_grads match clip_grad_norm") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(19);
  const TinyTable tt;
  const Vec g = random_vector(size_t(tt.n()), rng, 0.01f);
  const Tensor troles = dev_of(tt.roles, DType::U8);
  Tensor tnorm = dev_empty(1);
  const Tensor tg0 = dev(g);
  cuda::grad_norm(tnorm.as<float>(), in(tg0), troles.as<uint8_t>(), tt.n(), kStream);
  const float norm = from_gpu(tnorm)[0];
  cuda::grad_norm(tnorm.as<float>(), in(tg0), troles.as<uint8_t>(), tt.n(), kStream);
  CHECK(same_bits(from_gpu(tnorm), {norm}));

  for (double scale : {0.5, 2.0, 0.0}) {  // clipped, below the threshold, clipping off
    CAPTURE(scale);
    Vec want = g;
    Tensor cpu = Tensor::wrap(want.data(), {tt.n()});
    const double cpu_norm = clip_grad_norm(cpu, tt.table, scale * std::sqrt(1e-4 * double(tt.n())));
    const float max_norm = float(scale * std::sqrt(1e-4 * double(tt.n())));
    CHECK(double(norm) == doctest::Approx(cpu_norm).epsilon(1e-6));
    Tensor tg = dev(g);
    cuda::clip_grads(tg.as<float>(), troles.as<uint8_t>(), tt.n(), in(tnorm), max_norm, kStream);
    const Vec got = from_gpu(tg);
    check_nmse("clipped grads", got, want, 1e-12);
    CHECK(tt.buffers_untouched(got, g));
    if (scale != 0.5) CHECK(same_bits(got, g));
  }
}

TEST_CASE("cuda train op: adamw_step matches mm::AdamW over three steps") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(20);
  const TinyTable tt;
  const Vec p0 = random_vector(size_t(tt.n()), rng, 0.1f);
  AdamWOptions o;
  o.weight_decay = 0.05f;
  AdamW cpu(tt.table, o);
  Vec p = p0;
  Tensor cpu_p = Tensor::wrap(p.data(), {tt.n()});
  Tensor tp = dev(p0), tm = Tensor::zeros({tt.n()}, DType::F32, Device::CUDA),
         tv = Tensor::zeros({tt.n()}, DType::F32, Device::CUDA);
  const Tensor troles = dev_of(tt.roles, DType::U8);
  const float lr = 0.01f;
  for (int64_t t = 1; t <= 3; ++t) {
    CAPTURE(t);
    Vec g = random_vector(size_t(tt.n()), rng, 0.02f);
    cpu.step(cpu_p, Tensor::wrap(g.data(), {tt.n()}), lr);
    const Tensor tg = dev(g);
    cuda::adamw_step(tp.as<float>(), tm.as<float>(), tv.as<float>(), in(tg), troles.as<uint8_t>(), tt.n(),
                     cuda::AdamWStep{lr, o.beta1, o.beta2, o.eps, o.weight_decay, t}, kStream);
    const Vec got = from_gpu(tp);
    check_nmse("params", got, p, kElementwise);
    check_nmse("first moment", from_gpu(tm), Vec(cpu.first_moment().f32(), cpu.first_moment().f32() + tt.n()),
               kElementwise);
    check_nmse("second moment", from_gpu(tv), Vec(cpu.second_moment().f32(), cpu.second_moment().f32() + tt.n()),
               kElementwise);
    CHECK(tt.buffers_untouched(got, p0));
  }
}

TEST_CASE("cuda train op: flag_nonfinite finds a NaN or an Inf and leaves the flag alone otherwise") {
  MM_REQUIRE_GPU_OR_SKIP();
  std::mt19937 rng(21);
  const int64_t n = 100003;
  Vec x = random_vector(size_t(n), rng, 1e30f);  // huge but finite
  for (float bad : {0.f, NAN, INFINITY, -INFINITY}) {
    CAPTURE(bad);
    Vec v = x;
    if (bad != 0.f) v[size_t(n - 1)] = bad;  // the tail of the last block
    const Tensor tv = dev(v);
    const std::vector<int> zero = {0};
    Tensor flag = dev_of(zero, DType::I32);
    cuda::flag_nonfinite(flag.as<int>(), in(tv), n, kStream);
    const Tensor host_flag = flag.to(Device::CPU);
    CHECK(host_flag.as<int>()[0] == (bad != 0.f ? 1 : 0));
  }
}

#else  // built without CUDA

TEST_CASE("cuda train op: loss and optimiser skipped, built without CUDA") {
  MESSAGE("skipped: this build has no CUDA backend");
}

#endif  // MM_HAVE_CUDA
