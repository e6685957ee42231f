#include "eval/report_figures.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <sstream>

namespace mm {

namespace {

constexpr size_t kMaxHeatMapClasses = 80;

// Matplotlib's tab10: distinct, colour-blind-tolerable line colours.
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string fmt(double v, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// A unit square [0,1]^2 mapped onto a pixel rectangle, y up.
struct Frame {
  double left, top, width, height;
  double x(double v) const { return left + v * width; }
  double y(double v) const { return top + (1 - v) * height; }
};

// Axes, a light grid every 0.2 and the axis titles.
void draw_axes(std::ostringstream& s, const Frame& f, const std::string& x_title, const std::string& y_title) {
  for (int i = 0; i <= 5; ++i) {
    const double v = i / 5.0;
    s << "<line x1='" << num(f.x(v)) << "' y1='" << num(f.y(0)) << "' x2='" << num(f.x(v)) << "' y2='"
      << num(f.y(1)) << "' stroke='#e5e5e5'/>";
    s << "<line x1='" << num(f.x(0)) << "' y1='" << num(f.y(v)) << "' x2='" << num(f.x(1)) << "' y2='"
      << num(f.y(v)) << "' stroke='#e5e5e5'/>";
    s << "<text x='" << num(f.x(v)) << "' y='" << num(f.y(0) + 16) << "' text-anchor='middle'>" << fmt(v, 1)
      << "</text>";
    s << "<text x='" << num(f.x(0) - 6) << "' y='" << num(f.y(v) + 4) << "' text-anchor='end'>" << fmt(v, 1)
      << "</text>";
  }
  s << "<rect x='" << num(f.left) << "' y='" << num(f.top) << "' width='" << num(f.width) << "' height='"
    << num(f.height) << "' fill='none' stroke='#333'/>";
  s << "<text x='" << num(f.x(0.5)) << "' y='" << num(f.y(0) + 34) << "' text-anchor='middle'>" << xml_escape(x_title)
    << "</text>";
  s << "<text transform='translate(" << num(f.left - 38) << "," << num(f.y(0.5)) << ") rotate(-90)' "
    << "text-anchor='middle'>" << xml_escape(y_title) << "</text>";
}

std::string svg_open(double width, double height, const std::string& label) {
  std::ostringstream s;
  s << "<svg width='" << num(width) << "' height='" << num(height)
    << "' viewBox='0 0 " << num(width) << " " << num(height) << "' role='img' aria-label='" << xml_escape(label)
    << "' font-family='sans-serif' font-size='12'>";
  return s.str();
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string roc_curves_svg(const Evaluation& e, size_t max_classes) {
  const Metrics& m = e.metrics;
  std::vector<size_t> classes(e.class_names.size());
  std::iota(classes.begin(), classes.end(), size_t(0));
  std::stable_sort(classes.begin(), classes.end(), [&](size_t a, size_t b) { return m.support[a] > m.support[b]; });
  if (classes.size() > max_classes) classes.resize(max_classes);
  std::sort(classes.begin(), classes.end());

  const Frame f{60, 20, 340, 340};
  const double legend_x = 420;
  std::ostringstream s;
  s << svg_open(640, 400, "ROC curves, one class against the rest");
  draw_axes(s, f, "false positive rate (1 - specificity)", "true positive rate (sensitivity)");
  s << "<line x1='" << num(f.x(0)) << "' y1='" << num(f.y(0)) << "' x2='" << num(f.x(1)) << "' y2='" << num(f.y(1))
    << "' stroke='#999' stroke-dasharray='4 4'/>";
  int drawn = 0;
  for (size_t c : classes) {
    const std::string color = kPalette[drawn % 10];
    const RocCurve curve = one_vs_rest_roc(e.scores, int64_t(c));
    const std::string auc = m.per_class[c].auc ? fmt(*m.per_class[c].auc, 3) : "undefined";
    if (!curve.fpr.empty()) {
      s << "<polyline fill='none' stroke='" << color << "' stroke-width='2' points='";
      for (size_t i = 0; i < curve.fpr.size(); ++i) s << num(f.x(curve.fpr[i])) << "," << num(f.y(curve.tpr[i])) << " ";
      s << "'><title>" << xml_escape(e.class_names[c]) << ": AUC " << auc << "</title></polyline>";
    }
    const double ly = 30 + 20 * drawn;
    s << "<line x1='" << num(legend_x) << "' y1='" << num(ly - 4) << "' x2='" << num(legend_x + 20) << "' y2='"
      << num(ly - 4) << "' stroke='" << color << "' stroke-width='3'/>";
    s << "<text x='" << num(legend_x + 26) << "' y='" << num(ly) << "'>" << xml_escape(e.class_names[c]) << " (AUC "
      << auc << ")</text>";
    ++drawn;
  }
  if (classes.size() < e.class_names.size())
    s << "<text x='" << num(legend_x) << "' y='" << num(30 + 20 * drawn) << "'>(" << classes.size() << " of "
      << e.class_names.size() << " classes: the largest)</text>";
  s << "</svg>";
  return s.str();
}

std::string confusion_matrix_svg(const Evaluation& e) {
  const auto& cm = e.metrics.confusion_matrix;
  const size_t k = cm.size();
  if (k > kMaxHeatMapClasses)  // k^2 cells would make the page unusably large
    return "<p class='note'>The confusion matrix of " + std::to_string(k) +
           " classes is not drawn; it is in the JSON output.</p>";
  const double cell = std::clamp(480.0 / double(k), 6.0, 64.0);
  size_t longest = 0;
  for (const auto& n : e.class_names) longest = std::max(longest, std::min<size_t>(n.size(), 24));
  const double label_space = 12 + 7.0 * double(longest);
  const double left = label_space + 24, top = label_space * 0.75 + 10;
  const double width = std::max(left + cell * double(k) + 20, 360.0), height = top + cell * double(k) + 40;
  const bool show_text = cell >= 24;
  auto label = [](const std::string& n) { return xml_escape(n.size() > 24 ? n.substr(0, 23) + "…" : n); };

  std::ostringstream s;
  s << svg_open(width, height, "Confusion matrix heat map, rows are the true class");
  for (size_t t = 0; t < k; ++t) {
    int64_t row_total = 0;
    for (int64_t v : cm[t]) row_total += v;
    const double ty = top + cell * (double(t) + 0.5) + 4;
    s << "<text x='" << num(left - 6) << "' y='" << num(ty) << "' text-anchor='end'>" << label(e.class_names[t])
      << "</text>";
    for (size_t p = 0; p < k; ++p) {
      const double share = row_total > 0 ? double(cm[t][p]) / double(row_total) : 0.0;
      // White to dark blue with the share of the row.
      const int r = int(247 - share * (247 - 8)), g = int(251 - share * (251 - 48)), b = int(255 - share * (255 - 107));
      const double x = left + cell * double(p), y = top + cell * double(t);
      s << "<rect x='" << num(x) << "' y='" << num(y) << "' width='" << num(cell) << "' height='" << num(cell)
        << "' fill='rgb(" << r << "," << g << "," << b << ")' stroke='#fff'><title>true "
        << xml_escape(e.class_names[t]) << ", predicted " << xml_escape(e.class_names[p]) << ": " << cm[t][p] << " ("
        << fmt(100 * share, 1) << "% of the row)</title></rect>";
      if (show_text)
        s << "<text x='" << num(x + cell / 2) << "' y='" << num(y + cell / 2 + 4) << "' text-anchor='middle' fill='"
          << (share > 0.5 ? "#fff" : "#222") << "'>" << cm[t][p] << "</text>";
    }
  }
  for (size_t p = 0; p < k; ++p) {
    const double x = left + cell * (double(p) + 0.5);
    s << "<text transform='translate(" << num(x + 4) << "," << num(top - 6) << ") rotate(-45)'>"
      << label(e.class_names[p]) << "</text>";
  }
  s << "<text x='" << num(left + cell * double(k) / 2) << "' y='" << num(top + cell * double(k) + 24)
    << "' text-anchor='middle'>predicted class</text>";
  s << "</svg>";
  return s.str();
}

std::string reliability_diagram_svg(const Evaluation& e) {
  const std::vector<ReliabilityBin> bins = reliability_bins(e.scores, e.metrics.ece_bins);
  const Frame f{60, 20, 340, 300};
  const Frame hist{60, 370, 340, 60};  // share of samples per bin
  int64_t most = 1;
  for (const auto& b : bins) most = std::max(most, b.count);

  std::ostringstream s;
  s << svg_open(640, 480, "Reliability diagram");
  draw_axes(s, f, "", "accuracy");
  s << "<line x1='" << num(f.x(0)) << "' y1='" << num(f.y(0)) << "' x2='" << num(f.x(1)) << "' y2='" << num(f.y(1))
    << "' stroke='#999' stroke-dasharray='4 4'/>";
  for (const auto& b : bins) {
    if (b.count == 0) continue;
    const double x = f.x(b.lower) + 1, w = f.x(b.upper) - f.x(b.lower) - 2;
    s << "<rect x='" << num(x) << "' y='" << num(f.y(b.accuracy)) << "' width='" << num(w) << "' height='"
      << num(f.y(0) - f.y(b.accuracy)) << "' fill='#1f77b4'><title>confidence (" << fmt(b.lower, 3) << ", "
      << fmt(b.upper, 3) << "]: " << b.count << " samples, accuracy " << fmt(b.accuracy, 3) << ", mean confidence "
      << fmt(b.mean_confidence, 3) << "</title></rect>";
    const double lo = std::min(b.accuracy, b.mean_confidence), hi = std::max(b.accuracy, b.mean_confidence);
    s << "<rect x='" << num(x) << "' y='" << num(f.y(hi)) << "' width='" << num(w) << "' height='"
      << num(f.y(lo) - f.y(hi)) << "' fill='#d62728' fill-opacity='0.35' stroke='#d62728'/>";
    const double share = double(b.count) / double(most);
    s << "<rect x='" << num(x) << "' y='" << num(hist.top + hist.height * (1 - share)) << "' width='" << num(w)
      << "' height='" << num(hist.height * share) << "' fill='#7f7f7f'><title>" << b.count
      << " samples</title></rect>";
  }
  s << "<rect x='" << num(hist.left) << "' y='" << num(hist.top) << "' width='" << num(hist.width) << "' height='"
    << num(hist.height) << "' fill='none' stroke='#333'/>";
  s << "<text x='" << num(hist.left - 6) << "' y='" << num(hist.top + hist.height / 2 + 4)
    << "' text-anchor='end'>count</text>";
  s << "<text x='" << num(f.x(0.5)) << "' y='" << num(hist.top + hist.height + 30)
    << "' text-anchor='middle'>confidence (max probability), " << bins.size() << " equal-width bins</text>";
  const double lx = 420;
  s << "<rect x='" << num(lx) << "' y='30' width='14' height='14' fill='#1f77b4'/><text x='" << num(lx + 20)
    << "' y='41'>accuracy in the bin</text>";
  s << "<rect x='" << num(lx) << "' y='52' width='14' height='14' fill='#d62728' fill-opacity='0.35' "
    << "stroke='#d62728'/><text x='" << num(lx + 20) << "' y='63'>gap to mean confidence</text>";
  s << "<text x='" << num(lx) << "' y='90'>ECE = " << fmt(e.metrics.ece, 4) << "</text>";
  s << "</svg>";
  return s.str();
}

}  // namespace mm
