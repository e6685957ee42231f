#pragma once
// Throughput measurement shared by mm-bench (and later the GPU benchmark).
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

struct BenchOptions {
  std::string variant = "tiny";
  std::vector<int64_t> dims, depths;  // a custom architecture instead of the variant (both or neither)
  // A model file to time instead: its architecture and weights, and with precision int8
  // its calibrated activation scales (mm-convert --quantize int8 --calibrate).
  std::string model_file;
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

// Pieces shared by the CPU and CUDA benchmarks.
class MedMamba;
class Tensor;
double bench_now_seconds();
void check_bench_options(const BenchOptions& o);
// The model file's model, or the variant (or dims/depths) at o.image_size with the reference init (seed 0).
MedMamba bench_model(const BenchOptions& o);
Tensor bench_images(const BenchOptions& o, int64_t in_chans);  // (B,C,S,S) standard normal, seed 1
// The summary line: "mm-bench variant=... device=<device_field> ... ms/iter=... img/s=...<extra>".
BenchResult make_bench_result(const BenchOptions& o, double seconds_per_iter, const std::string& device_field,
                              const std::string& extra = "");

// Runs test/reference/bench_reference.py with `python` for the same options and
// returns its images/s (throws when it fails).
double run_torch_reference(const BenchOptions& o, const std::string& python);
// The command line run_torch_reference runs: the same model, batch, size, mode and device;
// bf16/fp16/tf32 as autocast (--amp), int8 as PyTorch's dynamic int8 Linears (--quantize).
std::string torch_reference_command(const BenchOptions& o, const std::string& python);

}  // namespace mm
