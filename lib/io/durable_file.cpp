#include "io/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "core/error.h"

namespace mm {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw Error(path + ": " + what + " failed: " + std::strerror(errno));
}

// Closes fd; a failed `rc` from the call before it is then reported with its own errno.
void close_then_check(int fd, int rc, const std::string& what, const std::string& path) {
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (rc != 0) fail(what, path);
}

std::string folder_of(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

void make_folder(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  MM_CHECK(!ec && std::filesystem::is_directory(path), path + ": cannot create the folder: " + ec.message());
}

void sync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open", path);
  close_then_check(fd, ::fsync(fd), "fsync", path);
}

void durable_rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail("rename to " + to, from);
  sync_path(folder_of(to));
  if (folder_of(from) != folder_of(to)) sync_path(folder_of(from));
}

void durable_commit(const std::string& tmp, const std::string& path, CommitQueue* later) {
  if (later) return later->add(tmp, path);
  sync_path(tmp);
  durable_rename(tmp, path);
}

CommitQueue::~CommitQueue() {
  // Files added but not started (an exception between a write and start()) are
  // whole: commit them too, as the undeferred durable_commit would have.
  try {
    if (!added_.empty()) start();
    wait();
  } catch (const std::exception&) {
  }
}

void CommitQueue::add(std::string tmp, std::string path, std::function<void()> write) {
  added_.push_back({std::move(tmp), std::move(path), std::move(write)});
}

void CommitQueue::start() {
  wait();
  worker_ = std::thread([this, jobs = std::move(added_)] {
    try {
      for (const Commit& c : jobs) {
        if (c.write) c.write();
        durable_commit(c.tmp, c.path);
      }
    } catch (...) {
      failure_ = std::current_exception();
    }
  });
  added_.clear();
}

void CommitQueue::wait() {
  if (worker_.joinable()) worker_.join();
  if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
}

void durable_append(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail("open", path);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) close_then_check(fd, -1, "write", path);
    done += size_t(n);
  }
  close_then_check(fd, ::fsync(fd), "fsync", path);
}

void durable_replace(const std::string& path, const std::string& text, CommitQueue* later) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    MM_CHECK(out.good(), tmp + ": cannot write");
  }
  durable_commit(tmp, path, later);
}

}  // namespace mm
