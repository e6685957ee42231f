#include "train/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "convert/convert.h"
#include "core/random.h"
#include "eval/evaluation.h"
#include "eval/report_json.h"
#include "io/durable_file.h"
#include "io/json_text.h"
#include "model/medmamba.h"
#include "model/medmamba_cuda.h"
#include "model/model_file.h"
#include "ops/cross_entropy.h"
#include "train/batch_loader.h"
#include "train/data_parallel.h"
#include "train/optimizer.h"
#include "train/run_files.h"
#include "train/run_state.h"
#include "train/scoring.h"
#include "train/train_splits.h"

namespace mm {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// The options of the run to continue, with what the user set on this command
// line checked against them (a resumed run must be the same run).
TrainOptions options_to_resume(const TrainOptions& given, const TrainControl& control, const RunState& state) {
  TrainOptions stored = TrainOptions::from_json(state.options_json);
  std::vector<std::string> differ;
  for (const std::string& key : differing_options(stored, given))
    if (control.given.count(key)) differ.push_back(key);
  if (!differ.empty())
    throw TrainRefused(given.out + " holds a run with a different configuration (" + join(differ) +
                       " differ); resume it with its own options, or train into a new --out");
  stored.out = given.out;
  if (control.given.count("threads")) stored.threads = given.threads;
  return stored;
}

// The model to train and its metadata: the reference initialisation, or the
// --init weights (with a new head when the class count differs).
LoadedModel initial_model(const TrainOptions& o, const Dataset& d, const TrainEvents& ev) {
  const int64_t K = d.num_classes();
  // Before any training: the model file keeps the names as JSON text, which is UTF-8.
  for (const std::string& name : d.class_names)
    if (!is_utf8(name))
      throw TrainRefused(d.source + ": the class name " + json_text(nlohmann::json(name)) +
                         " is not UTF-8 text (a folder name in another encoding?); rename it");
  ModelMeta meta;
  meta.class_names = d.class_names;
  meta.preprocess.input_size = o.image_size;
  if (o.init.empty()) {
    meta.config = o.model_config(K);
    MedMamba model(meta.config);
    model.init_reference(o.seed);
    return LoadedModel{std::move(model), meta};
  }
  LoadedModel init = load_weights_as_model(o.init);
  meta.config = init.meta.config;
  meta.config.image_size = o.image_size;
  meta.config.num_classes = K;
  meta.config.drop_path_rate = float(o.drop_path);
  meta.preprocess = init.meta.preprocess;
  meta.preprocess.input_size = o.image_size;
  if (o.labels.empty() && d.labels_are_indices && int64_t(init.meta.class_names.size()) == K)
    meta.class_names = init.meta.class_names;
  MedMamba model(meta.config);
  model.init_reference(o.seed);
  std::map<std::string, Tensor> state = init.model.state();
  const bool new_head = init.meta.config.num_classes != K;
  if (new_head) {
    const std::map<std::string, Tensor> fresh = model.state();
    state["head.weight"] = fresh.at("head.weight");
    state["head.bias"] = fresh.at("head.bias");
  }
  model.load_state(state);
  if (ev.note)
    ev.note("fine-tuning from " + o.init + (new_head ? " (new " + std::to_string(K) + "-class head)" : "") +
            "; its architecture replaces --variant/--dims");
  return LoadedModel{std::move(model), meta};
}

ImageCache cache_split(const char* what, const Dataset& d, const std::vector<size_t>& samples, const ModelMeta& meta,
                       const ImageFileReader& read_file, int threads, bool draft, const TrainEvents& ev) {
  const auto t0 = Clock::now();
  ImageCache c = build_image_cache(d, samples, meta.preprocess, meta.config.in_chans, read_file, threads, {},
                                   ReadHints{draft ? meta.preprocess.input_size : 0});
  for (const ImageCache::Failure& f : c.failures)
    if (ev.note) ev.note(std::string("unreadable ") + what + " sample skipped: " + f.id + ": " + f.reason);
  if (ev.note && !samples.empty()) {
    std::ostringstream s;
    s << what << ": " << c.rows() << " images cached (" << (c.bytes() >> 20) << " MiB) in " << std::fixed
      << std::setprecision(1) << seconds_since(t0) << " s";
    ev.note(s.str());
  }
  return c;
}

// A model file written and committed on the queue's thread, from `state`, a snapshot of
// model.state() (which copies the parameters), while the next epoch trains.
void queue_model_file(const std::string& path, const std::map<std::string, Tensor>& state, const ModelConfig& config,
                      const ModelMeta& meta, CommitQueue& later) {
  const std::string tmp = path + ".partial";
  later.add(tmp, path, [tmp, state, config, meta] { save_model_state(tmp, state, config, meta); });
}

// Bigger is better for every --select metric (the loss enters negated).
std::optional<double> selection_value(const std::string& select, const EpochRecord& r) {
  if (select == "loss") return r.val_loss ? std::optional<double>(-*r.val_loss) : std::optional<double>(-r.train_loss);
  if (select == "auc" && r.val_auc) return r.val_auc;
  return r.val_accuracy;  // accuracy, or an AUC that is undefined
}

// config.json: every option, and what they resolved to for this data.
std::string resolved_config_json(const TrainOptions& o, const ModelMeta& meta, const Dataset& d,
                                 const TrainSplits& splits, int threads, int64_t steps_per_epoch,
                                 int64_t total_steps, int64_t warmup_steps) {
  nlohmann::ordered_json j;
  j["options"] = nlohmann::json::parse(o.to_json());
  j["resolved"] = {{"model", nlohmann::json::parse(meta.config.to_json())},
                   {"class_names", meta.class_names},
                   {"preprocess", nlohmann::json::parse(meta.preprocess.to_json())},
                   {"augment", AugmentOptions::from_list(o.augment).to_list()},
                   {"samples", {{"train", splits.train.size()}, {"val", splits.val.size()},
                                {"test", splits.test.size()}, {"excluded", d.excluded}}},
                   {"val_source", splits.val_source},
                   {"steps_per_epoch", steps_per_epoch}, {"total_steps", total_steps},
                   {"warmup_steps", warmup_steps}, {"threads", threads}};
  return json_text(j, 2) + "\n";
}

int64_t predicted(const float* logits, int64_t K) {
  return int64_t(std::max_element(logits, logits + K) - logits);
}

}  // namespace

TrainResult train_model(TrainOptions o, const TrainControl& control, const ImageFileReader& read_file,
                        const TrainEvents& events) {
  std::unique_ptr<Communicator> single;
  Communicator& comm = control.comm ? *control.comm : *(single = single_process_communicator());
  const int rank = comm.rank(), world = comm.size();
  const bool lead = rank == 0;  // writes the run directory and reports
  const TrainEvents ev = lead ? events : TrainEvents{};
  auto note = [&](const std::string& s) {
    if (ev.note) ev.note(s);
  };
  const std::string state_path = (fs::path(o.out) / "state.safetensors").string();
  std::optional<RunState> resumed;
  if (control.resume) {
    MM_CHECK(fs::exists(state_path), o.out + ": no state.safetensors to resume from");
    resumed = load_run_state(state_path);
    o = options_to_resume(o, control, *resumed);
  }
  try {
    o.validate();
  } catch (const Error& e) {
    throw TrainRefused(e.what());
  }
  Device device = Device::CPU;
  try {
    device = resolve_device(o.device);
  } catch (const Error& e) {
    throw TrainRefused(e.what());
  }
  MedMambaCudaOptions gpu;
  try {
    gpu.math = parse_gemm_math(o.precision, "--precision");
  } catch (const Error& e) {
    throw TrainRefused(e.what());
  }
  if (o.precision != "fp32" && device != Device::CUDA)
    throw TrainRefused("--precision " + o.precision + ": the CPU backend trains in fp32 only (tf32 and bf16 GEMMs are "
                       "GPU tensor-core modes)");
  if (world > 1 && device == Device::CUDA)
    throw TrainRefused("several processes on GPUs need NCCL, which this build does not use yet; run one GPU process, "
                       "or data-parallel CPU processes with --device cpu");
  if (o.sync_bn && world == 1) note("--sync-bn: one process, nothing to synchronise");
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const int threads = resolve_thread_count(o.threads);

  // Data: splits and their checks come before anything slow.
  DatasetOptions dopt;
  dopt.exclude_file = o.exclude;
  Dataset d = open_dataset(o.data, dopt);
  const TrainSplits splits = split_for_training(d, o.val_fraction, o.seed);
  try {
    if (!o.labels.empty()) name_index_classes(d, o.labels);
    check_training_labels(d, splits);
  } catch (const Error& e) {
    throw TrainRefused(e.what());
  }
  note(d.source + ": " + std::to_string(d.num_classes()) + " classes; " + std::to_string(splits.train.size()) +
       " train, " + std::to_string(splits.val.size()) + " val (" + splits.val_source + "), " +
       std::to_string(splits.test.size()) + " test samples" +
       (d.excluded ? "; " + std::to_string(d.excluded) + " excluded" : ""));

  LoadedModel lm = initial_model(o, d, ev);
  const ModelMeta& meta = lm.meta;
  const std::unique_ptr<Model> model_owner =
      model_on_device(std::make_unique<MedMamba>(std::move(lm.model)), device, gpu);
  Model& model = *model_owner;
  if (o.sync_bn && world > 1)
    model.set_batchnorm_sync([&comm](double* values, int64_t n) { comm.allreduce_sum(values, n); });
  if (world > 1) note("data parallel: " + comm.description() + ", " + std::to_string(o.batch_size) +
                      " images each per micro-batch" + (o.sync_bn ? ", synchronised BatchNorm" : ""));
  if (device == Device::CUDA) note("device: " + static_cast<MedMambaCuda&>(model).device_name());
  const int64_t K = meta.config.num_classes;
  note("model: " + meta.config.to_json() + ", " + std::to_string(model.table().trainable_count()) +
       " parameters");

  if (!resumed) {
    fs::create_directories(o.out);
    MM_CHECK(!fs::exists(state_path), o.out + " already holds a run; continue it with --resume " + o.out +
                                          ", or choose another --out");
  }
  const ImageCache train_cache = cache_split("train", d, splits.train, meta, read_file, threads, o.draft, ev);
  const ImageCache val_cache = cache_split("val", d, splits.val, meta, read_file, threads, o.draft, ev);
  TrainResult result;
  result.unreadable = int64_t(train_cache.failures.size() + val_cache.failures.size());
  const double bad = double(result.unreadable) / double(std::max<size_t>(splits.train.size() + splits.val.size(), 1));
  if (bad > o.max_bad)
    throw TooManyUnreadable(std::to_string(result.unreadable) + " of " +
                            std::to_string(splits.train.size() + splits.val.size()) +
                            " samples are unreadable, more than --max-bad " + std::to_string(o.max_bad) +
                            " (the first: " + (train_cache.failures.empty() ? val_cache.failures[0].id + ": " +
                                                   val_cache.failures[0].reason : train_cache.failures[0].id +
                                                   ": " + train_cache.failures[0].reason) + ")");
  MM_CHECK(train_cache.rows() > 0, d.source + ": no readable training sample");

  std::vector<float> class_weights;
  CrossEntropyOptions ce;
  ce.label_smoothing = float(o.label_smoothing);
  if (o.class_weights == "balanced") {
    class_weights = balanced_class_weights(d, splits.train);
    ce.class_weights = class_weights.data();
  }

  const int64_t batches = global_batches(train_cache.rows(), o.batch_size, world);
  const int64_t steps_per_epoch = (batches + o.accumulate - 1) / o.accumulate;
  const int64_t total_steps = o.epochs * steps_per_epoch;
  const int64_t warmup_steps = std::min(total_steps, int64_t(std::llround(o.warmup_epochs * double(steps_per_epoch))));
  AdamWOptions adam;
  adam.weight_decay = float(o.weight_decay);
  AdamW opt(model.table(), adam, model.device());

  RunProgress p;
  p.processes = world;
  std::vector<EpochRecord> records;
  const std::string metrics_path = (fs::path(o.out) / "metrics.jsonl").string();
  if (resumed) {
    MM_CHECK(resumed->params.numel() == model.params().numel(), state_path + ": parameters do not fit the model");
    model.params().copy_from(resumed->params);
    opt.first_moment().copy_from(resumed->adam_m);
    opt.second_moment().copy_from(resumed->adam_v);
    model.batches_tracked() = resumed->batches_tracked;
    model.params_changed();
    p = resumed->progress;
    try {
      adapt_progress_to_world(p, o.batch_size, world);
    } catch (const Error& e) {
      throw TrainRefused(e.what());
    }
    opt.set_steps(p.step);
    records = read_metrics_file(metrics_path);
    records.resize(std::min(records.size(), size_t(p.epoch)));  // epochs after the state were not kept
    note("resuming at epoch " + std::to_string(p.epoch + 1) + ", batch " + std::to_string(p.batches_done) +
         ", step " + std::to_string(p.step));
  } else if (lead) {
    durable_replace((fs::path(o.out) / "config.json").string(),
                          resolved_config_json(o, meta, d, splits, threads, steps_per_epoch, total_steps, warmup_steps));
  }
  // The files written at the end of an epoch reach the disk while the next one
  // trains: every write below waits for the commits before it.
  CommitQueue commits;
  auto save_state = [&] {
    if (!lead) return;
    commits.wait();
    RunState s;
    s.progress = p;
    // Copies, also of CPU tensors (to(CPU) would alias them): the queue writes them while
    // the next epoch changes the originals.
    const auto copy_on_cpu = [](const Tensor& t) { return t.device() == Device::CPU ? t.clone() : t.to(Device::CPU); };
    s.params = copy_on_cpu(model.params());
    s.adam_m = copy_on_cpu(opt.first_moment());
    s.adam_v = copy_on_cpu(opt.second_moment());
    s.batches_tracked = model.batches_tracked();
    s.options_json = o.to_json();
    save_run_state(state_path, s, &commits);
    commits.start();
  };

  BatchLoader loader(train_cache, AugmentOptions::from_list(o.augment), meta.preprocess, threads);
  Tensor probs = Tensor::empty({o.batch_size, K});
  Tensor dlogits = Tensor::empty({o.batch_size, K});
  while (p.epoch < o.epochs && !(control.stop_after_epoch > 0 && p.epoch >= control.stop_after_epoch)) {
    const std::vector<int64_t> order = epoch_permutation(train_cache.rows(), o.seed, p.epoch);
    loader.start_epoch(shard_of_epoch(order, p.batches_done, o.batch_size, rank, world), o.batch_size, o.seed,
                       p.epoch);
    const auto t0 = Clock::now();
    const double seconds_before = p.train_seconds;
    const int64_t seen_before = p.seen;
    float lr = cosine_lr(p.step, total_steps, warmup_steps, float(o.lr), float(o.min_lr));
    for (Batch b; loader.next(b);) {
      const int64_t k = p.batches_done, B = int64_t(b.labels.size());
      const int64_t group = std::min(o.accumulate, batches - (k - k % o.accumulate));
      model.seed_drop_path(SplitMix64::at(o.seed ^ 0xD509D509ull, uint64_t(p.epoch * batches + k)).next());
      Tensor logits = model.forward(b.images, /*train=*/true);
      const float local_loss = cross_entropy_forward(probs.f32(), logits.f32(), b.labels.data(), B, K, ce);
      // Over the processes: the loss weight (B without class weights), the loss, correct and seen.
      double sums[4] = {0, double(local_loss) * double(B), 0, double(B)};
      for (int64_t i = 0; i < B; ++i) {
        sums[0] += ce.class_weights ? double(ce.class_weights[b.labels[size_t(i)]]) : 1.0;
        sums[2] += predicted(logits.f32() + i * K, K) == b.labels[size_t(i)];
      }
      const double local_weight = sums[0];
      comm.allreduce_sum(sums, 4);
      const float loss = float(sums[1] / sums[3]);
      if (!std::isfinite(loss))
        throw LossNotFinite("the loss is " + std::to_string(loss) + " at step " + std::to_string(p.step + 1) +
                            " (epoch " + std::to_string(p.epoch + 1) + ", batch " + std::to_string(k + 1) +
                            "); the last good state is in " + state_path);
      std::memset(dlogits.data(), 0, size_t(B * K) * sizeof(float));
      // This process's share of the global weighted mean (1 with one process).
      const float share = world > 1 ? float(local_weight / sums[0]) : 1.f;
      cross_entropy_backward(dlogits.f32(), probs.f32(), b.labels.data(), B, K, share / float(group), ce);
      model.backward(dlogits.slice_view(0, {B, K}));
      p.loss_sum += sums[1];
      p.correct += int64_t(sums[2]);
      p.seen += int64_t(sums[3]);
      p.batches_done = k + 1;
      if (p.batches_done % o.accumulate == 0 || p.batches_done == batches) {
        if (world > 1) comm.allreduce_sum(model.grads().as<float>(), model.grads().numel());
        const double norm = clip_grad_norm(model.grads(), model.table(), o.clip_grad);
        if (!std::isfinite(norm))
          throw LossNotFinite("the gradient norm is not finite at step " + std::to_string(p.step + 1) +
                              "; the last good state is in " + state_path);
        lr = cosine_lr(p.step, total_steps, warmup_steps, float(o.lr), float(o.min_lr));
        opt.step(model.params(), model.grads(), lr);
        model.params_changed();
        model.zero_grad();
        ++p.step;
        if (o.save_every > 0 && p.step % o.save_every == 0 && p.batches_done < batches) {
          p.train_seconds = seconds_before + seconds_since(t0);
          save_state();
        }
      }
      if (ev.batch) {
        BatchProgress bp;
        bp.epoch = p.epoch + 1; bp.epochs = o.epochs; bp.batch = p.batches_done; bp.batches = batches;
        bp.loss = p.loss_sum / double(p.seen);
        bp.accuracy = double(p.correct) / double(p.seen);
        const double s = seconds_since(t0);
        bp.images_per_second = s > 0 ? double(p.seen - seen_before) / s : 0;
        bp.eta_seconds = bp.images_per_second > 0 ? double((batches - p.batches_done) * o.batch_size) /
                                                        bp.images_per_second : 0;
        ev.batch(bp);
      }
    }
    p.train_seconds = seconds_before + seconds_since(t0);

    EpochRecord r;
    r.epoch = p.epoch + 1;
    r.step = p.step;
    r.lr = lr;
    r.train_loss = p.loss_sum / double(std::max<int64_t>(p.seen, 1));
    r.train_accuracy = double(p.correct) / double(std::max<int64_t>(p.seen, 1));
    r.seconds = p.train_seconds;
    r.images_per_second = p.train_seconds > 0 ? double(p.seen) / p.train_seconds : 0;
    if (lead) {  // validation, model files and metrics: rank 0's alone
      if (val_cache.rows() > 0) {
        const CacheScores v = score_cache(model, val_cache, meta.preprocess, o.batch_size, threads);
        const Metrics m = compute_metrics(v.scores);
        r.val_loss = v.loss;
        r.val_accuracy = m.accuracy;
        r.val_balanced_accuracy = m.balanced_accuracy;
        r.val_auc = m.macro.auc;
      }
      const std::optional<double> value = selection_value(o.select, r);
      // Without a value to select by (no validation set), the latest epoch is the best one.
      r.best = p.best_epoch < 0 || !value || *value > p.best_value;
      commits.wait();
      // One snapshot for both files: the best epoch's parameters are the last ones.
      const std::map<std::string, Tensor> state = model.state();
      if (r.best) {
        p.best_epoch = p.epoch;
        p.best_value = value.value_or(0.0);
        queue_model_file((fs::path(o.out) / "best.safetensors").string(), state, model.config(), meta, commits);
      }
      queue_model_file((fs::path(o.out) / "last.safetensors").string(), state, model.config(), meta, commits);
      records.push_back(r);
      write_metrics_file(metrics_path, records, &commits);
      durable_replace((fs::path(o.out) / "curves.svg").string(), training_curves_svg(records), &commits);
    }
    ++p.epoch;
    p.batches_done = 0;
    p.loss_sum = 0;
    p.correct = p.seen = 0;
    p.train_seconds = 0;
    save_state();
    if (ev.epoch_end) ev.epoch_end(r);
  }
  result.epochs_done = p.epoch;
  commits.wait();

  if (!lead) return result;  // rank 0 scores the test split
  if (p.epoch == o.epochs && !splits.test.empty()) {
    LoadedModel best = load_model((fs::path(o.out) / "best.safetensors").string());
    const std::unique_ptr<Model> best_model =
        model_on_device(std::make_unique<MedMamba>(std::move(best.model)), device, gpu);
    const ImageCache test_cache = cache_split("test", d, splits.test, meta, read_file, threads, o.draft, ev);
    if (test_cache.rows() > 0) {
      CacheScores t = score_cache(*best_model, test_cache, meta.preprocess, o.batch_size, threads);
      std::vector<std::string> ids;
      for (const CachedImage& c : test_cache.images) ids.push_back(d.samples[c.sample].id);
      Evaluation e = evaluate(std::move(t.scores), std::move(ids), meta.class_names, MetricOptions{});
      e.about = {{"model", (fs::path(o.out) / "best.safetensors").string()}, {"data", d.source}, {"split", "test"}};
      write_json_report((fs::path(o.out) / "test_metrics.json").string(), e);
      result.test_accuracy = e.metrics.accuracy;
      result.test_auc = e.metrics.macro.auc;
    }
  }
  return result;
}

}  // namespace mm
