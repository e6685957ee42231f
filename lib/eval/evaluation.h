#pragma once
// One evaluation's results, as every output (console table, JSON, HTML) shows them.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eval/bootstrap.h"
#include "eval/metrics.h"

namespace mm {

struct Evaluation {
  std::vector<std::string> class_names;  // one per class, unique
  std::vector<std::string> ids;          // one per sample: its path or dataset id
  ScoredSamples scores;
  Metrics metrics;
  std::optional<BootstrapResult> bootstrap;
  // What was evaluated, for the reports' headers: ("model", "m.safetensors"), ("split", "test"), ...
  std::vector<std::pair<std::string, std::string>> about;
};

// Computes the metrics (and the bootstrap when resamples > 0). Class names
// that repeat get " (2)", " (3)"... so that reports can key by name.
Evaluation evaluate(ScoredSamples scores, std::vector<std::string> ids, std::vector<std::string> class_names,
                    const MetricOptions& options, int64_t bootstrap_resamples = 0, uint64_t seed = 0);

}  // namespace mm
