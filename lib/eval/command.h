#pragma once
// mm-eval as a library call: score a model on a labelled dataset, or a
// predictions file against labels, then write the console table, the JSON file
// and the HTML report. apps/mm-eval.cpp only parses flags into an EvalCommand.
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/dataset.h"

namespace mm {

// What mm-eval's command line asks for: --model/--data, or --predictions/--labels.
struct EvalCommand {
  std::string model, data, split = "test", exclude;
  int64_t batch_size = 16;
  int threads = 0;
  std::string device = "auto";     // cpu | cuda | auto (CUDA when a GPU is present)
  // fp32, bf16 or int8 on the CPU (int8: auto picks the CPU); fp32, tf32, bf16 or fp16 on the GPU (fp32: the float32 backend
  // that training uses; the others: the CudaMedMamba inference engine).
  std::string precision = "fp32";
  std::string predictions, labels, class_names;
  bool allow_missing = false;
  std::string json, report;
  int64_t bootstrap = 0;
  uint64_t seed = 0;
  int64_t topk = 0;
  size_t mistakes = 24;
  bool quiet = false;
  bool draft = false;  // JPEG and JPEG 2000 decoded at a reduced size no smaller than the model's input
};

// Runs the evaluation and returns 0; throws mm::Error (exit code 1 for the caller).
// read_sample_file decodes one labelled file (the image readers, wired by the app).
int run_eval_command(const EvalCommand& command, const ImageFileReader& read_sample_file);

}  // namespace mm
