#pragma once
// mm-predict as a library call: what its command line asks for, checked, then run
// with console reporting (progress bar, per-file errors, summary, timing) around
// the pipeline. apps/mm-predict.cpp only parses flags into a PredictCommand.
#include <cstdint>
#include <string>
#include <vector>

#include "predict/aggregate.h"
#include "predict/inputs.h"
#include "predict/pipeline.h"
#include "predict/record_writer.h"

namespace mm {

struct PredictCommand {
  std::string model;
  std::vector<std::string> paths, lists;
  std::string format, output;
  bool no_header = false;
  int64_t topk = 0;
  bool logits = false;
  std::string aggregate;
  std::string device = "auto", precision = "fp32";
  int64_t batch_size = 16;
  int threads = 0;
  std::string shard;
  std::string save_preprocessed, saliency;
  bool quiet = false, verbose = false, timing = false;
  bool cpu_preprocess = false;  // with --device cuda: window, resize and normalise on the CPU
  bool draft = false;           // JPEG and JPEG 2000 decoded at a reduced size no smaller than the model's input
  bool table = false;  // a readable table on stdout (needs -o for the records)
};

// What the command line asks for, checked before anything heavy runs.
struct PredictPlan {
  RecordFormat format = RecordFormat::Csv;
  Shard shard;
  AggregateLevels aggregate;
  bool aggregating = false;
  int threads = 1;
};

// Checks the command and derives the plan; throws mm::Error for a usage error.
PredictPlan plan_predict(const PredictCommand& command);

// Runs the whole job and returns mm-predict's exit code (docs/mm-predict.md).
// Throws mm::Error (or std::bad_alloc) for a fatal error: the caller maps it to kExitFatal.
int run_predict_command(const PredictCommand& command, const PredictPlan& plan, const ImagesReader& reader);

}  // namespace mm
