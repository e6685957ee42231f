// One mm-train optimiser step against PyTorch (test/reference/make_train_step_fixture.py):
// weighted, label-smoothed cross-entropy, backward, global-norm clipping and
// AdamW with mm-train's decay groups, from the same weights on the same batch.
#include <cmath>

#include "model/medmamba.h"
#include "ops/cross_entropy.h"
#include "test_util.h"
#include "train/optimizer.h"

using namespace mm;
using namespace mm::test;

TEST_CASE("one AdamW step (class weights, label smoothing, clipping) equals PyTorch's") {
  const SafetensorsFile start = load_fixture("model_small.safetensors");
  const SafetensorsFile f = load_fixture("train_step.safetensors");
  ModelConfig cfg = ModelConfig::from_json(f.metadata.at("config"));
  cfg.drop_path_rate = 0.f;
  MedMamba model(cfg);
  std::map<std::string, Tensor> state;
  for (const auto& [k, t] : start.tensors)
    if (model.table().find(k) || k.find("num_batches_tracked") != std::string::npos) state[k] = t;
  model.load_state(state);
  const Tensor before = model.params().clone();

  const Tensor& images = f.at("images");
  const int64_t B = images.dim(0), K = cfg.num_classes;
  CrossEntropyOptions ce;
  ce.class_weights = f.at("class_weights").f32();
  ce.label_smoothing = std::stof(f.metadata.at("label_smoothing"));
  const int64_t* labels = f.at("labels").as<int64_t>();

  model.zero_grad();
  Tensor logits = model.forward(images, /*train=*/true);
  Tensor probs = Tensor::empty({B, K});
  const float loss = cross_entropy_forward(probs.f32(), logits.f32(), labels, B, K, ce);
  CHECK(loss == doctest::Approx(f.at("loss").f32()[0]).epsilon(1e-5));
  Tensor dlogits = Tensor::zeros({B, K});
  cross_entropy_backward(dlogits.f32(), probs.f32(), labels, B, K, 1.f, ce);
  model.backward(dlogits);
  const double norm = clip_grad_norm(model.grads(), model.table(), std::stod(f.metadata.at("clip_grad")));
  CHECK(norm == doctest::Approx(f.at("grad_norm").f32()[0]).epsilon(1e-4));

  AdamWOptions o;
  o.weight_decay = std::stof(f.metadata.at("weight_decay"));
  AdamW opt(model.table(), o);
  opt.step(model.params(), model.grads(), std::stof(f.metadata.at("lr")));

  // Every parameter and running statistic after the step, within 1e-5 relative
  // (of the tensor's scale); the update itself within 0.5% (rel. L2 per tensor; measured 7e-4).
  double worst_after = 0, worst_delta = 0;
  std::string worst_after_name, worst_delta_name;
  for (const ParamEntry& e : model.table().entries()) {
    // The biases of the convolutions that feed a train-mode BatchNorm have a
    // gradient of exactly 0 in exact arithmetic (the BatchNorm removes any shift),
    // ~1e-17 in PyTorch's float64 and ~1e-9 float noise in any float32 trainer, ours
    // and PyTorch's alike; AdamW turns noise into steps of ~lr. They cannot change
    // the model's output, so they are left out of the comparison.
    if (e.name.find("conv33conv33conv11.1.bias") != std::string::npos ||
        e.name.find("conv33conv33conv11.4.bias") != std::string::npos)
      continue;
    const Tensor& want_delta = f.at("delta." + e.name);
    const float* p0 = before.f32() + e.offset;
    const float* p1 = model.params().f32() + e.offset;
    std::vector<float> want_after(size_t(e.numel())), got_delta(size_t(e.numel()));
    for (int64_t i = 0; i < e.numel(); ++i) {
      want_after[size_t(i)] = p0[i] + want_delta.f32()[i];
      got_delta[size_t(i)] = p1[i] - p0[i];
    }
    const double ea = rel_l2(p1, want_after.data(), e.numel());
    const double ed = rel_l2(got_delta.data(), want_delta.f32(), e.numel());
    if (ea > worst_after) worst_after = ea, worst_after_name = e.name;
    if (ed > worst_delta && e.kind != ParamKind::Buffer) worst_delta = ed, worst_delta_name = e.name;
  }
  INFO("worst parameter after the step: " << worst_after_name << " rel. L2 " << worst_after);
  INFO("worst update: " << worst_delta_name << " rel. L2 " << worst_delta);
  CHECK(worst_after < 1e-5);
  CHECK(worst_delta < 5e-3);
}
