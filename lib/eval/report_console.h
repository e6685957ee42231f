#pragma once
// The console table mm-eval prints: per-class and macro scores, the summary
// metrics (with their 95% intervals when bootstrapped) and the confusion matrix.
#include <string>

#include "eval/evaluation.h"

namespace mm {

std::string console_report(const Evaluation& e);

}  // namespace mm
