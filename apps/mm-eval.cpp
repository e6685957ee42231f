// mm-eval: scores a model on a labelled dataset, or a predictions file against
// labels, and writes a console table, a JSON file and an HTML report.
// Usage and exit codes: docs/mm-eval.md. The work happens in lib/eval.
#include <CLI/CLI.hpp>
#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "core/error.h"
#include "data/dataset.h"
#include "eval/evaluate.h"
#include "eval/evaluation.h"
#include "eval/predictions_file.h"
#include "eval/report_console.h"
#include "eval/report_html.h"
#include "eval/report_json.h"
#include "model/model_file.h"
#include "ops/blas_tuning.h"
#ifdef MM_HAVE_IMAGING
#include "imaging/image_reader.h"
#endif

namespace {

enum ExitCode { kOk = 0, kRuntimeError = 1, kUsage = 2 };

// One image per labelled sample, from the reader the file's content calls for
// (default options: a DICOM's own window, a NIfTI's middle axial slice).
mm::Image read_sample_file(const std::string& file) {
#ifdef MM_HAVE_IMAGING
  std::vector<mm::Image> images = mm::read_images(file);
  if (images.size() != 1)
    throw mm::ImageError(mm::ImageError::Kind::BadOption, file,
                         std::to_string(images.size()) + " frames or pages; a labelled sample needs exactly one image");
  return std::move(images[0]);
#else
  throw mm::ImageError(mm::ImageError::Kind::Unsupported, file, "built without the image readers (DCMTK, ITK)");
#endif
}

struct Args {
  std::string model, data, split = "test", exclude;
  int64_t batch_size = 16;
  int threads = 0;
  std::string predictions, labels, class_names;
  bool allow_missing = false;
  std::string json, report;
  int64_t bootstrap = 0;
  uint64_t seed = 0;
  int64_t topk = 0;
  size_t mistakes = 24;
  bool quiet = false;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  for (size_t comma; (comma = s.find(',', start)) != std::string::npos; start = comma + 1)
    out.push_back(s.substr(start, comma - start));
  out.push_back(s.substr(start));
  return out;
}

void show_progress(int64_t done, int64_t total) {
  std::fprintf(stderr, "\rmm-eval: %lld/%lld images", (long long)done, (long long)total);
  if (done == total) std::fputc('\n', stderr);
}

int run(const Args& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  mm::ScoredSamples scores;
  std::vector<std::string> ids, class_names;
  std::vector<std::pair<std::string, std::string>> about;
  mm::Dataset dataset;  // the model run's data, or the labels file; sample_image reads from it
  std::vector<size_t> dataset_index;  // scored sample -> dataset sample

  if (!a.model.empty()) {
    mm::LoadedModel lm = mm::load_model(a.model);
    dataset = mm::open_dataset(a.data, {a.split, a.exclude});
    if (!a.quiet)
      std::fprintf(stderr, "mm-eval: %s (%s): %zu samples%s%s, %lld classes\n", a.data.c_str(), dataset.kind.c_str(),
                   dataset.samples.size(), dataset.split.empty() ? "" : (" in split " + dataset.split).c_str(),
                   dataset.excluded ? (", " + std::to_string(dataset.excluded) + " excluded").c_str() : "",
                   (long long)dataset.num_classes());
    mm::ModelRunOptions run_options;
    run_options.batch_size = a.batch_size;
    if (!a.quiet && isatty(STDERR_FILENO)) run_options.progress = show_progress;
    scores = mm::run_model_on_dataset(lm.model, lm.meta, dataset, read_sample_file, run_options);
    for (size_t i = 0; i < dataset.samples.size(); ++i) {
      ids.push_back(dataset.samples[i].id);
      dataset_index.push_back(i);
    }
    class_names = mm::report_class_names(dataset, lm.meta);
    about = {{"model", a.model}, {"data", a.data}, {"split", dataset.split.empty() ? "(all)" : dataset.split}};
    if (!a.exclude.empty())
      about.emplace_back("excluded", std::to_string(dataset.excluded) + " samples listed in " + a.exclude);
  } else {
    const mm::PredictionsFile predictions = mm::read_predictions(a.predictions);
    dataset = mm::open_csv_manifest(a.labels);
    mm::JoinedPredictions joined =
        mm::join_predictions(predictions, dataset, split_commas(a.class_names), a.allow_missing);
    if (!a.quiet) {
      if (predictions.failed) std::fprintf(stderr, "mm-eval: %lld error records in %s not scored\n",
                                           (long long)predictions.failed, a.predictions.c_str());
      if (joined.unlabelled) std::fprintf(stderr, "mm-eval: %lld predictions have no label in %s\n",
                                          (long long)joined.unlabelled, a.labels.c_str());
      if (!joined.missing.empty()) std::fprintf(stderr, "mm-eval: %zu labelled paths have no prediction (left out)\n",
                                                joined.missing.size());
    }
    scores = std::move(joined.scores);
    ids = std::move(joined.ids);
    class_names = std::move(joined.class_names);
    dataset_index = std::move(joined.label_samples);
    about = {{"predictions", a.predictions}, {"labels", a.labels}};
  }
  // Thumbnails for the HTML report come from the same files.
  const std::function<mm::Image(size_t)> sample_image = [&dataset, &dataset_index](size_t i) {
    return mm::load_image(dataset, dataset_index.at(i), read_sample_file);
  };

  mm::MetricOptions metric_options;
  const int64_t k = a.topk > 0 ? a.topk : (scores.num_classes > 2 ? 2 : 1);
  if (k != 1) metric_options.top_k.push_back(k);
  mm::Evaluation e = mm::evaluate(std::move(scores), std::move(ids), std::move(class_names), metric_options,
                                  a.bootstrap, a.seed);
  e.about = about;
  std::cout << mm::console_report(e);
  if (!a.json.empty()) mm::write_json_report(a.json, e);
  if (!a.report.empty()) {
    mm::HtmlReportOptions html;
    html.max_mistakes = a.mistakes;
    html.sample_image = sample_image;
    const std::string path = mm::write_html_report(a.report, e, html);
    if (!a.quiet) std::fprintf(stderr, "mm-eval: report written to %s\n", path.c_str());
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-eval: score a MedMamba model on a labelled dataset, or a predictions file against labels"};
  Args a;
  auto* model = app.add_option("--model", a.model, "model file (.safetensors, from mm-convert)");
  auto* data = app.add_option("--data", a.data, "class folder, CSV manifest path,label[,split], or MedMNIST .npz");
  app.add_option("--split", a.split, "train | val | test (ignored by data without splits)")->capture_default_str();
  app.add_option("--exclude", a.exclude, "file listing samples to leave out, relative to the data folder");
  app.add_option("--batch-size", a.batch_size, "images per forward pass")->capture_default_str()->check(
      CLI::PositiveNumber);
  app.add_option("--threads", a.threads, "CPU threads (0: OpenMP default)")->capture_default_str();
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
  data->needs(model);
  predictions->needs(labels);
  labels->needs(predictions);
  model->excludes(predictions);
  try {
    app.parse(argc, argv);
    if (a.model.empty() && a.predictions.empty())
      throw CLI::ValidationError("give --model M --data D, or --predictions P --labels L");
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsage;
  }
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-eval: %s\n", e.what());
    return kRuntimeError;
  }
}
