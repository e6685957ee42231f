#include "predict/aggregate.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"

namespace mm {

AggregateLevels parse_aggregate_levels(const std::string& text) {
  AggregateLevels levels;
  std::istringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    if (item == "series")
      levels.series = true;
    else if (item == "study")
      levels.study = true;
    else
      throw Error("--aggregate '" + text + "': expected series, study or series,study");
  }
  MM_CHECK(levels.series || levels.study, "--aggregate '" + text + "': expected series, study or series,study");
  return levels;
}

void Aggregator::add_to(std::map<std::string, Group>& groups, const std::string& key, PredictionLevel level,
                        const Prediction& p) {
  auto [it, inserted] = groups.try_emplace(key);
  Group& g = it->second;
  if (inserted) {
    g.order = groups.size();
    g.record.level = level;
    g.record.study_uid = p.study_uid;
    g.record.path = "studies/" + p.study_uid;
    if (level == PredictionLevel::Series) {
      g.record.series_uid = p.series_uid;
      g.record.path += "/series/" + p.series_uid;
    }
    g.record.probabilities.assign(p.probabilities.size(), 0.0);
  }
  MM_CHECK(g.record.probabilities.size() == p.probabilities.size(), "aggregate: records with different class counts");
  for (size_t c = 0; c < p.probabilities.size(); ++c) g.record.probabilities[c] += p.probabilities[c];
  ++g.record.images;
}

void Aggregator::add(const Prediction& p) {
  if (p.level != PredictionLevel::Image || p.status != PredictionStatus::Ok) return;
  if (levels_.series && !p.series_uid.empty()) add_to(series_, p.series_uid, PredictionLevel::Series, p);
  if (levels_.study && !p.study_uid.empty()) add_to(studies_, p.study_uid, PredictionLevel::Study, p);
}

std::vector<Prediction> Aggregator::records() const {
  std::vector<Prediction> out;
  for (const auto* groups : {&series_, &studies_}) {
    std::vector<const Group*> ordered;
    for (const auto& [key, g] : *groups) ordered.push_back(&g);
    std::sort(ordered.begin(), ordered.end(), [](const Group* a, const Group* b) { return a->order < b->order; });
    for (const Group* g : ordered) {
      Prediction r = g->record;
      for (double& p : r.probabilities) p /= double(r.images);
      r.class_index = argmax(r.probabilities);
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace mm
