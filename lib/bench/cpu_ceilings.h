#pragma once
// What the hardware lets a CPU forward gain from more threads (issue 15's 2 -> 16 thread
// scaling): for each thread count, every thread running at once,
//   - the fused multiply-add rate of one thread, from independent vector fmas on registers
//     (no memory): compute-bound ops (the scan, GEMMs, convolutions) scale at most as
//     threads x this rate, which falls where many busy cores run at a lower clock;
//   - the machine's memory bandwidth, from a STREAM triad a[i] = b[i] + s*c[i] over arrays
//     far larger than any cache: memory-bound ops (norms, layout passes, the depthwise conv)
//     scale at most as this does.
// mm-bench --cpu-ceilings prints one line per thread count and the 2 -> N ratios.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

struct CpuCeiling {
  int threads = 0;
  double fma_gflops_per_thread = 0;  // float32 FLOP/s (an fma counts 2) / 1e9, mean over the threads
  double triad_gbs = 0;              // bytes moved (3 arrays' worth, STREAM's count) / s / 1e9, all threads
};

struct CpuCeilingOptions {
  std::vector<int> threads{1, 2};
  int64_t triad_floats = int64_t(1) << 25;  // per array (3 arrays): 128 MiB each
  double seconds = 0.25;                    // per fma measurement
};

// Measures each thread count in turn (OpenMP teams of that size, threads bound as the
// environment's OMP_PROC_BIND / OMP_PLACES say). Throws mm::Error for a count below 1.
std::vector<CpuCeiling> measure_cpu_ceilings(const CpuCeilingOptions& o);

// The vector width the fma loop uses here ("avx512", "avx2" or "scalar"): the widest this CPU
// has, whatever the build was compiled for.
const char* cpu_ceiling_isa();

// The report: a line per thread count, then the ratios of each count to the count 2 (or the
// smallest above 1) for the fma total and the triad.
std::string format_cpu_ceilings(const std::vector<CpuCeiling>& rows);

}  // namespace mm
