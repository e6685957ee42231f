#pragma once
// The HTML report's figures as inline SVG (no scripts, no external resources):
// every figure is drawn here from the evaluation's numbers.
#include <string>

#include "eval/evaluation.h"

namespace mm {

// One-vs-rest ROC curve per class (up to max_classes, the largest first), the
// chance diagonal, and a legend with each class's AUC.
std::string roc_curves_svg(const Evaluation& e, size_t max_classes = 12);

// Confusion matrix: cell colour is the row-normalised share (recall for the
// diagonal), the text the count; rows are the true class. Above 80 classes, a
// note instead (the JSON has the matrix).
std::string confusion_matrix_svg(const Evaluation& e);

// Reliability diagram: per confidence bin, accuracy (bars) against mean
// confidence (the gap drawn in red), the diagonal of perfect calibration, and
// the share of samples per bin underneath.
std::string reliability_diagram_svg(const Evaluation& e);

// Text made safe for HTML/SVG content and attribute values.
std::string xml_escape(const std::string& s);

}  // namespace mm
