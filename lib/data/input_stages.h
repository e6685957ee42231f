#pragma once
// Where the CPU time goes between an input file and its model input, per stage,
// as thread CPU time (CLOCK_THREAD_CPUTIME_ID): on a machine whose cores are
// shared with the model's threads, wall time per thread would count the time a
// decode thread waited for a core. Each thread sums into its own record; the
// caller (mm-predict's decode threads) reads the difference around a file.
#include <cstdint>

namespace mm {

enum class InputStage : int {
  Parse,       // file meta and dataset header (DCMTK), attributes
  PixelData,   // pixel data loaded from the file and, when compressed, decoded
  Convert,     // stored values -> modality values (rescale, LUT, colour)
  Voi,         // the window chosen (min-max, VOI LUT), MONOCHROME1 mirrored
  Window,      // modality values -> [0, 1] through the window
  Resize,      // to the model's input size
  Normalise,   // channels and (x - mean) / std into the model input
  Count
};
const char* input_stage_name(InputStage s);

struct InputStageTimes {
  double seconds[int(InputStage::Count)] = {};
  double& operator[](InputStage s) { return seconds[int(s)]; }
  double operator[](InputStage s) const { return seconds[int(s)]; }
  InputStageTimes& operator+=(const InputStageTimes& o);
  InputStageTimes operator-(const InputStageTimes& o) const;
  double total() const;
};

// This thread's running totals.
InputStageTimes& this_thread_input_stages();
// CPU time this thread has used, in seconds.
double thread_cpu_seconds();

// Adds the thread CPU time from construction to destruction to one stage.
class TimedStage {
 public:
  explicit TimedStage(InputStage s) : stage_(s), start_(thread_cpu_seconds()) {}
  ~TimedStage() { this_thread_input_stages()[stage_] += thread_cpu_seconds() - start_; }
  TimedStage(const TimedStage&) = delete;
  TimedStage& operator=(const TimedStage&) = delete;

 private:
  InputStage stage_;
  double start_;
};

}  // namespace mm
