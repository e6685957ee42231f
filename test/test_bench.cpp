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
