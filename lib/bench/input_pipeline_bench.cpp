#include "bench/input_pipeline_bench.h"

#include <time.h>

#include <algorithm>
#include <numeric>
#include <sstream>

#include "bench/bench.h"
#include "core/error.h"
#include "train/batch_loader.h"

namespace mm {

namespace {

// CPU seconds used by the whole process: on a shared machine, images per CPU
// second says what N free cores would give when wall-clock figures cannot.
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

}  // namespace

InputPipelineBenchResult run_input_pipeline_benchmark(const InputPipelineBenchOptions& o,
                                                      const ImageFileReader& read_file) {
  MM_CHECK(!o.data.empty(), "input-pipeline benchmark: no dataset");
  MM_CHECK(o.batch >= 1 && o.image_size >= 1 && o.seconds >= 0, "input-pipeline benchmark: bad batch or size");
  MM_CHECK(o.in_chans == 1 || o.in_chans == 3, "input-pipeline benchmark: 1 or 3 channels");
  DatasetOptions dataset_options;
  Dataset d = open_dataset(o.data);
  if (!d.splits.empty() && !o.split.empty()) {
    dataset_options.split = o.split;
    d = open_dataset(o.data, dataset_options);
  }
  std::vector<size_t> samples(d.samples.size());
  std::iota(samples.begin(), samples.end(), size_t(0));
  if (o.limit > 0 && size_t(o.limit) < samples.size()) samples.resize(size_t(o.limit));
  Preprocess p;
  p.input_size = o.image_size;
  p.mean.assign(size_t(o.in_chans), 0.5f);
  p.std.assign(size_t(o.in_chans), 0.5f);
  const int threads = resolve_thread_count(o.threads);

  InputPipelineBenchResult r;
  double t0 = bench_now_seconds(), cpu0 = process_cpu_seconds();
  const ImageCache cache = build_image_cache(d, samples, p, o.in_chans, read_file, threads);
  r.cache_seconds = bench_now_seconds() - t0;
  r.cache_cpu_seconds = process_cpu_seconds() - cpu0;
  r.rows = cache.rows();
  r.failures = int64_t(cache.failures.size());
  r.cache_bytes = cache.bytes();
  MM_CHECK(r.rows > 0,
           o.data + ": no readable image" +
               (cache.failures.empty() ? std::string() : " (first failure: " + cache.failures[0].reason + ")"));

  const AugmentOptions augment = AugmentOptions::from_list(o.augment);
  BatchLoader loader(cache, augment, p, threads);
  t0 = bench_now_seconds(), cpu0 = process_cpu_seconds();
  for (int64_t epoch = 0; epoch == 0 || bench_now_seconds() - t0 < o.seconds; ++epoch) {
    loader.start_epoch(epoch_permutation(r.rows, 0, epoch), o.batch, 0, epoch);
    for (Batch b; loader.next(b);) r.images += b.images.dim(0);
  }
  r.loader_seconds = bench_now_seconds() - t0;
  r.loader_cpu_seconds = process_cpu_seconds() - cpu0;
  r.images_per_second = double(r.images) / r.loader_seconds;

  std::ostringstream line;
  line << "mm-bench input-pipeline data=" << o.data << " rows=" << r.rows << " unreadable=" << r.failures
       << " size=" << o.image_size << " channels=" << o.in_chans << " batch=" << o.batch << " threads=" << threads
       << " augment=" << augment.to_list() << "\n  cache: " << r.cache_seconds << " s, "
       << double(r.rows + r.failures) / r.cache_seconds << " img/s, "
       << double(r.rows + r.failures) / r.cache_cpu_seconds << " img per CPU s, " << double(r.cache_bytes) / (1 << 20)
       << " MiB"
       << "\n  loader: " << r.images << " images in " << r.loader_seconds << " s, img/s=" << r.images_per_second << ", "
       << double(r.images) / r.loader_cpu_seconds << " img per CPU s";
  r.line = line.str();
  return r;
}

}  // namespace mm
