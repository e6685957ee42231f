#pragma once
// The file operations mm-serve's "nothing lost" promise rests on: a received
// instance or a record is on disk (fsync'd, its folder entry too) before anyone
// is told it is. POSIX only (Linux, macOS).
#include <string>
#include <vector>

namespace mm::serve {

// Makes the folder (and its parents); throws mm::Error naming it when that fails.
void make_folder(const std::string& path);
// fsync of a file or a folder (a folder: its entries, so renames survive a crash).
void sync_path(const std::string& path);
// rename(2) then fsync of the destination's folder (and the source's when another one).
void durable_rename(const std::string& from, const std::string& to);
// Appends bytes to a file (creating it) with one write, then fsync.
void durable_append(const std::string& path, const std::string& bytes);
// Writes a whole file through "<path>.tmp", fsync, rename: readers see the old or the new text.
void durable_replace(const std::string& path, const std::string& text);
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
