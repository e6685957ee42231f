#include "eval/bootstrap.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mm {

double percentile(std::vector<double> values, double q) {
  MM_CHECK(!values.empty(), "percentile of no values");
  std::sort(values.begin(), values.end());
  // numpy: virtual index (n - 1) * q / 100, then _lerp, which interpolates
  // from the upper neighbour when the fraction is >= 0.5.
  const double h = double(values.size() - 1) * (q / 100.0);
  const size_t lo = size_t(std::floor(h));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double t = h - double(lo), a = values[lo], b = values[hi], diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

const std::optional<Interval>* BootstrapResult::find(const std::string& name) const {
  for (const auto& [key, interval] : intervals)
    if (key == name) return &interval;
  return nullptr;
}

BootstrapResult bootstrap_metrics(const ScoredSamples& s, const MetricOptions& options, int64_t resamples,
                                  uint64_t seed) {
  s.validate();
  MM_CHECK(resamples >= 1, "bootstrap needs at least one resample, got " + std::to_string(resamples));
  const int64_t n = s.size();
  const uint64_t un = uint64_t(n);

  const auto names = flatten_metrics(compute_metrics(s, options));
  std::vector<std::vector<std::optional<double>>> values(static_cast<size_t>(resamples));
#pragma omp parallel for schedule(dynamic)
  for (int64_t r = 0; r < resamples; ++r) {
    // The stream's draws r*n .. r*n+n-1: SplitMix64's state after k draws is
    // seed + k * increment, so each resample starts its share of one stream
    // and the result does not depend on the threads.
    SplitMix64 rng = SplitMix64::at(seed, uint64_t(r) * un);
    ScoredSamples sample;
    sample.num_classes = s.num_classes;
    sample.labels.resize(size_t(n));
    sample.probabilities.resize(size_t(n * s.num_classes));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t src = int64_t(rng.next() % un);
      sample.labels[size_t(i)] = s.labels[size_t(src)];
      std::copy(s.row(src), s.row(src) + s.num_classes, sample.probabilities.begin() + i * s.num_classes);
    }
    auto flat = flatten_metrics(compute_metrics(sample, options));
    auto& out = values[size_t(r)];
    for (auto& [name, v] : flat) out.push_back(v);
  }

  BootstrapResult result;
  result.resamples = resamples;
  result.seed = seed;
  for (size_t j = 0; j < names.size(); ++j) {
    std::vector<double> defined;
    for (const auto& row : values)
      if (row[j]) defined.push_back(*row[j]);
    std::optional<Interval> ci;
    if (!defined.empty()) ci = Interval{percentile(defined, 2.5), percentile(defined, 97.5)};
    result.intervals.emplace_back(names[j].first, ci);
  }
  return result;
}

}  // namespace mm
