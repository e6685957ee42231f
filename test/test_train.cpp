// mm-train end to end on the CPU backend: a real BreastMNIST run (the loss
// falls, the test AUC is asserted), exact resume after an interruption, and the
// refusals that must come before training starts.
#include <cmath>
#include <cstring>

#include "eval_test_util.h"
#include "io/safetensors.h"
#include "model/model_file.h"
#include "train/run_files.h"
#include "train/trainer.h"

using namespace mm;
using mm::test::ScratchDir;

namespace {

// A model small enough for CI: dims 8..64 at 32 px, one epoch, 2 threads.
TrainOptions small_options(const std::string& data, const std::string& out) {
  TrainOptions o;
  o.data = data;
  o.out = out;
  o.dims = {8, 16, 32, 64};
  o.depths = {1, 1, 1, 1};
  o.image_size = 32;
  o.epochs = 1;
  o.batch_size = 8;
  o.threads = 2;
  return o;
}

// BreastMNIST on that model: about a second an epoch on 2 cores.
TrainOptions breast_options(const std::string& out) {
  TrainOptions o = small_options(test::shared_data_dir() + "/medmnist/breastmnist.npz", out);
  o.epochs = 6;
  o.batch_size = 32;
  o.lr = 2e-3;
  o.augment = "flip";  // the full set needs more epochs than CI can give a model this small
  o.warmup_epochs = 0.5;
  o.seed = 7;
  o.save_every = 5;
  return o;
}

bool same_tensors(const std::string& a, const std::string& b) {
  const SafetensorsFile fa = read_safetensors(a), fb = read_safetensors(b);
  if (fa.tensors.size() != fb.tensors.size()) return false;
  for (const auto& [name, t] : fa.tensors) {
    const Tensor& u = fb.at(name);
    if (t.nbytes() != u.nbytes() || std::memcmp(t.data(), u.data(), t.nbytes()) != 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("mm-train on BreastMNIST: the loss falls, the test AUC is reached, and a resumed run is bit-identical") {
  if (test::shared_data_dir().empty()) return;  // ../shared/data is absent
  ScratchDir dir;
  const std::string full = dir.path() + "/full", parts = dir.path() + "/parts";
  const TrainResult r = train_model(breast_options(full), {}, {}, {});
  CHECK(r.epochs_done == 6);
  const std::vector<EpochRecord> rec = read_metrics_file(full + "/metrics.jsonl");
  REQUIRE(rec.size() == 6);
  CHECK(rec[5].train_loss < rec[0].train_loss);
  REQUIRE(r.test_auc.has_value());
  MESSAGE("BreastMNIST, 6 epochs, dims 8..64 at 32 px: test accuracy " << *r.test_accuracy << ", AUC " << *r.test_auc);
  CHECK(*r.test_auc > 0.72);  // the published MedMamba figure is 0.825 (224 px, 100 epochs)
  CHECK(*r.test_accuracy > 0.74);  // above the majority class's 0.731
  for (const char* f : {"config.json", "curves.svg", "best.safetensors", "last.safetensors", "state.safetensors",
                        "test_metrics.json"})
    CHECK(std::filesystem::exists(full + "/" + f));

  // Stopped after epoch 1, then continued: the same losses and the same weights, bit for bit.
  TrainControl stop;
  stop.stop_after_epoch = 1;
  CHECK(train_model(breast_options(parts), stop, {}, {}).epochs_done == 1);
  TrainControl resume;
  resume.resume = true;
  CHECK(train_model(breast_options(parts), resume, {}, {}).epochs_done == 6);
  const std::vector<EpochRecord> rec2 = read_metrics_file(parts + "/metrics.jsonl");
  REQUIRE(rec2.size() == 6);
  for (size_t i = 0; i < 6; ++i) {
    CHECK(rec2[i].train_loss == rec[i].train_loss);
    CHECK(rec2[i].val_loss == rec[i].val_loss);
  }
  CHECK(same_tensors(full + "/last.safetensors", parts + "/last.safetensors"));
  CHECK(same_tensors(full + "/best.safetensors", parts + "/best.safetensors"));

  // A different configuration is refused on resume.
  TrainControl changed = resume;
  changed.given = {"lr"};
  TrainOptions other = breast_options(parts);
  other.lr = 1e-3;
  CHECK_THROWS_AS(train_model(other, changed, {}, {}), TrainRefused);
}

namespace {

// Fake files: the test's reader makes a 40x40 picture from the file name, and
// refuses names starting with "bad" (as a reader refuses a broken file).
Image fake_picture(const std::string& file, const ReadHints& = {}) {
  const std::string name = std::filesystem::path(file).filename().string();
  if (name.rfind("bad", 0) == 0) throw Error(file + ": not an image (test reader)");
  Image img;
  img.height = img.width = 40;
  img.channels = 1;
  img.pixels.resize(40 * 40);
  const float level = name[0] == 'a' ? 0.2f : 0.8f;
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = level + 0.1f * float(i % 7) / 7.f;
  img.format = "png";
  return img;
}

std::string manifest(const ScratchDir& dir, int bad, bool class_b_in_train, const std::string& beta = "beta") {
  std::string csv = "path,label,split\n";
  for (int i = 0; i < 20; ++i) csv += "a" + std::to_string(i) + ".png,alpha,train\n";
  for (int i = 0; i < 20; ++i) csv += "b" + std::to_string(i) + ".png," + beta + "," + (class_b_in_train ? "train" : "test") + "\n";
  for (int i = 0; i < 4; ++i) csv += "a_val" + std::to_string(i) + ".png,alpha,val\nb_val" + std::to_string(i) + ".png," + beta + ",val\n";
  for (int i = 0; i < bad; ++i) csv += "bad" + std::to_string(i) + ".png,alpha,train\n";
  return dir.write("data.csv", csv);
}


}  // namespace

TEST_CASE("mm-train refuses bad setups before training, and skips unreadable samples up to --max-bad") {
  ScratchDir dir;
  SUBCASE("a class with no training sample") {
    TrainOptions o = small_options(manifest(dir, 0, false), dir.path() + "/run");
    CHECK_THROWS_WITH_AS(train_model(o, {}, fake_picture, {}), doctest::Contains("no training sample for class beta"),
                         TrainRefused);
  }
  SUBCASE("a class name that is not UTF-8, which the model file could not hold") {
    TrainOptions o = small_options(manifest(dir, 0, true, "b\xe9ta"), dir.path() + "/run");
    CHECK_THROWS_WITH_AS(train_model(o, {}, fake_picture, {}),
                         doctest::Contains("the class name \"b\xef\xbf\xbdta\" is not UTF-8 text"), TrainRefused);
  }
  SUBCASE("an image size that is not a multiple of 32") {
    TrainOptions o = small_options(manifest(dir, 0, true), dir.path() + "/run");
    o.image_size = 48;
    CHECK_THROWS_WITH_AS(train_model(o, {}, fake_picture, {}), doctest::Contains("not a multiple of 32"), TrainRefused);
  }
  SUBCASE("unreadable samples: skipped and counted, or too many") {
    TrainOptions o = small_options(manifest(dir, 2, true), dir.path() + "/run");
    o.max_bad = 0.01;  // 2 of 50
    CHECK_THROWS_WITH_AS(train_model(o, {}, fake_picture, {}), doctest::Contains("2 of 50 samples are unreadable"),
                         TooManyUnreadable);
    o.max_bad = 0.05;
    o.out = dir.path() + "/run2";
    std::vector<std::string> notes;
    TrainEvents ev;
    ev.note = [&](const std::string& s) { notes.push_back(s); };
    const TrainResult r = train_model(o, {}, fake_picture, ev);
    CHECK(r.unreadable == 2);
    CHECK(r.epochs_done == 1);
    int skipped = 0;
    for (const std::string& n : notes) skipped += n.find("unreadable train sample skipped: bad") != std::string::npos;
    CHECK(skipped == 2);
  }
  SUBCASE("a loss that is not finite stops the run with the step, keeping the last good state") {
    TrainOptions o = small_options(manifest(dir, 0, true), dir.path() + "/run");
    o.lr = 1e30;
    o.epochs = 3;
    o.augment = "";
    CHECK_THROWS_WITH_AS(train_model(o, {}, fake_picture, {}), doctest::Contains("at step"), LossNotFinite);
  }
}

TEST_CASE("mm-train --init fine-tunes a checkpoint: its architecture is kept and the head replaced for new classes") {
  ScratchDir dir;
  // small.pth: the public code's state dict of a dims 16..128 model with 3 classes.
  TrainOptions o = small_options(manifest(dir, 0, true), dir.path() + "/run");
  o.init = std::string(MM_FIXTURE_DIR) + "/checkpoints/small.pth";
  o.dims.clear();
  o.depths.clear();
  std::vector<std::string> notes;
  TrainEvents ev;
  ev.note = [&](const std::string& s) { notes.push_back(s); };
  train_model(o, {}, fake_picture, ev);
  const LoadedModel trained = load_model(dir.path() + "/run/last.safetensors");
  CHECK(trained.meta.config.dims == std::vector<int64_t>{16, 32, 64, 128});
  CHECK(trained.meta.config.num_classes == 2);
  CHECK(trained.meta.class_names == std::vector<std::string>{"alpha", "beta"});
  bool head_note = false;
  for (const std::string& n : notes) head_note |= n.find("new 2-class head") != std::string::npos;
  CHECK(head_note);

  // With one micro-batch of learning rate ~0 the body stays the checkpoint's.
  TrainOptions still = o;
  still.out = dir.path() + "/still";
  still.lr = 1e-30;
  still.drop_path = 0;
  train_model(still, {}, fake_picture, {});
  const LoadedModel kept = load_model(dir.path() + "/still/last.safetensors");
  const SafetensorsFile ref = read_safetensors(std::string(MM_FIXTURE_DIR) + "/model_small.safetensors");
  const Tensor& w = ref.at("layers.1.blocks.0.self_attention.in_proj.weight");
  const std::map<std::string, Tensor> state = kept.model.state();
  const Tensor& got = state.at("layers.1.blocks.0.self_attention.in_proj.weight");
  REQUIRE(got.numel() == w.numel());
  CHECK(std::memcmp(got.data(), w.data(), w.nbytes()) == 0);
}

TEST_CASE("mm-train --accumulate takes one optimiser step per group of micro-batches") {
  ScratchDir dir;
  TrainOptions o = small_options(manifest(dir, 0, true), dir.path() + "/run");
  o.batch_size = 4;  // 40 training samples: 10 micro-batches
  o.accumulate = 3;  // steps after 3, 6, 9 and the last (10)
  o.epochs = 2;
  train_model(o, {}, fake_picture, {});
  const std::vector<EpochRecord> rec = read_metrics_file(dir.path() + "/run/metrics.jsonl");
  REQUIRE(rec.size() == 2);
  CHECK(rec[0].step == 4);
  CHECK(rec[1].step == 8);
}

TEST_CASE("mm-train without a validation set keeps the last epoch as best.safetensors") {
  ScratchDir dir;
  std::string csv = "path,label,split\n";
  for (int i = 0; i < 12; ++i) csv += "a" + std::to_string(i) + ".png,alpha,train\nb" + std::to_string(i) + ".png,beta,train\n";
  TrainOptions o = small_options(dir.write("data.csv", csv), dir.path() + "/run");
  o.val_fraction = 0;
  o.epochs = 3;
  train_model(o, {}, fake_picture, {});
  const std::vector<EpochRecord> rec = read_metrics_file(dir.path() + "/run/metrics.jsonl");
  REQUIRE(rec.size() == 3);
  for (const EpochRecord& r : rec) CHECK(r.best);
  const LoadedModel best = load_model(dir.path() + "/run/best.safetensors");
  const LoadedModel last = load_model(dir.path() + "/run/last.safetensors");
  CHECK(std::memcmp(best.model.params().data(), last.model.params().data(), last.model.params().nbytes()) == 0);
}
