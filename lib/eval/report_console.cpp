#include "eval/report_console.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace mm {

namespace {

constexpr size_t kMaxConsoleMatrixClasses = 30;  // wider does not fit a terminal

std::string fixed(const std::optional<double>& v, int width, int decimals = 4) {
  char buf[64];
  if (v)
    std::snprintf(buf, sizeof buf, "%*.*f", width, decimals, *v);
  else
    std::snprintf(buf, sizeof buf, "%*s", width, "n/a");
  return buf;
}

std::string padded(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

std::string interval_text(const Evaluation& e, const std::string& name) {
  if (!e.bootstrap) return "";
  const std::optional<Interval>* ci = e.bootstrap->find(name);
  if (!ci || !*ci) return "  [n/a]";
  return "  [" + fixed((*ci)->low, 0) + ", " + fixed((*ci)->high, 0) + "]";
}

}  // namespace

std::string console_report(const Evaluation& e) {
  const Metrics& m = e.metrics;
  std::ostringstream out;
  size_t name_width = 17;
  for (const auto& n : e.class_names) name_width = std::max(name_width, n.size() + 2);

  out << padded("class", name_width) << " precision    recall specificity        f1       auc   support\n";
  auto row = [&](const std::string& name, const ClassScores& s, const std::string& support) {
    out << padded(name, name_width) << fixed(s.precision, 10) << fixed(s.recall, 10) << fixed(s.specificity, 12)
        << fixed(s.f1, 10) << fixed(s.auc, 10) << support << "\n";
  };
  for (size_t c = 0; c < e.class_names.size(); ++c) {
    char support[32];
    std::snprintf(support, sizeof support, "%10lld", (long long)m.support[c]);
    row(e.class_names[c], m.per_class[c], support);
  }
  char total[32];
  std::snprintf(total, sizeof total, "%10lld", (long long)m.n);
  row("macro", m.macro, total);
  out << "\n";

  auto line = [&](const std::string& label, const std::optional<double>& v, const std::string& name) {
    out << padded(label, 22) << fixed(v, 8) << interval_text(e, name) << "\n";
  };
  line("accuracy", m.accuracy, "accuracy");
  line("balanced accuracy", m.balanced_accuracy, "balanced_accuracy");
  line("Cohen's kappa", m.kappa, "kappa");
  line("ECE (" + std::to_string(m.ece_bins) + " bins)", m.ece, "ece");
  for (const auto& [k, acc] : m.top_k)
    line("top-" + std::to_string(k) + " accuracy", acc, "top_k." + std::to_string(k));
  if (e.bootstrap) {
    for (const char* key : {"precision", "recall", "specificity", "f1", "auc"}) {
      const std::string name = std::string("macro.") + key;
      out << padded("macro " + std::string(key), 22) << std::string(8, ' ') << interval_text(e, name) << "\n";
    }
    out << "(95% bootstrap intervals, percentile method, " << e.bootstrap->resamples << " resamples, seed "
        << e.bootstrap->seed << ")\n";
  }

  if (m.confusion_matrix.size() > kMaxConsoleMatrixClasses) {
    out << "\n(the confusion matrix of " << m.confusion_matrix.size() << " classes is in the JSON output)\n";
    return out.str();
  }
  out << "\nconfusion matrix (rows: true class, columns: predicted)\n";
  size_t cell = 6;
  for (const auto& n : e.class_names) cell = std::max(cell, std::min<size_t>(n.size(), 12) + 1);
  for (const auto& r : m.confusion_matrix)
    for (int64_t v : r) cell = std::max(cell, std::to_string(v).size() + 1);
  out << std::string(name_width, ' ');
  for (const auto& n : e.class_names) {
    const std::string shown = n.substr(0, cell - 1);
    out << std::string(cell - shown.size(), ' ') << shown;
  }
  out << "\n";
  for (size_t t = 0; t < m.confusion_matrix.size(); ++t) {
    out << padded(e.class_names[t], name_width);
    for (int64_t v : m.confusion_matrix[t]) {
      const std::string s = std::to_string(v);
      out << std::string(cell - s.size(), ' ') << s;
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace mm
