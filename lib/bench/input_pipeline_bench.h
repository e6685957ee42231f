#pragma once
// mm-bench --input-pipeline: how many augmented training images per second the
// batch loader (lib/train) delivers from the in-memory cache, with a consumer
// that only takes the batches, so the figure is what the pipeline can feed a
// trainer. Building the cache (decode, window, resize) is timed separately.
#include <cstdint>
#include <string>

#include "data/dataset.h"

namespace mm {

struct InputPipelineBenchOptions {
  std::string data;             // dataset: image folder, CSV manifest or MedMNIST .npz
  std::string split = "train";  // used when the dataset has splits
  int threads = 0;              // cache and loader threads; 0: all cores
  int image_size = 224;
  int batch = 64;
  int in_chans = 3;  // the model's input channels
  std::string augment = "crop,flip,rotate,jitter,translate";
  int64_t limit = 0;   // cache at most this many samples (0: all)
  double seconds = 5;  // time whole epochs until at least this long
};

struct InputPipelineBenchResult {
  int64_t rows = 0, failures = 0, images = 0;
  double cache_seconds = 0, loader_seconds = 0, images_per_second = 0;
  double cache_cpu_seconds = 0, loader_cpu_seconds = 0;  // CPU time of the process in each phase
  size_t cache_bytes = 0;
  std::string line;  // one summary line
};

InputPipelineBenchResult run_input_pipeline_benchmark(const InputPipelineBenchOptions& o,
                                                      const ImageFileReader& read_file);

}  // namespace mm
