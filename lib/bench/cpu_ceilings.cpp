#include "bench/cpu_ceilings.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include <immintrin.h>

#include "bench/bench.h"
#include "core/error.h"

namespace mm {

namespace {

// Twelve independent accumulators: enough to cover the fma latency on both pipes of the cores
// we know (4 cycles x 2 per cycle), so the loop runs at the fma throughput, not its latency.
constexpr int kAccumulators = 12;

// iters x kAccumulators fmas of a vector; each returns a value that depends on all of them, so
// that none can be left out. One version per instruction set, compiled for it whatever the
// build's -march and chosen at run time, so that a portable build measures the vector units too.
__attribute__((target("avx512f"), noinline)) float fma_loop_avx512(int64_t iters, float seed) {
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_set1_ps(seed + float(i));
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  float s = 0.f;
  for (int i = 0; i < kAccumulators; ++i) s += _mm512_cvtss_f32(acc[i]);
  return s;
}

__attribute__((target("avx2,fma"), noinline)) float fma_loop_avx2(int64_t iters, float seed) {
  __m256 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm256_set1_ps(seed + float(i));
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
  float s = 0.f;
  for (int i = 0; i < kAccumulators; ++i) s += _mm256_cvtss_f32(acc[i]);
  return s;
}

__attribute__((noinline)) float fma_loop_scalar(int64_t iters, float seed) {
  float acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = seed + float(i);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < kAccumulators; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float s = 0.f;
  for (int i = 0; i < kAccumulators; ++i) s += acc[i];
  return s;
}

struct FmaLoop {
  float (*run)(int64_t iters, float seed);
  int lanes;
  const char* isa;
};

const FmaLoop& fma_loop() {
  static const FmaLoop chosen = __builtin_cpu_supports("avx512f")
                                    ? FmaLoop{fma_loop_avx512, 16, "avx512"}
                                    : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                          ? FmaLoop{fma_loop_avx2, 8, "avx2"}
                                          : FmaLoop{fma_loop_scalar, 1, "scalar"};
  return chosen;
}

double flops_per_iter() { return 2.0 * fma_loop().lanes * kAccumulators; }

// Mean fma GFLOP/s of T threads running fma_loop(iters) at once.
double fma_rate(int T, int64_t iters) {
  double seconds = 0;
  float sink = 0.f;
#pragma omp parallel num_threads(T) reduction(+ : seconds, sink)
  {
#pragma omp barrier
    const double t0 = bench_now_seconds();
    sink += fma_loop().run(iters, float(omp_get_thread_num()));
    seconds += bench_now_seconds() - t0;
  }
  volatile float keep = sink;  // the results are used
  (void)keep;
  return flops_per_iter() * double(iters) * T / seconds / 1e9;
}

// Best of 5 triads over the three arrays, each first touched by the thread that later streams it.
double triad_rate(int T, int64_t n) {
  std::unique_ptr<float[]> a(new float[size_t(n)]), b(new float[size_t(n)]), c(new float[size_t(n)]);
#pragma omp parallel for num_threads(T) schedule(static)
  for (int64_t i = 0; i < n; ++i) a[size_t(i)] = 0.f, b[size_t(i)] = 1.f, c[size_t(i)] = 2.f;
  double best = 1e30;
  const float s = 3.f;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = bench_now_seconds();
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t i = 0; i < n; ++i) a[size_t(i)] = b[size_t(i)] + s * c[size_t(i)];
    best = std::min(best, bench_now_seconds() - t0);
  }
  MM_CHECK(a[size_t(n - 1)] == 7.f, "cpu ceilings: the triad computed a wrong value");
  return 3.0 * double(n) * sizeof(float) / best / 1e9;
}

}  // namespace

const char* cpu_ceiling_isa() { return fma_loop().isa; }

std::vector<CpuCeiling> measure_cpu_ceilings(const CpuCeilingOptions& o) {
  MM_CHECK(o.triad_floats >= 1024, "cpu ceilings: the triad needs at least 1024 floats per array");
  for (int T : o.threads)
    MM_CHECK(T >= 1, "cpu ceilings: thread counts must be at least 1 (got " + std::to_string(T) + ")");
  // Iterations for about o.seconds at one thread's rate (the same count at every thread count).
  const int64_t trial = 1 << 20;
  const double t0 = bench_now_seconds();
  volatile float keep = fma_loop().run(trial, 1.f);
  (void)keep;
  const double trial_s = std::max(bench_now_seconds() - t0, 1e-6);
  const int64_t iters = std::max<int64_t>(trial, int64_t(double(trial) * o.seconds / trial_s));
  std::vector<CpuCeiling> rows;
  for (int T : o.threads) {
    CpuCeiling r;
    r.threads = T;
    r.fma_gflops_per_thread = fma_rate(T, iters);
    r.triad_gbs = triad_rate(T, o.triad_floats);
    rows.push_back(r);
  }
  return rows;
}

std::string format_cpu_ceilings(const std::vector<CpuCeiling>& rows) {
  std::string out;
  char line[256];
  for (const CpuCeiling& r : rows) {
    std::snprintf(line, sizeof line, "mm-bench cpu-ceilings isa=%s threads=%d fma_gflops_per_thread=%.1f "
                  "fma_gflops=%.1f triad_gbs=%.1f\n", cpu_ceiling_isa(), r.threads, r.fma_gflops_per_thread,
                  r.fma_gflops_per_thread * r.threads, r.triad_gbs);
    out += line;
  }
  // The base: 2 threads (issue 15's), else the smallest count above 1, else the first.
  const CpuCeiling* base = nullptr;
  for (const CpuCeiling& r : rows)
    if (r.threads > 1 && (!base || (base->threads != 2 && (r.threads == 2 || r.threads < base->threads)))) base = &r;
  if (!base && !rows.empty()) base = &rows.front();
  for (const CpuCeiling& r : rows) {
    if (!base || r.threads <= base->threads) continue;
    std::snprintf(line, sizeof line,
                  "mm-bench cpu-ceilings %d -> %d threads: compute at most %.2fx (fma), memory at most %.2fx "
                  "(triad)\n",
                  base->threads, r.threads,
                  r.fma_gflops_per_thread * r.threads / (base->fma_gflops_per_thread * base->threads),
                  r.triad_gbs / base->triad_gbs);
    out += line;
  }
  return out;
}

}  // namespace mm
