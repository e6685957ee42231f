#include "serve/forwarder.h"

#include <unistd.h>

#include <filesystem>
#include <vector>

#include "core/error.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/dstorscu.h"
#include "serve/durable_files.h"
#include "serve/serve_log.h"

namespace mm::serve {

namespace {

// Remembers which files the receiver accepted (success or warning statuses).
class CollectingStorageScu : public DcmStorageSCU {
 public:
  std::vector<std::string> accepted;

 protected:
  void notifySOPInstanceSent(const TransferEntry& entry) override {
    DcmStorageSCU::notifySOPInstanceSent(entry);
    const Uint16 s = entry.ResponseStatusCode;
    if (entry.RequestSent && (s == 0x0000 || (s & 0xF000) == 0xB000))
      accepted.push_back(entry.Filename.getCharPointer());
    else
      OFLOG_WARN(serve_logger(), "forwarding " << entry.Filename.getCharPointer() << ": status 0x" << std::hex << s
                                               << std::dec << " (kept in the queue)");
  }
};

}  // namespace

ForwardTarget parse_forward_target(const std::string& text) {
  const size_t at = text.find('@'), colon = text.rfind(':');
  const std::string form = "--forward-to '" + text + "': give AE@host:port (e.g. PACS@10.0.0.5:104)";
  MM_CHECK(at != std::string::npos && colon != std::string::npos && at > 0 && colon > at + 1 &&
               colon + 1 < text.size() && at <= 16,
           form);
  ForwardTarget t;
  t.ae_title = text.substr(0, at);
  t.host = text.substr(at + 1, colon - at - 1);
  try {
    size_t used = 0;
    t.port = std::stoi(text.substr(colon + 1), &used);
    MM_CHECK(used == text.size() - colon - 1 && t.port > 0 && t.port < 65536, form);
  } catch (const std::logic_error&) {
    throw Error(form);
  }
  return t;
}

Forwarder::Forwarder(const ForwardTarget& target, const std::string& our_ae_title, const std::string& queue_folder)
    : target_(target), our_ae_title_(our_ae_title), queue_(queue_folder) {
  make_folder(queue_);
}

void Forwarder::enqueue(const std::string& path) {
  const std::string queued = queue_ + "/" + std::filesystem::path(path).filename().string();
  if (::link(path.c_str(), queued.c_str()) != 0 && errno != EEXIST)
    throw Error(path + ": cannot queue it for forwarding in " + queue_);
  sync_path(queue_);
}

int Forwarder::send_queued(bool force) {
  const std::vector<std::string> names = folder_entries(queue_);
  if (names.empty() || (!force && std::chrono::steady_clock::now() < retry_after_)) return 0;
  CollectingStorageScu scu;
  scu.setAETitle(our_ae_title_.c_str());
  scu.setPeerAETitle(target_.ae_title.c_str());
  scu.setPeerHostName(target_.host.c_str());
  scu.setPeerPort(Uint16(target_.port));
  scu.setConnectionTimeout(10);
  scu.setACSETimeout(10);
  scu.setDIMSETimeout(30);
  scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  for (const std::string& name : names) scu.addDicomFile((queue_ + "/" + name).c_str(), ERM_fileOnly, OFFalse);
  OFCondition c = scu.addPresentationContexts();
  if (c.good()) c = scu.initNetwork();
  if (c.good()) c = scu.negotiateAssociation();
  if (c.good()) c = scu.sendSOPInstances();
  if (scu.isConnected()) scu.releaseAssociation();
  for (const std::string& path : scu.accepted) ::unlink(path.c_str());
  if (!scu.accepted.empty()) sync_path(queue_);
  const std::string peer = target_.ae_title + "@" + target_.host + ":" + std::to_string(target_.port);
  if (c.bad() || scu.accepted.size() < names.size()) {
    OFLOG_WARN(serve_logger(), "forwarding to " << peer << ": " << scu.accepted.size() << " of " << names.size()
                                                << " sent" << (c.bad() ? std::string(": ") + c.text() : "")
                                                << "; retrying in 10 s");
    retry_after_ = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  } else {
    OFLOG_INFO(serve_logger(), "forwarded " << names.size() << " reports to " << peer);
  }
  return int(scu.accepted.size());
}

}  // namespace mm::serve
