#pragma once
// Copies of model inputs into the rows of a batch, done by whichever thread
// comes first: a decode thread between two files, or mm-predict's calling
// thread before the batch runs. The copy is memory-bound (0.6 MB per 224-px
// image): on the calling thread alone it took 0.12-0.18 ms per image, a cap
// near 7,000 images/s for a GPU run whatever the GPU; spread over the decode
// threads, which are idle or about to decode anyway, it is no one's bottleneck.
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace mm {

class RowCopies {
 public:
  // Queues copying `floats` values from `source` (then freed) to `row`.
  void post(float* row, std::unique_ptr<float[]> source, size_t floats);
  // The same from a vector (an image's pixels), all of it.
  void post(float* row, std::vector<float> source);
  // Does one queued copy; false when the queue is empty. Any thread.
  bool run_one();
  bool pending();  // copies queued and not yet taken
  // Called after each post (outside this object's lock), e.g. to wake a thread that
  // will run_one(); nullptr: nothing.
  void on_post(std::function<void()> notify);
  // Does the queued copies, then waits for those other threads are doing: the
  // rows are then complete.
  void finish_all();

 private:
  struct Copy {
    float* row = nullptr;
    const float* source = nullptr;
    size_t floats = 0;
    std::unique_ptr<float[]> owned_array;  // what source points into, freed after the copy
    std::vector<float> owned_vector;
  };
  void push(Copy&& c);

  std::mutex mutex_;
  std::condition_variable done_;
  std::deque<Copy> queue_;
  std::function<void()> notify_;
  int in_flight_ = 0;
};

}  // namespace mm
