// mm-serve's series results: with --series-timeout, each series gets a DICOM
// Comprehensive SR once idle, holding mm-predict's `--aggregate series` record
// (class, every probability, image count). Every SR passes DCMTK's dsrdump and
// dicom3tools' dciodvfy without errors.
#include <doctest/doctest.h>

#ifdef MM_HAVE_SERVE

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval_test_util.h"
#include "io/csv.h"
#include "model/model_file.h"
#include "predict/record_writer.h"
#include "serve_test_util.h"
#include "tiny_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Several series: CT, MR, the RLE pair of frames, JPEG 2000, palette colour.
const char* const kFiles[] = {"CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle_2frame.dcm",
                              "JPEG2000.dcm", "examples_palette.dcm"};

std::string output_of(const std::string& command, const std::string& file) {
  mm::test::run_command(command + " > " + file + " 2>&1");
  return mm::read_text_file(file);
}

// mm-predict's series records (--aggregate series) for the files.
std::vector<json> series_records(const std::string& model, const std::string& files, const std::string& jsonl) {
  REQUIRE(mm::test::run_command(std::string(MM_BINARY_DIR) + "/mm-predict -q --threads 2 --batch-size 1 --model " +
                                model + " --aggregate series --format jsonl -o " + jsonl + files) == 0);
  std::vector<json> series;
  std::istringstream lines(mm::read_text_file(jsonl));
  for (std::string line; std::getline(lines, line);) {
    const json r = json::parse(line);
    if (r["level"] == "series") series.push_back(r);
  }
  return series;
}

size_t reports_in(const std::string& folder) {
  return fs::exists(folder) ? size_t(std::distance(fs::directory_iterator(folder), fs::directory_iterator())) : 0;
}

}  // namespace

TEST_CASE("mm-serve --series-timeout: one SR per series with mm-predict's series means; dsrdump and dciodvfy accept it") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package: see setup.sh");
  mm::test::ScratchDir dir;
  const std::vector<std::string> classes = {"normal", "benign", "malignant"};
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, classes, 23);
  std::string files;
  for (const char* f : kFiles) files += " " + data + "/dicom/pydicom/test_files/" + f;
  const std::string out = dir.path() + "/out";

  const std::vector<json> series = series_records(model, files, dir.path() + "/series.jsonl");
  REQUIRE(series.size() >= 3);

  {
    mm::test::ServeProcess server(out, "--model " + model + " --threads 2 --batch-size 1 --series-timeout 1 -v",
                                  dir.path() + "/serve.log");
    CHECK(mm::test::dcmsend(server.port(), "TESTER", files, dir.path() + "/send.log") == 0);
    CHECK(mm::test::wait_until(
        [&] { return mm::test::serve_status(out).value("series_reports", 0) == int(series.size()); }, 60));
    CHECK(server.stop(SIGTERM) == 0);
  }

  std::vector<std::string> dumps;
  const bool have_dciodvfy = mm::test::run_command("command -v dciodvfy > /dev/null") == 0;
  for (const auto& e : fs::directory_iterator(out + "/reports")) {
    const std::string sr = e.path().string();
    const std::string dump = output_of("dsrdump +Pl " + sr, dir.path() + "/dsrdump.txt");
    CHECK_MESSAGE(dump.find("E: ") == std::string::npos, dump);
    // Warnings other than DCMTK's note that its VR checker skips UTF-8 (ISO_IR 192,
    // copied from a source that uses it) would be findings too.
    std::istringstream dump_lines(dump);
    for (std::string line; std::getline(dump_lines, line);)
      CHECK_MESSAGE((line.rfind("W: ", 0) != 0 || line.find("Specific Character Set") != std::string::npos), line);
    CHECK(dump.find("Comprehensive SR Document") != std::string::npos);
    CHECK(dump.find("Not for clinical use") != std::string::npos);
    CHECK(dump.find("tiny.safetensors (fnv1a64 ") != std::string::npos);
    dumps.push_back(dump);
    if (have_dciodvfy) {
      const std::string verdict = output_of("dciodvfy " + sr, dir.path() + "/dciodvfy.txt");
      CHECK_MESSAGE(verdict.find("Error") == std::string::npos, sr << ":\n" << verdict);
    } else {
      MESSAGE("dciodvfy not installed (apt-get install dicom3tools): SRs checked with dsrdump only");
    }
  }
  CHECK(dumps.size() == series.size());

  // Each series record of mm-predict is in one SR: class, probabilities, image count.
  for (const json& r : series) {
    int matches = 0;
    for (const std::string& dump : dumps) {
      bool all = dump.find("\"Predicted class\")=\"" + r["label"].get<std::string>() + "\"") != std::string::npos &&
                 dump.find("\"Images classified\")=\"" + std::to_string(r["images"].get<int>()) + "\"") !=
                     std::string::npos;
      for (const std::string& c : classes)
        all = all && dump.find("\"Probability of " + c + "\")=\"" +
                               mm::format_number(r["probabilities"][c].get<double>()) + "\"") != std::string::npos;
      matches += all;
    }
    CHECK_MESSAGE(matches == 1, "series " << r["series_uid"] << " in " << matches << " SRs; SRs:\n"
                                          << (dumps.empty() ? "" : dumps[0]));
  }
}

TEST_CASE("mm-serve: series classified before a SIGKILL are reported after the restart, once") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package: see setup.sh");
  mm::test::ScratchDir dir;
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, {"normal", "benign", "malignant"}, 23);
  std::string files;
  for (const char* f : kFiles) files += " " + data + "/dicom/pydicom/test_files/" + f;
  const std::vector<json> series = series_records(model, files, dir.path() + "/series.jsonl");
  const std::string out = dir.path() + "/out", log = dir.path() + "/serve.log";
  const std::string args = "--model " + model + " --threads 2 --batch-size 1 --series-timeout ";
  {  // Classified, but the series are not idle long enough to be reported before the kill.
    mm::test::ServeProcess server(out, args + "600", log);
    CHECK(mm::test::dcmsend(server.port(), "TESTER", files, dir.path() + "/send.log") == 0);
    CHECK(mm::test::wait_until([&] { return mm::test::serve_status(out).value("classified", 0) == 5; }, 60));
    CHECK(server.stop(SIGKILL) == 128 + SIGKILL);
  }
  CHECK(reports_in(out + "/reports") == 0);
  {
    mm::test::ServeProcess server(out, args + "0.3", log);
    CHECK(mm::test::wait_until(
        [&] { return mm::test::serve_status(out).value("series_reports", 0) == int(series.size()); }, 60));
    CHECK(server.stop(SIGTERM) == 0);
  }
  CHECK(reports_in(out + "/reports") == series.size());
  for (const auto& e : fs::directory_iterator(out + "/reports")) {
    const std::string dump = output_of("dsrdump +Pl " + e.path().string(), dir.path() + "/dsrdump.txt");
    bool found = false;
    for (const json& r : series)
      found = found || (dump.find("\"Predicted class\")=\"" + r["label"].get<std::string>() + "\"") != std::string::npos &&
                        dump.find("\"Images classified\")=\"" + std::to_string(r["images"].get<int>()) + "\"") !=
                            std::string::npos);
    CHECK_MESSAGE(found, dump);
  }
  {  // Everything is reported: a third start writes nothing.
    mm::test::ServeProcess server(out, args + "0.1", log);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    CHECK(server.stop(SIGTERM) == 0);
  }
  CHECK(mm::test::serve_status(out)["series_reports"] == 0);
  CHECK(reports_in(out + "/reports") == series.size());
}

TEST_CASE("mm-serve --forward-to: series reports reach a C-STORE SCP, and wait in a queue while it is down") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package: see setup.sh");
  mm::test::ScratchDir dir;
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, {"a", "b"}, 29);
  const std::string pyd = data + "/dicom/pydicom/test_files/";
  const std::string out = dir.path() + "/out", received = dir.path() + "/received", log = dir.path() + "/serve.log";
  fs::create_directories(received);
  const int port = mm::test::free_port();
  const std::string args = "--model " + model + " --series-timeout 0.3 --forward-to STORESCP@127.0.0.1:" +
                           std::to_string(port) + " -v";
  auto sr_files = [&] {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(received)) n += e.path().filename().string().rfind("SR", 0) == 0;
    return n;
  };

  {  // Nothing listens yet: the report stays queued.
    mm::test::ServeProcess server(out, args, log);
    CHECK(mm::test::dcmsend(server.port(), "TESTER", pyd + "CT_small.dcm", dir.path() + "/send1.log") == 0);
    CHECK(mm::test::wait_until([&] { return mm::test::serve_status(out).value("series_reports", 0) == 1; }, 60));
    CHECK(server.stop(SIGTERM) == 0);
  }
  CHECK(mm::test::serve_status(out)["forwarded"] == 0);
  CHECK(std::distance(fs::directory_iterator(out + "/forward-queue"), fs::directory_iterator()) == 1);
  CHECK(mm::read_text_file(log).find("forwarding to STORESCP@127.0.0.1:" + std::to_string(port) + ": 0 of 1 sent") !=
        std::string::npos);

  // DCMTK's storescp receives; a restart sends the queued report, then the new one.
  const pid_t storescp = mm::test::spawn("storescp -od " + received + " " + std::to_string(port) + " > " +
                                         dir.path() + "/storescp.log 2>&1");
  {
    mm::test::ServeProcess server(out, args, log);
    CHECK(mm::test::wait_until([&] { return sr_files() == 1; }, 30));
    CHECK(mm::test::dcmsend(server.port(), "TESTER", pyd + "MR_small.dcm", dir.path() + "/send2.log") == 0);
    CHECK(mm::test::wait_until([&] { return sr_files() == 2; }, 60));
    CHECK(server.stop(SIGTERM) == 0);
  }
  mm::test::end(storescp);
  CHECK(mm::test::serve_status(out)["forwarded"] == 2);
  CHECK(fs::is_empty(out + "/forward-queue"));
  for (const auto& e : fs::directory_iterator(received))
    CHECK(mm::test::run_command("dsrdump -q " + e.path().string() + " > /dev/null") == 0);
}

#endif  // MM_HAVE_SERVE
