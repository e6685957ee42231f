#pragma once
// Predictions made elsewhere (mm-predict, or any other system), scored against
// a labels file: `mm-eval --predictions P --labels L`.
//
// P is one of
//   - mm-predict's JSON (a list of records, or an object with a "records"
//     list and optionally "class_names"), JSONL (one record per line) or CSV;
//   - any CSV with a path column and one probability column per class.
// A record's probabilities come from, in this order of preference:
//   "probabilities": a JSON list (one per class) or object {class name: p}
//                    (in CSV, a column holding that JSON text);
//   "prob_<class>":  one field per class;
//   in CSV only, every other column that is not one of mm-predict's own fields
//   (label, class_index, probability, frame, slice, *_uid, logits, error, ...).
// Class names come from prob_<class> / column names, from a JSON object's keys,
// from "class_names", or else from the (class_index, label) pairs the records
// carry; what none of these name stays "" (the caller may supply names).
// Records with an "error" field, or without probabilities, are mm-predict's
// failed inputs: counted, not scored.
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "eval/metrics.h"

namespace mm {

struct PredictionRecord {
  std::string path;
  std::vector<double> probabilities;
};

struct PredictionsFile {
  std::string source;
  std::vector<std::string> class_names;  // one per class; "" where the file does not say
  std::vector<PredictionRecord> records;
  int64_t failed = 0;  // error records
};

// Throws mm::Error naming the file and the record (line) on malformed input.
PredictionsFile read_predictions(const std::string& path);

struct JoinedPredictions {
  ScoredSamples scores;
  std::vector<std::string> ids;          // the labels file's path of each scored sample
  std::vector<size_t> label_samples;     // ... and its index in the labels Dataset's samples
  std::vector<std::string> class_names;  // one per class
  int64_t unlabelled = 0;                // predictions the labels file does not mention
  std::vector<std::string> missing;      // labelled paths with no prediction
};

// Pairs each labelled sample with the prediction for the same path. Paths match
// as written (after lexical normalisation: "a/./b" is "a/b"), else as absolute
// paths: a labels path relative to the labels file's folder, a predictions path
// relative to the working directory. A path with several predictions (frames,
// slices) is an error. Labels without a prediction are an error unless
// allow_missing, when they are left out and listed in `missing`.
//
// Class names: class_names_override when not empty (one per class), else the
// predictions file's. Named labels must be among them; integer labels
// (Dataset::labels_are_indices) are class indices.
JoinedPredictions join_predictions(const PredictionsFile& predictions, const Dataset& labels,
                                   const std::vector<std::string>& class_names_override = {},
                                   bool allow_missing = false);

}  // namespace mm
