#pragma once
// The self-contained HTML report (`mm-eval --report DIR` writes DIR/index.html):
// summary and per-class tables, ROC curves, the confusion-matrix heat map, a
// reliability diagram and the most confident mistakes with thumbnails. It
// loads nothing: figures are inline SVG (report_figures.h), thumbnails PNG
// data: URIs, the style sheet inline. One small inline script reports any
// thumbnail that failed to decode on the browser console.
#include <cstddef>
#include <functional>
#include <string>

#include "data/image.h"
#include "eval/evaluation.h"

namespace mm {

struct HtmlReportOptions {
  size_t max_mistakes = 24;
  int thumbnail_size = 96;  // longest side, pixels
  // The image of sample i (an index into Evaluation::ids). May throw: the
  // table then gives the reason instead of a thumbnail. Empty: no thumbnails.
  std::function<Image(size_t)> sample_image;
};

std::string html_report(const Evaluation& e, const HtmlReportOptions& options = {});
// Creates dir when needed and writes dir/index.html; returns that path.
std::string write_html_report(const std::string& dir, const Evaluation& e, const HtmlReportOptions& options = {});

// The image, windowed and scaled to fit size x size, as a PNG data: URI.
std::string thumbnail_data_uri(const Image& img, int size);

// Samples the model got wrong, most confident first (ties: dataset order).
std::vector<size_t> most_confident_mistakes(const ScoredSamples& s, size_t max_count);

}  // namespace mm
