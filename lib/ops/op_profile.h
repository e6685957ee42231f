#pragma once
// Wall time per op of the CPU inference forward, for finding where the time goes.
//
// Off unless the environment sets MM_OP_PROFILE (to anything but "0"); then each
// timed(name, fn) adds fn's wall time to name's total, and at exit a table of
// totals (ms, share, calls) goes to stderr. Wall time, not CPU time: an op whose
// threads idle at its end is charged for the idling. When off, timed() costs one
// branch on a static flag. Call it from the serial driver code, not from inside
// a parallel region.
#include <chrono>
#include <utility>

namespace mm {

bool op_profile_enabled();
void op_profile_add(const char* name, double seconds);

template <class Fn>
void timed(const char* name, Fn&& fn) {
  if (!op_profile_enabled()) {
    std::forward<Fn>(fn)();
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::forward<Fn>(fn)();
  op_profile_add(name, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace mm
