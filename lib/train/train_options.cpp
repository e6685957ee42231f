#include "train/train_options.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_text.h"

namespace mm {

using json = nlohmann::json;

static json as_json(const TrainOptions& o) {
  return json{{"data", o.data}, {"exclude", o.exclude}, {"labels", o.labels}, {"val_fraction", o.val_fraction},
              {"max_bad", o.max_bad}, {"variant", o.variant}, {"dims", o.dims}, {"depths", o.depths},
              {"image_size", o.image_size}, {"init", o.init}, {"epochs", o.epochs},
              {"batch_size", o.batch_size}, {"accumulate", o.accumulate}, {"lr", o.lr}, {"min_lr", o.min_lr},
              {"weight_decay", o.weight_decay}, {"warmup_epochs", o.warmup_epochs}, {"drop_path", o.drop_path},
              {"label_smoothing", o.label_smoothing}, {"clip_grad", o.clip_grad},
              {"class_weights", o.class_weights}, {"augment", o.augment}, {"select", o.select},
              {"out", o.out}, {"seed", o.seed}, {"device", o.device}, {"precision", o.precision},
              {"threads", o.threads}, {"save_every", o.save_every}, {"sync_bn", o.sync_bn},
              {"draft", o.draft}};
}

std::string TrainOptions::to_json() const { return json_text(as_json(*this), 2); }

TrainOptions TrainOptions::from_json(const std::string& text) {
  TrainOptions o;
  try {
    const json j = json::parse(text);
    auto get = [&](const char* key, auto& field) {
      if (j.contains(key)) j.at(key).get_to(field);
    };
    get("data", o.data); get("exclude", o.exclude); get("labels", o.labels); get("val_fraction", o.val_fraction);
    get("max_bad", o.max_bad); get("variant", o.variant); get("dims", o.dims); get("depths", o.depths);
    get("image_size", o.image_size); get("init", o.init); get("epochs", o.epochs);
    get("batch_size", o.batch_size); get("accumulate", o.accumulate); get("lr", o.lr); get("min_lr", o.min_lr);
    get("weight_decay", o.weight_decay); get("warmup_epochs", o.warmup_epochs); get("drop_path", o.drop_path);
    get("label_smoothing", o.label_smoothing); get("clip_grad", o.clip_grad);
    get("class_weights", o.class_weights); get("augment", o.augment); get("select", o.select);
    get("out", o.out); get("seed", o.seed); get("device", o.device); get("precision", o.precision);
    get("threads", o.threads); get("save_every", o.save_every); get("sync_bn", o.sync_bn);
    get("draft", o.draft);
  } catch (const json::exception& e) {
    throw Error(std::string("training config: ") + e.what());
  }
  return o;
}

ModelConfig TrainOptions::model_config(int64_t num_classes) const {
  ModelConfig c = dims.empty() ? ModelConfig::variant(variant, num_classes) : ModelConfig{};
  if (!dims.empty()) {
    c.dims = dims;
    c.depths = depths;
    c.num_classes = num_classes;
  }
  c.image_size = image_size;
  c.drop_path_rate = float(drop_path);
  return c;
}

void TrainOptions::validate() const {
  MM_CHECK(!data.empty(), "--data is required");
  MM_CHECK(!out.empty(), "--out is required");
  MM_CHECK(image_size > 0 && image_size % 32 == 0,
           "--image-size " + std::to_string(image_size) + " is not a multiple of 32 (the model halves it 5 times)");
  MM_CHECK(dims.empty() == depths.empty(), "give --dims and --depths together");
  MM_CHECK(dims.size() == depths.size(), "--dims and --depths need the same number of stages");
  MM_CHECK(epochs > 0 && batch_size > 0 && accumulate > 0, "--epochs, --batch-size and --accumulate must be positive");
  MM_CHECK(val_fraction >= 0 && val_fraction < 1, "--val-fraction must be in [0, 1)");
  MM_CHECK(max_bad >= 0 && max_bad <= 1, "--max-bad must be in [0, 1]");
  MM_CHECK(lr > 0 && min_lr >= 0 && weight_decay >= 0 && warmup_epochs >= 0, "learning rates, --weight-decay and "
                                                                             "--warmup-epochs must not be negative");
  MM_CHECK(drop_path >= 0 && drop_path < 1, "--drop-path must be in [0, 1)");
  MM_CHECK(label_smoothing >= 0 && label_smoothing < 1, "--label-smoothing must be in [0, 1)");
  MM_CHECK(clip_grad >= 0, "--clip-grad must not be negative");
  MM_CHECK(class_weights == "none" || class_weights == "balanced", "--class-weights must be none or balanced");
  MM_CHECK(select == "auc" || select == "accuracy" || select == "loss", "--select must be auc, accuracy or loss");
  MM_CHECK(device == "cpu" || device == "cuda" || device == "auto", "--device must be cpu, cuda or auto");
  MM_CHECK(save_every >= 0, "--save-every must not be negative");
  if (dims.empty()) ModelConfig::variant(variant);  // throws naming the unknown variant
}

std::vector<std::string> differing_options(const TrainOptions& a, const TrainOptions& b) {
  const json ja = as_json(a), jb = as_json(b);
  std::vector<std::string> keys;
  for (const auto& [key, value] : ja.items())
    if (key != "out" && key != "threads" && value != jb.at(key)) keys.push_back(key);
  return keys;
}

}  // namespace mm
