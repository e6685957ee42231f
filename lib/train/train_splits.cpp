#include "train/train_splits.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/random.h"

namespace mm {

TrainSplits split_for_training(const Dataset& d, double val_fraction, uint64_t seed) {
  TrainSplits s;
  bool has_val = false;
  for (size_t i = 0; i < d.samples.size(); ++i) {
    const std::string& split = d.samples[i].split;
    if (split == "val") s.val.push_back(i), has_val = true;
    else if (split == "test") s.test.push_back(i);
    else s.train.push_back(i);  // "train", or a source without splits
  }
  if (has_val) {
    s.val_source = "val split";
    return s;
  }
  if (val_fraction <= 0) {
    s.val_source = "none";
    return s;
  }
  // Stratified: the same fraction of every class, each class shuffled under its own stream.
  std::vector<std::vector<size_t>> by_class(size_t(d.num_classes()));
  for (size_t i : s.train) by_class[size_t(d.samples[i].label)].push_back(i);
  std::vector<char> held(d.samples.size(), 0);
  for (size_t c = 0; c < by_class.size(); ++c) {
    const auto& members = by_class[c];
    const int64_t n = int64_t(members.size());
    const int64_t take = std::min<int64_t>(int64_t(std::llround(val_fraction * double(n))), n - 1);
    const std::vector<int64_t> order = seeded_permutation(n, seed * 0x9E3779B97F4A7C15ull + c + 1);
    for (int64_t k = 0; k < take; ++k) held[members[size_t(order[size_t(k)])]] = 1;
  }
  std::vector<size_t> train;
  for (size_t i : s.train) (held[i] ? s.val : train).push_back(i);
  std::sort(s.val.begin(), s.val.end());
  s.train = std::move(train);
  s.val_source = std::to_string(int(std::lround(val_fraction * 100))) + "% of train, stratified (seed " +
                 std::to_string(seed) + ")";
  return s;
}

void check_training_labels(const Dataset& d, const TrainSplits& s) {
  std::vector<int64_t> count(size_t(d.num_classes()), 0);
  for (const auto* part : {&s.train, &s.val, &s.test})
    for (size_t i : *part) {
      const Sample& x = d.samples[i];
      MM_CHECK(x.label >= 0 && x.label < d.num_classes(),
               d.source + ": sample " + x.id + " has label " + std::to_string(x.label) + ", outside the " +
                   std::to_string(d.num_classes()) + " classes");
    }
  for (size_t i : s.train) ++count[size_t(d.samples[i].label)];
  std::string empty;
  for (size_t c = 0; c < count.size(); ++c)
    if (count[c] == 0) empty += (empty.empty() ? "" : ", ") + d.class_names[c];
  MM_CHECK(empty.empty(), d.source + ": no training sample for class " + empty +
                              " (every class needs one; check the folders, the manifest or --exclude)");
  MM_CHECK(d.num_classes() >= 2, d.source + ": training needs at least 2 classes, found " +
                                     std::to_string(d.num_classes()));
}

std::vector<float> balanced_class_weights(const Dataset& d, const std::vector<size_t>& samples) {
  std::vector<double> count(size_t(d.num_classes()), 0.0);
  for (size_t i : samples) count[size_t(d.samples[i].label)] += 1.0;
  std::vector<float> w(count.size());
  for (size_t c = 0; c < count.size(); ++c)
    w[c] = count[c] > 0 ? float(double(samples.size()) / (double(count.size()) * count[c])) : 0.f;
  return w;
}

}  // namespace mm
