#pragma once
// Which series need a report (lib/serve/series_report.h), and when: a series
// is reported once it has had no new image for `idle_seconds`; an image that
// arrives later makes it due again, and the new report, covering every image
// of the series so far, supersedes the earlier one.
//
// Survives restarts: each report written is appended to a ledger (JSONL:
// series UID, images covered, file), and restore() rebuilds the series from
// the records already written, so that series with images in no report yet
// are reported after a crash too.
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "predict/aggregate.h"
#include "predict/prediction.h"
#include "serve/series_report.h"

namespace mm::serve {

class SeriesTracker {
 public:
  SeriesTracker(const ReportModel& model, const std::string& folder, const std::string& ledger, double idle_seconds);
  // From mm-predict JSONL record lines (records.jsonl) and the ledger.
  // Throws mm::Error naming the ledger when a line of it is not a ledger entry.
  void restore(const std::vector<std::string>& record_lines);
  // An image record of mm-predict's pipeline, its path the file in done/.
  void add(const Prediction& image_record);
  // Writes the reports of the series due (of all with unreported images when
  // `all`); returns their paths.
  std::vector<std::string> write_idle(bool all);

 private:
  struct Series {
    Aggregator aggregator{AggregateLevels{true, false}};
    std::vector<std::string> members;
    int64_t images = 0, reported = 0;
    std::chrono::steady_clock::time_point last;
  };
  ReportModel model_;
  std::string folder_, ledger_;
  double idle_seconds_;
  std::map<std::string, Series> series_;
};

}  // namespace mm::serve
