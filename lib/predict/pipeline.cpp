#include "predict/pipeline.h"

#include <malloc.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <thread>

#include "core/error.h"
#include "data/file_kind.h"
#include "data/input_stages.h"
#include "data/preprocess.h"
#include "io/npy_writer.h"
#include "predict/gpu_batches.h"
#include "predict/row_copies.h"
#include "predict/saliency.h"

namespace mm {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One image of a file, ready for the model.
struct PreparedImage {
  Prediction record;  // identification filled; the model's outputs come later
  std::unique_ptr<float[]> input;  // (C,S,S); not zero-filled first: preprocessing writes it whole
  Image image;  // instead of input, when the GPU preprocesses: the decoded image
};

// One input file after decoding: its images, or the record saying why there are none.
struct DecodedFile {
  std::vector<PreparedImage> images;
  Prediction problem;  // status NoImage or Failed when images is empty
  bool skipped = false;
  std::string warning;  // the reader's note on the file (e.g. NIfTI orientation from a fallback source)
  std::exception_ptr fatal;  // an error that stops the run (an output that cannot be written)
  double reading = 0, preparing = 0;          // wall time of the decode thread
  double reading_cpu = 0, preparing_cpu = 0;  // its CPU time
  InputStageTimes stages;                     // CPU time per stage
};

// "<kind>: <reason>" from an error message "<path>: <kind>: <reason>".
std::string reason_of(const std::string& message, const std::string& path) {
  const std::string prefix = path + ": ";
  return message.compare(0, prefix.size(), prefix) == 0 ? message.substr(prefix.size()) : message;
}

// Readers say "cannot open" for a path that is missing or a folder; say which. A message
// about another file (mm-eval's inputs are sample numbers, its reader names the file) is
// left as it is.
std::string plainer_message(const std::string& path, const std::string& message) {
  if (message.compare(0, path.size() + 2, path + ": ") != 0) return message;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return path + ": cannot read: a folder that could not be listed";
  if (!std::filesystem::exists(path, ec))
    return path + ": cannot read: no such file" + (std::filesystem::is_symlink(path, ec) ? " (a broken link)" : "");
  return message;
}

class Decoder {
 public:
  Decoder(const ImagesReader& read, const ModelMeta& meta, const PredictOptions& options, bool preprocess_on_gpu)
      : read_(read), meta_(meta), options_(options), preprocess_on_gpu_(preprocess_on_gpu) {}

  DecodedFile decode(const InputFile& file) const {
    DecodedFile out;
    out.problem.path = file.path;
    const InputStageTimes stages_before = this_thread_input_stages();
    const double cpu_start = thread_cpu_seconds();
    const Clock::time_point start = Clock::now();
    std::vector<Image> images;
    try {
      if (file.found_in_folder && detect_file_kind(file.path) == FileKind::Unknown) {
        out.skipped = true;
        return out;
      }
      images = read_(file.path, ReadHints{options_.draft ? meta_.preprocess.input_size : 0});
      if (images.empty()) throw ImageError(ImageError::Kind::NoImage, file.path, "the file holds no image");
    } catch (const ImageError& e) {
      fail(out, e.kind == ImageError::Kind::NoImage ? PredictionStatus::NoImage : PredictionStatus::Failed,
           e.kind == ImageError::Kind::Io ? plainer_message(file.path, e.what()) : e.what());
      return out;
    } catch (const std::bad_alloc&) {
      fail(out, PredictionStatus::Failed, file.path + ": out of memory while decoding");
      return out;
    } catch (const std::exception& e) {
      fail(out, PredictionStatus::Failed, plainer_message(file.path, e.what()));
      return out;
    }
    out.reading = seconds_since(start);
    const double cpu_read = thread_cpu_seconds();
    out.reading_cpu = cpu_read - cpu_start;
    out.warning = images.front().warning;

    const Clock::time_point prepare_start = Clock::now();
    const int64_t side = meta_.preprocess.input_size;
    try {
      for (Image& img : images) {
        PreparedImage p;
        p.record.path = file.path;
        p.record.frame = img.frame_index;
        p.record.slice = img.slice_index;
        p.record.study_uid = img.study_uid;
        p.record.series_uid = img.series_uid;
        p.record.sop_uid = img.sop_uid;
        if (preprocess_on_gpu_) {
          check_preprocessable(img);
          p.image = GpuBatches::make_small_enough(std::move(img), meta_.preprocess);
          out.images.push_back(std::move(p));
          continue;
        }
        p.input.reset(new float[size_t(int64_t(meta_.preprocess.mean.size()) * side * side)]);
        preprocess_into(img, meta_.preprocess, p.input.get());
        img = Image();  // the decoded pixels are no longer needed
        out.images.push_back(std::move(p));
      }
    } catch (const std::exception& e) {
      out.images.clear();
      fail(out, PredictionStatus::Failed, e.what());
      return out;
    }
    if (!options_.save_preprocessed_dir.empty()) {
      try {
        for (const PreparedImage& p : out.images)
          write_npy_f32(options_.save_preprocessed_dir + "/" +
                            derived_file_name(options_.derived_root, file.path, p.record.frame, p.record.slice, ".npy"),
                        p.input.get(), {int64_t(meta_.preprocess.mean.size()), side, side});
      } catch (...) {
        out.fatal = std::current_exception();
      }
    }
    out.preparing = seconds_since(prepare_start);
    out.preparing_cpu = thread_cpu_seconds() - cpu_read;
    out.stages = this_thread_input_stages() - stages_before;
    return out;
  }

 private:
  static void fail(DecodedFile& out, PredictionStatus status, const std::string& message) {
    out.problem.status = status;
    out.problem.error = reason_of(message, out.problem.path);
  }

  const ImagesReader& read_;
  const ModelMeta& meta_;
  const PredictOptions& options_;
  const bool preprocess_on_gpu_;
};

// Every file's decode allocates and frees the same few buffers of 0.5-1 MB. glibc's defaults
// return such memory to the system (mmap above its adaptive threshold, trimming the heap top
// above 128 KB), so the next file faults the pages in again: about a fifth of a JPEG
// Lossless CT slice's CPU time. Freed memory is kept for reuse instead: allocations up to
// 32 MB (glibc's ceiling for the threshold) come from the heap, which is trimmed only above
// 256 MB free. Measured on a 2-core Ice Lake, 300 slices, mm-predict --threads 2: JPEG Lossless
// 185 -> 247 img/s (decode + preprocess 3.0 -> 2.4 ms a slice), uncompressed 290 -> 305-347.
// Process-wide and once: the pipeline is the process's main job.
void keep_freed_memory_for_reuse() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    return true;
  }();
  (void)done;
}

// Decode threads handing decoded files to one consumer in input order.
class DecodePool {
 public:
  DecodePool(const std::vector<InputFile>& files, const Decoder& decoder, int threads, int64_t images_ahead,
             RowCopies& copies)
      : files_(files), decoder_(decoder), images_ahead_(images_ahead), copies_(copies) {
    // A thread waiting for room to read ahead copies rows meanwhile (at thousands of
    // images per second, the calling thread alone could not).
    copies_.on_post([this] {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_workers_ > 0) workers_.notify_one();
    });
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this] { work(); });
  }
  ~DecodePool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    workers_.notify_all();
    for (std::thread& t : threads_) t.join();
    copies_.on_post(nullptr);
  }

  // The next file in input order; blocks until it is decoded.
  DecodedFile take(size_t index) {
    std::unique_lock<std::mutex> lock(mutex_);
    taker_waiting_ = true;
    taker_.wait(lock, [&] { return ready_.count(index) > 0; });
    taker_waiting_ = false;
    DecodedFile d = std::move(ready_[index]);
    ready_.erase(index);
    const int64_t freed = weight(d);
    held_images_ -= freed;
    next_take_ = index + 1;
    // Waking every thread per file (thousands a second) cost more than the rest of
    // the calling thread's work: wake as many as can now claim a file, and only
    // threads that wait (a wake-up is a system call).
    if (idle_workers_ > 0) {
      if (freed == 1) workers_.notify_one();
      else workers_.notify_all();
    }
    return d;
  }

 private:
  // A file without images still counts one, so that runs of failing files are bounded too.
  static int64_t weight(const DecodedFile& d) { return std::max<int64_t>(1, int64_t(d.images.size())); }

  void work() {
    // Preprocessing parallelises large resizes with OpenMP; inside a decode
    // thread that would start a team per thread, competing with the model.
    omp_set_num_threads(1);
    for (;;) {
      while (copies_.run_one()) {
      }
      size_t index;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ++idle_workers_;
        workers_.wait(lock, [&] {
          return stop_ || next_claim_ >= files_.size() || next_claim_ == next_take_ || held_images_ < images_ahead_ ||
                 copies_.pending();
        });
        --idle_workers_;
        if (stop_ || next_claim_ >= files_.size()) return;
        if (!(next_claim_ == next_take_ || held_images_ < images_ahead_)) continue;  // woken for copies
        index = next_claim_++;
      }
      DecodedFile d = decoder_.decode(files_[index]);
      bool wake_taker;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        held_images_ += weight(d);
        ready_.emplace(index, std::move(d));
        wake_taker = taker_waiting_;
      }
      if (wake_taker) taker_.notify_one();
    }
  }

  const std::vector<InputFile>& files_;
  const Decoder& decoder_;
  const int64_t images_ahead_;
  RowCopies& copies_;
  std::mutex mutex_;
  std::condition_variable taker_;    // the calling thread, waiting in take()
  std::condition_variable workers_;  // decode threads, waiting for a file to claim or rows to copy
  std::map<size_t, DecodedFile> ready_;
  size_t next_claim_ = 0, next_take_ = 0;
  int64_t held_images_ = 0;
  int idle_workers_ = 0;        // decode threads in workers_.wait
  bool taker_waiting_ = false;  // the calling thread in taker_.wait
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Records wait here until every record before them is complete, then go to the
// sink in order; image records are complete once their batch has run.
class OrderedBatcher {
 public:
  // gpu: the GPU's batches, or nullptr to make batches on the CPU for classifier.logits.
  OrderedBatcher(Classifier& classifier, GpuBatches* gpu, const ModelMeta& meta, const PredictOptions& options,
                 const std::function<void(const Prediction&)>& sink, PredictSummary& summary, RowCopies& copies)
      : classifier_(classifier), gpu_(gpu), meta_(meta), options_(options), sink_(sink), summary_(summary),
        copies_(copies), channels_(int64_t(meta.preprocess.mean.size())), side_(meta.preprocess.input_size),
        batch_(gpu ? Tensor() : Tensor::empty({options.batch_size, channels_, side_, side_})) {}

  void add_problem(Prediction record) {
    pending_.push_back({std::move(record), true});
    flush();
  }

  void add_image(PreparedImage&& image) {
    if (gpu_) {
      float* slot = gpu_->add(image.image);  // before the pixels move out
      copies_.post(slot, std::move(image.image.pixels));
    } else {
      const int64_t item = channels_ * side_ * side_;
      copies_.post(batch_.f32() + int64_t(rows_.size()) * item, std::move(image.input), size_t(item));
    }
    rows_.push_back(first_seq_ + pending_.size());
    pending_.push_back({std::move(image.record), false});
    if (int64_t(rows_.size()) == options_.batch_size) gpu_ ? launch_gpu_batch() : run_batch();
  }

  void finish() {
    if (!rows_.empty()) gpu_ ? launch_gpu_batch() : run_batch();
    while (!launched_rows_.empty()) complete_gpu_batch();
    flush();
  }

  int64_t images_done() const { return images_done_; }

 private:
  struct Pending {
    Prediction record;
    bool complete;
  };

  void run_batch() {
    const int64_t b = int64_t(rows_.size()), k = meta_.config.num_classes;
    Clock::time_point start = Clock::now();
    copies_.finish_all();  // the rows the decode threads have not copied yet
    summary_.timing.batching += seconds_since(start);
    const Tensor images = b == options_.batch_size ? batch_ : batch_.slice_view(0, {b, channels_, side_, side_});
    start = Clock::now();
    const Tensor logits = classifier_.logits(images);
    summary_.timing.model += seconds_since(start);
    MM_CHECK(logits.dim(0) == b && logits.dim(1) == k, "the model returned logits of shape " + shape_str(logits.shape()));
    const std::vector<int64_t> classes = complete_rows(rows_, logits);
    if (!options_.saliency_dir.empty()) {
      start = Clock::now();
      write_saliency(images, classes);
      summary_.timing.saliency += seconds_since(start);
    }
    images_done_ += b;
    summary_.images += b;
    rows_.clear();
    flush();
  }

  // Records of the batch rows `rows` from its logits; returns their classes.
  std::vector<int64_t> complete_rows(const std::vector<size_t>& rows, const Tensor& logits) {
    const int64_t k = meta_.config.num_classes;
    std::vector<int64_t> classes;
    for (size_t r = 0; r < rows.size(); ++r) {
      Pending& p = pending_[rows[r] - first_seq_];
      const float* row = logits.f32() + int64_t(r) * k;
      p.record.probabilities.resize(size_t(k));
      softmax_into(row, k, p.record.probabilities.data());
      p.record.class_index = argmax(p.record.probabilities);
      if (options_.logits) p.record.logits.assign(row, row + k);
      p.complete = true;
      classes.push_back(p.record.class_index);
    }
    return classes;
  }

  // Queues the batch on the GPU; once two are running, finishes the older one, so that
  // the host fills the next batch while the GPU runs this one.
  void launch_gpu_batch() {
    Clock::time_point start = Clock::now();
    copies_.finish_all();  // the pixels the decode threads have not copied yet
    summary_.timing.batching += seconds_since(start);
    start = Clock::now();
    gpu_->launch();
    summary_.timing.model += seconds_since(start);
    launched_rows_.push_back(std::move(rows_));
    rows_.clear();
    if (launched_rows_.size() == 2) complete_gpu_batch();
  }

  void complete_gpu_batch() {
    const Clock::time_point start = Clock::now();
    const Tensor logits = gpu_->wait_oldest();
    summary_.timing.model += seconds_since(start);
    const std::vector<size_t> rows = std::move(launched_rows_.front());
    launched_rows_.pop_front();
    MM_CHECK(logits.dim(0) == int64_t(rows.size()) && logits.dim(1) == meta_.config.num_classes,
             "the model returned logits of shape " + shape_str(logits.shape()));
    complete_rows(rows, logits);
    images_done_ += int64_t(rows.size());
    summary_.images += int64_t(rows.size());
    flush();
  }

  void write_saliency(const Tensor& images, const std::vector<int64_t>& classes) {
    MM_CHECK(options_.saliency_model != nullptr, "saliency needs the CPU model");
    const Tensor maps = gradient_times_input(*options_.saliency_model, images, classes);
    const int64_t item = channels_ * side_ * side_;
    for (size_t r = 0; r < rows_.size(); ++r) {
      const Prediction& rec = pending_[rows_[r] - first_seq_].record;
      const std::string name = derived_file_name(options_.derived_root, rec.path, rec.frame, rec.slice, ".png");
      write_saliency_png(options_.saliency_dir + "/" + name, images.f32() + int64_t(r) * item,
                         maps.f32() + int64_t(r) * side_ * side_, side_, meta_.preprocess);
    }
  }

  void flush() {
    const Clock::time_point start = Clock::now();
    while (!pending_.empty() && pending_.front().complete) {
      sink_(pending_.front().record);
      pending_.pop_front();
      ++first_seq_;
    }
    summary_.timing.output += seconds_since(start);
  }

  Classifier& classifier_;
  GpuBatches* gpu_;
  const ModelMeta& meta_;
  const PredictOptions& options_;
  const std::function<void(const Prediction&)>& sink_;
  PredictSummary& summary_;
  RowCopies& copies_;  // model inputs into batch_'s rows
  const int64_t channels_, side_;
  Tensor batch_;
  std::deque<Pending> pending_;
  size_t first_seq_ = 0;      // sequence number of pending_.front()
  std::vector<size_t> rows_;  // sequence numbers of the records in the batch, by row
  std::deque<std::vector<size_t>> launched_rows_;  // the same of the batches running on the GPU
  int64_t images_done_ = 0;
};

}  // namespace

PredictSummary run_predictions(const std::vector<InputFile>& files, const ImagesReader& read,
                               Classifier& classifier, const ModelMeta& meta, const PredictOptions& options,
                               const std::function<void(const Prediction&)>& sink) {
  MM_CHECK(options.batch_size >= 1, "batch size must be at least 1");
  MM_CHECK(meta.preprocess.input_size == meta.config.image_size &&
               int64_t(meta.preprocess.mean.size()) == meta.config.in_chans,
           "the model's preprocessing (" + std::to_string(meta.preprocess.input_size) + " px, " +
               std::to_string(meta.preprocess.mean.size()) + " channels) disagrees with its config (" +
               std::to_string(meta.config.image_size) + " px, " + std::to_string(meta.config.in_chans) + " channels)");
  const Clock::time_point start = Clock::now();
  PredictSummary summary;
  summary.files = int64_t(files.size());
  summary.decode_threads = std::max(1, options.decode_threads);
  const int64_t images_ahead = options.images_ahead > 0 ? options.images_ahead : 4 * options.batch_size;

  CudaMedMamba* engine = options.preprocess_on_gpu && options.save_preprocessed_dir.empty() &&
                                 options.saliency_dir.empty()
                             ? classifier.cuda_engine()
                             : nullptr;
  std::unique_ptr<GpuBatches> gpu;
  if (engine) gpu = std::make_unique<GpuBatches>(*engine, meta.preprocess, options.batch_size);
  summary.inputs_on_gpu = gpu != nullptr;
  const Decoder decoder(read, meta, options, gpu != nullptr);
  RowCopies copies;
  OrderedBatcher batcher(classifier, gpu.get(), meta, options, sink, summary, copies);
  keep_freed_memory_for_reuse();
  {
    DecodePool pool(files, decoder, summary.decode_threads, images_ahead, copies);
    if (gpu && !files.empty()) {  // while the decode threads read the first files
      const Clock::time_point warm_start = Clock::now();
      gpu->warm_up();
      summary.timing.model += seconds_since(warm_start);
    }
    for (size_t i = 0; i < files.size(); ++i) {
      const Clock::time_point wait_start = Clock::now();
      DecodedFile d = pool.take(i);
      summary.timing.waiting += seconds_since(wait_start);
      if (d.fatal) std::rethrow_exception(d.fatal);
      summary.timing.reading += d.reading;
      summary.timing.preparing += d.preparing;
      summary.timing.reading_cpu += d.reading_cpu;
      summary.timing.preparing_cpu += d.preparing_cpu;
      summary.timing.stages += d.stages;
      if (d.skipped) {
        ++summary.skipped_files;
        if (options.skipped) options.skipped(files[i].path);
      } else if (d.images.empty()) {
        ++(d.problem.status == PredictionStatus::NoImage ? summary.no_image_files : summary.failed_files);
        batcher.add_problem(std::move(d.problem));
      } else {
        if (!d.warning.empty() && options.warning) options.warning(files[i].path, d.warning);
        for (PreparedImage& image : d.images) batcher.add_image(std::move(image));
      }
      if (options.progress) options.progress({int64_t(i + 1), int64_t(files.size()), batcher.images_done()});
    }
  }
  batcher.finish();
  if (options.progress) options.progress({int64_t(files.size()), int64_t(files.size()), batcher.images_done()});
  summary.timing.wall = seconds_since(start);
  return summary;
}

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, int(std::thread::hardware_concurrency()));
}

ExitCode exit_code_of(const PredictSummary& s) {
  if (s.images == 0) return kExitNothingClassified;
  if (s.failed_files > 0) return kExitSomeFailed;
  return kExitOk;
}

}  // namespace mm
