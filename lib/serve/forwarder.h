#pragma once
// --forward-to AE@host:port: the series reports sent on with C-STORE (DCMTK's
// DcmStorageSCU). A report to forward is first hard-linked into a queue folder
// (durable), then sent; it leaves the queue only on a success status, so a
// receiver that is down, or a crash, delays it without losing it. Sending is
// retried at most every 10 s while it fails.
#include <chrono>
#include <string>

namespace mm::serve {

struct ForwardTarget {
  std::string ae_title, host;
  int port = 0;
};
// "AE@host:port"; throws mm::Error explaining the form otherwise.
ForwardTarget parse_forward_target(const std::string& text);

class Forwarder {
 public:
  Forwarder(const ForwardTarget& target, const std::string& our_ae_title, const std::string& queue_folder);
  // Queues a file (hard link, fsync). Throws mm::Error when it cannot.
  void enqueue(const std::string& path);
  // Sends the queued files over one association unless the last attempt failed
  // less than 10 s ago (`force` sends anyway); returns how many were accepted.
  int send_queued(bool force = false);

 private:
  ForwardTarget target_;
  std::string our_ae_title_, queue_;
  std::chrono::steady_clock::time_point retry_after_{};
};

}  // namespace mm::serve
