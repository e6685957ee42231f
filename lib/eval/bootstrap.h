#pragma once
// 95% bootstrap confidence intervals by the percentile method: resample the n
// samples with replacement `resamples` times, recompute every metric, and take
// the 2.5th and 97.5th percentiles (numpy.percentile's linear method) of the
// values each metric took. A metric undefined on a resample (an AUC when the
// resample lacks a class) is left out for that resample; it gets no interval
// when it was never defined.
//
// Resampling draws from SplitMix64 seeded with `seed` (index = next() % n, a
// bias below n / 2^64), not from std:: distributions, whose output differs
// between standard libraries: the same seed gives the same intervals
// everywhere, and test/reference/make_metric_fixtures.py replays the draws.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/random.h"  // SplitMix64
#include "eval/metrics.h"

namespace mm {

struct Interval {
  double low = 0, high = 0;
};

struct BootstrapResult {
  int64_t resamples = 0;
  uint64_t seed = 0;
  double level = 0.95;
  // Same names and order as flatten_metrics(); nullopt: never defined.
  std::vector<std::pair<std::string, std::optional<Interval>>> intervals;
  const std::optional<Interval>* find(const std::string& name) const;  // nullptr when unknown
};

BootstrapResult bootstrap_metrics(const ScoredSamples& s, const MetricOptions& options, int64_t resamples,
                                  uint64_t seed);

// numpy.percentile(values, q) with the default linear method; values need not be sorted.
double percentile(std::vector<double> values, double q);


}  // namespace mm
