// The CPU eval forward split into one sub-batch per thread (lib/model/cpu_batch_split.h)
// against the per-op parallel forward.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/cpu_batch_split.h"
#include "model/cpu_bf16_model.h"
#include "model/cpu_int8_model.h"
#include "model/medmamba.h"
#include "ops/gemm_bf16.h"
#include "test_util.h"

using namespace mm;
using namespace mm::test;

namespace {

// A batch split and an OpenMP thread count for one scope; both put back after.
class SplitScope {
 public:
  SplitScope(BatchSplit split, int threads) : split_(split), threads_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~SplitScope() { omp_set_num_threads(threads_); }

 private:
  ScopedBatchSplit split_;
  int threads_;
};

// dims 16..128, depths 1,1,2,1, 64 px: every stage, and several positions per image at the last.
MedMamba small_model() {
  ModelConfig cfg;
  cfg.dims = {16, 32, 64, 128};
  cfg.depths = {1, 1, 2, 1};
  cfg.num_classes = 7;
  cfg.image_size = 64;
  MedMamba m(cfg);
  m.init_reference(3);
  return m;
}

Tensor random_images(int64_t B, const ModelConfig& cfg, uint32_t seed) {
  const std::vector<float> v = normal_values(B * cfg.in_chans * cfg.image_size * cfg.image_size, seed);
  Tensor t = Tensor::empty({B, cfg.in_chans, cfg.image_size, cfg.image_size});
  std::copy(v.begin(), v.end(), t.f32());
  return t;
}

Tensor forward_with(MedMamba& m, const Tensor& images, BatchSplit split, int threads) {
  SplitScope scope(split, threads);
  return m.forward(images, /*train=*/false);
}

// A GEMM with fewer rows may block its sums differently: the sub-batch logits may differ from
// the whole batch's in the last bits (measured: 5e-8 at most on logits up to 0.1, relative L2 5e-7).
constexpr float kRtol = 1e-5f, kAtol = 1e-6f;

}  // namespace

TEST_CASE("the sub-batch eval forward gives the per-op forward's logits (batch 5 over 2 and 3 threads)") {
  MedMamba m = small_model();
  const Tensor images = random_images(5, m.config(), 11);
  const Tensor per_op = forward_with(m, images, BatchSplit::Ops, 3);
  const Tensor images2 = random_images(5, m.config(), 12);
  const Tensor per_op2 = forward_with(m, images2, BatchSplit::Ops, 3);
  for (int threads : {2, 3}) {
    INFO(threads << " threads: sub-batches of " << (threads == 2 ? "3+2" : "2+2+1") << " images");
    CHECK(sub_batch_count(BatchSplit::Images, 5, threads) == threads);
    const Tensor split = forward_with(m, images, BatchSplit::Images, threads);
    check_close("sub-batch logits", split, per_op, kRtol, kAtol);
    // Other images of the same shape: the workers' kept activations hold nothing stale.
    const Tensor split2 = forward_with(m, images2, BatchSplit::Images, threads);
    check_close("sub-batch logits, second batch", split2, per_op2, kRtol, kAtol);
  }
  // Auto at 2 threads splits 5 images (3+2: 5/6 of the thread-time busy).
  check_close("auto", forward_with(m, images, BatchSplit::Auto, 2), per_op, kRtol, kAtol);
  // An image's logits do not depend on the images beside it: image 3 alone (batch 1, per-op).
  const int64_t image_floats = images.numel() / 5, classes = m.config().num_classes;
  Tensor one = Tensor::empty({1, images.dim(1), images.dim(2), images.dim(3)});
  std::copy(images.f32() + 3 * image_floats, images.f32() + 4 * image_floats, one.f32());
  const Tensor alone = forward_with(m, one, BatchSplit::Images, 2);  // one image: per-op whatever the mode
  check_close("image 3 alone", alone.f32(), per_op.f32() + 3 * classes, classes, kRtol, kAtol);
}

TEST_CASE("a train-mode or kept forward runs per op whatever MM_CPU_BATCH_SPLIT says") {
  MedMamba m = small_model();
  const Tensor images = random_images(4, m.config(), 12);
  const Tensor eval_split = forward_with(m, images, BatchSplit::Images, 2);
  SplitScope scope(BatchSplit::Images, 2);
  // keep_for_backward: one set of activations for backward(), through the unfused block ops
  // (test_model.cpp's tolerance against PyTorch).
  const Tensor kept = m.forward(images, /*train=*/false, /*keep_for_backward=*/true);
  check_close("kept forward", kept, eval_split, 1e-4f, 1e-5f);
  // Train mode: BatchNorm's batch statistics over the whole batch; the same calls either way.
  m.seed_drop_path(1);
  const Tensor train_split = m.forward(images, /*train=*/true);
  const Tensor train_ops = [&] {
    SplitScope ops(BatchSplit::Ops, 2);
    m.seed_drop_path(1);
    return m.forward(images, /*train=*/true);
  }();
  check_close("train-mode forward", train_split, train_ops, 0.f, 0.f);
  m.forward(images, /*train=*/false, /*keep_for_backward=*/true);
  Tensor dlogits = Tensor::zeros({4, m.config().num_classes});
  dlogits.f32()[0] = 1.f;
  m.zero_grad();
  CHECK(m.backward(dlogits, /*want_input_grad=*/true).shape() == images.shape());
}

TEST_CASE("the eval forward's kept Winograd weights: shared by the sub-batch workers, rebuilt after params_changed and training") {
  // A fresh model (nothing kept) with m's state is the reference: the same code path, so the
  // logits must match bit for bit whenever m's kept weights are up to date.
  auto fresh_forward = [](MedMamba& m, const Tensor& images, BatchSplit split) {
    MedMamba f(m.config());
    f.load_state(m.state());
    return forward_with(f, images, split, 2);
  };
  MedMamba m = small_model();
  const Tensor images = random_images(4, m.config(), 21);
  for (int pass = 0; pass < 2; ++pass) {  // the first builds the transforms, the second reuses them
    INFO("pass " << pass);
    // 2 workers of 2 images, then 4 images per op: other tile sizes at some stages.
    check_close("images", forward_with(m, images, BatchSplit::Images, 2), fresh_forward(m, images, BatchSplit::Images),
                0.f, 0.f);
    check_close("ops", forward_with(m, images, BatchSplit::Ops, 2), fresh_forward(m, images, BatchSplit::Ops), 0.f,
                0.f);
  }
  // A 3x3 conv's weights and its BatchNorm's running variance changed from outside.
  const Tensor before = forward_with(m, images, BatchSplit::Images, 2);
  Tensor w = m.param("layers.0.blocks.0.conv33conv33conv11.1.weight");
  for (int64_t i = 0; i < w.numel(); ++i) w.f32()[i] *= 1.5f;
  Tensor var = m.param("layers.1.blocks.0.conv33conv33conv11.5.running_var");
  for (int64_t i = 0; i < var.numel(); ++i) var.f32()[i] *= 3.f;
  m.params_changed();
  const Tensor after = forward_with(m, images, BatchSplit::Images, 2);
  check_close("after params_changed", after, fresh_forward(m, images, BatchSplit::Images), 0.f, 0.f);
  CHECK(!std::equal(after.f32(), after.f32() + after.numel(), before.f32()));
  // A train-mode forward moves the running statistics: the next eval forward sees them.
  m.seed_drop_path(1);
  m.forward(images, /*train=*/true);
  check_close("after a train-mode forward", forward_with(m, images, BatchSplit::Images, 2),
              fresh_forward(m, images, BatchSplit::Images), 0.f, 0.f);
}

TEST_CASE("sub_batch_count: per-op for one thread, one image or uneven splits; images where they fill the threads") {
  CHECK(sub_batch_count(BatchSplit::Auto, 16, 16) == 16);
  CHECK(sub_batch_count(BatchSplit::Auto, 32, 16) == 16);
  CHECK(sub_batch_count(BatchSplit::Auto, 3, 2) == 2);   // 3/4 busy: at the threshold
  CHECK(sub_batch_count(BatchSplit::Auto, 20, 16) == 1);  // 20/32 busy
  CHECK(sub_batch_count(BatchSplit::Auto, 8, 16) == 1);   // half the threads idle
  CHECK(sub_batch_count(BatchSplit::Auto, 1, 16) == 1);
  CHECK(sub_batch_count(BatchSplit::Auto, 16, 1) == 1);
  CHECK(sub_batch_count(BatchSplit::Images, 8, 16) == 8);
  CHECK(sub_batch_count(BatchSplit::Images, 1, 16) == 1);
  CHECK(sub_batch_count(BatchSplit::Ops, 16, 16) == 1);
  CHECK(split_efficiency(5, 2) == doctest::Approx(5.0 / 6.0));
  CHECK(batch_split_from_name("images") == BatchSplit::Images);
  {
    ScopedBatchSplit ops(BatchSplit::Ops);
    CHECK(batch_split_setting() == BatchSplit::Ops);
    {
      ScopedBatchSplit images(BatchSplit::Images);
      CHECK(batch_split_setting() == BatchSplit::Images);
    }
    CHECK(batch_split_setting() == BatchSplit::Ops);
  }
  CHECK_THROWS_WITH_AS(batch_split_from_name("threads"), doctest::Contains("auto, ops or images"), Error);
}

TEST_CASE("run_sub_batches: contiguous sub-batches, one thread each, ops single-threaded, errors rethrown") {
  const int before = omp_get_max_threads();
  std::vector<int64_t> first(3, -1), count(3, -1);
  std::vector<int> inner_threads(3, -1), inner_team(3, -1);
  run_sub_batches(7, 3, [&](int w, int64_t f, int64_t n) {
    first[size_t(w)] = f;
    count[size_t(w)] = n;
    inner_threads[size_t(w)] = omp_get_max_threads();
    int team = 0;
#pragma omp parallel
    {
#pragma omp atomic
      ++team;
    }
    inner_team[size_t(w)] = team;
  });
  CHECK(first == std::vector<int64_t>{0, 3, 5});
  CHECK(count == std::vector<int64_t>{3, 2, 2});
  CHECK(inner_threads == std::vector<int>{1, 1, 1});
  CHECK(inner_team == std::vector<int>{1, 1, 1});
  CHECK(omp_get_max_threads() == before);  // the workers' setting stayed inside the region
  CHECK_THROWS_WITH_AS(run_sub_batches(4, 2,
                                       [](int w, int64_t, int64_t) {
                                         if (w == 1) throw Error("worker 1 failed");
                                       }),
                       "worker 1 failed", Error);
}

// bf16 and int8: the same primitives run by several workers at once (oneDNN with the caller's
// scratchpad, one stream per thread). A worker's GEMMs have fewer rows, which may change oneDNN's
// blocking and so a bf16-rounded value by an ulp (2^-8) now and then: logits agree to the
// precisions' own scale, not bit for bit. Calibration's observed range is the same maximum.
TEST_CASE("bf16 and int8 eval forwards split into sub-batches give the per-op forward's logits") {
  MedMamba m = small_model();
  const Tensor images = random_images(5, m.config(), 31);
  const Tensor images2 = random_images(5, m.config(), 32);
  auto check_precision = [&](const std::string& name, auto&& forward) {
    const Tensor per_op = [&] {
      SplitScope scope(BatchSplit::Ops, 3);
      return forward(images);
    }();
    for (int threads : {2, 3}) {
      INFO(name << ", " << threads << " threads");
      SplitScope scope(BatchSplit::Images, threads);
      const Tensor split = forward(images);
      const double err = rel_l2(split.f32(), per_op.f32(), per_op.numel());
      MESSAGE(name << " sub-batch logits against per op, " << threads << " threads: relative L2 " << err);
      CHECK(err < 2e-3);
      // Another batch of the same shape: the workers' kept activations hold nothing stale.
      (void)forward(images2);
      check_close("the first batch again", forward(images), split, 0.f, 0.f);
    }
  };
  if (const std::string why = bf16_unavailable_reason(); !why.empty()) {
    MESSAGE("bf16 skipped: " << why);
  } else {
    CpuBf16Model bf16(m);
    check_precision("bf16", [&](const Tensor& x) { return bf16.forward(x); });
  }
  if (const std::string why = int8_model_unavailable_reason(); !why.empty()) {
    MESSAGE("int8 skipped: " << why);
  } else {
    CpuInt8Model int8(m);
    check_precision("int8", [&](const Tensor& x) { return int8.forward(x); });
    CpuInt8Model ops_model(m), split_model(m);
    {
      SplitScope scope(BatchSplit::Ops, 3);
      (void)ops_model.forward(images);
    }
    {
      SplitScope scope(BatchSplit::Images, 3);
      (void)split_model.forward(images);
    }
    const ActivationScales a = ops_model.observed_scales(), b = split_model.observed_scales();
    REQUIRE(a.size() == b.size());
    for (const auto& [linear, scale] : a) CHECK(b.at(linear) == doctest::Approx(scale).epsilon(1e-2));
  }
}
