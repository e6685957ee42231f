#include "serve/classify_worker.h"

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "serve/durable_files.h"
#include "serve/serve_log.h"

namespace mm::serve {

namespace {

double now_seconds() {
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double modified_seconds(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return now_seconds();
  return double(st.st_mtim.tv_sec) + 1e-9 * double(st.st_mtim.tv_nsec);
}

double percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t i = size_t(std::ceil(q * double(values.size()))) - 1;
  return values[std::min(i, values.size() - 1)];
}

}  // namespace

ClassifyWorker::ClassifyWorker(const WorkerFolders& folders, const LoadedModel& loaded, Classifier& classifier,
                               const ImagesReader& reader, int64_t batch_size, int decode_threads, bool draft,
                               ServeCounters& counters)
    : folders_(folders),
      loaded_(loaded),
      classifier_(classifier),
      reader_(reader),
      batch_size_(batch_size),
      decode_threads_(decode_threads),
      draft_(draft),
      counters_(counters) {
  for (int64_t c = 0; c < loaded.meta.config.num_classes; ++c) layout_.class_names.push_back(loaded.meta.class_name(c));
  std::ostringstream check;
  make_record_writer(RecordFormat::Jsonl, layout_, check);  // checks the class names before anything arrives
  for (const std::string& line : complete_lines(folders_.records)) {
    try {
      recorded_.insert(nlohmann::json::parse(line).at("path").get<std::string>());
    } catch (const std::exception& e) {
      throw Error(folders_.records + ": a record that is not JSON with a path (" + e.what() + "): " + line);
    }
  }
}

void ClassifyWorker::set_series_tracker(SeriesTracker* tracker) {
  series_ = tracker;
  if (series_) series_->restore(complete_lines(folders_.records));
}

void ClassifyWorker::wake() {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_ = true;
  woken_.notify_one();
}

void ClassifyWorker::write_status(const std::string& state) {
  nlohmann::json s;
  s["state"] = state;
  s["port"] = port_;
  s["received"] = counters_.received.load();
  s["rejected"] = counters_.rejected.load();
  s["refused_associations"] = counters_.refused_associations.load();
  s["classified"] = counters_.classified.load();
  s["failed"] = counters_.failed.load();
  s["no_image"] = counters_.no_image.load();
  s["duplicates"] = counters_.duplicates.load();
  s["series_reports"] = counters_.series_reports.load();
  s["saliency_captures"] = counters_.saliency_captures.load();
  s["forwarded"] = counters_.forwarded.load();
  s["queued"] = queued_;
  s["latency_p50_s"] = percentile(latencies_, 0.50);
  s["latency_p99_s"] = percentile(latencies_, 0.99);
  s["latency_samples"] = latencies_.size();
  const std::string text = s.dump(2) + "\n";
  if (text == last_status_) return;  // idle: no rewrite (and no fsync) every round
  durable_replace(folders_.status, text);
  last_status_ = text;
}

void ClassifyWorker::run(const std::atomic<bool>& stop, const std::atomic<bool>& stop_now) {
  // Files per round: a few batches when few wait, so that records follow
  // receipt closely; up to 16 batches for a backlog, where each round's fixed
  // costs (pipeline start and drain, fsyncs) would otherwise dominate.
  const size_t round_min = size_t(std::max<int64_t>(batch_size_ * 2, 8));
  const size_t round_max = size_t(std::max<int64_t>(batch_size_ * 16, 64));
  while (!stop_now) {
    std::vector<std::string> names = folder_entries(folders_.incoming);
    queued_ = names.size();
    if (names.empty()) {
      report_series(bool(stop));
      write_status("running");
      if (stop) break;
      std::unique_lock<std::mutex> lock(mutex_);
      woken_.wait_for(lock, std::chrono::milliseconds(200), [this] { return pending_; });
      pending_ = false;
      continue;
    }
    names.resize(std::min(names.size(), std::clamp(names.size() / 4, round_min, round_max)));
    settle_recorded(names);
    if (!names.empty()) process(names);
    queued_ = folder_entries(folders_.incoming).size();
    report_series(false);
    write_status("running");
  }
}

void ClassifyWorker::report_series(bool all) {
  if (series_) {
    for (const std::string& path : series_->write_idle(all)) {
      ++counters_.series_reports;
      OFLOG_INFO(serve_logger(), "series report " << path);
      if (forwarder_) forwarder_->enqueue(path);
    }
  }
  if (forwarder_) counters_.forwarded += forwarder_->send_queued(all);
}

// A capture that cannot be written is logged and skipped: the records, already
// durable, are what the server guarantees.
void ClassifyWorker::write_captures(const std::vector<SaliencyItem>& items) {
  for (const SaliencyItem& item : items) {
    try {
      const std::string path = saliency_->write(item);
      ++counters_.saliency_captures;
      OFLOG_DEBUG(serve_logger(), "saliency capture " << path << " of " << item.source);
      if (forwarder_) forwarder_->enqueue(path);
    } catch (const std::exception& e) {
      OFLOG_WARN(serve_logger(), "no saliency capture of " << item.source << ": " << e.what());
    }
  }
}

void ClassifyWorker::settle_recorded(std::vector<std::string>& names) {
  std::vector<std::string> fresh;
  bool moved = false;
  for (const std::string& name : names) {
    const std::string done = folders_.done + "/" + name;
    if (!recorded_.count(done)) {
      fresh.push_back(name);
      continue;
    }
    OFLOG_INFO(serve_logger(), name << " already has a record: moved to done without classifying it again");
    if (::rename((folders_.incoming + "/" + name).c_str(), done.c_str()) != 0)
      throw Error(folders_.incoming + "/" + name + ": cannot move to " + done);
    ++counters_.duplicates;
    moved = true;
  }
  if (moved) {
    sync_path(folders_.done);
    sync_path(folders_.incoming);
  }
  names.swap(fresh);
}

void ClassifyWorker::process(const std::vector<std::string>& names) {
  std::vector<InputFile> inputs;
  std::vector<double> received_at;
  for (const std::string& name : names) {
    inputs.push_back({folders_.incoming + "/" + name, false});
    received_at.push_back(modified_seconds(inputs.back().path));
  }
  std::ostringstream text;
  std::unique_ptr<RecordWriter> writer = make_record_writer(RecordFormat::Jsonl, layout_, text);
  // Per file: whether any record of it classified an image, or failed.
  std::vector<std::string> done_paths;
  for (const std::string& name : names) done_paths.push_back(folders_.done + "/" + name);
  std::vector<int> outcome(names.size(), -1);  // -1 none, 0 ok, 1 failed, 2 no image
  std::vector<SaliencyItem> captures;
  size_t next = 0;
  auto sink = [&](const Prediction& p) {
    while (next < inputs.size() && inputs[next].path != p.path) ++next;  // records come in input order
    Prediction moved = p;
    if (next < inputs.size()) moved.path = done_paths[next];
    writer->write(moved);
    if (series_) series_->add(moved);
    const int o = p.status == PredictionStatus::Ok ? 0 : p.status == PredictionStatus::Failed ? 1 : 2;
    if (next < inputs.size() && (outcome[next] < 0 || o == 1)) outcome[next] = o;
    if (p.status == PredictionStatus::Failed) OFLOG_WARN(serve_logger(), p.path << ": " << p.error);
    if (saliency_ && p.status == PredictionStatus::Ok && next < inputs.size())
      captures.push_back({done_paths[next], p.frame, saliency_->png_of(folders_.incoming, p),
                          layout_.class_names.at(size_t(p.class_index)), p.series_uid});
  };
  PredictOptions options;
  options.batch_size = batch_size_;
  options.decode_threads = decode_threads_;
  options.draft = draft_;
  if (saliency_) {  // mm-predict --saliency's overlays, as PNGs in the work folder
    options.saliency_dir = saliency_->work_folder();
    options.derived_root = folders_.incoming;
    options.saliency_model = &saliency_->model();
  }
  run_predictions(inputs, reader_, classifier_, loaded_.meta, options, sink);
  writer->finish();
  durable_append(folders_.records, text.str());
  const double recorded_at = now_seconds();
  for (size_t i = 0; i < names.size(); ++i) {
    if (::rename(inputs[i].path.c_str(), done_paths[i].c_str()) != 0)
      throw Error(inputs[i].path + ": cannot move to " + done_paths[i]);
    recorded_.insert(done_paths[i]);
    if (outcome[i] == 0) ++counters_.classified;
    if (outcome[i] == 1) ++counters_.failed;
    if (outcome[i] == 2) ++counters_.no_image;
    if (latencies_.size() >= 100000) latencies_.erase(latencies_.begin(), latencies_.begin() + 50000);
    latencies_.push_back(recorded_at - received_at[i]);
  }
  sync_path(folders_.done);
  sync_path(folders_.incoming);
  OFLOG_INFO(serve_logger(), "classified " << names.size() << " files");
  if (saliency_) write_captures(captures);
}

}  // namespace mm::serve
