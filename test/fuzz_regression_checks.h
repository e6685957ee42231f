#pragma once
// Shared by the reader tests that hold a fuzz target's regression inputs to their errors
// (test_imaging_pictures.cpp, test_imaging_dicom_gaps.cpp).
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "data/image.h"

namespace mm::test {

// Each fuzz/regressions/<target>/<name> of `reasons` makes read(path) throw a Corrupt
// ImageError whose message names the file and holds the reason, within a second.
inline void check_regressions_refused(const std::string& target, const std::map<std::string, std::string>& reasons,
                                      const std::function<void(const std::string&)>& read) {
  const std::string dir = std::string(MM_SOURCE_DIR) + "/fuzz/regressions/" + target + "/";
  for (const auto& [file, reason] : reasons) {
    const std::string& name = file;  // CAPTURE cannot take a structured binding under clang
    CAPTURE(name);
    const auto start = std::chrono::steady_clock::now();
    try {
      read(dir + name);
      FAIL("decoded");
    } catch (const ImageError& e) {
      CHECK(e.kind == ImageError::Kind::Corrupt);
      CHECK(std::string(e.what()).find(reason) != std::string::npos);
      CHECK(std::string(e.what()).find(name) != std::string::npos);
    }
    CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 1.0);
  }
}

}  // namespace mm::test
