#include "core/random.h"

#include <numeric>
#include <utility>

#include "core/error.h"

namespace mm {

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  MM_CHECK(n >= 0, "seeded_permutation: negative size");
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = int64_t((unsigned __int128)rng.next() * uint64_t(i + 1) >> 64);
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

}  // namespace mm
