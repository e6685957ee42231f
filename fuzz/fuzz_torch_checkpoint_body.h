// The PyTorch checkpoint fuzz target's body, shared by fuzz/fuzz_torch_checkpoint.cpp
// (libFuzzer) and test/test_fuzz_regressions.cpp (replays the seeds and
// fuzz/regressions/fuzz_torch_checkpoint/ in the doctest suite).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/torch_checkpoint.h"

// Returns normally for a checkpoint or an mm::Error; anything else is a finding.
inline void fuzz_one_torch_checkpoint(const uint8_t* data, size_t size) {
  try {
    const mm::TorchCheckpoint ck = mm::parse_torch_checkpoint(std::vector<uint8_t>(data, data + size), "fuzz input");
    // Read every byte of every tensor, so a wrong size or copy shows up under ASan.
    uint8_t sum = 0;
    for (const auto& [name, t] : ck.tensors)
      for (size_t i = 0; i < t.nbytes(); ++i) sum ^= t.as<uint8_t>()[i];
    volatile uint8_t sink = sum;
    (void)sink;
  } catch (const mm::Error&) {
  }
}
