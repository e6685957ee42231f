#pragma once
// Accepts associations on one address (DCMTK 3.6.7 listens on every address,
// so we bind the socket ourselves and hand it to dcmnet) and runs each on a
// thread of its own, at most max_associations at once; more are rejected
// ("local limit exceeded"). run() returns once stop is set and the
// associations in flight have ended.
#include <atomic>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "serve/store_scp.h"

struct T_ASC_Network;

namespace mm::serve {

struct ListenerOptions {
  std::string ae_title = "MM-SERVE";
  std::string bind = "127.0.0.1";
  int port = 11112;  // 0: a free port, see bound_port()
  int max_associations = 8;
};

class AssociationListener {
 public:
  // Binds and listens; throws mm::Error naming the address when it cannot.
  AssociationListener(const ListenerOptions& options, const StoreSetup& setup);
  ~AssociationListener();
  int bound_port() const { return port_; }
  void run(const std::atomic<bool>& stop);

 private:
  struct Running {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void reap(bool all);

  ListenerOptions options_;
  const StoreSetup& setup_;
  T_ASC_Network* network_ = nullptr;
  int port_ = 0;
  std::list<std::unique_ptr<Running>> running_;
};

}  // namespace mm::serve
