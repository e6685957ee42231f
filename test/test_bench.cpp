// mm-bench's model source: a model file instead of a variant; its CPU ceilings (lib/bench).
#include <doctest/doctest.h>

#include <string>

#include "bench/bench.h"
#include "bench/cpu_ceilings.h"
#include "core/error.h"
#include "model/cpu_int8_model.h"

TEST_CASE("bench: --model times a model file, and names it and its int8 scales in the line") {
  mm::BenchOptions o;
  o.model_file = std::string(MM_SOURCE_DIR) + "/share/models/brain-mri-96.safetensors";
  o.image_size = 96;
  o.batch = 2;
  o.iters = 1;
  o.warmup = 0;
  const mm::BenchResult fp32 = mm::run_benchmark(o);
  CHECK(fp32.images_per_second > 0);
  CHECK(fp32.line.find("variant=file=brain-mri-96.safetensors") != std::string::npos);
  CHECK(mm::bench_model(o).config().dims == std::vector<int64_t>{32, 64, 128, 256});
  if (!mm::int8_model_unavailable_reason().empty()) return;  // no int8 path on this CPU or build
  o.precision = "int8";
  CHECK(mm::run_benchmark(o).line.find("scales=per-row") != std::string::npos);
}

TEST_CASE("bench: --torch asks the reference for the same precision (autocast, or dynamic int8 Linears)") {
  mm::BenchOptions o;
  o.batch = 8;
  o.threads = 2;
  const auto cmd = [&](const char* precision) {
    o.precision = precision;
    return mm::torch_reference_command(o, "python3");
  };
  CHECK(cmd("fp32").find("--amp") == std::string::npos);
  CHECK(cmd("fp32").find("--quantize") == std::string::npos);
  CHECK(cmd("bf16").find(" --amp bf16") != std::string::npos);
  CHECK(cmd("int8").find(" --quantize int8") != std::string::npos);
  CHECK(cmd("int8").find("--amp") == std::string::npos);  // bench_reference.py has no --amp int8
  CHECK(cmd("int8").find(" --batch 8 ") != std::string::npos);
  CHECK(cmd("int8").find(" --threads 2") != std::string::npos);
}

TEST_CASE("bench: --cpu-ceilings measures each thread count's fma rate and bandwidth, and their ratios to 2 threads") {
  mm::CpuCeilingOptions o;
  o.threads = {1, 2};
  o.triad_floats = 1 << 20;
  o.seconds = 0.02;
  const std::vector<mm::CpuCeiling> rows = mm::measure_cpu_ceilings(o);
  REQUIRE(rows.size() == 2);
  for (const mm::CpuCeiling& r : rows) {
    CAPTURE(r.threads);
    // Any x86-64 core of the last decade does well above 1 GFLOP/s of vector fmas; the triad
    // moves more than 0.1 GB/s anywhere this runs.
    CHECK(r.fma_gflops_per_thread > 1.0);
    CHECK(r.triad_gbs > 0.1);
  }
  CHECK(rows[1].threads == 2);
  o.threads = {0};
  CHECK_THROWS_AS(mm::measure_cpu_ceilings(o), mm::Error);

  // The report: a line per count, then each larger count against 2 threads.
  const std::string text = mm::format_cpu_ceilings({{1, 100, 20}, {2, 100, 40}, {16, 75, 120}});
  CHECK(text.find("threads=16 fma_gflops_per_thread=75.0 fma_gflops=1200.0 triad_gbs=120.0") != std::string::npos);
  CHECK(text.find("2 -> 16 threads: compute at most 6.00x (fma), memory at most 3.00x (triad)") != std::string::npos);
  CHECK(text.find("-> 2 threads") == std::string::npos);
}
