// Whole-model checks against the PyTorch reference (test/reference/make_fixtures.py).
#include <cmath>
#include <cstdio>

#include <unistd.h>

#include "core/error.h"
#include "model/cpu_batch_split.h"
#include "model/medmamba.h"
#include "model/model_file.h"
#include "ops/conv2d.h"
#include "ops/cross_entropy.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace mm;
using namespace mm::test;

namespace {

std::map<std::string, Tensor> state_subset(const SafetensorsFile& f) {
  std::map<std::string, Tensor> s;
  for (const auto& [k, t] : f.tensors)
    if (k.rfind("grad.", 0) != 0 && k.rfind("running_after.", 0) != 0 && k != "input" && k != "labels" &&
        k.rfind("logits", 0) != 0 && k != "loss_train")
      s[k] = t;
  return s;
}

MedMamba load_fixture_model(const SafetensorsFile& f) {
  ModelConfig cfg = ModelConfig::from_json(f.metadata.at("config"));
  cfg.drop_path_rate = std::stof(f.metadata.at("drop_path_rate"));  // 0: the fixture is deterministic
  MedMamba m(cfg);
  m.load_state(state_subset(f));
  return m;
}

}  // namespace

TEST_CASE("parameter counts equal the reference's for T, S and B") {
  CHECK(ParamTable::for_config(ModelConfig::variant("tiny")).trainable_count() == 15221608);
  CHECK(ParamTable::for_config(ModelConfig::variant("small")).trainable_count() == 19389544);
  CHECK(ParamTable::for_config(ModelConfig::variant("base")).trainable_count() == 40883688);
}

TEST_CASE("eval-mode logits equal PyTorch's") {
  auto f = load_fixture("model_small.safetensors");
  MedMamba m = load_fixture_model(f);
  Tensor logits = m.forward(f.at("input"), /*train=*/false);
  const Tensor& want = f.at("logits_eval");
  REQUIRE(logits.shape() == want.shape());
  const double err = rel_l2(logits.f32(), want.f32(), want.numel());
  INFO("relative L2 error " << err);
  CHECK(err < 1e-4);
  check_close("logits_eval", logits, want, 1e-4f, 1e-5f);
}

TEST_CASE("train-mode forward, loss, every gradient and the running statistics equal PyTorch's") {
  auto f = load_fixture("model_small.safetensors");
  MedMamba m = load_fixture_model(f);
  const std::vector<int64_t> tracked_before = m.batches_tracked();
  m.zero_grad();
  Tensor logits = m.forward(f.at("input"), /*train=*/true);
  check_close("logits_train", logits, f.at("logits_train"), 1e-4f, 1e-5f);
  const int64_t B = logits.dim(0), K = logits.dim(1);
  Tensor probs = Tensor::empty({B, K});
  const float loss = cross_entropy_forward(probs.f32(), logits.f32(), f.at("labels").as<int64_t>(), B, K);
  CHECK(loss == doctest::Approx(f.at("loss_train").f32()[0]).epsilon(1e-5));
  Tensor dlogits = Tensor::zeros({B, K});
  cross_entropy_backward(dlogits.f32(), probs.f32(), f.at("labels").as<int64_t>(), B, K);
  Tensor dinput = m.backward(dlogits, /*want_input_grad=*/true);

  int checked = 0;
  for (const ParamEntry& e : m.table().entries()) {
    if (e.kind == ParamKind::Buffer) {
      const Tensor& want = f.at("running_after." + e.name);
      CAPTURE(e.name);
      check_close("running stat " + e.name, m.param(e.name), want, 1e-5f, 1e-6f);
      continue;
    }
    const Tensor& want = f.at("grad." + e.name);
    Tensor got = m.grad(e.name);
    const double norm = std::sqrt(std::max(0.0, [&] { double s = 0; for (int64_t i = 0; i < want.numel(); ++i) s += double(want.f32()[i]) * want.f32()[i]; return s; }()));
    CAPTURE(e.name);
    if (norm < 1e-9) {
      // Mathematically zero (a conv bias feeding a train-mode BatchNorm): ours must be ~0 too.
      for (int64_t i = 0; i < got.numel(); ++i) CHECK(std::fabs(got.f32()[i]) < 1e-6f);
    } else {
      const double err = rel_l2(got.f32(), want.f32(), want.numel());
      INFO("relative L2 gradient error " << err);
      CHECK(err < 1e-3);
    }
    ++checked;
  }
  CHECK(checked > 100);
  const double in_err = rel_l2(dinput.f32(), f.at("grad.input").f32(), dinput.numel());
  INFO("input gradient relative L2 error " << in_err);
  CHECK(in_err < 1e-3);
  for (size_t i = 0; i < tracked_before.size(); ++i) CHECK(m.batches_tracked()[i] == tracked_before[i] + 1);
}

TEST_CASE("model file round trip keeps weights, config, class names and preprocessing") {
  auto f = load_fixture("model_small.safetensors");
  MedMamba m = load_fixture_model(f);
  ModelMeta meta;
  meta.config = m.config();
  meta.class_names = {"normal", "benign", "malignant"};
  meta.preprocess.input_size = 64;
  const std::string path = "/tmp/mm-test-model-" + std::to_string(::getpid()) + ".safetensors";
  save_model(path, m, meta);
  LoadedModel back = load_model(path);
  std::remove(path.c_str());
  CHECK(back.meta.class_names == meta.class_names);
  CHECK(back.meta.preprocess.input_size == 64);
  CHECK(back.meta.config.to_json() == m.config().to_json());
  check_close("params", back.model.params(), m.params(), 0.f, 0.f);
  Tensor a = m.forward(f.at("input")), b = back.model.forward(f.at("input"));
  check_close("logits", a, b, 0.f, 0.f);
}

TEST_CASE("weights with missing, extra or mis-shaped tensors are refused, naming each one") {
  auto f = load_fixture("model_small.safetensors");
  auto state = state_subset(f);
  MedMamba m(ModelConfig::from_json(f.metadata.at("config")));
  state.erase("head.bias");
  state.erase("layers.1.blocks.0.self_attention.Ds");
  state["layers.9.blocks.0.extra"] = Tensor::zeros({2});
  state["head.weight"] = Tensor::zeros({4, 128});
  try {
    m.load_state(state);
    FAIL("load_state accepted a bad state dict");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("missing (2)") != std::string::npos);
    CHECK(msg.find("head.bias") != std::string::npos);
    CHECK(msg.find("layers.1.blocks.0.self_attention.Ds") != std::string::npos);
    CHECK(msg.find("unexpected (1)") != std::string::npos);
    CHECK(msg.find("layers.9.blocks.0.extra") != std::string::npos);
    CHECK(msg.find("head.weight (file [4, 128], model [3, 128])") != std::string::npos);
  }
}

TEST_CASE("load_state converts int8 weights to their values and clamps float BatchNorm counters") {
  auto f = load_fixture("model_small.safetensors");
  auto state = state_subset(f);
  MedMamba m(ModelConfig::from_json(f.metadata.at("config")));
  Tensor bias = Tensor::empty(state.at("head.bias").shape(), DType::I8);  // converted as zeros before
  for (int64_t i = 0; i < bias.numel(); ++i) bias.as<int8_t>()[i] = int8_t(i - 1);
  state["head.bias"] = bias;
  Tensor count = Tensor::empty({});
  count.f32()[0] = 1e30f;  // beyond int64_t: undefined to convert unclamped
  state[m.table().batchnorms()[0] + ".num_batches_tracked"] = count;
  m.load_state(state);
  for (int64_t i = 0; i < bias.numel(); ++i) CHECK(m.param("head.bias").f32()[i] == float(i - 1));
  CHECK(m.batches_tracked()[0] == int64_t(9e18f));
}

TEST_CASE("configs are validated") {
  ModelConfig c = ModelConfig::variant("tiny");
  c.dims[1] = 100;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("2*dims[i]"), Error);
  c = ModelConfig::variant("tiny");
  c.image_size = 100;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("multiple of 32"), Error);
  CHECK_THROWS_AS(ModelConfig::variant("huge"), Error);
  CHECK_THROWS_AS(ModelConfig::from_json("{\"dims\": 3}"), Error);
}

TEST_CASE("a model file whose config asks for more parameters than it holds is refused before allocating") {
  LoadedModel small = tiny_model({"a", "b"}, 1);
  small.meta.class_names.clear();  // so that only the parameter count can be wrong
  const std::string path = "/tmp/mm-test-lying-" + std::to_string(::getpid()) + ".safetensors";
  save_model(path, small.model, small.meta);
  SafetensorsFile f = read_safetensors(path);
  ModelConfig big = ModelConfig::variant("base", 1000);  // 40M parameters claimed
  f.metadata["config"] = big.to_json();
  write_safetensors(path, f.tensors, f.metadata);
  CHECK_THROWS_WITH_AS(load_model(path), doctest::Contains("needs 40883688 parameters"), Error);
  std::remove(path.c_str());
}

TEST_CASE("eval-mode backward gives the input gradient of the eval-mode function (finite differences)") {
  auto f = load_fixture("model_small.safetensors");
  MedMamba m = load_fixture_model(f);
  Tensor x = f.at("input").clone();
  // Per op, as the kept forward runs: an eval forward split into sub-batches
  // (cpu_batch_split.h) runs GEMMs of fewer rows, which may round differently.
  const Tensor base_logits = [&] {
    ScopedBatchSplit per_op(BatchSplit::Ops);
    return m.forward(x);
  }();
  Tensor logits = m.forward(x, /*train=*/false, /*keep_for_backward=*/true);
  // Bit for bit: both paths make the same GEMM calls (in_proj as two GEMMs of D outputs; as one
  // of 2D outputs it was 1 ulp off with OpenBLAS on a Xeon and with oneDNN's AVX2 sgemm), unless
  // the fused inference forward takes Winograd for a stage's 3x3 convs (conv2d_forward_eval
  // with the model's transformed weights; MM_WINOGRAD=0: never) where the kept-activations path
  // runs im2col: then within Winograd's float32 error (test_ops_winograd.cpp).
  bool winograd = false;
  for (int64_t i = 0, side = x.dim(2) / 4; i < m.config().num_stages(); ++i, side /= 2) {
    const int64_t c = m.config().dims[size_t(i)] / 2;
    winograd |= winograd_tile_for({x.dim(0), side, side, c, c, 3, 3, 1, 1}, /*weights_transformed=*/true) != 0;
  }
  check_close("keep_for_backward does not change eval logits", logits, base_logits, 0.f, winograd ? 1e-5f : 0.f);
  // Gradient of the first sample's predicted-class logit, as a saliency map takes it.
  Tensor dlogits = Tensor::zeros(logits.shape());
  dlogits.f32()[0] = 1.f;
  std::vector<int64_t> before = m.batches_tracked();
  Tensor dx = m.backward(dlogits, /*want_input_grad=*/true);
  CHECK(m.batches_tracked() == before);
  fd_check("eval input gradient", x.f32(), dx.f32(), x.numel(),
           [&] { return double(m.forward(x).f32()[0]); }, 1e-2f, 3e-2f, 1e-4f, 16);
}
