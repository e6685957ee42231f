#include "serve/durable_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/durable_file.h"

namespace mm::serve {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw Error(path + ": " + what + " failed: " + std::strerror(errno));
}


}  // namespace

std::vector<std::string> folder_entries(const std::string& folder) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(folder.c_str());
  if (!dir) fail("opendir", folder);
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string name = e->d_name;
    if (e->d_type == DT_REG) {  // no stat per entry: a backlog is listed once per round
      names.push_back(name);
      continue;
    }
    struct stat st;
    if (e->d_type == DT_UNKNOWN && ::stat((folder + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode))
      names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

FolderLock::FolderLock(const std::string& folder) {
  const std::string path = folder + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("open", path);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw Error(folder + ": another mm-serve uses this folder (" + path + " is locked)");
  }
}

FolderLock::~FolderLock() { ::close(fd_); }

int remove_with_prefix(const std::string& folder, const std::string& prefix) {
  DIR* dir = ::opendir(folder.c_str());
  if (!dir) fail("opendir", folder);
  std::vector<std::string> doomed;
  while (const dirent* e = ::readdir(dir))
    if (std::string(e->d_name).rfind(prefix, 0) == 0) doomed.push_back(folder + "/" + e->d_name);
  ::closedir(dir);
  for (const std::string& path : doomed) ::unlink(path.c_str());
  return int(doomed.size());
}

std::vector<std::string> complete_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const size_t end = text.rfind('\n');
  const size_t complete = end == std::string::npos ? 0 : end + 1;
  if (complete < text.size()) {
    // The tail a crash left half-written: its file is still in incoming and is classified again.
    if (::truncate(path.c_str(), off_t(complete)) != 0) fail("truncate", path);
    sync_path(path);
  }
  std::vector<std::string> lines;
  std::istringstream rows(text.substr(0, complete));
  for (std::string line; std::getline(rows, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace mm::serve
