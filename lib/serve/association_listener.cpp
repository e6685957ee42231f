#include "serve/association_listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dulstruc.h"
#include "serve/serve_log.h"

namespace mm::serve {

namespace {

int bound_socket(const std::string& address, int port, int& bound_port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  MM_CHECK(inet_pton(AF_INET, address.c_str(), &addr.sin_addr) == 1,
           "--bind " + address + ": not an IPv4 address");
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  MM_CHECK(fd >= 0, std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 64) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw Error(address + ":" + std::to_string(port) + ": cannot listen: " + why);
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  bound_port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace

AssociationListener::AssociationListener(const ListenerOptions& options, const StoreSetup& setup)
    : options_(options), setup_(setup) {
  const int fd = bound_socket(options.bind, options.port, port_);
  // dcmnet opens its own listening socket on every address (an ephemeral port
  // here); ours, bound to the one address, takes over its descriptor number.
  const OFCondition c = ASC_initializeNetwork(NET_ACCEPTOR, 0, 30, &network_);
  if (c.bad()) {
    ::close(fd);
    throw Error(std::string("cannot initialise the DICOM network: ") + c.text());
  }
  auto* key = reinterpret_cast<PRIVATE_NETWORKKEY*>(network_->network);
  const int theirs = int(key->networkSpecific.TCP.listenSocket);
  const bool moved = ::dup2(fd, theirs) == theirs;
  ::close(fd);
  if (!moved) {
    ASC_dropNetwork(&network_);
    throw Error(std::string("cannot hand the listening socket to dcmnet: ") + std::strerror(errno));
  }
  key->networkSpecific.TCP.port = port_;
}

AssociationListener::~AssociationListener() {
  reap(true);
  if (network_) ASC_dropNetwork(&network_);
}

void AssociationListener::reap(bool all) {
  for (auto it = running_.begin(); it != running_.end();) {
    if (all || (*it)->done) {
      (*it)->thread.join();
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

void AssociationListener::run(const std::atomic<bool>& stop) {
  DcmSharedSCPConfig shared(make_store_config(options_.ae_title));
  while (!stop) {
    T_ASC_Association* assoc = nullptr;
    // One second at most, so that a stop request is seen promptly.
    OFCondition c = ASC_receiveAssociation(network_, &assoc, ASC_DEFAULTMAXPDU, nullptr, nullptr, OFFalse,
                                           DUL_NOBLOCK, 1);
    reap(false);
    if (c.bad()) {
      if (c != DUL_NOASSOCIATIONREQUEST) OFLOG_ERROR(serve_logger(), "receiving an association failed: " << c.text());
      if (assoc) {
        ASC_dropAssociation(assoc);
        ASC_destroyAssociation(&assoc);
      }
      continue;
    }
    if (int(running_.size()) >= options_.max_associations) {
      OFLOG_WARN(serve_logger(), "rejecting association from " << assoc->params->DULparams.callingPresentationAddress
                                                                << ": " << running_.size()
                                                                << " associations already running (--max-associations)");
      T_ASC_RejectParameters reject{ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                                    ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED};
      ASC_rejectAssociation(assoc, &reject);
      ASC_dropAssociation(assoc);
      ASC_destroyAssociation(&assoc);
      continue;
    }
    auto entry = std::make_unique<Running>();
    Running* r = entry.get();
    r->thread = std::thread([this, r, assoc, &shared] {
      StoreScp scp(setup_);
      scp.setSharedConfig(shared);
      const OFCondition result = scp.run(assoc);  // takes over the association, frees it
      if (result.bad()) OFLOG_DEBUG(serve_logger(), "association ended: " << result.text());
      r->done = true;
    });
    running_.push_back(std::move(entry));
  }
  reap(true);  // the associations in flight finish (their DIMSE timeouts bound them)
}

}  // namespace mm::serve
