#include "eval/command.h"

#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>

#include "core/error.h"
#include "eval/evaluate.h"
#include "eval/evaluation.h"
#include "eval/predictions_file.h"
#include "predict/classifier.h"
#include "predict/pipeline.h"  // available_cpus
#include "eval/report_console.h"
#include "eval/report_html.h"
#include "eval/report_json.h"
#include "model/medmamba_cuda.h"
#include "model/default_model.h"
#include "model/model_file.h"

namespace mm {

namespace {

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

}  // namespace

int run_eval_command(const EvalCommand& a, const ImageFileReader& read_sample_file) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  ScoredSamples scores;
  std::vector<std::string> ids, class_names;
  std::vector<std::pair<std::string, std::string>> about;
  Dataset dataset;  // the model run's data, or the labels file; sample_image reads from it
  std::vector<size_t> dataset_index;  // scored sample -> dataset sample

  if (!a.data.empty()) {
    const std::string model_path = a.model.empty() ? find_default_model() : a.model;
    if (a.model.empty() && !a.quiet) std::fprintf(stderr, "mm-eval: model %s (the default)\n", model_path.c_str());
    LoadedModel lm = load_model(model_path);
    dataset = open_dataset(a.data, {a.split, a.exclude});
    if (!a.quiet)
      std::fprintf(stderr, "mm-eval: %s (%s): %zu samples%s%s, %lld classes\n", a.data.c_str(), dataset.kind.c_str(),
                   dataset.samples.size(), dataset.split.empty() ? "" : (" in split " + dataset.split).c_str(),
                   dataset.excluded ? (", " + std::to_string(dataset.excluded) + " excluded").c_str() : "",
                   (long long)dataset.num_classes());
    ModelRunOptions run_options;
    run_options.batch_size = a.batch_size;
    run_options.decode_threads = a.threads > 0 ? a.threads : available_cpus();
    run_options.draft = a.draft;
    if (!a.quiet && isatty(STDERR_FILENO)) run_options.progress = show_progress;
    MM_CHECK(a.precision != "int8" || a.device != "cuda", "--precision int8 runs on the CPU only (use --device cpu)");
    const Device device = a.precision == "int8" ? Device::CPU : resolve_device(a.device);
    std::unique_ptr<Classifier> classifier =
        make_classifier(lm.model, ClassifierOptions{device == Device::CUDA ? DeviceChoice::Cuda : DeviceChoice::Cpu,
                                                    a.precision, lm.meta.int8_activation_scales});
    if (!a.quiet && device == Device::CUDA) std::fprintf(stderr, "mm-eval: %s\n", classifier->description().c_str());
    scores = run_model_on_dataset(*classifier, lm.meta, dataset, read_sample_file, run_options);
    for (size_t i = 0; i < dataset.samples.size(); ++i) {
      ids.push_back(dataset.samples[i].id);
      dataset_index.push_back(i);
    }
    class_names = report_class_names(dataset, lm.meta);
    about = {{"model", model_path}, {"data", a.data}, {"split", dataset.split.empty() ? "(all)" : dataset.split}};
    if (!a.exclude.empty())
      about.emplace_back("excluded", std::to_string(dataset.excluded) + " samples listed in " + a.exclude);
    if (a.draft)  // the scores are not those of full decodes: the report says so
      about.emplace_back("decoding", "draft (JPEG and JPEG 2000 at a reduced size no smaller than the model's input)");
  } else {
    const PredictionsFile predictions = read_predictions(a.predictions);
    dataset = open_csv_manifest(a.labels);
    JoinedPredictions joined =
        join_predictions(predictions, dataset, split_commas(a.class_names), a.allow_missing);
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
  const std::function<Image(size_t)> sample_image = [&dataset, &dataset_index, &read_sample_file](size_t i) {
    return load_image(dataset, dataset_index.at(i), read_sample_file);
  };

  MetricOptions metric_options;
  const int64_t k = a.topk > 0 ? a.topk : (scores.num_classes > 2 ? 2 : 1);
  if (k != 1) metric_options.top_k.push_back(k);
  Evaluation e = evaluate(std::move(scores), std::move(ids), std::move(class_names), metric_options,
                                  a.bootstrap, a.seed);
  e.about = about;
  std::cout << console_report(e);
  if (!a.json.empty()) write_json_report(a.json, e);
  if (!a.report.empty()) {
    HtmlReportOptions html;
    html.max_mistakes = a.mistakes;
    html.sample_image = sample_image;
    const std::string path = write_html_report(a.report, e, html);
    if (!a.quiet) std::fprintf(stderr, "mm-eval: report written to %s\n", path.c_str());
  }
  return 0;
}

}  // namespace mm
