#pragma once
// Which dataset samples mm-train trains on, validates on and tests on, and the
// checks that must pass before any training starts.
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace mm {

struct TrainSplits {
  std::vector<size_t> train, val, test;  // indices into Dataset::samples, in dataset order
  std::string val_source;                // "val split", "10% of train, stratified (seed 0)" or "none"
};

// The source's train/val/test splits when it has them (a source without
// splits is all training data); without a val split, val_fraction of each
// class's training samples is held out, drawn under seed.
TrainSplits split_for_training(const Dataset& d, double val_fraction, uint64_t seed);

// Refuses (mm::Error naming them) classes with no training sample and labels outside the class list.
void check_training_labels(const Dataset& d, const TrainSplits& s);

// scikit-learn's compute_class_weight("balanced"): n / (classes * count[c]).
std::vector<float> balanced_class_weights(const Dataset& d, const std::vector<size_t>& samples);

}  // namespace mm
