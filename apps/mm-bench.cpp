// mm-bench: times MedMamba forward passes or training steps and prints images/s.
// Optionally runs the PyTorch reference (test/reference/bench_reference.py) on the
// same machine for a side-by-side ratio. --input-pipeline DATA times the
// training input pipeline (cache + augmenting batch loader) instead.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "bench/bench.h"
#include "bench/cpu_ceilings.h"
#include "bench/input_pipeline_bench.h"
#include "labelled_sample_reader.h"
#include "model/config.h"
#include "model/model_file.h"
#include "core/error.h"
#include "ops/blas_tuning.h"

int main(int argc, char** argv) {
  mm::reexec_with_best_blas_kernels(argv);
  CLI::App app{"mm-bench: MedMamba throughput (images/s) on this machine"};
  mm::BenchOptions o;
  std::string torch_python;
  app.add_option("--variant", o.variant, "tiny | small | base")->capture_default_str();
  std::string dims, depths;
  app.add_option("--dims", dims, "custom widths per stage, e.g. 32,64,128,256 (with --depths; replaces --variant)");
  app.add_option("--depths", depths, "custom blocks per stage, e.g. 2,2,4,2");
  app.add_option("--model", o.model_file,
                 "time this model file (.safetensors) instead of a variant, at its input size unless --size is "
                 "given; with --precision int8 its calibrated activation scales");
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--size,--image-size", o.image_size, "image side (multiple of 32)")->capture_default_str();
  app.add_option("--classes", o.num_classes, "number of classes")->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda")->capture_default_str();
  app.add_option("--precision", o.precision, "fp32 | bf16 | fp16 (GPU) | int8 (CPU)")->capture_default_str();
  app.add_option("--mode", o.mode, "forward | train (forward+backward+clip+AdamW: mm-train's step)")->capture_default_str();
  app.add_option("--iters", o.iters, "timed iterations")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed warm-up iterations")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: OpenMP default)")->capture_default_str();
  app.add_option("--torch", torch_python,
                 "also time the PyTorch reference with this Python (e.g. /usr/bin/python3)");
  mm::InputPipelineBenchOptions pipeline;
  app.add_option("--input-pipeline", pipeline.data,
                 "time the training input pipeline on this dataset (folder, CSV or MedMNIST .npz) instead of the model");
  app.add_option("--augment", pipeline.augment, "input pipeline: augmentations")->capture_default_str();
  app.add_option("--split", pipeline.split, "input pipeline: the split to cache")->capture_default_str();
  app.add_option("--limit", pipeline.limit, "input pipeline: cache at most this many samples (0: all)");
  app.add_option("--seconds", pipeline.seconds, "input pipeline: time whole epochs for at least this long")
      ->capture_default_str();
  app.add_option("--in-chans", pipeline.in_chans, "input pipeline: model input channels")->capture_default_str();
  std::string ceilings;
  app.add_option("--cpu-ceilings", ceilings,
                 "instead of the model: what more threads can gain on this CPU, for these thread counts "
                 "(e.g. 1,2,4,8,16): each thread's fma rate with all running, and the memory bandwidth");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!ceilings.empty()) {
      mm::CpuCeilingOptions c;
      c.threads.clear();
      for (int64_t t : mm::parse_int_list(ceilings, "--cpu-ceilings")) c.threads.push_back(int(t));
      std::printf("%s", mm::format_cpu_ceilings(mm::measure_cpu_ceilings(c)).c_str());
      return 0;
    }
    o.dims = mm::parse_int_list(dims, "--dims");
    o.depths = mm::parse_int_list(depths, "--depths");
    if (!pipeline.data.empty()) {
      pipeline.threads = o.threads, pipeline.image_size = o.image_size;
      pipeline.batch = app.count("--batch") ? o.batch : 64;  // a training batch, not the model benchmark's 8
      std::printf("%s\n", mm::run_input_pipeline_benchmark(pipeline, read_labelled_sample).line.c_str());
      return 0;
    }
    if (!torch_python.empty() && !o.model_file.empty())
      throw mm::Error("--torch times a variant's reference; it cannot load --model files");
    if (!o.model_file.empty() && !app.count("--size"))  // the model file's own input size
      o.image_size = int(mm::load_model(o.model_file).meta.preprocess.input_size);
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
