// mm-train: trains or fine-tunes a MedMamba model on a labelled dataset and
// writes a run directory (config, metrics, curves, best/last models, a
// resumable state). Usage, files and exit codes: docs/mm-train.md. The work
// happens in lib/train.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "core/error.h"
#include "dist/communicator.h"
#include "labelled_sample_reader.h"
#include "ops/blas_tuning.h"
#include "train/command.h"

int main(int argc, char** argv) {
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-train: train or fine-tune a MedMamba model on a labelled dataset"};
  mm::TrainOptions o;
  mm::TrainControl control;
  std::string resume, dims, depths;
  bool no_augment = false, quiet = false;
  std::vector<std::pair<CLI::Option*, std::string>> keyed;  // for the --resume consistency check
  auto opt = [&](const char* flags, auto& field, const char* help, const char* key) {
    CLI::Option* op = app.add_option(flags, field, help)->capture_default_str();
    keyed.push_back({op, key});
    return op;
  };
  opt("--data", o.data, "class folder (optionally under train/val/test), CSV manifest path,label[,split], or MedMNIST .npz", "data");
  opt("--exclude", o.exclude, "file of sample ids to leave out, relative to the data folder", "exclude");
  keyed.push_back({app.add_option("--labels", o.labels,
                                  "class names, comma-separated, in label order, for data labelled 0, 1, ... "
                                  "(MedMNIST .npz)")->delimiter(','),
                   "labels"});
  opt("--val-fraction", o.val_fraction, "held-out validation fraction (stratified, under --seed) when the data has no val split", "val_fraction");
  opt("--max-bad", o.max_bad, "fraction of unreadable samples tolerated before stopping", "max_bad");
  opt("--out", o.out, "the run directory", "out");
  opt("--variant", o.variant, "tiny | small | base", "variant");
  opt("--dims", dims, "channel widths per stage, e.g. 48,96,192,384 (with --depths)", "dims");
  opt("--depths", depths, "blocks per stage, e.g. 2,2,4,2 (with --dims)", "depths");
  opt("--image-size", o.image_size, "input side (a multiple of 32)", "image_size");
  opt("--init", o.init, "fine-tune from these weights (.safetensors or .pth); a new head when the class count differs", "init");
  opt("--epochs", o.epochs, "epochs", "epochs");
  opt("--batch-size", o.batch_size, "images per micro-batch", "batch_size");
  opt("--accumulate", o.accumulate, "micro-batches per optimiser step", "accumulate");
  opt("--lr", o.lr, "peak learning rate (AdamW)", "lr");
  opt("--min-lr", o.min_lr, "learning rate at the end of the cosine", "min_lr");
  opt("--weight-decay", o.weight_decay, "AdamW weight decay (not on norms, biases, A_logs, Ds)", "weight_decay");
  opt("--warmup-epochs", o.warmup_epochs, "linear warm-up, in epochs", "warmup_epochs");
  opt("--drop-path", o.drop_path, "stochastic depth rate of the last block", "drop_path");
  opt("--label-smoothing", o.label_smoothing, "cross-entropy label smoothing", "label_smoothing");
  opt("--clip-grad", o.clip_grad, "clip the global gradient norm to this (0: off)", "clip_grad");
  opt("--class-weights", o.class_weights, "none | balanced (inverse class frequency, as scikit-learn)", "class_weights");
  CLI::Option* aug = opt("--augment", o.augment, "augmentations: any of crop,flip,rotate,jitter,translate", "augment");
  CLI::Option* noaug = app.add_flag("--no-augment", no_augment, "no augmentation");
  opt("--select", o.select, "which epoch is best: auc | accuracy | loss (on the val set)", "select");
  opt("--seed", o.seed, "seed of the split, the shuffles, the augmentation, drop path and the initialisation", "seed");
  opt("--device", o.device, "cpu | cuda | auto (cuda when a GPU is present)", "device");
  opt("--precision", o.precision,
      "fp32 | tf32 | bf16: the GEMMs' compute (tf32, bf16: GPU tensor cores; every buffer stays fp32)", "precision");
  opt("--threads", o.threads, "CPU threads (0: every core)", "threads");
  CLI::Option* sync_bn = app.add_flag("--sync-bn", o.sync_bn,
                                     "data-parallel runs: BatchNorm statistics over the global batch (all processes)");
  keyed.push_back({sync_bn, "sync_bn"});
  CLI::Option* draft = app.add_flag("--draft", o.draft,
                                    "decode JPEG and JPEG 2000 samples at a reduced size no smaller than --image-size, "
                                    "as mm-predict --draft (train and predict alike)");
  keyed.push_back({draft, "draft"});
  opt("--save-every", o.save_every, "also save the resumable state every N optimiser steps (0: at epoch ends)", "save_every");
  app.add_option("--resume", resume, "continue the interrupted run in this directory (its config.json is the configuration)");
  app.add_option("--stop-after-epoch", control.stop_after_epoch, "stop after this many epochs, resumable (0: run them all)");
  app.add_flag("-q,--quiet", quiet, "only one line per epoch");
  noaug->excludes(aug);
  try {
    app.parse(argc, argv);
    o.dims = mm::parse_int_list(dims, "--dims");
    o.depths = mm::parse_int_list(depths, "--depths");
    if (no_augment) o.augment = "";
    for (const auto& [op, key] : keyed)
      if (op->count() > 0) control.given.insert(key);
    if (no_augment) control.given.insert("augment");
    if (!resume.empty()) {
      control.resume = true;
      if (o.out.empty()) o.out = resume;
      if (o.out != resume) throw CLI::ValidationError("--out", "--resume continues in its own directory");
      control.given.erase("out");
    } else if (o.data.empty() || o.out.empty()) {
      throw CLI::ValidationError("give --data and --out (or --resume DIR)");
    }
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return mm::kTrainUsage;
  } catch (const mm::Error& e) {  // --dims/--depths
    std::fprintf(stderr, "mm-train: %s\n", e.what());
    return mm::kTrainUsage;
  }
  // One process per worker under mpirun/srun (docs/mm-train.md, "Several processes").
  std::unique_ptr<mm::Communicator> world;
  int code = mm::kTrainFatal;
  try {
    world = mm::world_communicator();
    control.comm = world.get();
    code = mm::run_train_command(o, control, quiet, read_labelled_sample);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mm-train: out of memory (try a smaller --batch-size or --image-size)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-train: %s\n", e.what());
  }
  // A process that failed ends the whole run, so that no other waits for it in a collective.
  if (code != mm::kTrainOk && world && world->size() > 1) world->abort(code);
  return code;
}
