#pragma once
// mm-bench's GPU path: times CudaMedMamba forward passes (see lib/bench/bench.h).
#include "bench/bench.h"

namespace mm {

// Inference only (mode forward); throws mm::Error in builds without CUDA or without a GPU.
// The summary line also gives the ratio to issue 6's reference figures (H100, mamba_ssm)
// where the variant, batch (128 or 1) and precision (fp32, bf16) have one.
BenchResult run_cuda_benchmark(const BenchOptions& o);

}  // namespace mm
