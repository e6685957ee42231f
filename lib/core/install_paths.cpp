#include "core/install_paths.h"

#include <filesystem>
#include <system_error>

namespace mm {

std::string executable_dir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec || exe.empty()) return {};
  return exe.parent_path().string();
}

std::string installed_share_dir() {
  const std::string dir = executable_dir();
  if (dir.empty()) return {};
  return (std::filesystem::path(dir) / ".." / "share" / "medmamba").lexically_normal().string();
}

}  // namespace mm
