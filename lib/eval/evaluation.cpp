#include "eval/evaluation.h"

#include <set>

#include "core/error.h"

namespace mm {

Evaluation evaluate(ScoredSamples scores, std::vector<std::string> ids, std::vector<std::string> class_names,
                    const MetricOptions& options, int64_t bootstrap_resamples, uint64_t seed) {
  MM_CHECK(int64_t(class_names.size()) == scores.num_classes,
           std::to_string(class_names.size()) + " class names for " + std::to_string(scores.num_classes) + " classes");
  MM_CHECK(ids.size() == scores.labels.size(), "one id per sample needed");
  std::set<std::string> seen;
  for (auto& name : class_names)
    for (int copy = 2; !seen.insert(name).second; ++copy) name += " (" + std::to_string(copy) + ")";
  Evaluation e;
  e.metrics = compute_metrics(scores, options);
  if (bootstrap_resamples > 0) e.bootstrap = bootstrap_metrics(scores, options, bootstrap_resamples, seed);
  e.scores = std::move(scores);
  e.ids = std::move(ids);
  e.class_names = std::move(class_names);
  return e;
}

}  // namespace mm
