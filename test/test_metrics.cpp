// Every metric against scikit-learn on the fixtures that
// test/reference/make_metric_fixtures.py writes (test/fixtures/metrics/).
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/bootstrap.h"
#include "eval/metrics.h"
#include "test_util.h"

using nlohmann::json;

namespace {

constexpr double kTolerance = 1e-9;

json load_metric_fixture(const std::string& name) {
  std::ifstream in(mm::test::fixture_path("metrics/" + name + ".json"));
  REQUIRE_MESSAGE(in.good(), "missing fixture metrics/" << name << ".json");
  return json::parse(in);
}

mm::ScoredSamples samples_of(const json& fx) {
  mm::ScoredSamples s;
  s.num_classes = fx["num_classes"].get<int64_t>();
  s.labels = fx["labels"].get<std::vector<int64_t>>();
  for (const auto& row : fx["probabilities"])
    for (double p : row) s.probabilities.push_back(p);
  return s;
}

mm::MetricOptions all_top_k(int64_t num_classes) {
  mm::MetricOptions o;
  o.top_k.clear();
  for (int64_t k = 1; k <= num_classes; ++k) o.top_k.push_back(k);
  return o;
}

// sklearn's value (null: undefined) against ours.
void check_value(const std::string& what, const std::optional<double>& got, const json& want) {
  INFO(what << ": got " << (got ? std::to_string(*got) : "undefined") << ", sklearn " << want.dump());
  if (want.is_null()) {
    CHECK_FALSE(got.has_value());
  } else {
    REQUIRE(got.has_value());
    CHECK(std::fabs(*got - want.get<double>()) <= kTolerance);
  }
}

// The fixture's expected block flattened the way flatten_metrics names things.
json flatten_expected(const json& e) {
  json flat;
  for (const char* key : {"accuracy", "balanced_accuracy", "kappa", "ece"}) flat[key] = e[key];
  for (const auto& [key, value] : e["macro"].items()) flat["macro." + key] = value;
  for (size_t c = 0; c < e["per_class"].size(); ++c)
    for (const char* key : {"precision", "recall", "specificity", "f1", "auc"})
      flat["per_class." + std::to_string(c) + "." + key] = e["per_class"][c][key];
  for (const auto& [key, value] : e["top_k"].items()) flat["top_k." + key] = value;
  return flat;
}

const char* const kCases[] = {"binary", "multiclass", "imbalanced", "never_predicted",
                              "absent_class", "ties", "ties_binary", "single_class"};

}  // namespace

TEST_CASE("metrics equal scikit-learn's on every fixture") {
  for (const char* name : kCases) {
    CAPTURE(name);
    const json fx = load_metric_fixture(name);
    const mm::ScoredSamples s = samples_of(fx);
    const mm::Metrics m = mm::compute_metrics(s, all_top_k(s.num_classes));
    const json want = flatten_expected(fx["expected"]);

    const auto flat = mm::flatten_metrics(m);
    CHECK(flat.size() == want.size());
    for (const auto& [key, value] : flat) {
      REQUIRE_MESSAGE(want.contains(key), "fixture lacks " << key);
      check_value(std::string(name) + " " + key, value, want[key]);
    }
    CHECK(m.n == int64_t(s.labels.size()));
    const json& e = fx["expected"];
    for (size_t c = 0; c < m.support.size(); ++c) CHECK(m.support[c] == e["per_class"][c]["support"].get<int64_t>());
    CHECK(json(m.confusion_matrix) == e["confusion_matrix"]);
  }
}

TEST_CASE("fixtures cover the cases they are named for") {
  // never_predicted: class 3 occurs in y_true but is never the argmax.
  const mm::Metrics np = mm::compute_metrics(samples_of(load_metric_fixture("never_predicted")));
  int64_t predicted3 = 0;
  for (const auto& row : np.confusion_matrix) predicted3 += row[3];
  CHECK(predicted3 == 0);
  CHECK(np.support[3] > 0);
  CHECK(np.per_class[3].precision == 0.0);  // zero_division = 0
  // absent_class: class 2 never in y_true, so its AUC and the macro AUC are undefined.
  const mm::Metrics ab = mm::compute_metrics(samples_of(load_metric_fixture("absent_class")));
  CHECK(ab.support[2] == 0);
  CHECK_FALSE(ab.per_class[2].auc.has_value());
  CHECK_FALSE(ab.macro.auc.has_value());
  // ties: top-1 differs from accuracy because sklearn ranks tied classes by descending index.
  const mm::Metrics ti = mm::compute_metrics(samples_of(load_metric_fixture("ties")));
  CHECK(ti.accuracy != mm::top_k_accuracy(samples_of(load_metric_fixture("ties")), 1));
  // single_class: kappa is 0/0.
  CHECK_FALSE(mm::compute_metrics(samples_of(load_metric_fixture("single_class"))).kappa.has_value());
}

TEST_CASE("bootstrap intervals equal a replay of the same draws through scikit-learn") {
  for (const char* name : {"binary", "multiclass", "absent_class"}) {
    CAPTURE(name);
    const json fx = load_metric_fixture(name);
    const mm::ScoredSamples s = samples_of(fx);
    const json& b = fx["bootstrap"];
    const mm::BootstrapResult r = mm::bootstrap_metrics(s, all_top_k(s.num_classes), b["resamples"].get<int64_t>(),
                                                        b["seed"].get<uint64_t>());
    CHECK(r.intervals.size() == b["ci"].size());
    for (const auto& [key, interval] : r.intervals) {
      REQUIRE_MESSAGE(b["ci"].contains(key), "fixture lacks " << key);
      const json& want = b["ci"][key];
      if (want.is_null()) {
        CHECK_MESSAGE(!interval.has_value(), key);
        continue;
      }
      REQUIRE_MESSAGE(interval.has_value(), key);
      check_value(std::string(name) + " ci low " + key, interval->low, want[0]);
      check_value(std::string(name) + " ci high " + key, interval->high, want[1]);
    }
  }
}

TEST_CASE("bootstrap intervals do not depend on the number of threads") {
  const mm::ScoredSamples s = samples_of(load_metric_fixture("imbalanced"));
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const mm::BootstrapResult one = mm::bootstrap_metrics(s, {}, 40, 5);
  omp_set_num_threads(std::max(threads, 3));
  const mm::BootstrapResult many = mm::bootstrap_metrics(s, {}, 40, 5);
  omp_set_num_threads(threads);
  REQUIRE(one.intervals.size() == many.intervals.size());
  for (size_t i = 0; i < one.intervals.size(); ++i) {
    CAPTURE(one.intervals[i].first);
    REQUIRE(one.intervals[i].second.has_value() == many.intervals[i].second.has_value());
    if (one.intervals[i].second) {
      CHECK(one.intervals[i].second->low == many.intervals[i].second->low);
      CHECK(one.intervals[i].second->high == many.intervals[i].second->high);
    }
  }
}

TEST_CASE("percentile matches numpy's linear method") {
  // numpy.percentile([1, 2, 3, 4], [2.5, 50, 97.5]) = [1.075, 2.5, 3.925]
  CHECK(mm::percentile({4, 1, 3, 2}, 2.5) == doctest::Approx(1.075).epsilon(1e-15));
  CHECK(mm::percentile({4, 1, 3, 2}, 50) == doctest::Approx(2.5).epsilon(1e-15));
  CHECK(mm::percentile({4, 1, 3, 2}, 97.5) == doctest::Approx(3.925).epsilon(1e-15));
  CHECK(mm::percentile({7}, 97.5) == 7);
}

TEST_CASE("ROC curve: sklearn's points on a small case with ties") {
  // sklearn.metrics.roc_curve([0,0,1,1,1,0], [0.1,0.4,0.35,0.8,0.4,0.2]):
  // fpr [0, 0, 1/3, 1/3, 1], tpr [0, 1/3, 2/3, 1, 1], thresholds [1.8, .8, .4, .35, .1]
  const std::vector<char> positive{0, 0, 1, 1, 1, 0};
  const std::vector<double> scores{0.1, 0.4, 0.35, 0.8, 0.4, 0.2};
  const mm::RocCurve c = mm::roc_curve(positive, scores);
  const std::vector<double> fpr{0, 0, 1.0 / 3, 1.0 / 3, 1}, tpr{0, 1.0 / 3, 2.0 / 3, 1, 1};
  REQUIRE(c.fpr.size() == fpr.size());
  for (size_t i = 0; i < fpr.size(); ++i) {
    CHECK(c.fpr[i] == doctest::Approx(fpr[i]));
    CHECK(c.tpr[i] == doctest::Approx(tpr[i]));
  }
  CHECK(std::isinf(c.thresholds[0]));
  CHECK(c.thresholds[2] == 0.4);
  CHECK(*mm::roc_auc(positive, scores) == doctest::Approx(5.0 / 6).epsilon(1e-12));  // Mann-Whitney: 7.5 of 9 pairs
}

TEST_CASE("invalid inputs are refused with a reason") {
  mm::ScoredSamples s;
  s.num_classes = 3;
  s.labels = {0, 3};
  s.probabilities = {0.2, 0.3, 0.5, 0.1, 0.1, 0.8};
  CHECK_THROWS_WITH_AS(mm::compute_metrics(s), doctest::Contains("label 3 outside [0, 3)"), mm::Error);
  s.labels = {0, 1};
  s.probabilities[4] = NAN;
  CHECK_THROWS_WITH_AS(mm::compute_metrics(s), doctest::Contains("non-finite score for class 1"), mm::Error);
  s.probabilities.pop_back();
  CHECK_THROWS_AS(mm::compute_metrics(s), mm::Error);
}
