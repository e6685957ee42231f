#include "serve/series_tracker.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_text.h"
#include "serve/durable_files.h"

namespace mm::serve {

SeriesTracker::SeriesTracker(const ReportModel& model, const std::string& folder, const std::string& ledger,
                             double idle_seconds)
    : model_(model), folder_(folder), ledger_(ledger), idle_seconds_(idle_seconds) {}

void SeriesTracker::restore(const std::vector<std::string>& record_lines) {
  for (const std::string& line : record_lines) {
    const nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
    if (!r.is_object() || r.contains("level") || r.value("status", "") != "ok" || !r.contains("series_uid")) continue;
    Prediction p;
    p.path = r.value("path", "");
    p.frame = r.value("frame", int64_t(-1));
    p.study_uid = r.value("study_uid", "");
    p.series_uid = r.value("series_uid", "");
    p.sop_uid = r.value("sop_uid", "");
    const nlohmann::json& probabilities = r["probabilities"];
    for (const std::string& name : model_.class_names) p.probabilities.push_back(probabilities.value(name, 0.0));
    p.class_index = argmax(p.probabilities);
    add(p);
  }
  for (const std::string& line : complete_lines(ledger_)) {
    const nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
    MM_CHECK(e.is_object() && e.contains("series_uid") && e.contains("images"),
             ledger_ + ": not a report ledger entry: " + line);
    auto it = series_.find(e["series_uid"].get<std::string>());
    if (it != series_.end()) it->second.reported = std::max(it->second.reported, e["images"].get<int64_t>());
  }
}

void SeriesTracker::add(const Prediction& image_record) {
  if (image_record.status != PredictionStatus::Ok || image_record.series_uid.empty()) return;
  Series& s = series_[image_record.series_uid];
  s.aggregator.add(image_record);
  ++s.images;
  if (s.members.empty() || s.members.back() != image_record.path) s.members.push_back(image_record.path);
  s.last = std::chrono::steady_clock::now();
}

std::vector<std::string> SeriesTracker::write_idle(bool all) {
  std::vector<std::string> written;
  const auto now = std::chrono::steady_clock::now();
  for (auto& [uid, s] : series_) {
    if (s.images <= s.reported) continue;
    if (!all && std::chrono::duration<double>(now - s.last).count() < idle_seconds_) continue;
    SeriesResult result;
    result.aggregate = s.aggregator.records().at(0);
    result.members = s.members;
    const std::string path = write_series_report(result, model_, folder_);
    nlohmann::json entry = {{"series_uid", uid}, {"images", s.images}, {"report", path}};
    durable_append(ledger_, json_text(entry) + "\n");
    s.reported = s.images;
    written.push_back(path);
  }
  return written;
}

}  // namespace mm::serve
