#pragma once
// Throughput measurement shared by mm-bench (and later the GPU benchmark).
#include <string>

namespace mm {

struct BenchOptions {
  std::string variant = "tiny";
  int batch = 8;
  int image_size = 224;
  int num_classes = 1000;
  std::string device = "cpu";
  std::string precision = "fp32";
  std::string mode = "forward";
  int iters = 5;
  int warmup = 1;
  int threads = 0;
};

struct BenchResult {
  double images_per_second = 0;
  double seconds_per_iter = 0;
  std::string line;  // one human-readable summary line
};

BenchResult run_benchmark(const BenchOptions& o);

// Runs test/reference/bench_reference.py with `python` for the same options and
// returns its images/s (throws when it fails).
double run_torch_reference(const BenchOptions& o, const std::string& python);

}  // namespace mm
