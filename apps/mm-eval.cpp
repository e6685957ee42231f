// mm-eval: scores a model on a labelled dataset, or a predictions file against
// labels, and writes a console table, a JSON file and an HTML report.
// Usage and exit codes: docs/mm-eval.md. The work happens in lib/eval.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "core/error.h"
#include "eval/command.h"
#include "model/default_model.h"
#include "ops/blas_tuning.h"
#include "labelled_sample_reader.h"

namespace {

enum ExitCode { kRuntimeError = 1, kUsage = 2 };  // 0 comes from run_eval_command

}  // namespace

int main(int argc, char** argv) {
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-eval: score a MedMamba model on a labelled dataset, or a predictions file against labels"};
  mm::EvalCommand a;
  auto* model = app.add_option("--model", a.model, "model file (.safetensors, from mm-convert; default with --data: the "
                                                     "shipped " + std::string(mm::kDefaultModelName) + ")");
  auto* data = app.add_option("--data", a.data, "class folder, CSV manifest path,label[,split], or MedMNIST .npz");
  app.add_option("--split", a.split, "train | val | test (ignored by data without splits)")->capture_default_str();
  app.add_option("--exclude", a.exclude, "file listing samples to leave out, relative to the data folder");
  app.add_option("--batch-size", a.batch_size, "images per forward pass")->capture_default_str()->check(
      CLI::PositiveNumber);
  app.add_option("--threads", a.threads, "threads decoding images, and the CPU model's threads (0: the CPUs this process may run on)")->capture_default_str();
  app.add_option("--device", a.device, "cpu | cuda | auto (cuda when a GPU is present)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--precision", a.precision,
                 "fp32 | bf16 | int8 on the CPU (float32 where the CPU has no bf16 / int8); fp32 | tf32 | bf16 | fp16 on the GPU")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "tf32", "bf16", "fp16", "int8"}));
  auto* draft = app.add_flag("--draft", a.draft,
                             "decode JPEG and JPEG 2000 at the smallest of their reduced sizes (1/2, 1/4, ...) that is "
                             "still at least the model's input size, as Pillow's draft mode: faster, pixels not identical");
  auto* predictions = app.add_option("--predictions", a.predictions, "mm-predict CSV/JSON/JSONL, or any CSV with "
                                                                     "a path column and one probability column per class");
  auto* labels = app.add_option("--labels", a.labels, "CSV path,label");
  app.add_option("--class-names", a.class_names, "comma-separated class names, in the predictions' class order");
  app.add_flag("--allow-missing", a.allow_missing, "score labelled paths that have a prediction, leave out the rest");
  app.add_option("--json", a.json, "write the metrics as JSON to this file");
  app.add_option("--report", a.report, "write a self-contained HTML report into this folder (index.html)");
  app.add_option("--bootstrap", a.bootstrap, "resamples for 95% confidence intervals (0: none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--seed", a.seed, "bootstrap seed")->capture_default_str();
  app.add_option("--topk", a.topk, "also report top-K accuracy (default: 2 when there are more than 2 classes)")
      ->check(CLI::PositiveNumber);
  app.add_option("--mistakes", a.mistakes, "confident mistakes listed in the HTML report")->capture_default_str();
  app.add_flag("-q,--quiet", a.quiet, "no progress or notes on stderr");
  model->needs(data);
  data->excludes(predictions);
  predictions->needs(labels);
  labels->needs(predictions);
  model->excludes(predictions);
  draft->excludes(predictions);
  try {
    app.parse(argc, argv);
    if (a.data.empty() && a.predictions.empty())
      throw CLI::ValidationError("give --data D [--model M], or --predictions P --labels L");
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsage;
  }
  try {
    return mm::run_eval_command(a, read_labelled_sample);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-eval: %s\n", e.what());
    return kRuntimeError;
  }
}
