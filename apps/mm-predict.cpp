// mm-predict: classifies DICOM files and folders, NIfTI volumes (slice by slice)
// and pictures with a MedMamba model, writing one record per image as CSV, JSON
// or JSONL. Usage, output fields and exit codes: docs/mm-predict.md. The work
// happens in lib/predict.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <new>

#include "core/error.h"
#include "model/default_model.h"
#include "ops/blas_tuning.h"
#include "predict/command.h"
#ifdef MM_HAVE_IMAGING
#include "imaging/image_reader.h"
#endif

namespace {

struct ReaderChoice {
  std::string slices = "all", axis = "axial";
};

mm::ImagesReader make_reader(const ReaderChoice& a) {
#ifdef MM_HAVE_IMAGING
  mm::ReadOptions options;
  options.nifti.slices = a.slices == "all" ? mm::NiftiOptions::Slices::All : mm::NiftiOptions::Slices::Middle;
  options.nifti.axis = a.axis == "sagittal" ? 0 : a.axis == "coronal" ? 1 : 2;
  return [options](const std::string& path, const mm::ReadHints& hints) {
    return mm::read_images(path, options, hints);
  };
#else
  (void)a;
  return [](const std::string& path, const mm::ReadHints&) -> std::vector<mm::Image> {
    throw mm::ImageError(mm::ImageError::Kind::Unsupported, path, "built without the image readers (DCMTK, ITK)");
  };
#endif
}

}  // namespace

int main(int argc, char** argv) {
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-predict: classify DICOM, NIfTI and picture files with a MedMamba model"};
  mm::PredictCommand a;
  ReaderChoice reader_choice;
  app.add_option("--model", a.model, "model file (.safetensors, from mm-convert; default: the shipped " +
                                       std::string(mm::kDefaultModelName) + ")");
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
  app.add_option("--precision", a.precision, "arithmetic: fp32 | tf32 (GPU) | bf16 (GPU, or CPU) | fp16 (GPU) | int8 (CPU)")->capture_default_str()->check(
      CLI::IsMember({"fp32", "tf32", "bf16", "fp16", "int8"}));
  app.add_option("--batch-size", a.batch_size, "images per forward pass")->capture_default_str()->check(
      CLI::PositiveNumber);
  app.add_option("--threads", a.threads, "decoding threads, and CPU threads for the model (default: the CPUs this "
                                         "process may use)")->check(CLI::PositiveNumber);
  app.add_option("--shard", a.shard, "i/N: classify only the i-th of N equal runs of the sorted inputs (1 <= i <= N)");
  app.add_flag("--cpu-preprocess", a.cpu_preprocess,
               "with --device cuda: window, resize and normalise on the CPU (default: on the GPU, except with "
               "--save-preprocessed or --saliency)");
  app.add_flag("--draft", a.draft,
               "decode JPEG and JPEG 2000 at the smallest of their reduced sizes (1/2, 1/4, ...) that is still at "
               "least the model's input size, as Pillow's draft mode: several times faster, pixels not identical");
  app.add_option("--save-preprocessed", a.save_preprocessed, "write each model input as float32 (C,S,S) .npy here");
  app.add_flag("--table", a.table, "also print a readable table (file, predicted class, probability) on stdout; needs -o");
  app.add_option("--saliency", a.saliency, "write a gradient x input heat-map PNG per image here (CPU backward pass)");
  app.add_option("--slices", reader_choice.slices, "NIfTI: all | middle")->capture_default_str()->check(
      CLI::IsMember({"all", "middle"}));
  app.add_option("--axis", reader_choice.axis, "NIfTI slicing axis: axial | coronal | sagittal")->capture_default_str()->check(
      CLI::IsMember({"axial", "coronal", "sagittal"}));
  auto* quiet = app.add_flag("-q,--quiet", a.quiet, "no progress, notes or summary; failures are still reported");
  auto* verbose = app.add_flag("-v,--verbose", a.verbose, "list files without an image and skipped files; timing");
  quiet->excludes(verbose);
  app.add_flag("--timing", a.timing, "print where the time went (decoding, model, waiting)");
  mm::PredictPlan plan;
  try {
    app.parse(argc, argv);
    plan = mm::plan_predict(a);
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
    return mm::run_predict_command(a, plan, make_reader(reader_choice));
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mm-predict: out of memory (a smaller --batch-size or fewer --threads need less)\n");
    return mm::kExitFatal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-predict: %s\n", e.what());
    return mm::kExitFatal;
  }
}
