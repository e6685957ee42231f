// RowCopies (lib/predict/row_copies.h): model inputs copied into batch rows by
// whichever thread comes first; after finish_all every row holds its input.
#include <atomic>
#include <thread>
#include <vector>

#include "predict/row_copies.h"
#include "test_util.h"

TEST_CASE("row copies: helpers and the finishing thread together fill every row exactly") {
  constexpr size_t kRows = 64, kFloats = 3 * 96 * 96;
  for (int helpers : {0, 1, 4}) {
    CAPTURE(helpers);
    mm::RowCopies copies;
    std::vector<float> batch(kRows * kFloats, -1.f);
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int h = 0; h < helpers; ++h)
      threads.emplace_back([&] {
        while (!stop) copies.run_one();
      });
    for (size_t r = 0; r < kRows; ++r) {
      std::unique_ptr<float[]> input(new float[kFloats]);
      for (size_t i = 0; i < kFloats; ++i) input[i] = float(r * kFloats + i);
      copies.post(batch.data() + r * kFloats, std::move(input), kFloats);
    }
    copies.finish_all();
    size_t wrong = 0;
    for (size_t i = 0; i < batch.size(); ++i) wrong += batch[i] != float(i);
    CHECK(wrong == 0);
    CHECK_FALSE(copies.run_one());  // nothing left
    stop = true;
    for (std::thread& t : threads) t.join();
  }
}
