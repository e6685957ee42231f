#pragma once
// Classification metrics from labels and per-class probabilities, with
// scikit-learn's definitions (docs/mm-eval.md states each one and its
// zero-division rule; test/reference/make_metric_fixtures.py checks them
// against sklearn). Everything is computed in double.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mm {

// What a classifier said about n labelled samples.
struct ScoredSamples {
  int64_t num_classes = 0;
  std::vector<int64_t> labels;        // n true classes in [0, num_classes)
  std::vector<double> probabilities;  // n x num_classes, row-major

  int64_t size() const { return int64_t(labels.size()); }
  const double* row(int64_t i) const { return probabilities.data() + i * num_classes; }
  // Throws mm::Error when sizes disagree, a label is out of range or a score is not finite.
  void validate() const;
};

// One class against the rest, or the macro average over classes.
struct ClassScores {
  double precision = 0, recall = 0, specificity = 0, f1 = 0;
  std::optional<double> auc;  // undefined when y_true holds only one side
};

struct MetricOptions {
  std::vector<int64_t> top_k{1};  // which k to report top-k accuracy for
  int ece_bins = 15;
};

struct Metrics {
  int64_t n = 0;
  double accuracy = 0, balanced_accuracy = 0, ece = 0;
  int ece_bins = 0;  // how many bins the ece used
  std::optional<double> kappa;  // undefined when chance agreement is total (0/0)
  ClassScores macro;
  std::vector<ClassScores> per_class;
  std::vector<int64_t> support;                        // true samples per class
  std::vector<std::vector<int64_t>> confusion_matrix;  // [true class][predicted class]
  std::vector<std::pair<int64_t, double>> top_k;       // (k, accuracy), in MetricOptions order
};

Metrics compute_metrics(const ScoredSamples& s, const MetricOptions& options = {});

// Every scalar of m under a dotted name ("accuracy", "macro.f1",
// "per_class.2.auc", "top_k.3"); the bootstrap and the reports share this list.
std::vector<std::pair<std::string, std::optional<double>>> flatten_metrics(const Metrics& m);

// The predicted class: the first class with the largest probability (numpy's argmax).
int64_t predicted_class(const double* probabilities, int64_t num_classes);

// sklearn's roc_curve (drop_intermediate=True): one point per distinct
// threshold, collinear points dropped, starting at (0, 0).
struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;  // thresholds[0] is +infinity
};
// positive[i]: sample i is of the positive class. Empty curve when y_true holds one side only.
RocCurve roc_curve(const std::vector<char>& positive, const std::vector<double>& scores);
// Trapezoidal area under roc_curve (ties count half, as in sklearn's roc_auc_score).
std::optional<double> roc_auc(const std::vector<char>& positive, const std::vector<double>& scores);
// One class against the rest: positive = (label == c), scores = p[:, c].
RocCurve one_vs_rest_roc(const ScoredSamples& s, int64_t c);

// sklearn's top_k_accuracy_score(labels=range(k)): among tied scores the higher
// class index ranks first (its stable argsort, reversed), so top-1 can differ
// from accuracy on ties. Binary problems follow sklearn's binary rule: top-1
// predicts class 1 when p1 > 0.5, and any k >= 2 scores 1.
double top_k_accuracy(const ScoredSamples& s, int64_t k);

// Equal-width bins on the confidence (max probability), each (lower, upper]:
// the reliability diagram and the expected calibration error.
struct ReliabilityBin {
  double lower = 0, upper = 0;
  int64_t count = 0;
  double mean_confidence = 0, accuracy = 0;  // 0 for empty bins
};
std::vector<ReliabilityBin> reliability_bins(const ScoredSamples& s, int bins = 15);
// sum over bins of count/n * |accuracy - mean_confidence|.
double expected_calibration_error(const std::vector<ReliabilityBin>& bins);

}  // namespace mm
