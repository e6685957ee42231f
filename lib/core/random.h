#pragma once
// Random numbers that are the same on every platform and thread count: the
// SplitMix64 generator, and a Fisher-Yates shuffle drawn from it. (std::
// distributions and std::shuffle differ between standard libraries.)
#include <cstdint>
#include <vector>

namespace mm {

// The SplitMix64 generator (Steele, Lea, Flood 2014).
class SplitMix64 {
 public:
  static constexpr uint64_t kIncrement = 0x9E3779B97F4A7C15ull;
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  // The generator as it is after `draws` calls to next() (wrapping arithmetic).
  static SplitMix64 at(uint64_t seed, uint64_t draws) { return SplitMix64(seed + draws * kIncrement); }
  uint64_t next() {
    uint64_t z = (state_ += kIncrement);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// A permutation of 0..n-1: Fisher-Yates with indices drawn from SplitMix64(seed)
// by multiply-shift (unbiased enough for any n below 2^32, and branch-free).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

}  // namespace mm
