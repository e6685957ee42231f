// mm-bench: times MedMamba forward passes or training steps and prints images/s.
// Optionally runs the PyTorch reference (test/reference/bench_reference.py) on the
// same machine for a side-by-side ratio.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "bench/bench.h"
#include "core/error.h"
#include "ops/blas_tuning.h"

int main(int argc, char** argv) {
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-bench: MedMamba throughput (images/s) on this machine"};
  mm::BenchOptions o;
  std::string torch_python;
  app.add_option("--variant", o.variant, "tiny | small | base")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--size", o.image_size, "image side (multiple of 32)")->capture_default_str();
  app.add_option("--classes", o.num_classes, "number of classes")->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda")->capture_default_str();
  app.add_option("--precision", o.precision, "fp32 | bf16 | fp16")->capture_default_str();
  app.add_option("--mode", o.mode, "forward | train (forward+backward+SGD step)")->capture_default_str();
  app.add_option("--iters", o.iters, "timed iterations")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed warm-up iterations")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: OpenMP default)")->capture_default_str();
  app.add_option("--torch", torch_python,
                 "also time the PyTorch reference with this Python (e.g. /usr/bin/python3)");
  CLI11_PARSE(app, argc, argv);
  try {
    const mm::BenchResult r = mm::run_benchmark(o);
    std::printf("%s blas=%s\n", r.line.c_str(), mm::blas_core_name());
    if (!torch_python.empty()) {
      const double t = mm::run_torch_reference(o, torch_python);
      std::printf("ratio ours/torch-reference = %.2fx\n", r.images_per_second / t);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
