#include "model/cuda_model_bench.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <sstream>

#include "core/error.h"
#include "model/cuda_model.h"
#include "model/medmamba.h"

namespace mm {

namespace {

// Issue 6's figures for the public PyTorch MedMamba with mamba_ssm's scan on an H100 80GB:
// img/s at batch 128 and ms at batch 1.
struct IssueReference {
  const char* variant;
  double fp32_ips, bf16_ips, fp32_ms, bf16_ms;
};
constexpr IssueReference kIssueReference[] = {
    {"tiny", 1677, 1827, 14.6, 12.5}, {"small", 1379, 1510, 24.6, 19.7}, {"base", 889, 998, 21.7, 29.7}};
constexpr double kTinyBoundIps = 39000;  // the issue's computed lower bound, T at batch 128

std::string issue_comparison(const BenchOptions& o, double ips, double ms) {
  const std::string v = o.variant == "t" ? "tiny" : o.variant == "s" ? "small" : o.variant == "b" ? "base" : o.variant;
  std::ostringstream s;
  if (!o.model_file.empty()) return s.str();  // the references are for the variants
  for (const IssueReference& r : kIssueReference) {
    if (v != r.variant || o.image_size != 224 || o.num_classes != 1000 || o.precision == "fp16") continue;
    const bool bf16 = o.precision == "bf16";
    if (o.batch == 128) s << " vs-issue-ref=" << ips / (bf16 ? r.bf16_ips : r.fp32_ips) << "x";
    if (o.batch == 1) s << " vs-issue-ref-latency=" << (bf16 ? r.bf16_ms : r.fp32_ms) / ms << "x";
    if (o.batch == 128 && v == "tiny") s << " of-bound=" << 100.0 * ips / kTinyBoundIps << "%";
  }
  return s.str();
}

}  // namespace

BenchResult run_cuda_benchmark(const BenchOptions& o) {
  MM_CHECK(o.mode == "forward", "device cuda runs inference only (--mode forward)");
  MedMamba model = bench_model(o);
  CudaModelOptions co;
  co.precision = precision_from_name(o.precision);
  CudaMedMamba gpu(model, co);
  Tensor images = bench_images(o, model.config().in_chans);
  images = images.to(Device::CUDA);  // time the model, not the host-to-device copy

  // The first pass of a shape runs eagerly, the second captures the CUDA graph.
  for (int i = 0; i < std::max(o.warmup, 2); ++i) gpu.forward_device(images);
  gpu.synchronize();
  const double t0 = bench_now_seconds();
  for (int i = 0; i < o.iters; ++i) {
    gpu.forward_device(images);
    gpu.synchronize();  // per pass, so that batch 1 measures latency
  }
  const double dt = (bench_now_seconds() - t0) / o.iters;

  const double ips = o.batch / dt;
  return make_bench_result(o, dt, "cuda gpu=\"" + gpu.device_name() + "\"", issue_comparison(o, ips, dt * 1e3));
}

}  // namespace mm
