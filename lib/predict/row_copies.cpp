#include "predict/row_copies.h"

#include <cstring>

namespace mm {

void RowCopies::post(float* row, std::unique_ptr<float[]> source, size_t floats) {
  Copy c;
  c.row = row;
  c.source = source.get();
  c.floats = floats;
  c.owned_array = std::move(source);
  push(std::move(c));
}

void RowCopies::post(float* row, std::vector<float> source) {
  Copy c;
  c.row = row;
  c.source = source.data();
  c.floats = source.size();
  c.owned_vector = std::move(source);  // a moved vector keeps its buffer
  push(std::move(c));
}

void RowCopies::push(Copy&& c) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(c));
  }
  if (notify_) notify_();
}

bool RowCopies::pending() {
  std::lock_guard<std::mutex> lock(mutex_);
  return !queue_.empty();
}

void RowCopies::on_post(std::function<void()> notify) { notify_ = std::move(notify); }

bool RowCopies::run_one() {
  Copy copy;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.empty()) return false;
    copy = std::move(queue_.front());
    queue_.pop_front();
    ++in_flight_;
  }
  std::memcpy(copy.row, copy.source, copy.floats * sizeof(float));
  copy = Copy();
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
