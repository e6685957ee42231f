#pragma once
// Everything mm-train is asked to do, resolved: written to the run directory's
// config.json, compared on --resume, and read back by it.
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "model/config.h"

namespace mm {

struct TrainOptions {
  // data
  std::string data, exclude;
  std::vector<std::string> labels;  // names of index labels (MedMNIST .npz), in label order; empty: "0", "1", ...
  double val_fraction = 0.1;  // of the training samples, stratified, when the source has no val split
  double max_bad = 0.01;      // unreadable training samples tolerated (fraction) before stopping
  // architecture
  std::string variant = "tiny";           // tiny | small | base, unless dims/depths are given
  std::vector<int64_t> dims, depths;      // both or neither
  int64_t image_size = 224;
  std::string init;                       // fine-tune from these weights (.safetensors, .pth)
  // schedule
  int64_t epochs = 50, batch_size = 64, accumulate = 1;
  double lr = 3e-4, min_lr = 0.0, weight_decay = 0.05, warmup_epochs = 1.0;
  // regularisation
  double drop_path = 0.1, label_smoothing = 0.0, clip_grad = 0.0;  // clip 0: none
  std::string class_weights = "none";     // none | balanced
  std::string augment = "crop,flip,rotate,jitter,translate";  // "" : none
  std::string select = "auc";             // auc | accuracy | loss: which epoch is "best"
  // run
  std::string out;
  uint64_t seed = 0;
  std::string device = "auto", precision = "fp32";
  int threads = 0;                        // 0: every core
  int64_t save_every = 0;                 // optimiser steps between mid-epoch saves (0: epoch ends only)
  bool sync_bn = false;                   // data-parallel runs: BatchNorm statistics over the global batch
  bool draft = false;  // JPEG and JPEG 2000 samples decoded at a reduced size no smaller than image_size

  std::string to_json() const;                     // every option, resolved
  static TrainOptions from_json(const std::string& text);  // throws mm::Error
  // The architecture these options ask for (before --init, which may override it).
  ModelConfig model_config(int64_t num_classes) const;
  // Throws mm::Error (usage) for inconsistent values: sizes, fractions, names.
  void validate() const;
};

// The keys of to_json() whose values differ between a and b, leaving out those
// a resumed run may change (out, threads are reported but allowed: see the docs).
std::vector<std::string> differing_options(const TrainOptions& a, const TrainOptions& b);

}  // namespace mm
