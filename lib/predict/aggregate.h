#pragma once
// Records that summarise a DICOM series or study: the mean of its classified
// images' probabilities (every frame counts once), the class of the largest
// mean, and how many images the mean is over, so that means from shards of one
// job can be merged (weighted by `images`).
#include <map>
#include <string>
#include <vector>

#include "predict/prediction.h"

namespace mm {

struct AggregateLevels {
  bool series = false, study = false;
};
// "series", "study", "series,study" (any order); throws mm::Error otherwise.
AggregateLevels parse_aggregate_levels(const std::string& text);

class Aggregator {
 public:
  explicit Aggregator(AggregateLevels levels) : levels_(levels) {}
  // Classified image records with a series (study) UID count; others are ignored.
  void add(const Prediction& p);
  // Series records in the order their first image came, then study records likewise.
  std::vector<Prediction> records() const;

 private:
  struct Group {
    Prediction record;  // level, path and UIDs set; probabilities hold sums until records()
    size_t order = 0;
  };
  void add_to(std::map<std::string, Group>& groups, const std::string& key, PredictionLevel level,
              const Prediction& p);

  AggregateLevels levels_;
  std::map<std::string, Group> series_, studies_;
};

}  // namespace mm
