#pragma once
// Helpers for the mm-eval tests: a scratch folder that removes itself, small files.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace mm::test {

// Runs a shell command and returns its exit code (-1 when it did not exit normally).
inline int run_command(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class ScratchDir {
 public:
  ScratchDir() {
    char pattern[] = "/tmp/mm-eval-test-XXXXXX";
    REQUIRE(mkdtemp(pattern) != nullptr);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  // Writes text to path()/rel (creating folders) and returns the full path.
  std::string write(const std::string& rel, const std::string& text) const {
    const std::filesystem::path p = std::filesystem::path(path_) / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

 private:
  std::string path_;
};

// The shared data set beside the repository (../shared/data); empty when absent.
inline std::string shared_data_dir() {
  const std::string dir = std::string(MM_SOURCE_DIR) + "/../shared/data";
  return std::filesystem::is_directory(dir) ? dir : "";
}

}  // namespace mm::test
