#include "eval/predictions_file.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/csv.h"
#include "io/json_text.h"

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace mm {

namespace {

// mm-predict's record fields other than the probabilities (issue 5's schema),
// and names other tools use for the same things: never class columns.
const std::set<std::string> kRecordFields = {
    "path", "file", "frame", "slice", "volume", "study_uid", "series_uid", "sop_uid", "label", "class_index",
    "probability", "probabilities", "logits", "error", "reason", "top_k", "topk", "level", "kind", "format"};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower((unsigned char)c));
  return s;
}

// A value in a message: lists and objects by kind, not dumped (a predictions
// file's own values are shallow, but nlohmann's serializer recurses).
std::string shown(const ojson& v) {
  if (v.is_array()) return "a JSON list";
  if (v.is_object()) return "a JSON object";
  return json_text(v);
}

// Records nest two or three levels. A file nested far deeper is damaged or
// hostile, and would overflow the stack in the parser: an ordered_json object that
// grows copies its values, recursively (nlohmann_json 3.11, at a depth of ~100,000).
constexpr int kMaxJsonDepth = 64;

ojson parse_json(const std::string& text, const std::string& where) {
  return ojson::parse(text, [&](int depth, ojson::parse_event_t, ojson&) {
    if (depth > kMaxJsonDepth)
      throw Error(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return true;
  });
}

// A number, or text holding one (CSV fields are text).
double number_of(const ojson& v, const std::string& where) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    char* end = nullptr;
    const double x = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return x;
  }
  throw Error(where + ": not a number: " + shown(v));
}

// A JSON list or object, or text holding one.
ojson structure_of(const ojson& v, const std::string& where) {
  if (v.is_array() || v.is_object()) return v;
  if (v.is_string()) {
    try {
      ojson parsed = parse_json(v.get<std::string>(), where);
      if (parsed.is_array() || parsed.is_object()) return parsed;
    } catch (const ojson::exception&) {
    }
  }
  throw Error(where + ": 'probabilities' is neither a JSON list nor an object: " + shown(v));
}

bool present(const ojson& record, const char* key) {
  return record.contains(key) && !record[key].is_null() &&
         !(record[key].is_string() && record[key].get<std::string>().empty());
}

// Reads one record into out (class names into names, by position).
// class_columns: the CSV fallback, one column per class.
// Returns false for a failed input (an error record, or one without probabilities).
bool read_record(const ojson& record, const std::string& where, const std::vector<std::string>& class_columns,
                 PredictionsFile& out) {
  MM_CHECK(record.is_object(), where + ": a record must be a JSON object");
  if (present(record, "error")) return false;
  PredictionRecord r;
  MM_CHECK(present(record, "path"), where + ": record without a 'path'");
  MM_CHECK(record["path"].is_primitive(), where + ": 'path' is " + shown(record["path"]) + ", not text");
  r.path = record["path"].is_string() ? record["path"].get<std::string>() : json_text(record["path"]);

  std::vector<std::string> names;  // class names this record states, by position
  if (present(record, "probabilities")) {
    const ojson probs = structure_of(record["probabilities"], where);
    for (auto it = probs.begin(); it != probs.end(); ++it) {
      r.probabilities.push_back(number_of(*it, where + ": probabilities"));
      if (probs.is_object()) names.push_back(it.key());
    }
  } else {
    for (auto it = record.begin(); it != record.end(); ++it)
      if (it.key().rfind("prob_", 0) == 0) {
        r.probabilities.push_back(number_of(*it, where + ": " + it.key()));
        names.push_back(it.key().substr(5));
      }
    for (const auto& column : class_columns) {
      r.probabilities.push_back(number_of(record[column], where + ": column " + column));
      names.push_back(column);
    }
  }
  if (r.probabilities.empty()) return false;

  if (out.class_names.empty()) out.class_names.assign(r.probabilities.size(), "");
  MM_CHECK(r.probabilities.size() == out.class_names.size(),
           where + ": " + std::to_string(r.probabilities.size()) + " probabilities where earlier records have " +
               std::to_string(out.class_names.size()));
  auto name_class = [&](size_t c, const std::string& name) {
    MM_CHECK(out.class_names[c].empty() || out.class_names[c] == name,
             where + ": class " + std::to_string(c) + " is called '" + name + "' here and '" + out.class_names[c] +
                 "' before");
    out.class_names[c] = name;
  };
  for (size_t c = 0; c < names.size(); ++c) name_class(c, names[c]);
  if (names.empty() && present(record, "class_index") && present(record, "label")) {
    const double index = number_of(record["class_index"], where + ": class_index");
    MM_CHECK(index >= 0 && index < double(r.probabilities.size()) && index == std::floor(index),
             where + ": class_index " + json_text(record["class_index"]) + " is no class");
    const ojson& label = record["label"];
    name_class(size_t(index), label.is_string() ? label.get<std::string>() : shown(label));
  }
  out.records.push_back(std::move(r));
  return true;
}

void read_json_records(const ojson& records, const std::string& what, PredictionsFile& out) {
  MM_CHECK(records.is_array(), what + ": expected a list of records");
  for (size_t i = 0; i < records.size(); ++i)
    if (!read_record(records[i], what + ": record " + std::to_string(i + 1), {}, out)) ++out.failed;
}

void read_json(const std::string& text, const std::string& what, PredictionsFile& out) {
  ojson doc;
  try {
    doc = parse_json(text, what);
  } catch (const ojson::exception& e) {
    throw Error(what + ": not valid JSON: " + e.what());
  }
  if (doc.is_array()) return read_json_records(doc, what, out);
  MM_CHECK(doc.is_object(), what + ": expected a list of records or an object holding one");
  const char* key = doc.contains("records") ? "records" : doc.contains("predictions") ? "predictions" : nullptr;
  MM_CHECK(key != nullptr, what + ": JSON object without a 'records' list");
  if (doc.contains("class_names")) out.class_names = doc["class_names"].get<std::vector<std::string>>();
  read_json_records(doc[key], what, out);
}

void read_jsonl(const std::string& text, const std::string& what, PredictionsFile& out) {
  std::istringstream lines(text);
  std::string line;
  for (int64_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = what + ":" + std::to_string(line_no);
    ojson record;
    try {
      record = parse_json(line, where);
    } catch (const ojson::exception& e) {
      throw Error(where + ": not valid JSON: " + e.what());
    }
    if (!read_record(record, where, {}, out)) ++out.failed;
  }
}

void read_csv(const std::string& text, const std::string& what, PredictionsFile& out) {
  CsvTable t = parse_csv(text, what);
  int path_col = t.column("path");
  if (path_col < 0) path_col = 0;  // any CSV: the first column names the image
  // The CSV fallback: one column per class, when neither 'probabilities' nor prob_* columns exist.
  std::vector<std::string> class_columns;
  const bool has_probs = t.column("probabilities") >= 0 ||
                         std::any_of(t.header.begin(), t.header.end(),
                                     [](const std::string& h) { return h.rfind("prob_", 0) == 0; });
  if (!has_probs)
    for (size_t c = 0; c < t.header.size(); ++c)
      if (int(c) != path_col && !kRecordFields.count(lower(t.header[c]))) class_columns.push_back(t.header[c]);
  for (size_t r = 0; r < t.rows.size(); ++r) {
    ojson record = ojson::object();
    for (size_t c = 0; c < t.header.size(); ++c)
      record[int(c) == path_col ? std::string("path") : t.header[c]] = t.rows[r][c];
    if (!read_record(record, t.where(r), class_columns, out)) ++out.failed;
  }
}

std::string normalized(const std::string& path) { return fs::path(path).lexically_normal().generic_string(); }
std::string absolute_normalized(const fs::path& path) {
  return fs::absolute(path).lexically_normal().generic_string();
}

}  // namespace

PredictionsFile read_predictions(const std::string& path) {
  PredictionsFile out;
  out.source = path;
  const std::string text = read_text_file(path);
  const std::string ext = lower(fs::path(path).extension().string());
  const size_t first = text.find_first_not_of(" \t\r\n");
  MM_CHECK(first != std::string::npos, path + ": empty predictions file");
  if (ext == ".jsonl" || ext == ".ndjson") {
    read_jsonl(text, path, out);
  } else if (ext == ".json") {
    read_json(text, path, out);
  } else if (ext == ".csv" || (text[first] != '[' && text[first] != '{')) {
    read_csv(text, path, out);
  } else if (text[first] == '[') {
    read_json(text, path, out);
  } else {  // '{': one JSON object (a document) or one per line
    const size_t line_end = text.find('\n', first);
    const bool one_record_per_line =
        line_end != std::string::npos && ojson::accept(text.substr(first, line_end - first));
    if (one_record_per_line)
      read_jsonl(text, path, out);
    else
      read_json(text, path, out);
  }
  MM_CHECK(!out.records.empty(), path + ": no records with probabilities" +
                                     (out.failed ? " (" + std::to_string(out.failed) + " error records)" : ""));
  MM_CHECK(out.class_names.size() >= 2, path + ": records need probabilities for at least 2 classes");
  return out;
}

JoinedPredictions join_predictions(const PredictionsFile& predictions, const Dataset& labels,
                                   const std::vector<std::string>& class_names_override, bool allow_missing) {
  const size_t k = predictions.class_names.size();
  JoinedPredictions j;
  j.class_names = class_names_override.empty() ? predictions.class_names : class_names_override;
  MM_CHECK(j.class_names.size() == k, "--class-names gives " + std::to_string(j.class_names.size()) +
                                          " names; " + predictions.source + " has " + std::to_string(k) +
                                          " classes");

  // Dataset label index -> predictions class index.
  std::vector<int64_t> class_of_label(labels.class_names.size(), -1);
  for (size_t l = 0; l < labels.class_names.size(); ++l) {
    const std::string& name = labels.class_names[l];
    if (labels.labels_are_indices) {
      class_of_label[l] = int64_t(l) < int64_t(k) ? int64_t(l) : -1;
      continue;
    }
    const auto it = std::find(j.class_names.begin(), j.class_names.end(), name);
    if (it != j.class_names.end()) class_of_label[l] = int64_t(it - j.class_names.begin());
  }
  for (size_t c = 0; c < k; ++c)
    if (j.class_names[c].empty()) j.class_names[c] = "class_" + std::to_string(c);

  std::map<std::string, size_t> as_written, as_absolute;
  for (size_t i = 0; i < predictions.records.size(); ++i) {
    const std::string& p = predictions.records[i].path;
    MM_CHECK(as_written.emplace(normalized(p), i).second,
             predictions.source + ": '" + p +
                 "' has several predictions (frames or slices?); labels need one prediction per path");
    as_absolute.emplace(absolute_normalized(p), i);
  }
  // As written; else the labels path resolved against its file's folder
  // (Sample::file), or against the working directory, as an absolute path.
  auto find_prediction = [&](const Sample& s) -> std::optional<size_t> {
    if (auto it = as_written.find(normalized(s.id)); it != as_written.end()) return it->second;
    for (const std::string& p : {s.file, s.id})
      if (auto it = as_absolute.find(absolute_normalized(p)); it != as_absolute.end()) return it->second;
    return std::nullopt;
  };
  std::vector<char> used(predictions.records.size(), 0);
  j.scores.num_classes = int64_t(k);
  for (size_t li = 0; li < labels.samples.size(); ++li) {
    const Sample& s = labels.samples[li];
    const int64_t c = class_of_label[size_t(s.label)];
    MM_CHECK(c >= 0, labels.source + ": label '" + labels.class_names[size_t(s.label)] + "' of " + s.id +
                         " is not one of the predictions' classes; give the class names in order with --class-names");
    const std::optional<size_t> match = find_prediction(s);
    if (!match) {
      j.missing.push_back(s.id);
      continue;
    }
    used[*match] = 1;
    j.ids.push_back(s.id);
    j.label_samples.push_back(li);
    j.scores.labels.push_back(c);
    const auto& probs = predictions.records[*match].probabilities;
    j.scores.probabilities.insert(j.scores.probabilities.end(), probs.begin(), probs.end());
  }
  j.unlabelled = int64_t(std::count(used.begin(), used.end(), 0));
  if (!allow_missing && !j.missing.empty()) {
    std::string list;
    for (size_t i = 0; i < j.missing.size() && i < 5; ++i) list += (i ? ", " : "") + j.missing[i];
    throw Error(std::to_string(j.missing.size()) + " labelled paths of " + labels.source + " have no prediction in " +
                predictions.source + " (" + list + (j.missing.size() > 5 ? ", ..." : "") +
                "); --allow-missing scores the rest");
  }
  MM_CHECK(!j.ids.empty(), "no path of " + labels.source + " has a prediction in " + predictions.source);
  return j;
}

}  // namespace mm
