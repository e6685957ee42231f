// mm-serve: a DICOM C-STORE SCP that classifies the images it receives with a
// MedMamba model, writing mm-predict's JSONL records. Usage, folders, statuses
// and exit codes: docs/mm-serve.md. The work happens in lib/serve.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <new>

#include "core/error.h"
#include "ops/blas_tuning.h"
#ifdef MM_HAVE_SERVE
#include "imaging/image_reader.h"
#include "serve/serve.h"
#endif

int main(int argc, char** argv) {
#ifndef MM_HAVE_SERVE
  (void)argc;
  std::fprintf(stderr, "mm-serve: built without DCMTK (dcmnet): no DICOM network\n");
  (void)argv;
  return 1;
#else
  mm::reexec_with_passive_openmp_waits(argv);
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-serve: a DICOM storage node (C-STORE SCP) that classifies what it receives"};
  mm::ServeCommand a;
  bool quiet = false, verbose = false, debug = false;
  app.add_option("--model", a.model, "model file (.safetensors, from mm-convert; default: the shipped brain-mri-224)");
  app.add_option("--out", a.out, "output folder: records.jsonl, status.json, done/")->required();
  app.add_option("--incoming", a.incoming, "where received instances wait for the classifier (default: OUT/incoming)");
  app.add_option("--aet", a.ae_title, "our AE title")->capture_default_str();
  app.add_option("--port", a.port, "TCP port (0: any free port, see status.json)")->capture_default_str()->check(
      CLI::Range(0, 65535));
  app.add_option("--bind", a.bind, "IPv4 address to listen on")->capture_default_str();
  app.add_option("--allow", a.allow, "calling AE titles accepted (repeatable; default: any)");
  app.add_option("--max-associations", a.max_associations, "associations served at once")->capture_default_str()->check(
      CLI::Range(1, 256));
  app.add_option("--device", a.device, "cpu | cuda | auto")->capture_default_str()->check(
      CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--precision", a.precision, "GPU arithmetic: fp32 | tf32 | bf16 | fp16")->capture_default_str()->check(
      CLI::IsMember({"fp32", "tf32", "bf16", "fp16"}));
  app.add_option("--batch-size", a.batch_size, "images per forward pass")->capture_default_str()->check(
      CLI::PositiveNumber);
  app.add_option("--threads", a.threads, "decoding threads, and CPU threads for the model (default: the CPUs)")
      ->check(CLI::PositiveNumber);
  app.add_option("--series-timeout", a.series_timeout, "write a DICOM SR per series once it has been idle this many "
                                                        "seconds (0: none)")->capture_default_str()->check(
      CLI::NonNegativeNumber);
  app.add_option("--forward-to", a.forward_to,
                 "AE@host:port: send the series reports and saliency captures there (C-STORE)");
  app.add_flag("--draft", a.draft,
               "decode JPEG and JPEG 2000 at a reduced size no smaller than the model's input (mm-predict's --draft)");
  app.add_flag("--saliency-sc", a.saliency_sc,
               "write mm-predict's saliency overlay of each classified image as a DICOM Secondary Capture to "
               "OUT/saliency (CPU backward pass; not for clinical use)");
  auto* q = app.add_flag("-q,--quiet", quiet, "quiet mode: print no warnings and errors");
  auto* v = app.add_flag("-v,--verbose", verbose, "verbose mode: print processing details");
  auto* d = app.add_flag("-d,--debug", debug, "debug mode: print debug information (dcmnet's too)");
  auto* level = app.add_option("--log-level", a.log_level, "fatal | error | warn | info | debug | trace");
  q->excludes(v)->excludes(d)->excludes(level);
  v->excludes(d)->excludes(level);
  d->excludes(level);
  try {
    app.parse(argc, argv);
    if (quiet) a.log_level = "fatal";
    if (verbose) a.log_level = "info";
    if (debug) a.log_level = "debug";
    mm::configure_serve_logging(a.log_level);
    mm::check_serve_command(a);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return mm::kServeUsage;
  } catch (const mm::Error& e) {
    std::fprintf(stderr, "mm-serve: %s\nRun with --help for more information.\n", e.what());
    return mm::kServeUsage;
  }
  try {
    return mm::run_serve(a, [](const std::string& path, const mm::ReadHints& hints) {
      return mm::read_images(path, {}, hints);
    });
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mm-serve: out of memory (a smaller --batch-size or fewer --threads need less)\n");
    return mm::kServeFatal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-serve: %s\n", e.what());
    return mm::kServeFatal;
  }
#endif
}
