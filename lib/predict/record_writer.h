#pragma once
// mm-predict's records as CSV, JSON or JSONL (docs/mm-predict.md has the
// fields; lib/eval/predictions_file.h reads all three back).
//
// The layout (columns, keys) depends only on the options and the model's
// classes, never on the data, so that shards of one job write the same CSV
// header and their outputs concatenate.
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "predict/prediction.h"

namespace mm {

enum class RecordFormat { Csv, Json, Jsonl };
RecordFormat record_format_from_name(const std::string& name);  // "csv" | "json" | "jsonl"; throws otherwise
// From an output file's extension: .json, .jsonl / .ndjson, else CSV (also for stdout, "").
RecordFormat record_format_for_output(const std::string& path);

struct RecordLayout {
  std::vector<std::string> class_names;  // one per class, unique (they name CSV columns and JSON keys)
  int64_t top_k = 0;                     // > 0: the K most probable classes, in order
  bool logits = false;                   // image records carry their logits
  bool levels = false;                   // a "level" field, and "images" for aggregates
  bool csv_header = true;                // CSV: write the header row
};

class RecordWriter {
 public:
  virtual ~RecordWriter() = default;
  virtual void write(const Prediction& p) = 0;
  // Ends the output (the JSON document's closing brackets) and flushes it.
  virtual void finish() = 0;
};

// Throws mm::Error when class names repeat (they would make two columns or keys
// alike) or the layout is otherwise unusable.
std::unique_ptr<RecordWriter> make_record_writer(RecordFormat format, const RecordLayout& layout, std::ostream& out);

// The K most probable classes, most probable first; equal probabilities keep
// class order.
std::vector<int64_t> top_classes(const std::vector<double>& probabilities, int64_t k);

// %.9g (enough digits for a float to read back exactly); "nan"/"inf" when not finite.
std::string format_number(double x);

}  // namespace mm
