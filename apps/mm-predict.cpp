// mm-predict: classifies DICOM files and folders, NIfTI volumes (slice by slice)
// and pictures with a MedMamba model, writing one record per image as CSV, JSON
// or JSONL. Usage, output fields and exit codes: docs/mm-predict.md. The work
// happens in lib/predict.
#include <CLI/CLI.hpp>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <new>
#include <thread>

#include "core/error.h"
#include "model/model_file.h"
#include "ops/blas_tuning.h"
#include "predict/aggregate.h"
#include "predict/classifier.h"
#include "predict/inputs.h"
#include "predict/pipeline.h"
#include "predict/progress.h"
#include "predict/record_writer.h"
#ifdef MM_HAVE_IMAGING
#include "imaging/image_reader.h"
#endif

namespace {

struct Args {
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
  std::string slices = "all", axis = "axial";
  bool quiet = false, verbose = false, timing = false;
};

// What the command line asks for, checked before anything heavy runs.
struct Plan {
  mm::RecordFormat format = mm::RecordFormat::Csv;
  mm::Shard shard;
  mm::AggregateLevels aggregate;
  bool aggregating = false;
  int threads = 1;
};

// CPUs this process may run on (a Slurm job's allocation, taskset), not the machine's.
int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, int(std::thread::hardware_concurrency()));
}

Plan make_plan(const Args& a) {  // throws mm::Error: a usage error
  Plan p;
  p.format = a.format.empty() ? mm::record_format_for_output(a.output) : mm::record_format_from_name(a.format);
  if (!a.shard.empty()) p.shard = mm::parse_shard(a.shard);
  if (!a.aggregate.empty()) {
    p.aggregate = mm::parse_aggregate_levels(a.aggregate);
    p.aggregating = true;
  }
  MM_CHECK(!a.paths.empty() || !a.lists.empty(), "give PATH... or --list FILE");
  p.threads = a.threads > 0 ? a.threads : available_cpus();
  return p;
}

mm::ImagesReader make_reader(const Args& a) {
#ifdef MM_HAVE_IMAGING
  mm::ReadOptions options;
  options.nifti.slices = a.slices == "all" ? mm::NiftiOptions::Slices::All : mm::NiftiOptions::Slices::Middle;
  options.nifti.axis = a.axis == "sagittal" ? 0 : a.axis == "coronal" ? 1 : 2;
  return [options](const std::string& path) { return mm::read_images(path, options); };
#else
  (void)a;
  return [](const std::string& path) -> std::vector<mm::Image> {
    throw mm::ImageError(mm::ImageError::Kind::Unsupported, path, "built without the image readers (DCMTK, ITK)");
  };
#endif
}

void print_timing(const mm::PredictSummary& s) {
  const mm::PredictTiming& t = s.timing;
  auto share = [&](double x) { return t.wall > 0 ? 100.0 * x / t.wall : 0.0; };
  std::fprintf(stderr,
               "mm-predict: timing: wall %.2f s; model %.2f s (%.0f%% of wall); waiting for decoded images %.2f s "
               "(%.0f%%); saliency %.2f s; output %.2f s\n"
               "mm-predict: timing: decoding %.2f s + preprocessing %.2f s of thread time over %d threads "
               "(%.0f%% of their wall time busy)\n",
               t.wall, t.model, share(t.model), t.waiting, share(t.waiting), t.saliency, t.output, t.reading,
               t.preparing, s.decode_threads,
               t.wall > 0 ? 100.0 * (t.reading + t.preparing) / (t.wall * s.decode_threads) : 0.0);
}

int run(const Args& a, const Plan& plan) {
  omp_set_num_threads(plan.threads);
  mm::LoadedModel loaded = mm::load_model(a.model);
  mm::ClassifierOptions classifier_options;
  classifier_options.device = mm::device_choice_from_name(a.device);
  classifier_options.precision = a.precision;
  std::unique_ptr<mm::Classifier> classifier = mm::make_classifier(loaded.model, classifier_options);

  const mm::InputListing listing = mm::find_inputs(a.paths, a.lists);
  const std::vector<mm::InputFile> files = mm::select_shard(listing.files, plan.shard);
  if (a.verbose) {
    std::fprintf(stderr, "mm-predict: %s: %lld classes, %lld px input; running on %s with %d threads\n",
                 a.model.c_str(), (long long)loaded.meta.config.num_classes,
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
  mm::RecordLayout layout;
  for (int64_t c = 0; c < loaded.meta.config.num_classes; ++c) layout.class_names.push_back(loaded.meta.class_name(c));
  layout.top_k = a.topk;
  layout.logits = a.logits;
  layout.levels = plan.aggregating;
  layout.csv_header = !a.no_header;
  std::unique_ptr<mm::RecordWriter> writer = mm::make_record_writer(plan.format, layout, out);
  mm::Aggregator aggregator(plan.aggregate);

  // Not when the records go to the same terminal: the bar would break their lines.
  const bool show_progress = !a.quiet && isatty(STDERR_FILENO) && !(a.output.empty() && isatty(STDOUT_FILENO));
  mm::ProgressBar bar(stderr);
  mm::PredictOptions options;
  options.batch_size = a.batch_size;
  options.decode_threads = plan.threads;
  options.logits = a.logits;
  options.save_preprocessed_dir = a.save_preprocessed;
  options.saliency_dir = a.saliency;
  options.derived_root = mm::common_folder(listing.files);  // the whole listing: every shard names files alike
  options.saliency_model = &loaded.model;
  if (show_progress) options.progress = [&bar](const mm::PredictProgress& p) { bar.update(p); };
  if (a.verbose)
    options.skipped = [&](const std::string& path) {
      bar.clear();
      std::fprintf(stderr, "mm-predict: skipped %s: not an image format\n", path.c_str());
    };
  auto sink = [&](const mm::Prediction& p) {
    writer->write(p);
    aggregator.add(p);
    const bool failed = p.status == mm::PredictionStatus::Failed;
    if (failed || (a.verbose && p.status == mm::PredictionStatus::NoImage)) {
      bar.clear();
      std::fprintf(stderr, "mm-predict: %s: %s\n", p.path.c_str(), p.error.c_str());
    }
  };

  const mm::PredictSummary summary =
      mm::run_predictions(files, make_reader(a), *classifier, loaded.meta, options, sink);
  bar.finish();
  for (const mm::Prediction& p : aggregator.records()) writer->write(p);
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
  if (a.verbose || a.timing) print_timing(summary);
  return mm::exit_code_of(summary);
}

}  // namespace

int main(int argc, char** argv) {
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-predict: classify DICOM, NIfTI and picture files with a MedMamba model"};
  Args a;
  app.add_option("--model", a.model, "model file (.safetensors, from mm-convert)")->required();
  app.add_option("paths", a.paths, "files or folders (searched recursively)");
  app.add_option("--list", a.lists, "text file naming one input per line ('-': stdin); repeatable");
  app.add_option("--format", a.format, "csv | json | jsonl (default: from --output's extension, else csv)")
      ->check(CLI::IsMember({"csv", "json", "jsonl"}));
  app.add_option("-o,--output", a.output, "write the records to this file (default: stdout)");
  app.add_flag("--no-header", a.no_header, "CSV without its header row (for appending shards)");
  app.add_option("--topk", a.topk, "also list the K most probable classes")->check(CLI::PositiveNumber);
  app.add_flag("--logits", a.logits, "also write each image's logits");
  app.add_option("--aggregate", a.aggregate, "add mean-probability records per DICOM series and/or study: "
                                             "series | study | series,study");
  app.add_option("--device", a.device, "cpu | cuda | auto")->capture_default_str()->check(
      CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--precision", a.precision, "GPU arithmetic: fp32 | tf32 | bf16 | fp16")->capture_default_str()->check(
      CLI::IsMember({"fp32", "tf32", "bf16", "fp16"}));
  app.add_option("--batch-size", a.batch_size, "images per forward pass")->capture_default_str()->check(
      CLI::PositiveNumber);
  app.add_option("--threads", a.threads, "decoding threads, and CPU threads for the model (default: the CPUs this "
                                         "process may use)")->check(CLI::PositiveNumber);
  app.add_option("--shard", a.shard, "i/N: classify only the i-th of N equal runs of the sorted inputs (1 <= i <= N)");
  app.add_option("--save-preprocessed", a.save_preprocessed, "write each model input as float32 (C,S,S) .npy here");
  app.add_option("--saliency", a.saliency, "write a gradient x input heat-map PNG per image here (CPU backward pass)");
  app.add_option("--slices", a.slices, "NIfTI: all | middle")->capture_default_str()->check(
      CLI::IsMember({"all", "middle"}));
  app.add_option("--axis", a.axis, "NIfTI slicing axis: axial | coronal | sagittal")->capture_default_str()->check(
      CLI::IsMember({"axial", "coronal", "sagittal"}));
  auto* quiet = app.add_flag("-q,--quiet", a.quiet, "no progress, notes or summary; failures are still reported");
  auto* verbose = app.add_flag("-v,--verbose", a.verbose, "list files without an image and skipped files; timing");
  quiet->excludes(verbose);
  app.add_flag("--timing", a.timing, "print where the time went (decoding, model, waiting)");
  Plan plan;
  try {
    app.parse(argc, argv);
    plan = make_plan(a);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return mm::kExitUsage;
  } catch (const mm::Error& e) {
    std::fprintf(stderr, "mm-predict: %s\nRun with --help for more information.\n", e.what());
    return mm::kExitUsage;
  }
  try {
    return run(a, plan);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mm-predict: out of memory (a smaller --batch-size or fewer --threads need less)\n");
    return mm::kExitFatal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-predict: %s\n", e.what());
    return mm::kExitFatal;
  }
}
