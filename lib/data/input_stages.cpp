#include "data/input_stages.h"

#include <time.h>

namespace mm {

const char* input_stage_name(InputStage s) {
  switch (s) {
    case InputStage::Parse: return "parse";
    case InputStage::PixelData: return "pixel data";
    case InputStage::Convert: return "convert";
    case InputStage::Voi: return "voi";
    case InputStage::Window: return "window";
    case InputStage::Resize: return "resize";
    case InputStage::Normalise: return "normalise";
    case InputStage::Count: break;
  }
  return "?";
}

InputStageTimes& InputStageTimes::operator+=(const InputStageTimes& o) {
  for (int i = 0; i < int(InputStage::Count); ++i) seconds[i] += o.seconds[i];
  return *this;
}

InputStageTimes InputStageTimes::operator-(const InputStageTimes& o) const {
  InputStageTimes d = *this;
  for (int i = 0; i < int(InputStage::Count); ++i) d.seconds[i] -= o.seconds[i];
  return d;
}

double InputStageTimes::total() const {
  double t = 0;
  for (double s : seconds) t += s;
  return t;
}

InputStageTimes& this_thread_input_stages() {
  thread_local InputStageTimes times;
  return times;
}

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

}  // namespace mm
