#pragma once
// Classifies what the SCP stored: takes files from the incoming folder in
// batches, runs mm-predict's pipeline on them (same reader, preprocessing,
// batching, classifier), appends their JSONL records (mm-predict's writer,
// fields as mm-predict's) with fsync, and only then moves the files to done/.
//
// Exactly once: a file in incoming whose done/ name already has a record (a
// crash between the append and the move, or the same SOP instance sent again)
// is moved without being classified again. A half-written last record (a crash
// during the append) is cut off at start and its file classified again.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "model/model_file.h"
#include "predict/classifier.h"
#include "predict/pipeline.h"
#include "predict/record_writer.h"
#include "serve/forwarder.h"
#include "serve/saliency_capture.h"
#include "serve/series_tracker.h"
#include "serve/store_scp.h"

namespace mm::serve {

struct WorkerFolders {
  std::string incoming, done, records, status;  // records: the JSONL file; status: the status JSON file
};

class ClassifyWorker {
 public:
  ClassifyWorker(const WorkerFolders& folders, const LoadedModel& loaded, Classifier& classifier,
                 const ImagesReader& reader, int64_t batch_size, int decode_threads, bool draft,
                 ServeCounters& counters);

  void wake();  // a file arrived
  // Works until `stop` is set and incoming is empty, or `stop_now` is set.
  void run(const std::atomic<bool>& stop, const std::atomic<bool>& stop_now);
  // Rewrites the status file (atomically) with the counts; `state` is "running" or "stopped".
  void write_status(const std::string& state);
  void set_port(int port) { port_ = port; }
  // Reports series through `tracker` (none when null; restored from the records
  // file here); it must outlive run().
  void set_series_tracker(SeriesTracker* tracker);
  // Forwards the series reports and saliency captures through `forwarder` (none when null); it must outlive run().
  void set_forwarder(Forwarder* forwarder) { forwarder_ = forwarder; }
  // Writes a saliency Secondary Capture per classified image through `captures`
  // (none when null); it must outlive run().
  void set_saliency_captures(SaliencyCaptures* captures) { saliency_ = captures; }

 private:
  void process(const std::vector<std::string>& names);
  void settle_recorded(std::vector<std::string>& names);  // moves files that already have records
  void report_series(bool all);
  void write_captures(const std::vector<SaliencyItem>& items);

  WorkerFolders folders_;
  const LoadedModel& loaded_;
  Classifier& classifier_;
  const ImagesReader& reader_;
  int64_t batch_size_;
  int decode_threads_;
  bool draft_;  // PredictOptions::draft
  ServeCounters& counters_;
  RecordLayout layout_;
  std::set<std::string> recorded_;  // done/ paths that have records
  std::vector<double> latencies_;   // seconds from receipt (file time) to record, most recent 100000
  std::string last_status_;
  SeriesTracker* series_ = nullptr;
  Forwarder* forwarder_ = nullptr;
  SaliencyCaptures* saliency_ = nullptr;
  size_t queued_ = 0;
  int port_ = 0;
  std::mutex mutex_;
  std::condition_variable woken_;
  bool pending_ = false;
};

}  // namespace mm::serve
