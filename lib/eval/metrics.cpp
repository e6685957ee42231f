#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace mm {

namespace {

// sklearn's zero_division=0: a ratio whose denominator is zero is 0.
double ratio_or_zero(double num, double den) { return den == 0 ? 0.0 : num / den; }

std::vector<std::vector<int64_t>> confusion_of(const ScoredSamples& s) {
  std::vector<std::vector<int64_t>> cm(size_t(s.num_classes), std::vector<int64_t>(size_t(s.num_classes), 0));
  for (int64_t i = 0; i < s.size(); ++i)
    ++cm[size_t(s.labels[size_t(i)])][size_t(predicted_class(s.row(i), s.num_classes))];
  return cm;
}

// sklearn's cohen_kappa_score without weights: 1 - observed/expected disagreement.
std::optional<double> cohen_kappa(const std::vector<std::vector<int64_t>>& cm) {
  const size_t k = cm.size();
  std::vector<double> row_sum(k, 0), col_sum(k, 0);
  double total = 0;
  for (size_t t = 0; t < k; ++t)
    for (size_t p = 0; p < k; ++p) {
      row_sum[t] += double(cm[t][p]);
      col_sum[p] += double(cm[t][p]);
      total += double(cm[t][p]);
    }
  double observed = 0, expected = 0;
  for (size_t t = 0; t < k; ++t)
    for (size_t p = 0; p < k; ++p) {
      if (t == p) continue;
      observed += double(cm[t][p]);
      expected += col_sum[t] * row_sum[p] / total;  // sklearn: outer(sum0, sum1) / sum
    }
  if (expected == 0) return std::nullopt;  // sklearn returns NaN (0/0)
  return 1.0 - observed / expected;
}

}  // namespace

void ScoredSamples::validate() const {
  MM_CHECK(num_classes >= 2, "metrics need at least 2 classes, got " + std::to_string(num_classes));
  MM_CHECK(!labels.empty(), "metrics need at least one sample");
  MM_CHECK(probabilities.size() == labels.size() * size_t(num_classes),
           "metrics: " + std::to_string(probabilities.size()) + " probabilities for " +
               std::to_string(labels.size()) + " samples x " + std::to_string(num_classes) + " classes");
  for (size_t i = 0; i < labels.size(); ++i)
    MM_CHECK(labels[i] >= 0 && labels[i] < num_classes,
             "metrics: sample " + std::to_string(i) + " has label " + std::to_string(labels[i]) +
                 " outside [0, " + std::to_string(num_classes) + ")");
  for (size_t i = 0; i < probabilities.size(); ++i)
    MM_CHECK(std::isfinite(probabilities[i]), "metrics: sample " + std::to_string(i / size_t(num_classes)) +
                                                  " has a non-finite score for class " +
                                                  std::to_string(i % size_t(num_classes)));
}

int64_t predicted_class(const double* p, int64_t num_classes) {
  return int64_t(std::max_element(p, p + num_classes) - p);  // first of equal maxima
}

RocCurve roc_curve(const std::vector<char>& positive, const std::vector<double>& scores) {
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  // Cumulative true/false positives at the last sample of each distinct score.
  std::vector<double> tps, fps, thresholds;
  double tp = 0, fp = 0;
  for (size_t r = 0; r < n; ++r) {
    (positive[order[r]] ? tp : fp) += 1;
    if (r + 1 == n || scores[order[r + 1]] != scores[order[r]]) {
      tps.push_back(tp);
      fps.push_back(fp);
      thresholds.push_back(scores[order[r]]);
    }
  }
  RocCurve c;
  if (tp == 0 || fp == 0) return c;  // one side absent: undefined, as sklearn warns
  // drop_intermediate: keep the ends and every point where the slope changes.
  std::vector<size_t> keep;
  for (size_t j = 0; j < tps.size(); ++j) {
    const bool end = j == 0 || j + 1 == tps.size();
    if (end || tps.size() <= 2 || fps[j + 1] - 2 * fps[j] + fps[j - 1] != 0 ||
        tps[j + 1] - 2 * tps[j] + tps[j - 1] != 0)
      keep.push_back(j);
  }
  c.fpr.push_back(0);
  c.tpr.push_back(0);
  c.thresholds.push_back(std::numeric_limits<double>::infinity());
  for (size_t j : keep) {
    c.fpr.push_back(fps[j] / fp);
    c.tpr.push_back(tps[j] / tp);
    c.thresholds.push_back(thresholds[j]);
  }
  return c;
}

std::optional<double> roc_auc(const std::vector<char>& positive, const std::vector<double>& scores) {
  const RocCurve c = roc_curve(positive, scores);
  if (c.fpr.empty()) return std::nullopt;
  double area = 0;
  for (size_t i = 1; i < c.fpr.size(); ++i) area += (c.fpr[i] - c.fpr[i - 1]) * (c.tpr[i] + c.tpr[i - 1]) / 2.0;
  return area;
}

namespace {
// positive = (label == c), scores = p[:, c].
std::pair<std::vector<char>, std::vector<double>> one_vs_rest(const ScoredSamples& s, int64_t c) {
  std::vector<char> positive(size_t(s.size()));
  std::vector<double> scores(size_t(s.size()));
  for (int64_t i = 0; i < s.size(); ++i) {
    positive[size_t(i)] = s.labels[size_t(i)] == c;
    scores[size_t(i)] = s.row(i)[c];
  }
  return {positive, scores};
}
}  // namespace

RocCurve one_vs_rest_roc(const ScoredSamples& s, int64_t c) {
  const auto [positive, scores] = one_vs_rest(s, c);
  return roc_curve(positive, scores);
}

double top_k_accuracy(const ScoredSamples& s, int64_t k) {
  MM_CHECK(k >= 1, "top-k accuracy needs k >= 1, got " + std::to_string(k));
  int64_t hits = 0;
  if (s.num_classes == 2) {
    if (k >= 2) return 1.0;
    // sklearn thresholds p1 at 0.5 when the scores look like probabilities, else at 0.
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int64_t i = 0; i < s.size(); ++i) lo = std::min(lo, s.row(i)[1]), hi = std::max(hi, s.row(i)[1]);
    const double threshold = (lo >= 0 && hi <= 1) ? 0.5 : 0.0;
    for (int64_t i = 0; i < s.size(); ++i) hits += int64_t(s.row(i)[1] > threshold) == s.labels[size_t(i)];
    return double(hits) / double(s.size());
  }
  for (int64_t i = 0; i < s.size(); ++i) {
    const double* p = s.row(i);
    const int64_t t = s.labels[size_t(i)];
    int64_t ahead = 0;  // classes ranked before the true one
    for (int64_t j = 0; j < s.num_classes; ++j) ahead += p[j] > p[t] || (p[j] == p[t] && j > t);
    hits += ahead < k;
  }
  return double(hits) / double(s.size());
}

std::vector<ReliabilityBin> reliability_bins(const ScoredSamples& s, int bins) {
  MM_CHECK(bins >= 1, "reliability diagram needs at least one bin");
  std::vector<ReliabilityBin> out(static_cast<size_t>(bins));
  const double step = 1.0 / bins;  // numpy.linspace(0, 1, bins + 1): i * step, last edge exactly 1
  for (int b = 0; b < bins; ++b) {
    out[size_t(b)].lower = b * step;
    out[size_t(b)].upper = b + 1 == bins ? 1.0 : (b + 1) * step;
  }
  std::vector<double> confidence_sum(size_t(bins), 0), correct_sum(size_t(bins), 0);
  for (int64_t i = 0; i < s.size(); ++i) {
    const int64_t pred = predicted_class(s.row(i), s.num_classes);
    const double confidence = s.row(i)[pred];
    // Bin b holds (lower, upper]; the first bin whose upper edge reaches the confidence.
    auto it = std::lower_bound(out.begin(), out.end(), confidence,
                               [](const ReliabilityBin& bin, double v) { return bin.upper < v; });
    if (it == out.end() || !(confidence > it->lower)) continue;  // outside (0, 1]: in no bin
    const size_t b = size_t(it - out.begin());
    ++out[b].count;
    confidence_sum[b] += confidence;
    correct_sum[b] += pred == s.labels[size_t(i)];
  }
  for (size_t b = 0; b < out.size(); ++b) {
    if (out[b].count == 0) continue;
    out[b].mean_confidence = confidence_sum[b] / double(out[b].count);
    out[b].accuracy = correct_sum[b] / double(out[b].count);
  }
  return out;
}

double expected_calibration_error(const std::vector<ReliabilityBin>& bins) {
  int64_t n = 0;
  for (const auto& b : bins) n += b.count;
  double ece = 0;
  for (const auto& b : bins)
    if (b.count > 0) ece += double(b.count) / double(n) * std::fabs(b.accuracy - b.mean_confidence);
  return ece;
}

Metrics compute_metrics(const ScoredSamples& s, const MetricOptions& options) {
  s.validate();
  const int64_t k = s.num_classes;
  Metrics m;
  m.n = s.size();
  m.confusion_matrix = confusion_of(s);
  m.support.assign(size_t(k), 0);
  m.per_class.resize(size_t(k));

  int64_t correct = 0;
  double recall_sum_supported = 0;
  int64_t supported = 0;
  for (int64_t c = 0; c < k; ++c) {
    const auto& cm = m.confusion_matrix;
    double tp = double(cm[size_t(c)][size_t(c)]), row = 0, col = 0;
    for (int64_t j = 0; j < k; ++j) row += double(cm[size_t(c)][size_t(j)]), col += double(cm[size_t(j)][size_t(c)]);
    const double fp = col - tp, fn = row - tp, tn = double(m.n) - tp - fp - fn;
    ClassScores& cs = m.per_class[size_t(c)];
    cs.precision = ratio_or_zero(tp, tp + fp);
    cs.recall = ratio_or_zero(tp, tp + fn);
    cs.specificity = ratio_or_zero(tn, tn + fp);
    cs.f1 = ratio_or_zero(2 * tp, 2 * tp + fp + fn);
    {
      const auto [positive, scores] = one_vs_rest(s, c);
      cs.auc = roc_auc(positive, scores);
    }
    m.support[size_t(c)] = int64_t(row);
    correct += int64_t(tp);
    if (row > 0) recall_sum_supported += cs.recall, ++supported;
  }
  m.accuracy = double(correct) / double(m.n);
  // sklearn's balanced_accuracy_score: classes absent from y_true are left out (nanmean).
  m.balanced_accuracy = recall_sum_supported / double(supported);
  m.kappa = cohen_kappa(m.confusion_matrix);

  for (const ClassScores& cs : m.per_class) {
    m.macro.precision += cs.precision / double(k);
    m.macro.recall += cs.recall / double(k);
    m.macro.specificity += cs.specificity / double(k);
    m.macro.f1 += cs.f1 / double(k);
  }
  if (k == 2) {
    m.macro.auc = m.per_class[1].auc;  // sklearn's binary roc_auc_score(y, p[:, 1])
  } else {
    double sum = 0;
    bool all_defined = true;
    for (const ClassScores& cs : m.per_class) {
      all_defined = all_defined && cs.auc.has_value();
      if (cs.auc) sum += *cs.auc;
    }
    if (all_defined) m.macro.auc = sum / double(k);  // sklearn raises when a class lacks either side
  }

  m.ece_bins = options.ece_bins;
  m.ece = expected_calibration_error(reliability_bins(s, options.ece_bins));
  for (int64_t kk : options.top_k) m.top_k.emplace_back(kk, top_k_accuracy(s, kk));
  return m;
}

std::vector<std::pair<std::string, std::optional<double>>> flatten_metrics(const Metrics& m) {
  std::vector<std::pair<std::string, std::optional<double>>> out{
      {"accuracy", m.accuracy}, {"balanced_accuracy", m.balanced_accuracy}, {"kappa", m.kappa}, {"ece", m.ece}};
  auto add_scores = [&out](const std::string& prefix, const ClassScores& cs) {
    out.emplace_back(prefix + "precision", cs.precision);
    out.emplace_back(prefix + "recall", cs.recall);
    out.emplace_back(prefix + "specificity", cs.specificity);
    out.emplace_back(prefix + "f1", cs.f1);
    out.emplace_back(prefix + "auc", cs.auc);
  };
  add_scores("macro.", m.macro);
  for (size_t c = 0; c < m.per_class.size(); ++c) add_scores("per_class." + std::to_string(c) + ".", m.per_class[c]);
  for (const auto& [k, acc] : m.top_k) out.emplace_back("top_k." + std::to_string(k), acc);
  return out;
}

}  // namespace mm
