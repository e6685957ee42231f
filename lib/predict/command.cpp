#include "predict/command.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "core/error.h"
#include "model/default_model.h"
#include "model/model_file.h"
#include "predict/classifier.h"
#include "predict/progress.h"
#include "predict/table_view.h"

namespace mm {

namespace {

void print_predict_timing(const PredictSummary& s) {
  const PredictTiming& t = s.timing;
  auto share = [&](double x) { return t.wall > 0 ? 100.0 * x / t.wall : 0.0; };
  std::fprintf(stderr,
               "mm-predict: timing: wall %.2f s; model %.2f s (%.0f%% of wall); waiting for decoded images %.2f s "
               "(%.0f%%); saliency %.2f s; output %.2f s\n"
               "mm-predict: timing: decoding %.2f s + preprocessing %.2f s of thread time over %d threads "
               "(%.0f%% of their wall time busy)%s\n",
               t.wall, t.model, share(t.model), t.waiting, share(t.waiting), t.saliency, t.output, t.reading,
               t.preparing, s.decode_threads,
               t.wall > 0 ? 100.0 * (t.reading + t.preparing) / (t.wall * s.decode_threads) : 0.0,
               s.inputs_on_gpu ? "; window, resize and normalisation on the GPU (in the model's time)" : "");
  // CPU time per decoded image, by stage: what a core costs per image, whatever the other threads did.
  const double per_image = s.images > 0 ? 1e3 / double(s.images) : 0.0;
  std::string stages;
  for (int i = 0; i < int(InputStage::Count); ++i) {
    char part[64];
    std::snprintf(part, sizeof part, "%s%s %.3f", i ? ", " : "", input_stage_name(InputStage(i)),
                  t.stages.seconds[i] * per_image);
    stages += part;
  }
  const double unattributed = t.reading_cpu + t.preparing_cpu - t.stages.total();
  std::fprintf(stderr,
               "mm-predict: timing: CPU ms per image: decoding %.3f + preprocessing %.3f; by stage: %s; other %.3f; "
               "batch assembly %.3f (wall time of the calling thread)\n",
               t.reading_cpu * per_image, t.preparing_cpu * per_image, stages.c_str(), unattributed * per_image,
               t.batching * per_image);
}

}  // namespace

PredictPlan plan_predict(const PredictCommand& a) {
  PredictPlan p;
  p.format = a.format.empty() ? record_format_for_output(a.output) : record_format_from_name(a.format);
  if (!a.shard.empty()) p.shard = parse_shard(a.shard);
  if (!a.aggregate.empty()) {
    p.aggregate = parse_aggregate_levels(a.aggregate);
    p.aggregating = true;
  }
  MM_CHECK(!a.paths.empty() || !a.lists.empty(), "give PATH... or --list FILE");
  MM_CHECK(!a.table || !a.output.empty(), "--table prints to stdout: write the records to a file with -o");
  p.threads = a.threads > 0 ? a.threads : available_cpus();
  return p;
}

int run_predict_command(const PredictCommand& a, const PredictPlan& plan, const ImagesReader& reader) {
  omp_set_num_threads(plan.threads);
  const std::string model_path = a.model.empty() ? find_default_model() : a.model;
  if (a.model.empty() && !a.quiet) std::fprintf(stderr, "mm-predict: model %s (the default)\n", model_path.c_str());
  LoadedModel loaded = load_model(model_path);
  ClassifierOptions classifier_options;
  classifier_options.device = device_choice_from_name(a.device);
  classifier_options.precision = a.precision;
  classifier_options.int8_scales = loaded.meta.int8_activation_scales;
  std::unique_ptr<Classifier> classifier = make_classifier(loaded.model, classifier_options);

  const InputListing listing = find_inputs(a.paths, a.lists);
  const std::vector<InputFile> files = select_shard(listing.files, plan.shard);
  if (a.verbose) {
    std::fprintf(stderr, "mm-predict: %s: %lld classes, %lld px input; running on %s with %d threads\n",
                 model_path.c_str(), (long long)loaded.meta.config.num_classes,
                 (long long)loaded.meta.preprocess.input_size, classifier->description().c_str(), plan.threads);
    std::fprintf(stderr, "mm-predict: %zu input files%s\n", files.size(),
                 plan.shard.count > 1 ? (" in shard " + a.shard + " of " + std::to_string(listing.files.size())).c_str()
                                      : "");
    for (const std::string& h : listing.hidden_skipped) std::fprintf(stderr, "mm-predict: skipped hidden %s\n", h.c_str());
  }

  std::ofstream file_out;
  if (!a.output.empty()) {
    file_out.open(a.output, std::ios::binary);
    MM_CHECK(file_out.good(), a.output + ": cannot open for writing");
  }
  std::ostream& out = a.output.empty() ? std::cout : file_out;
  RecordLayout layout;
  for (int64_t c = 0; c < loaded.meta.config.num_classes; ++c) layout.class_names.push_back(loaded.meta.class_name(c));
  layout.top_k = a.topk;
  layout.logits = a.logits;
  layout.levels = plan.aggregating;
  layout.csv_header = !a.no_header;
  std::unique_ptr<RecordWriter> writer = make_record_writer(plan.format, layout, out);
  Aggregator aggregator(plan.aggregate);

  // Not when the records go to the same terminal: the bar would break their lines.
  const bool show_progress = !a.quiet && isatty(STDERR_FILENO) && !(a.output.empty() && isatty(STDOUT_FILENO));
  ProgressBar bar(stderr);
  PredictOptions options;
  options.batch_size = a.batch_size;
  options.decode_threads = plan.threads;
  options.logits = a.logits;
  options.save_preprocessed_dir = a.save_preprocessed;
  options.saliency_dir = a.saliency;
  options.derived_root = common_folder(listing.files);  // the whole listing: every shard names files alike
  options.saliency_model = &loaded.model;
  options.preprocess_on_gpu = !a.cpu_preprocess;
  options.draft = a.draft;
  if (show_progress) options.progress = [&bar](const PredictProgress& p) { bar.update(p); };
  if (!a.quiet)
    options.warning = [&](const std::string& path, const std::string& warning) {
      bar.clear();
      std::fprintf(stderr, "mm-predict: %s: %s\n", path.c_str(), warning.c_str());
    };
  if (a.verbose)
    options.skipped = [&](const std::string& path) {
      bar.clear();
      std::fprintf(stderr, "mm-predict: skipped %s: not an image format\n", path.c_str());
    };
  std::unique_ptr<TableView> table;
  if (a.table) {
    std::vector<std::string> paths;
    for (const InputFile& f : files) paths.push_back(f.path);
    table = std::make_unique<TableView>(stdout, options.derived_root, paths, layout.class_names);
  }
  auto sink = [&](const Prediction& p) {
    writer->write(p);
    if (table) {
      bar.clear();
      table->add(p);
    }
    aggregator.add(p);
    const bool failed = p.status == PredictionStatus::Failed;
    if (failed || (a.verbose && p.status == PredictionStatus::NoImage)) {
      bar.clear();
      std::fprintf(stderr, "mm-predict: %s: %s\n", p.path.c_str(), p.error.c_str());
    }
  };

  const PredictSummary summary =
      run_predictions(files, reader, *classifier, loaded.meta, options, sink);
  bar.finish();
  if (table) table->finish();
  for (const Prediction& p : aggregator.records()) {
    writer->write(p);
    if (table) table->add(p);
  }
  writer->finish();
  MM_CHECK(out.good(), (a.output.empty() ? std::string("stdout") : a.output) + ": writing the records failed");

  if (!a.quiet) {
    std::fprintf(stderr,
                 "mm-predict: %lld images classified from %lld files (%lld failed, %lld without an image, %lld "
                 "skipped) in %.2f s: %.1f images/s on %s\n",
                 (long long)summary.images, (long long)summary.files, (long long)summary.failed_files,
                 (long long)summary.no_image_files, (long long)summary.skipped_files, summary.timing.wall,
                 summary.timing.wall > 0 ? double(summary.images) / summary.timing.wall : 0.0,
                 classifier->description().c_str());
  }
  if (a.verbose || a.timing) print_predict_timing(summary);
  return exit_code_of(summary);
}

}  // namespace mm
