#pragma once
// mm-train's console around train_model(): notes, a progress bar on a
// terminal, one summary line per epoch, and the exit code (docs/mm-train.md).
#include "train/trainer.h"

namespace mm {

enum TrainExit {
  kTrainOk = 0,
  kTrainFatal = 1,        // an error (I/O, a damaged state file, ...)
  kTrainUsage = 2,        // refused before training: options, classes, labels, --resume mismatch
  kTrainUnreadable = 3,   // more than --max-bad of the samples could not be read
  kTrainNotFinite = 4,    // the loss or the gradients became NaN/Inf; the last good state is kept
};

// quiet: only the per-epoch summaries (and errors).
int run_train_command(const TrainOptions& options, const TrainControl& control, bool quiet,
                      const ImageFileReader& read_file);

}  // namespace mm
