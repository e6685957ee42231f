#include "predict/row_copies.h"

#include <cstring>

namespace mm {

void RowCopies::post(float* row, std::unique_ptr<float[]> source, size_t floats) {
  std::lock_guard<std::mutex> lock(mutex_);
  queue_.push_back({row, std::move(source), floats});
}

bool RowCopies::run_one() {
  Copy copy;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.empty()) return false;
    copy = std::move(queue_.front());
    queue_.pop_front();
    ++in_flight_;
  }
  std::memcpy(copy.row, copy.source.get(), copy.floats * sizeof(float));
  copy.source.reset();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
  }
  done_.notify_all();
  return true;
}

void RowCopies::finish_all() {
  while (run_one()) {
  }
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return in_flight_ == 0 && queue_.empty(); });
}

}  // namespace mm
