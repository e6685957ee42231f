#include "eval/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/preprocess.h"
#include "eval/report_figures.h"
#include "io/png_writer.h"

namespace mm {

namespace {

const char* const kStyle = R"(
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.path { text-align: left; font-family: monospace; font-size: 0.85em; word-break: break-all; max-width: 28em; }
td.note { text-align: left; color: #a33; font-size: 0.85em; max-width: 20em; }
.ci { color: #666; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em 1.5em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #444; max-width: 640px; }
img.thumb { image-rendering: auto; border: 1px solid #ccc; background: #000; }
p.note { color: #555; font-size: 0.9em; }
)";

// Reports thumbnails that did not decode; the browser test watches the console.
const char* const kCheckScript = R"(
window.addEventListener('load', function () {
  document.querySelectorAll('img').forEach(function (img) {
    if (!img.complete || img.naturalWidth === 0) console.error('thumbnail failed to decode: ' + img.alt);
  });
});
)";

std::string base64(const std::vector<uint8_t>& bytes) {
  static const char* const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const uint32_t v = uint32_t(bytes[i]) << 16 | (i + 1 < bytes.size() ? uint32_t(bytes[i + 1]) << 8 : 0) |
                       (i + 2 < bytes.size() ? uint32_t(bytes[i + 2]) : 0);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? alphabet[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[v & 63] : '=';
  }
  return out;
}

std::string fmt(const std::optional<double>& v, int decimals = 4) {
  if (!v) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, *v);
  return buf;
}

std::string interval_cell(const Evaluation& e, const std::string& name) {
  if (!e.bootstrap) return "";
  const std::optional<Interval>* ci = e.bootstrap->find(name);
  if (!ci || !*ci) return "<td class='ci'>n/a</td>";
  return "<td class='ci'>[" + fmt((*ci)->low) + ", " + fmt((*ci)->high) + "]</td>";
}

void summary_table(std::ostringstream& h, const Evaluation& e) {
  const Metrics& m = e.metrics;
  const auto flat = flatten_metrics(m);
  auto value_of = [&flat](const std::string& name) {
    for (const auto& [key, value] : flat)
      if (key == name) return value;
    return std::optional<double>();
  };
  std::vector<std::pair<std::string, std::string>> rows{  // (label, flattened name)
      {"accuracy", "accuracy"},
      {"balanced accuracy", "balanced_accuracy"},
      {"macro precision", "macro.precision"},
      {"macro recall (sensitivity)", "macro.recall"},
      {"macro specificity", "macro.specificity"},
      {"macro F1", "macro.f1"},
      {"macro AUC", "macro.auc"},
      {"Cohen's kappa", "kappa"},
      {"ECE (" + std::to_string(m.ece_bins) + " bins)", "ece"}};
  for (const auto& [k, acc] : m.top_k) rows.emplace_back("top-" + std::to_string(k) + " accuracy", "top_k." + std::to_string(k));

  h << "<table><tr><th>metric</th><th>value</th>" << (e.bootstrap ? "<th>95% CI</th>" : "") << "</tr>";
  for (const auto& [label, name] : rows)
    h << "<tr><td>" << xml_escape(label) << "</td><td>" << fmt(value_of(name)) << "</td>" << interval_cell(e, name)
      << "</tr>";
  h << "</table>";
  if (e.bootstrap)
    h << "<p class='note'>Intervals: percentile bootstrap, " << e.bootstrap->resamples << " resamples, seed "
      << e.bootstrap->seed << ".</p>";
}

void per_class_table(std::ostringstream& h, const Evaluation& e) {
  const Metrics& m = e.metrics;
  h << "<table><tr><th>class</th><th>precision</th><th>recall (sensitivity)</th><th>specificity</th><th>F1</th>"
       "<th>AUC</th><th>support</th></tr>";
  for (size_t c = 0; c < e.class_names.size(); ++c) {
    const ClassScores& s = m.per_class[c];
    h << "<tr><td>" << xml_escape(e.class_names[c]) << "</td><td>" << fmt(s.precision) << "</td><td>"
      << fmt(s.recall) << "</td><td>" << fmt(s.specificity) << "</td><td>" << fmt(s.f1) << "</td><td>" << fmt(s.auc)
      << "</td><td>" << m.support[c] << "</td></tr>";
  }
  h << "</table><p class='note'>n/a: undefined (an AUC needs the class both present and absent in the true "
       "labels). Precision, recall and specificity are 0 where their denominator is 0, as scikit-learn's "
       "zero_division=0.</p>";
}

void mistakes_table(std::ostringstream& h, const Evaluation& e, const HtmlReportOptions& o) {
  const std::vector<size_t> mistakes = most_confident_mistakes(e.scores, o.max_mistakes);
  if (mistakes.empty()) {
    h << "<p>No mistakes.</p>";
    return;
  }
  h << "<table><tr><th>#</th>" << (o.sample_image ? "<th>image</th>" : "")
    << "<th>path</th><th>true</th><th>predicted</th><th>confidence</th><th>p(true)</th></tr>";
  for (size_t r = 0; r < mistakes.size(); ++r) {
    const size_t i = mistakes[r];
    const double* p = e.scores.row(int64_t(i));
    const int64_t pred = predicted_class(p, e.scores.num_classes), truth = e.scores.labels[i];
    h << "<tr><td>" << r + 1 << "</td>";
    if (o.sample_image) {
      try {
        const std::string uri = thumbnail_data_uri(o.sample_image(i), o.thumbnail_size);
        h << "<td><img class='thumb' alt='" << xml_escape(e.ids[i]) << "' src='" << uri << "'></td>";
      } catch (const std::exception& ex) {
        h << "<td class='note'>no thumbnail: " << xml_escape(ex.what()) << "</td>";
      }
    }
    h << "<td class='path'>" << xml_escape(e.ids[i]) << "</td><td>" << xml_escape(e.class_names[size_t(truth)])
      << "</td><td>" << xml_escape(e.class_names[size_t(pred)]) << "</td><td>" << fmt(p[pred]) << "</td><td>"
      << fmt(p[truth]) << "</td></tr>";
  }
  h << "</table>";
}

}  // namespace

std::vector<size_t> most_confident_mistakes(const ScoredSamples& s, size_t max_count) {
  std::vector<size_t> wrong;
  for (int64_t i = 0; i < s.size(); ++i)
    if (predicted_class(s.row(i), s.num_classes) != s.labels[size_t(i)]) wrong.push_back(size_t(i));
  auto confidence = [&](size_t i) { return *std::max_element(s.row(int64_t(i)), s.row(int64_t(i)) + s.num_classes); };
  std::stable_sort(wrong.begin(), wrong.end(), [&](size_t a, size_t b) { return confidence(a) > confidence(b); });
  if (wrong.size() > max_count) wrong.resize(max_count);
  return wrong;
}

std::string thumbnail_data_uri(const Image& img, int size) {
  MM_CHECK(img.height > 0 && img.width > 0 && (img.channels == 1 || img.channels == 3),
           img.source_path + ": no 1- or 3-channel image for a thumbnail");
  const double scale = double(size) / double(std::max(img.height, img.width));
  const int64_t h = std::max<int64_t>(1, std::llround(double(img.height) * scale));
  const int64_t w = std::max<int64_t>(1, std::llround(double(img.width) * scale));
  const Image small = resize(apply_window(img), h, w, Interpolation::Bilinear);
  std::vector<uint8_t> bytes(small.pixels.size());
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = uint8_t(std::lround(std::clamp(double(small.pixels[i]), 0.0, 1.0) * 255.0));
  return "data:image/png;base64," + base64(encode_png(bytes.data(), w, h, int(img.channels)));
}

std::string html_report(const Evaluation& e, const HtmlReportOptions& o) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>mm-eval report</title>"
    << "<meta name='viewport' content='width=device-width, initial-scale=1'><style>" << kStyle
    << "</style></head><body>\n<h1>MedMamba evaluation</h1>\n<table>";
  for (const auto& [key, value] : e.about)
    h << "<tr><td>" << xml_escape(key) << "</td><td class='path'>" << xml_escape(value) << "</td></tr>";
  h << "<tr><td>samples</td><td class='path'>" << e.metrics.n << "</td></tr><tr><td>classes</td><td class='path'>"
    << e.class_names.size() << "</td></tr></table>\n<h2>Summary</h2>\n";
  summary_table(h, e);
  h << "\n<h2>Per class</h2>\n";
  per_class_table(h, e);
  h << "\n<h2>Figures</h2>\n<figure>" << roc_curves_svg(e)
    << "<figcaption>ROC curves, each class against the rest (scores: its probability).</figcaption></figure>\n"
    << "<figure>" << confusion_matrix_svg(e) << "<figcaption>Confusion matrix: rows are the true class, columns the predicted one; the colour is the share of the row.</figcaption></figure>\n"
    << "<figure>" << reliability_diagram_svg(e)
    << "<figcaption>Reliability diagram: bars at the diagonal are perfectly calibrated; the expected calibration "
       "error is the sample-weighted mean gap.</figcaption></figure>\n";
  h << "<h2>Most confident mistakes</h2>\n";
  mistakes_table(h, e, o);
  h << "\n<p class='note'>Definitions follow scikit-learn; see docs/mm-eval.md.</p>\n<script>" << kCheckScript
    << "</script>\n</body></html>\n";
  return h.str();
}

std::string write_html_report(const std::string& dir, const Evaluation& e, const HtmlReportOptions& o) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MM_CHECK(!ec, dir + ": cannot create the report folder: " + ec.message());
  const std::string path = (std::filesystem::path(dir) / "index.html").string();
  const std::string html = html_report(e, o);
  std::ofstream out(path, std::ios::binary);
  MM_CHECK(out.good(), path + ": cannot write");
  out << html;
  out.close();
  MM_CHECK(out.good(), path + ": write error");
  return path;
}

}  // namespace mm
