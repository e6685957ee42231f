// Whole-model logits of CudaMedMamba against the CPU backend (itself tested against PyTorch),
// for each precision: the fixture model at 64x64 and a random-init MedMamba-T at 224, batch 2.
#include <random>
#include <vector>

#include "core/error.h"
#include "model/cuda_model.h"
#include "model/medmamba.h"
#include "test_cuda_util.h"

using namespace mm;
using namespace mm::test;

namespace {

// The fixture file also holds inputs, logits and gradients: keep the model's own keys.
MedMamba fixture_model(const SafetensorsFile& f) {
  MedMamba m(ModelConfig::from_json(f.metadata.at("config")));
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : f.tensors)
    if (m.table().find(name)) state[name] = t;
  m.load_state(state);
  return m;
}

struct PrecisionCase {
  std::string name;
  CudaModelOptions opts;
  double max_rel_l2;  // of the logits against the CPU's
};

std::vector<PrecisionCase> precision_cases() {
  CudaModelOptions exact, tf32, bf16, fp16;
  exact.precision = tf32.precision = Precision::F32;
  exact.allow_tf32 = false;
  bf16.precision = Precision::BF16;
  fp16.precision = Precision::F16;
  // Measured on an H100 (2026-11): 1.5e-6, 1e-3, 1.4e-2 and 1.7e-3 at worst; the limits leave room.
  return {{"fp32 (no TF32)", exact, 2e-5}, {"fp32 (TF32)", tf32, 5e-3}, {"bf16", bf16, 5e-2}, {"fp16", fp16, 1e-2}};
}

std::vector<float> host_floats(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

void check_model(MedMamba& cpu, const Tensor& images) {
  const std::vector<float> want = host_floats(cpu.forward(images, /*train=*/false));
  for (const PrecisionCase& pc : precision_cases()) {
    CAPTURE(pc.name);
    CudaMedMamba gpu(cpu, pc.opts);
    // Three passes: eager, graph capture + replay, replay. All must agree with the CPU.
    for (int pass = 0; pass < 3; ++pass) {
      CAPTURE(pass);
      const Tensor logits = gpu.forward(images);
      REQUIRE(logits.shape() == Shape({images.dim(0), cpu.config().num_classes}));
      const std::vector<float> got = host_floats(logits);
      const double err = rel_l2(got.data(), want.data(), int64_t(want.size()));
      MESSAGE(pc.name << " pass " << pass << ": relative L2 error of the logits " << err);
      CHECK(err <= pc.max_rel_l2);
    }
  }
}

}  // namespace

TEST_CASE("cuda model: fixture model logits match the CPU backend in fp32, bf16 and fp16") {
  MM_REQUIRE_GPU_OR_SKIP();
  auto f = load_fixture("model_small.safetensors");
  MedMamba cpu = fixture_model(f);
  check_model(cpu, f.at("input"));
}

TEST_CASE("cuda model: MedMamba-T (random init) at 224, batch 2, matches the CPU backend") {
  MM_REQUIRE_GPU_OR_SKIP();
  MedMamba cpu(ModelConfig::variant("tiny"));
  cpu.init_reference(7);
  Tensor images = Tensor::empty({2, 3, 224, 224});
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (int64_t i = 0; i < images.numel(); ++i) images.f32()[i] = nd(rng);
  check_model(cpu, images);
}

TEST_CASE("cuda model: images already on the GPU give the same logits, and bad shapes are refused") {
  MM_REQUIRE_GPU_OR_SKIP();
  auto f = load_fixture("model_small.safetensors");
  MedMamba cpu = fixture_model(f);
  CudaModelOptions o;
  o.precision = Precision::F32;
  o.allow_tf32 = false;
  CudaMedMamba gpu(cpu, o);
  const Tensor& images = f.at("input");
  const std::vector<float> a = host_floats(gpu.forward(images));
  const std::vector<float> b = host_floats(gpu.forward(images.to(Device::CUDA)));
  CHECK(rel_l2(a.data(), b.data(), int64_t(a.size())) < 1e-5);
  CHECK_THROWS_AS(gpu.forward(Tensor::zeros({1, 3, 48, 48})), Error);  // 48 is not a multiple of 32
}

TEST_CASE("cuda model: reload_weights gives a new engine's logits bit for bit; a short batch reuses the buffers") {
  MM_REQUIRE_GPU_OR_SKIP();
  auto f = load_fixture("model_small.safetensors");
  MedMamba first = fixture_model(f);
  MedMamba second(first.config());
  second.init_reference(11);
  const int64_t S = first.config().image_size, Cin = first.config().in_chans;
  Tensor images = Tensor::empty({4, Cin, S, S});
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int64_t i = 0; i < images.numel(); ++i) images.f32()[i] = nd(rng);

  CudaModelOptions bf16;
  bf16.precision = Precision::BF16;
  CudaMedMamba engine(first, bf16);
  engine.forward(images);  // eager
  engine.forward(images);  // captured and replayed
  engine.reload_weights(second);
  const std::vector<float> reloaded = host_floats(engine.forward(images));  // the same graph, new weights
  CudaMedMamba fresh(second, bf16);
  CHECK(host_floats(fresh.forward(images)) == reloaded);
  CHECK(host_floats(fresh.forward(images)) == reloaded);

  // Three of the four rows run at batch 4 (the fourth row left as it was): the same bits.
  const Tensor three = Tensor::wrap(images.f32(), {3, Cin, S, S});
  const std::vector<float> got3 = host_floats(engine.forward(three));
  REQUIRE(got3.size() == 3 * size_t(first.config().num_classes));
  CHECK(std::vector<float>(reloaded.begin(), reloaded.begin() + int64_t(got3.size())) == got3);
  // One row gets buffers of its own size; the rows agree to bf16 rounding.
  const std::vector<float> got1 = host_floats(engine.forward(Tensor::wrap(images.f32(), {1, Cin, S, S})));
  CHECK(rel_l2(got1.data(), reloaded.data(), int64_t(got1.size())) < 5e-2);

  MedMamba other(ModelConfig::variant("tiny"));
  CHECK_THROWS_AS(engine.reload_weights(other), Error);
}

TEST_CASE("cuda model: precision names") {
  CHECK(precision_from_name("bf16") == Precision::BF16);
  CHECK(precision_from_name("fp32") == Precision::F32);
  CHECK(precision_from_name("fp16") == Precision::F16);
  CHECK_THROWS_AS(precision_from_name("int8"), Error);
}
