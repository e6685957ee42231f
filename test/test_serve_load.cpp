// mm-serve under load: 4 concurrent storescu processes send 500 instances each
// (copies of two small real DICOM files, each with its own SOP Instance UID) to
// one server; every instance is classified exactly once and the status file's
// counts agree with the records. Prints the wall time, instances/s and the
// server's receipt-to-record latency.
#include <doctest/doctest.h>

#ifdef MM_HAVE_SERVE

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "eval_test_util.h"
#include "io/csv.h"
#include "serve_test_util.h"
#include "tiny_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

TEST_CASE("mm-serve load: 4 concurrent storescu x 500 instances, each classified exactly once") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  if (!mm::test::have_storescu()) {
    MESSAGE("skipped: storescu not found (Debian package dcmtk, see setup.sh)");
    return;
  }
  mm::test::ScratchDir dir;
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, {"a", "b", "c"}, 11);
  const int senders = 4, per_sender = 500, total = senders * per_sender;
  // Half CT (512 x 512 signed 16-bit), half MR (64 x 64): two readers' paths, small files.
  const std::string sources = data + "/dicom/pydicom/test_files/";
  std::vector<std::string> lists;
  for (int k = 0; k < senders; ++k) {
    const std::string folder = dir.path() + "/s" + std::to_string(k);
    lists.push_back(mm::test::make_instances(sources + "CT_small.dcm", folder, per_sender / 2, "ct") +
                    mm::test::make_instances(sources + "MR_small.dcm", folder, per_sender / 2, "mr"));
  }
  const std::string out = dir.path() + "/out", log = dir.path() + "/serve.log";
  mm::test::ServeProcess server(out, "--model " + model + " --threads 2 --max-associations 4", log);

  const auto start = std::chrono::steady_clock::now();
  std::vector<int> rc(size_t(senders), -1);
  std::vector<std::thread> threads;
  for (int k = 0; k < senders; ++k)
    threads.emplace_back([&, k] {
      rc[size_t(k)] = mm::test::storescu(server.port(), "LOAD" + std::to_string(k), lists[size_t(k)],
                                         dir.path() + "/scu" + std::to_string(k) + ".log", /*nodelay=*/true);
    });
  for (std::thread& t : threads) t.join();
  const double sent_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const bool all = mm::test::wait_until(
      [&] {
        const json s = mm::test::serve_status(out);
        return s.is_object() && s.value("classified", 0) + s.value("failed", 0) >= total;
      },
      120);
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(rc == std::vector<int>(size_t(senders), 0));
  REQUIRE_MESSAGE(all, "status: " << mm::test::serve_status(out).dump() << "\nlog: " << log);
  CHECK(server.stop(SIGTERM) == 0);

  std::set<std::string> uids;
  size_t records = 0, ok = 0;
  std::istringstream lines(mm::read_text_file(out + "/records.jsonl"));
  for (std::string line; std::getline(lines, line); ++records) {
    const json r = json::parse(line);
    ok += r["status"] == "ok";
    uids.insert(r["sop_uid"].get<std::string>());
  }
  CHECK(records == size_t(total));
  CHECK(ok == size_t(total));
  CHECK(uids.size() == size_t(total));
  CHECK(mm::test::files_in(out + "/done") == size_t(total));
  CHECK(mm::test::files_in(out + "/incoming") == 0);
  const json status = mm::test::serve_status(out);
  CHECK(status["state"] == "stopped");
  CHECK(status["received"] == total);
  CHECK(status["classified"] == total);
  CHECK(status["failed"] == 0);
  CHECK(status["no_image"] == 0);
  CHECK(status["duplicates"] == 0);
  CHECK(status["rejected"] == 0);
  CHECK(status["queued"] == 0);
  MESSAGE(total << " instances: sent in " << sent_s << " s, all classified after " << wall_s << " s ("
                << double(total) / wall_s << " instances/s); receipt to record p50 " << status["latency_p50_s"]
                << " s, p99 " << status["latency_p99_s"] << " s");
}

#endif  // MM_HAVE_SERVE
