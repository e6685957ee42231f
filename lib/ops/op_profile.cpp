#include "ops/op_profile.h"

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace mm {

namespace {

struct Totals {
  std::mutex mutex;
  std::map<std::string, std::pair<double, long>> by_name;  // seconds, calls

  ~Totals() {
    if (by_name.empty()) return;
    double all = 0;
    for (const auto& [name, t] : by_name) all += t.first;
    std::vector<std::pair<std::string, std::pair<double, long>>> rows(by_name.begin(), by_name.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    std::fprintf(stderr, "op profile (MM_OP_PROFILE; wall time, warm-up calls included):\n");
    std::fprintf(stderr, "  %-22s %10s %7s %8s\n", "op", "ms", "share", "calls");
    for (const auto& [name, t] : rows)
      std::fprintf(stderr, "  %-22s %10.1f %6.1f%% %8ld\n", name.c_str(), t.first * 1e3, 100 * t.first / all, t.second);
    std::fprintf(stderr, "  %-22s %10.1f\n", "total", all * 1e3);
  }
};

Totals& totals() {
  static Totals t;
  return t;
}

}  // namespace

bool op_profile_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("MM_OP_PROFILE");
    if (!v || !*v || std::strcmp(v, "0") == 0) return false;
    totals();  // constructed before the first add, so destroyed (and printed) late
    return true;
  }();
  return on;
}

void op_profile_add(const char* name, double seconds) {
  Totals& t = totals();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto& entry = t.by_name[name];
  entry.first += seconds;
  entry.second += 1;
}

}  // namespace mm
