#pragma once
// A one-line progress bar for a terminal (mm-predict draws it on stderr only
// when stderr is a TTY, so logs and pipes never see carriage returns).
#include <chrono>
#include <cstdio>

#include "predict/pipeline.h"

namespace mm {

class ProgressBar {
 public:
  explicit ProgressBar(std::FILE* out) : out_(out), start_(std::chrono::steady_clock::now()) {}
  // Redraws at most ten times a second, and always when every file is done.
  void update(const PredictProgress& p);
  // Clears the bar's line so that a message can be printed; the next update redraws it.
  void clear();
  // Ends the line, if anything was drawn.
  void finish();

 private:
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool drawn_ = false;
};

}  // namespace mm
