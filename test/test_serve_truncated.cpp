// mm-serve and a sender that dies mid-transfer: a DCMTK client negotiates an
// association, starts a C-STORE and shuts the TCP connection down after the
// first P-DATA fragment of the dataset. Nothing partial may land in incoming/
// or records.jsonl, the log names the sender whose transfer broke off, and the
// server goes on serving: a complete send afterwards is classified.
#include <doctest/doctest.h>

#ifdef MM_HAVE_SERVE

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "eval_test_util.h"
#include "io/csv.h"
#include "serve_test_util.h"
#include "tiny_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Cut {
  int server_port;
  bool done = false;
  long bytes_sent = 0;
};

// Shuts down both directions of this process's TCP connections to 127.0.0.1:port
// (dcmnet keeps its socket to itself), as the kernel does when the sender dies.
void shut_down_connections_to(int port) {
  for (int fd = 3; fd < 1024; ++fd) {
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 && peer.sin_family == AF_INET &&
        ntohs(peer.sin_port) == port && peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK))
      ::shutdown(fd, SHUT_RDWR);
  }
}

// DIMSE calls this after each fragment it has sent: after the first, the connection is cut.
void cut_after_first_fragment(void* data, T_DIMSE_StoreProgress* progress, T_DIMSE_C_StoreRQ*) {
  auto* cut = static_cast<Cut*>(data);
  if (cut->done || progress->state != DIMSE_StoreProgressing || progress->progressBytes <= 0) return;
  shut_down_connections_to(cut->server_port);
  cut->done = true;
  cut->bytes_sent = progress->progressBytes;
}

// Sends `file` (explicit little endian) to MM-SERVE at 127.0.0.1:port as AE
// `calling_ae`, cut off after its first dataset fragment (PDUs of 16 KiB).
// Returns the bytes of the dataset sent before the cut (0: no cut happened).
long send_cut_off(int port, const std::string& calling_ae, const std::string& file, std::string& sop_uid) {
  DcmFileFormat dicom;
  REQUIRE(dicom.loadFile(file.c_str()).good());
  DcmDataset* dataset = dicom.getDataset();
  OFString sop_class, uid;
  REQUIRE(dataset->findAndGetOFString(DCM_SOPClassUID, sop_class).good());
  REQUIRE(dataset->findAndGetOFString(DCM_SOPInstanceUID, uid).good());
  sop_uid = uid.c_str();

  T_ASC_Network* network = nullptr;
  REQUIRE(ASC_initializeNetwork(NET_REQUESTOR, 0, 30, &network).good());
  T_ASC_Parameters* params = nullptr;
  REQUIRE(ASC_createAssociationParameters(&params, 16384).good());
  ASC_setAPTitles(params, calling_ae.c_str(), "MM-SERVE", nullptr);
  ASC_setPresentationAddresses(params, "localhost", ("127.0.0.1:" + std::to_string(port)).c_str());
  const char* syntaxes[] = {UID_LittleEndianExplicitTransferSyntax};
  REQUIRE(ASC_addPresentationContext(params, 1, sop_class.c_str(), syntaxes, 1).good());
  T_ASC_Association* assoc = nullptr;
  REQUIRE(ASC_requestAssociation(network, params, &assoc).good());
  const T_ASC_PresentationContextID context = ASC_findAcceptedPresentationContextID(assoc, sop_class.c_str());
  REQUIRE(context != 0);

  T_DIMSE_C_StoreRQ request{};
  request.MessageID = assoc->nextMsgID++;
  OFStandard::strlcpy(request.AffectedSOPClassUID, sop_class.c_str(), sizeof request.AffectedSOPClassUID);
  OFStandard::strlcpy(request.AffectedSOPInstanceUID, uid.c_str(), sizeof request.AffectedSOPInstanceUID);
  request.DataSetType = DIMSE_DATASET_PRESENT;
  request.Priority = DIMSE_PRIORITY_MEDIUM;
  T_DIMSE_C_StoreRSP response{};
  DcmDataset* detail = nullptr;
  Cut cut{port};
  // Writes after the shutdown fail with EPIPE; the signal must not end the test.
  struct sigaction ignore {}, previous {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &previous);
  const OFCondition sent = DIMSE_storeUser(assoc, context, &request, nullptr, dataset, cut_after_first_fragment,
                                           &cut, DIMSE_BLOCKING, 10, &response, &detail, nullptr, 0);
  sigaction(SIGPIPE, &previous, nullptr);
  delete detail;
  CHECK(sent.bad());
  ASC_dropAssociation(assoc);
  ASC_destroyAssociation(&assoc);
  ASC_dropNetwork(&network);
  MESSAGE("cut off after " << cut.bytes_sent << " dataset bytes; the sender saw: " << std::string(sent.text()));
  return cut.done ? cut.bytes_sent : 0;
}

size_t entries_in(const std::string& folder) {  // hidden temporary files too
  return size_t(std::distance(fs::directory_iterator(folder), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("mm-serve: a transfer cut off mid-dataset leaves nothing behind, and the server keeps serving") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package (storescu): see setup.sh");
  mm::test::ScratchDir dir;
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, {"a", "b"}, 3);
  const std::string ct = data + "/dicom/pydicom/test_files/CT_small.dcm";
  // The cut instance gets its own SOP Instance UID, so that any trace of it is its own.
  const std::string copy = mm::test::make_instances(ct, dir.path() + "/cut", 1).substr(1);
  const std::string out = dir.path() + "/out", log = dir.path() + "/serve.log";
  mm::test::ServeProcess server(out, "--model " + model + " --threads 1 -v", log);

  std::string cut_uid;
  const long sent = send_cut_off(server.port(), "CUTTER", copy, cut_uid);
  CHECK(sent > 0);
  CHECK(sent < long(fs::file_size(copy)));
  const std::string broke_off = "transfer of " + cut_uid + " from AE 'CUTTER' at 127.0.0.1 broke off";
  const bool logged = mm::test::wait_until(
      [&] { return fs::exists(log) && mm::read_text_file(log).find(broke_off) != std::string::npos; }, 30);
  REQUIRE_MESSAGE(logged, "no '" << broke_off << "' in " << log);
  const std::string text = mm::read_text_file(log);
  const size_t at = text.find(broke_off);
  MESSAGE("server log: " << text.substr(at, text.find('\n', at) - at));
  CHECK(entries_in(out + "/incoming") == 0);  // the partial .tmp file is gone

  // The server still serves: a complete send is stored and classified.
  CHECK(mm::test::storescu(server.port(), "TESTER", ct, dir.path() + "/scu.log") == 0);
  CHECK(mm::test::wait_until([&] { return mm::test::serve_status(out).value("classified", 0) == 1; }, 60));
  CHECK(server.stop(SIGTERM) == 0);
  const json status = mm::test::serve_status(out);
  CHECK(status["received"] == 1);
  CHECK(status["classified"] == 1);
  CHECK(status["failed"] == 0);
  CHECK(entries_in(out + "/incoming") == 0);
  CHECK(entries_in(out + "/done") == 1);
  const std::string records = mm::read_text_file(out + "/records.jsonl");
  CHECK(std::count(records.begin(), records.end(), '\n') == 1);
  CHECK(records.find(cut_uid) == std::string::npos);
  CHECK(json::parse(records)["sop_uid"] == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322");
}

#endif  // MM_HAVE_SERVE
