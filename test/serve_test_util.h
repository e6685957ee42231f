#pragma once
// Runs the built mm-serve in the background for the mm-serve tests: started on
// a free loopback port (--port 0; the port is read back from status.json),
// stopped by a signal, killed on scope exit. Every wait is bounded.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "eval_test_util.h"

namespace mm::test {

inline const std::string kServeBinary = std::string(MM_BINARY_DIR) + "/mm-serve";

// status.json as the server last wrote it (replaced atomically); null when absent.
inline nlohmann::json serve_status(const std::string& out) {
  std::ifstream in(out + "/status.json");
  if (!in) return nullptr;
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str(), nullptr, false);
}

// Polls `done` every 50 ms for at most `seconds`; returns whether it came true.
template <class Predicate>
bool wait_until(Predicate done, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

class ServeProcess {
 public:
  // args: mm-serve's flags without --port (it gets --port 0); stderr goes to `log`.
  ServeProcess(const std::string& out, const std::string& args, const std::string& log) : out_(out) {
    std::filesystem::remove(out + "/status.json");
    const std::string command = "exec " + kServeBinary + " --port 0 --out " + out + " " + args + " 2>>" + log;
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    const bool up = wait_until(
        [&] {
          const nlohmann::json s = serve_status(out_);
          if (s.is_object() && s.value("state", "") == "running") port_ = s.value("port", 0);
          return port_ > 0 || exited();
        },
        60);
    REQUIRE_MESSAGE((up && port_ > 0), "mm-serve did not start; its log: " << log);
  }
  ~ServeProcess() {
    if (pid_ > 0 && !exited()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  int port() const { return port_; }
  // Sends `sig` and waits (at most `seconds`) for the exit: the exit code, or
  // 128 + the signal when killed by one, or -1 when it did not end in time.
  int stop(int sig, double seconds = 60) {
    ::kill(pid_, sig);
    if (!wait_until([&] { return exited(); }, seconds)) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }

 private:
  bool exited() {
    if (reaped_) return true;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
    return reaped_;
  }

  std::string out_;
  pid_t pid_ = -1;
  int port_ = 0, status_ = 0;
  bool reaped_ = false;
};

// DCMTK's SCUs (Debian's dcmtk) sending files to 127.0.0.1:port; each returns its exit code.
// storescu proposes only the uncompressed transfer syntaxes (-R: only each file's SOP class);
// dcmsend proposes each file's own transfer syntax, so compressed files travel as they are.
inline int run_scu(const std::string& command, const std::string& log) {
  const int status = std::system(("timeout 120 " + command + " > " + log + " 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
// nodelay: TCP_NODELAY=1 for storescu, which otherwise waits on delayed ACKs
// (200 instances: 10.6 s instead of 0.6 s); off, a SIGKILL lands mid-transfer more surely.
inline int storescu(int port, const std::string& calling_ae, const std::string& files, const std::string& log,
                    bool nodelay = false) {
  return run_scu(std::string(nodelay ? "env TCP_NODELAY=1 " : "") + "storescu -R -aet " + calling_ae + " -aec MM-SERVE 127.0.0.1 " + std::to_string(port) + " " + files,
                 log);
}
inline int dcmsend(int port, const std::string& calling_ae, const std::string& files, const std::string& log) {
  return run_scu("dcmsend -aet " + calling_ae + " -aec MM-SERVE 127.0.0.1 " + std::to_string(port) + " " + files, log);
}

// A free TCP port on 127.0.0.1 (bound and released: the caller starts its
// server on it right away).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  REQUIRE(ok);
  return ntohs(addr.sin_port);
}

// A shell command in the background (its own process, for `end`).
inline pid_t spawn(const std::string& command) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}
inline void end(pid_t pid) {
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
}

// Files in `folder` that are not hidden (the server's temporary files start with a dot).
inline size_t files_in(const std::string& folder) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(folder)) n += e.path().filename().string()[0] != '.';
  return n;
}

// `count` copies of `source` in `folder`, each with a new SOP Instance UID
// (dcmodify -gin); returns their paths, each after a space.
inline std::string make_instances(const std::string& source, const std::string& folder, int count,
                                  const std::string& prefix = "ct") {
  std::filesystem::create_directories(folder);
  std::string list;
  for (int i = 0; i < count; ++i) {
    const std::string path = folder + "/" + prefix + std::to_string(1000 + i) + ".dcm";
    std::filesystem::copy_file(source, path);
    list += " " + path;
  }
  REQUIRE(run_command("dcmodify -q -nb -gin" + list) == 0);
  return list;
}

inline bool have_storescu() { return std::system("storescu --version > /dev/null 2>&1") == 0; }

}  // namespace mm::test
