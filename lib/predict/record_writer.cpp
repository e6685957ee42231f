#include "predict/record_writer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "core/error.h"
#include "io/csv.h"
#include "io/json_text.h"

namespace mm {

namespace {

// A JSON string; paths may hold bytes that are not UTF-8 (Linux file names are
// bytes), which become U+FFFD instead of failing the run.
std::string json_string(const std::string& s) {
  return json_text(nlohmann::json(s));
}

// JSON has no NaN or infinity.
std::string json_number(double x) { return std::isfinite(x) ? format_number(x) : "null"; }

std::string label_of(const RecordLayout& layout, int64_t c) {
  return c >= 0 && c < int64_t(layout.class_names.size()) ? layout.class_names[size_t(c)] : "";
}

class CsvWriter : public RecordWriter {
 public:
  CsvWriter(const RecordLayout& layout, std::ostream& out) : layout_(layout), out_(out) {
    if (!layout_.csv_header) return;
    std::vector<std::string> h = {"path"};
    if (layout_.levels) h.push_back("level");
    for (const char* f : {"frame", "slice", "study_uid", "series_uid", "sop_uid", "status", "label", "class_index",
                          "probability"})
      h.push_back(f);
    for (const auto& c : layout_.class_names) h.push_back("prob_" + c);
    for (int64_t k = 1; k <= layout_.top_k; ++k) {
      h.push_back("top" + std::to_string(k) + "_label");
      h.push_back("top" + std::to_string(k) + "_probability");
    }
    if (layout_.logits)
      for (const auto& c : layout_.class_names) h.push_back("logit_" + c);
    if (layout_.levels) h.push_back("images");
    h.push_back("error");
    write_row(h);
  }

  void write(const Prediction& p) override {
    const bool ok = p.status == PredictionStatus::Ok;
    const size_t k = layout_.class_names.size();
    std::vector<std::string> row = {p.path};
    if (layout_.levels) row.push_back(prediction_level_name(p.level));
    row.push_back(p.frame >= 0 ? std::to_string(p.frame) : "");
    row.push_back(p.slice >= 0 ? std::to_string(p.slice) : "");
    row.insert(row.end(), {p.study_uid, p.series_uid, p.sop_uid, prediction_status_name(p.status)});
    row.push_back(ok ? label_of(layout_, p.class_index) : "");
    row.push_back(ok ? std::to_string(p.class_index) : "");
    row.push_back(ok ? format_number(p.probabilities[size_t(p.class_index)]) : "");
    for (size_t c = 0; c < k; ++c) row.push_back(ok ? format_number(p.probabilities[c]) : "");
    const std::vector<int64_t> top = ok ? top_classes(p.probabilities, layout_.top_k) : std::vector<int64_t>();
    for (int64_t i = 0; i < layout_.top_k; ++i) {
      const bool have = i < int64_t(top.size());
      row.push_back(have ? label_of(layout_, top[size_t(i)]) : "");
      row.push_back(have ? format_number(p.probabilities[size_t(top[size_t(i)])]) : "");
    }
    if (layout_.logits)
      for (size_t c = 0; c < k; ++c) row.push_back(c < p.logits.size() ? format_number(p.logits[c]) : "");
    if (layout_.levels) row.push_back(p.level == PredictionLevel::Image ? "" : std::to_string(p.images));
    row.push_back(p.error);
    write_row(row);
  }

  void finish() override { out_.flush(); }

 private:
  void write_row(const std::vector<std::string>& fields) {
    std::string line;
    for (size_t i = 0; i < fields.size(); ++i) line += (i ? "," : "") + csv_field(fields[i]);
    out_ << line << '\n';
  }

  RecordLayout layout_;
  std::ostream& out_;
};

// One record as a JSON object on one line (JSONL's line, JSON's list item).
std::string json_record(const RecordLayout& layout, const Prediction& p) {
  std::string s = "{\"path\":" + json_string(p.path);
  auto field = [&s](const char* key, const std::string& value_json) {
    s += ",\"" + std::string(key) + "\":" + value_json;
  };
  if (layout.levels) field("level", json_string(prediction_level_name(p.level)));
  if (p.frame >= 0) field("frame", std::to_string(p.frame));
  if (p.slice >= 0) field("slice", std::to_string(p.slice));
  if (!p.study_uid.empty()) field("study_uid", json_string(p.study_uid));
  if (!p.series_uid.empty()) field("series_uid", json_string(p.series_uid));
  if (!p.sop_uid.empty()) field("sop_uid", json_string(p.sop_uid));
  field("status", json_string(prediction_status_name(p.status)));
  if (p.status == PredictionStatus::Ok) {
    field("label", json_string(label_of(layout, p.class_index)));
    field("class_index", std::to_string(p.class_index));
    field("probability", json_number(p.probabilities[size_t(p.class_index)]));
    auto per_class = [&](const auto& values) {
      std::string o = "{";
      for (size_t c = 0; c < values.size() && c < layout.class_names.size(); ++c)
        o += (c ? "," : "") + json_string(layout.class_names[c]) + ":" + json_number(values[c]);
      return o + "}";
    };
    field("probabilities", per_class(p.probabilities));
    if (layout.top_k > 0) {
      std::string top = "[";
      for (int64_t c : top_classes(p.probabilities, layout.top_k))
        top += std::string(top.size() > 1 ? "," : "") + "{\"label\":" + json_string(label_of(layout, c)) +
               ",\"class_index\":" + std::to_string(c) +
               ",\"probability\":" + json_number(p.probabilities[size_t(c)]) + "}";
      field("top_k", top + "]");
    }
    if (layout.logits && !p.logits.empty()) field("logits", per_class(p.logits));
  }
  if (p.level != PredictionLevel::Image) field("images", std::to_string(p.images));
  if (!p.error.empty()) field("error", json_string(p.error));
  return s + "}";
}

class JsonlWriter : public RecordWriter {
 public:
  JsonlWriter(const RecordLayout& layout, std::ostream& out) : layout_(layout), out_(out) {}
  void write(const Prediction& p) override { out_ << json_record(layout_, p) << '\n'; }
  void finish() override { out_.flush(); }

 private:
  RecordLayout layout_;
  std::ostream& out_;
};

// {"class_names": [...], "records": [...]}: streamed, one record per line.
class JsonWriter : public RecordWriter {
 public:
  JsonWriter(const RecordLayout& layout, std::ostream& out) : layout_(layout), out_(out) {
    out_ << "{\"class_names\":" << json_text(nlohmann::json(layout_.class_names))
         << ",\n\"records\":[";
  }
  void write(const Prediction& p) override {
    out_ << (first_ ? "\n" : ",\n") << json_record(layout_, p);
    first_ = false;
  }
  void finish() override {
    out_ << "\n]}\n";
    out_.flush();
  }

 private:
  RecordLayout layout_;
  std::ostream& out_;
  bool first_ = true;
};

}  // namespace

RecordFormat record_format_from_name(const std::string& name) {
  if (name == "csv") return RecordFormat::Csv;
  if (name == "json") return RecordFormat::Json;
  if (name == "jsonl") return RecordFormat::Jsonl;
  throw Error("unknown output format '" + name + "' (csv, json or jsonl)");
}

RecordFormat record_format_for_output(const std::string& path) {
  auto ends_with = [&](const std::string& tail) {
    return path.size() >= tail.size() && path.compare(path.size() - tail.size(), tail.size(), tail) == 0;
  };
  if (ends_with(".json")) return RecordFormat::Json;
  if (ends_with(".jsonl") || ends_with(".ndjson")) return RecordFormat::Jsonl;
  return RecordFormat::Csv;
}

std::unique_ptr<RecordWriter> make_record_writer(RecordFormat format, const RecordLayout& layout, std::ostream& out) {
  std::set<std::string> seen;
  for (const std::string& name : layout.class_names)
    MM_CHECK(seen.insert(name).second, "the model's class names repeat '" + name +
                                           "': records name classes, so they must differ (rename them with "
                                           "mm-convert --labels)");
  MM_CHECK(layout.top_k >= 0, "top-k must not be negative");
  switch (format) {
    case RecordFormat::Csv: return std::make_unique<CsvWriter>(layout, out);
    case RecordFormat::Json: return std::make_unique<JsonWriter>(layout, out);
    case RecordFormat::Jsonl: return std::make_unique<JsonlWriter>(layout, out);
  }
  throw Error("unknown record format");
}

std::vector<int64_t> top_classes(const std::vector<double>& probabilities, int64_t k) {
  std::vector<int64_t> order(probabilities.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return probabilities[size_t(a)] > probabilities[size_t(b)]; });
  order.resize(std::min(order.size(), size_t(std::max<int64_t>(k, 0))));
  return order;
}

std::string format_number(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

}  // namespace mm
