// mm-bench's model source: a model file instead of a variant (lib/bench).
#include <doctest/doctest.h>

#include <string>

#include "bench/bench.h"
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
