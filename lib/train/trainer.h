#pragma once
// mm-train as a library call: data -> caches -> epochs of
// augment -> forward -> loss -> backward -> clip -> AdamW, validation after
// each epoch, and the run directory (docs/mm-train.md lists its files).
// The trainer drives the model through mm::Model only, so a second backend
// trains with the same code.
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "dist/communicator.h"
#include "train/train_options.h"

namespace mm {

// One epoch's line of metrics.jsonl. Validation values are absent without a val set.
struct EpochRecord {
  int64_t epoch = 0;  // 1-based
  int64_t step = 0;   // optimiser steps so far
  double lr = 0, train_loss = 0, train_accuracy = 0, images_per_second = 0, seconds = 0;
  std::optional<double> val_loss, val_accuracy, val_balanced_accuracy, val_auc;
  bool best = false;
};

// Where an epoch stands, after each micro-batch (for a progress bar).
struct BatchProgress {
  int64_t epoch = 0, epochs = 0;        // 1-based epoch
  int64_t batch = 0, batches = 0;       // micro-batches done in this epoch, of
  double loss = 0, accuracy = 0;        // running means over the epoch
  double images_per_second = 0, eta_seconds = 0;  // this epoch
};

struct TrainEvents {
  std::function<void(const std::string&)> note;        // a line for the log (data, model, skips)
  std::function<void(const BatchProgress&)> batch;     // after every micro-batch
  std::function<void(const EpochRecord&)> epoch_end;   // after validation
};

struct TrainControl {
  bool resume = false;             // continue the run in options.out from its state file
  std::set<std::string> given;     // option keys the user set explicitly (checked against the run on resume)
  int64_t stop_after_epoch = 0;    // > 0: return after this many epochs, as if interrupted (tests, time slots)
  // The processes of a data-parallel run (lib/dist); nullptr: this process alone. Rank 0
  // writes the run directory and reports; every rank trains on its shard of each batch.
  Communicator* comm = nullptr;
};

struct TrainResult {
  int64_t epochs_done = 0;
  int64_t unreadable = 0;                 // samples skipped as unreadable
  std::optional<double> test_accuracy, test_auc;  // best model on the test split, when there is one
};

// Refused before training starts (usage-level problems with the data or the run).
struct TrainRefused : Error {
  using Error::Error;
};
// More than --max-bad of the samples could not be read.
struct TooManyUnreadable : Error {
  using Error::Error;
};
// The loss became NaN or Inf; the last good state stays in the run directory.
struct LossNotFinite : Error {
  using Error::Error;
};

// read_file reads file samples (the DICOM/NIfTI/picture readers of lib/imaging).
TrainResult train_model(TrainOptions options, const TrainControl& control, const ImageFileReader& read_file,
                        const TrainEvents& events);

}  // namespace mm
