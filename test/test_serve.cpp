// mm-serve end to end: the built binary on a free loopback port, fed by DCMTK's
// dcmsend and storescu (Debian package dcmtk) with real files of ../shared/data, classifying
// with a tiny model. Its JSONL records must equal mm-predict's on the same
// files; refused calling AE titles and non-image SOP classes are refused and
// logged; SIGTERM ends it with exit code 0.
#include <doctest/doctest.h>

#ifdef MM_HAVE_SERVE

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval_test_util.h"
#include "io/csv.h"
#include "model/default_model.h"
#include "model/model_file.h"
#include "serve_test_util.h"
#include "tiny_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using mm::test::ServeProcess;

namespace {

// Distinct SOP instances in many transfer syntaxes: explicit little and big
// endian, deflate, JPEG baseline and extended, JPEG-LS lossless and near-
// lossless, JPEG 2000, RLE (two frames), palette colour.
const char* const kFiles[] = {
    "CT_small.dcm",          "ExplVR_BigEnd.dcm",     "image_dfl.dcm",           "SC_rgb_jpeg_dcmtk.dcm",
    "JPGExtended.dcm",       "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_08.dcm", "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm", "examples_palette.dcm",
};

std::string file_list(const std::string& folder) {
  std::string list;
  for (const char* f : kFiles) list += " " + folder + "/" + f;
  return list;
}

// Records keyed by SOP Instance UID and frame, without their path (the server's
// name the file in done/, mm-predict's the file given).
std::map<std::string, json> records_by_instance(const std::string& path) {
  std::map<std::string, json> out;
  std::istringstream lines(mm::read_text_file(path));
  for (std::string line; std::getline(lines, line);) {
    json r = json::parse(line);
    const std::string key = r.value("sop_uid", "") + "#" + std::to_string(r.value("frame", -1));
    r.erase("path");
    REQUIRE_MESSAGE(out.emplace(key, r).second, "two records for " << key << " in " << path);
  }
  return out;
}

struct ServeFixture {
  mm::test::ScratchDir dir;
  std::string data, model, out, log;
  ServeFixture() {
    data = mm::test::shared_data_dir();
    model = dir.path() + "/tiny.safetensors";
    mm::test::save_tiny_model(model, {"normal", "benign", "malignant"}, 17);
    out = dir.path() + "/out";
    log = dir.path() + "/serve.log";
  }
  std::string pydicom() const { return data + "/dicom/pydicom/test_files"; }
  std::string log_text() const { return fs::exists(log) ? mm::read_text_file(log) : ""; }
};

bool usable(const ServeFixture& f) {
  if (f.data.empty()) return false;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package (storescu): see setup.sh");
  REQUIRE_MESSAGE(fs::exists(mm::test::kServeBinary), "build the mm-serve target");
  return true;
}

}  // namespace

TEST_CASE("mm-serve: instances sent by storescu get mm-predict's records, once each") {
  ServeFixture f;
  if (!usable(f)) return;
  const size_t n = std::size(kFiles);
  {
    // One image per forward pass, here and for mm-predict below: a batch's
    // composition moves float32 results in the last digits.
    ServeProcess server(f.out, "--model " + f.model + " --threads 2 --batch-size 1 -v", f.log);
    CHECK(mm::test::dcmsend(server.port(), "TESTER", file_list(f.pydicom()), f.dir.path() + "/scu.log") == 0);
    const bool all = mm::test::wait_until(
        [&] {
          const json s = mm::test::serve_status(f.out);
          return s.is_object() && s.value("classified", 0) + s.value("failed", 0) == int(n);
        },
        120);
    CHECK_MESSAGE(all, "status: " << mm::test::serve_status(f.out).dump() << "\nlog:\n" << f.log_text());
    const json status = mm::test::serve_status(f.out);
    CHECK(status["received"] == n);
    CHECK(status["classified"] == n);
    CHECK(status["failed"] == 0);
    CHECK(status["queued"] == 0);
    CHECK(server.stop(SIGTERM) == 0);
  }
  CHECK(mm::test::serve_status(f.out)["state"] == "stopped");
  // Logging survives the DICOM reader's reconfiguration of OFLog (the classifier's lines come after it).
  CHECK(f.log_text().find("classified ") != std::string::npos);
  CHECK(f.log_text().find("mm-serve: stopped; 10 received, 10 classified, 0 failed") != std::string::npos);
  CHECK(fs::is_empty(f.out + "/incoming"));
  CHECK(size_t(std::distance(fs::directory_iterator(f.out + "/done"), fs::directory_iterator())) == n);

  const std::string reference = f.dir.path() + "/mm-predict.jsonl";
  REQUIRE(mm::test::run_command(std::string(MM_BINARY_DIR) + "/mm-predict -q --threads 2 --batch-size 1 --model " +
                                f.model + " --format jsonl -o " + reference + file_list(f.pydicom())) == 0);
  const std::map<std::string, json> want = records_by_instance(reference);
  const std::map<std::string, json> got = records_by_instance(f.out + "/records.jsonl");
  CHECK(want.size() == n + 1);  // the RLE file has two frames
  CHECK(got == want);
  // The server's paths name the files in done/.
  std::istringstream lines(mm::read_text_file(f.out + "/records.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const json r = json::parse(line);
    CHECK(r["path"] == f.out + "/done/" + r["sop_uid"].get<std::string>() + ".dcm");
    CHECK(fs::exists(r["path"].get<std::string>()));
  }

  SUBCASE("the same instances again: stored, not classified twice") {
    ServeProcess server(f.out, "--model " + f.model + " --threads 2", f.log);
    CHECK(mm::test::dcmsend(server.port(), "TESTER", file_list(f.pydicom()), f.dir.path() + "/scu2.log") == 0);
    CHECK(mm::test::wait_until(
        [&] {
          const json s = mm::test::serve_status(f.out);
          return s.is_object() && s.value("duplicates", 0) == int(n);
        },
        60));
    CHECK(server.stop(SIGINT) == 0);
    CHECK(records_by_instance(f.out + "/records.jsonl") == want);
  }
}

TEST_CASE("mm-serve refuses calling AE titles outside --allow and SOP classes that are not images") {
  ServeFixture f;
  if (!usable(f)) return;
  ServeProcess server(f.out, "--model " + f.model + " --allow TESTER --allow OTHER -v", f.log);
  const std::string ct = f.pydicom() + "/CT_small.dcm";

  CHECK(mm::test::storescu(server.port(), "INTRUDER", ct, f.dir.path() + "/intruder.log") != 0);
  CHECK(mm::read_text_file(f.dir.path() + "/intruder.log").find("Association Rejected") != std::string::npos);
  CHECK(f.log_text().find("refusing association from AE 'INTRUDER' at 127.0.0.1: calling AE title not in --allow") !=
        std::string::npos);

  // A Basic Text SR: its presentation context, the only one proposed, is
  // rejected, and with it the association.
  const std::string sr = f.pydicom() + "/reportsi.dcm";
  CHECK(mm::test::storescu(server.port(), "OTHER", sr, f.dir.path() + "/sr.log") != 0);
  CHECK(mm::read_text_file(f.dir.path() + "/sr.log").find("Association Rejected") != std::string::npos);
  CHECK(f.log_text().find("refusing presentation contexts of AE 'OTHER' at 127.0.0.1 for SOP classes that are not "
                          "image storage: BasicTextSRStorage") != std::string::npos);

  // A CT instance without pixel data: status 0xA900, nothing stored.
  const std::string no_pixels = f.dir.path() + "/no_pixels.dcm";
  fs::copy_file(ct, no_pixels);
  REQUIRE(mm::test::run_command("dcmodify -q -nb -e '(7fe0,0010)' " + no_pixels) == 0);
  CHECK(mm::test::storescu(server.port(), "TESTER", no_pixels, f.dir.path() + "/no_pixels.log") != 0);
  CHECK(f.log_text().find("rejecting 1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322 from AE 'TESTER' at 127.0.0.1: "
                          "no pixel data in an image storage SOP instance (status 0xA900)") != std::string::npos);

  // Absurd headers over uncompressed pixel data: refused at receipt with the reader's checks.
  const std::string bits12 = f.dir.path() + "/bits12.dcm", tall = f.dir.path() + "/tall.dcm";
  fs::copy_file(ct, bits12);
  fs::copy_file(ct, tall);
  REQUIRE(mm::test::run_command("dcmodify -q -nb -m '(0028,0100)=12' " + bits12) == 0);
  REQUIRE(mm::test::run_command("dcmodify -q -nb -m '(0028,0010)=4096' " + tall) == 0);
  CHECK(mm::test::storescu(server.port(), "TESTER", bits12, f.dir.path() + "/bits12.log") != 0);
  CHECK(mm::test::storescu(server.port(), "TESTER", tall, f.dir.path() + "/tall.log") != 0);
  CHECK(f.log_text().find("BitsAllocated 12 (status 0xA900)") != std::string::npos);
  CHECK(f.log_text().find("pixel data of 32768 bytes, where the header's Rows, Columns, frames and bits need "
                          "1048576 (status 0xA900)") != std::string::npos);

  // C-ECHO (Verification) from an allowed sender.
  CHECK(mm::test::run_scu("echoscu -aet TESTER -aec MM-SERVE 127.0.0.1 " + std::to_string(server.port()),
                          f.dir.path() + "/echo.log") == 0);

  // An allowed sender's image still goes through.
  CHECK(mm::test::storescu(server.port(), "TESTER", ct, f.dir.path() + "/ct.log") == 0);
  CHECK(mm::test::wait_until([&] { return mm::test::serve_status(f.out).value("classified", 0) == 1; }, 60));
  const json s = mm::test::serve_status(f.out);
  CHECK(s["refused_associations"] == 1);
  CHECK(s["received"] == 1);
  CHECK(s["rejected"] == 3);
  CHECK(server.stop(SIGTERM) == 0);
}


TEST_CASE("mm-serve without --model serves the shipped default model, as mm-predict does") {
  ServeFixture f;
  if (!usable(f)) return;
  ServeProcess server(f.out, "", f.log);
  CHECK(server.stop(SIGTERM) == 0);
  CHECK(f.log_text().find("model " + mm::find_default_model() + " on cpu") != std::string::npos);
}

#endif  // MM_HAVE_SERVE
