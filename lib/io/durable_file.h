#pragma once
// Files that survive a kill or a crash at any moment: written beside their
// final name, fsync'd, renamed over it, and the folder fsync'd, so a reader
// sees the old version or the new one, never a torn file. mm-train's run files
// and mm-serve's received instances, records and reports all go through here.
// POSIX only (Linux, macOS).
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mm {

// Makes the folder (and its parents); throws mm::Error naming it when that fails.
void make_folder(const std::string& path);
// fsync of a file or a folder (a folder: its entries, so renames survive a crash).
void sync_path(const std::string& path);
// rename(2) then fsync of the destination's folder (and the source's when another one).
void durable_rename(const std::string& from, const std::string& to);
// Commits deferred to a thread of their own, run in the order they were
// added: a trainer whose epochs take seconds would otherwise wait for the disk
// to write and flush its model and state files (tens of MB, a few fsyncs)
// every epoch. A commit may carry the writing of its tmp file too, from data
// the caller has already copied (a snapshot of the model). Until a commit has
// run, its final name holds the previous version, as when the process is
// killed mid-way. Write no tmp file again before wait().
class CommitQueue {
 public:
  CommitQueue() = default;
  CommitQueue(const CommitQueue&) = delete;
  CommitQueue& operator=(const CommitQueue&) = delete;
  ~CommitQueue();  // runs what was added and waits; a failure then is dropped (call wait() to see it)
  // tmp takes path's name; `write`, when given, first writes tmp on the queue's thread.
  void add(std::string tmp, std::string path, std::function<void()> write = {});
  // Runs the commits added since the last start on the background thread.
  void start();
  // Joins the thread; throws the first failure (mm::Error naming the file).
  void wait();

 private:
  struct Commit {
    std::string tmp, path;
    std::function<void()> write;
  };
  std::vector<Commit> added_;
  std::thread worker_;
  std::exception_ptr failure_;
};

// A finished temporary file takes its final name: fsync of tmp, then
// durable_rename; with a queue, when the queue's thread gets to it.
void durable_commit(const std::string& tmp, const std::string& path, CommitQueue* later = nullptr);
// Appends bytes to a file (creating it) with one write, then fsync.
void durable_append(const std::string& path, const std::string& bytes);
// Writes a whole file through "<path>.tmp" and durable_commit.
void durable_replace(const std::string& path, const std::string& text, CommitQueue* later = nullptr);

}  // namespace mm
