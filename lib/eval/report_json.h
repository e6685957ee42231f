#pragma once
// The JSON report (`mm-eval --json FILE`); docs/mm-eval.md lists every key.
//   accuracy, balanced_accuracy, kappa, ece (top level; null where undefined)
//   macro:     {precision, recall, specificity, f1, auc}
//   per_class: {<class name>: {precision, recall, specificity, f1, auc, support}}
//   confusion_matrix: rows are the true class, columns the predicted one
//   n, num_classes, class_names, top_k {"<k>": accuracy}, ece_bins, about {...}
//   ci (with --bootstrap): the same layout with [low, high] pairs, plus
//      method, level, resamples, seed
#include <string>

#include <nlohmann/json.hpp>

#include "eval/evaluation.h"

namespace mm {

nlohmann::ordered_json evaluation_json(const Evaluation& e);
// Writes evaluation_json(e) indented; throws mm::Error naming the file on failure.
void write_json_report(const std::string& path, const Evaluation& e);

}  // namespace mm
