// mm-serve's "nothing lost, nothing twice": SIGKILL during a storescu transfer
// of 200 instances, a restart on the same folders, the whole set sent again:
// every instance then has exactly one record and one file in done/. And
// SIGTERM while four associations are sending: they complete, all classified.
#include <doctest/doctest.h>

#ifdef MM_HAVE_SERVE

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "eval_test_util.h"
#include "io/csv.h"
#include "model/model_file.h"
#include "serve_test_util.h"
#include "tiny_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using mm::test::ServeProcess;

using mm::test::files_in;
using mm::test::make_instances;

TEST_CASE("mm-serve: SIGKILL during a 200-instance transfer, restart, resend: each instance classified once") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package (storescu): see setup.sh");
  mm::test::ScratchDir dir;
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, {"a", "b"}, 5);
  const int count = 200;
  const std::string files =
      make_instances(data + "/dicom/pydicom/test_files/CT_small.dcm", dir.path() + "/instances", count);
  const std::string out = dir.path() + "/out", log = dir.path() + "/serve.log";
  const std::string args = "--model " + model + " --threads 1 --batch-size 8 -v";

  int first_send = 0;
  {
    ServeProcess server(out, args, log);
    std::thread sender([&] { first_send = mm::test::storescu(server.port(), "TESTER", files, dir.path() + "/scu1.log"); });
    const bool midway = mm::test::wait_until([&] { return files_in(out + "/incoming") + files_in(out + "/done") >= 20; }, 60);
    CHECK(server.stop(SIGKILL) == 128 + SIGKILL);
    sender.join();
    REQUIRE(midway);
  }
  CHECK(first_send != 0);  // storescu saw the server die mid-transfer
  const size_t stored_before = files_in(out + "/incoming") + files_in(out + "/done");
  CHECK(stored_before < size_t(count));
  MESSAGE(stored_before << " of " << count << " instances stored before SIGKILL");

  {
    ServeProcess server(out, args, log);
    CHECK(mm::test::storescu(server.port(), "TESTER", files, dir.path() + "/scu2.log") == 0);
    CHECK(mm::test::wait_until([&] { return files_in(out + "/done") == size_t(count); }, 120));
    CHECK(mm::test::wait_until([&] { return mm::test::serve_status(out).value("queued", -1) == 0; }, 30));
    CHECK(server.stop(SIGTERM) == 0);
  }
  CHECK(files_in(out + "/incoming") == 0);
  CHECK(files_in(out + "/done") == size_t(count));
  std::set<std::string> uids;
  size_t records = 0;
  std::istringstream lines(mm::read_text_file(out + "/records.jsonl"));
  for (std::string line; std::getline(lines, line); ++records) {
    const json r = json::parse(line);
    CHECK(r["status"] == "ok");
    uids.insert(r["sop_uid"].get<std::string>());
  }
  CHECK(records == size_t(count));
  CHECK(uids.size() == size_t(count));
  CHECK(mm::test::serve_status(out)["received"] == count);  // the second run: all 200 again
}

TEST_CASE("mm-serve: SIGTERM during a transfer finishes it; concurrent associations each get their instances in") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package (storescu): see setup.sh");
  mm::test::ScratchDir dir;
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, {"a", "b"}, 5);
  const std::string ct = data + "/dicom/pydicom/test_files/CT_small.dcm";
  std::vector<std::string> lists;
  for (int k = 0; k < 4; ++k) lists.push_back(make_instances(ct, dir.path() + "/s" + std::to_string(k), 30));
  const std::string out = dir.path() + "/out", log = dir.path() + "/serve.log";

  mm::test::ServeProcess server(out, "--model " + model + " --threads 1 --max-associations 4 -v", log);
  std::vector<int> rc(4, -1);
  std::vector<std::thread> senders;
  for (int k = 0; k < 4; ++k)
    senders.emplace_back([&, k] {
      rc[size_t(k)] = mm::test::storescu(server.port(), "S" + std::to_string(k), lists[size_t(k)],
                                         dir.path() + "/scu" + std::to_string(k) + ".log");
    });
  // SIGTERM once each sender has stored an instance: the four associations are running and must complete.
  CHECK(mm::test::wait_until(
      [&] {
        const std::string text = fs::exists(log) ? mm::read_text_file(log) : "";
        for (int k = 0; k < 4; ++k)
          if (text.find("from AE 'S" + std::to_string(k) + "'") == std::string::npos) return false;
        return true;
      },
      60));
  const int code = server.stop(SIGTERM, 120);
  for (std::thread& t : senders) t.join();
  CHECK(code == 0);
  CHECK(rc == std::vector<int>(4, 0));
  CHECK(files_in(out + "/done") == 120);
  CHECK(files_in(out + "/incoming") == 0);
  const std::string text = mm::read_text_file(log);
  CHECK(text.find("SIGTERM: no new associations") < text.rfind("stored "));  // instances arrived after SIGTERM
  const json status = mm::test::serve_status(out);
  CHECK(status["state"] == "stopped");
  CHECK(status["received"] == 120);
  CHECK(status["classified"] == 120);
}

#endif  // MM_HAVE_SERVE
