#pragma once
// mm-serve's folder handling beside the durable writes it rests on
// (io/durable_file.h: a received instance or a record is on disk, fsync'd, its
// folder entry too, before anyone is told it is). POSIX only (Linux, macOS).
#include <string>
#include <vector>

#include "io/durable_file.h"

namespace mm::serve {

// The plain files of a folder whose names do not start with '.', sorted by name.
std::vector<std::string> folder_entries(const std::string& folder);
// Holds an exclusive flock on <folder>/.lock while alive: one server per
// output folder. Throws mm::Error when another process holds it.
class FolderLock {
 public:
  explicit FolderLock(const std::string& folder);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};
// Removes the files of a folder whose names start with `prefix` (transfers a
// crash cut short); returns how many.
int remove_with_prefix(const std::string& folder, const std::string& prefix);
// Cuts a partly written last line (a crash during durable_append) off a text
// file; returns the complete lines. A missing file has none.
std::vector<std::string> complete_lines(const std::string& path);

}  // namespace mm::serve
