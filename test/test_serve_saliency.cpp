// mm-serve --saliency-sc: a DICOM Secondary Capture per classified image, its
// pixels mm-predict --saliency's PNG overlay of the same image, in the
// source's study and a new series, referencing the source instance,
// marked not for clinical use, valid for dicom3tools' dciodvfy (no errors),
// readable by our own DICOM reader, and forwarded with --forward-to.
#include <doctest/doctest.h>

#ifdef MM_HAVE_SERVE

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "eval_test_util.h"
#include "imaging/image_reader.h"
#include "io/csv.h"
#include "serve_test_util.h"
#include "tiny_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// CT, MR (grey) and an RGB pair of frames (RLE: dcmsend keeps it compressed).
const char* const kFiles[] = {"CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm"};
const size_t kImages = 4;

std::string value(DcmItem& item, const DcmTagKey& tag) {
  OFString v;
  item.findAndGetOFStringArray(tag, v);
  return v.c_str();
}

// dciodvfy's findings, one per line ("Error - ..." / "Warning - ..."), without its IOD name line.
std::string dciodvfy(const std::string& path, const std::string& scratch) {
  mm::test::run_command("dciodvfy " + path + " > " + scratch + " 2>&1");
  std::istringstream lines(mm::read_text_file(scratch));
  std::string findings;
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("Error", 0) == 0 || line.rfind("Warning", 0) == 0) findings += line + "\n";
  return findings;
}

}  // namespace

TEST_CASE("mm-serve --saliency-sc: a valid Secondary Capture per image with mm-predict's overlay pixels") {
  const std::string data = mm::test::shared_data_dir();
  if (data.empty()) return;
  REQUIRE_MESSAGE(mm::test::have_storescu(), "install Debian's dcmtk package: see setup.sh");
  const bool have_dciodvfy = std::system("command -v dciodvfy > /dev/null 2>&1") == 0;
  mm::test::ScratchDir dir;
  const std::string model = dir.path() + "/tiny.safetensors";
  mm::test::save_tiny_model(model, {"normal", "abnormal"}, 23);
  const std::string pyd = data + "/dicom/pydicom/test_files/";
  std::string files;
  for (const char* f : kFiles) files += " " + pyd + f;
  const std::string out = dir.path() + "/out", received = dir.path() + "/received", log = dir.path() + "/serve.log";
  fs::create_directories(received);
  const int port = mm::test::free_port();
  const pid_t storescp = mm::test::spawn("storescp -od " + received + " " + std::to_string(port) + " > " +
                                         dir.path() + "/storescp.log 2>&1");
  {
    // One image per backward pass on both sides, as for the records' equality.
    mm::test::ServeProcess server(out, "--model " + model + " --threads 2 --batch-size 1 --saliency-sc --forward-to "
                                  "STORESCP@127.0.0.1:" + std::to_string(port) + " -v", log);
    CHECK(mm::test::dcmsend(server.port(), "TESTER", files, dir.path() + "/send.log") == 0);
    CHECK(mm::test::wait_until(
        [&] { return mm::test::serve_status(out).value("forwarded", 0) == int(kImages); }, 60));
    CHECK(server.stop(SIGTERM) == 0);
  }
  mm::test::end(storescp);
  const json status = mm::test::serve_status(out);
  CHECK(status["classified"] == std::size(kFiles));
  CHECK(status["saliency_captures"] == kImages);
  CHECK(status["forwarded"] == kImages);
  CHECK(mm::test::files_in(out + "/saliency") == kImages);
  CHECK(mm::test::files_in(received) == kImages);
  CHECK(fs::is_empty(out + "/.saliency-work"));

  const std::string overlays = dir.path() + "/mm-predict-saliency";
  REQUIRE(mm::test::run_command(std::string(MM_BINARY_DIR) + "/mm-predict -q --threads 2 --batch-size 1 --model " +
                                model + " --saliency " + overlays + " -o " + dir.path() + "/p.csv" + files) == 0);
  // The sources by SOP Instance UID.
  std::map<std::string, std::string> source_of;
  for (const char* f : kFiles) {
    DcmFileFormat source;
    REQUIRE(source.loadFile((pyd + f).c_str()).good());
    source_of[value(*source.getDataset(), DCM_SOPInstanceUID)] = pyd + f;
  }

  std::string warnings;
  size_t checked = 0;
  for (const auto& entry : fs::directory_iterator(out + "/saliency")) {
    const std::string path = entry.path().string();
    CAPTURE(path);
    DcmFileFormat capture;
    REQUIRE(capture.loadFile(path.c_str()).good());
    DcmDataset& ds = *capture.getDataset();
    CHECK(value(ds, DCM_SOPClassUID) == UID_SecondaryCaptureImageStorage);
    CHECK(value(ds, DCM_ImageComments).find("Not for clinical use") != std::string::npos);
    CHECK(value(ds, DCM_DerivationDescription).find("Not for clinical use") != std::string::npos);
    DcmItem* reference = nullptr;
    REQUIRE(ds.findAndGetSequenceItem(DCM_SourceImageSequence, reference, 0).good());
    const std::string source_uid = value(*reference, DCM_ReferencedSOPInstanceUID);
    REQUIRE(source_of.count(source_uid) == 1);
    const std::string source_path = source_of[source_uid];
    DcmFileFormat source;
    REQUIRE(source.loadFile(source_path.c_str()).good());
    DcmDataset& src = *source.getDataset();
    CHECK(value(*reference, DCM_ReferencedSOPClassUID) == value(src, DCM_SOPClassUID));
    for (const DcmTagKey& tag : {DCM_PatientID, DCM_PatientName, DCM_StudyInstanceUID})
      CHECK(value(ds, tag) == value(src, tag));
    CHECK(value(ds, DCM_SeriesInstanceUID) != value(src, DCM_SeriesInstanceUID));

    // The RGB pair of frames is a Secondary Capture, not a multi-frame class:
    // its captures reference the instance without a frame number.
    CHECK_FALSE(reference->tagExists(DCM_ReferencedFrameNumber));

    // Both through our own readers: the capture as DICOM, mm-predict's PNGs of
    // the source's images (one per frame) through ITK; one of them is equal.
    const std::vector<mm::Image> got = mm::read_images(path);
    REQUIRE(got.size() == 1);
    std::vector<mm::Image> want;
    const std::string name = overlays + "/" + fs::path(source_path).filename().string();
    for (const std::string& png : {name + ".png", name + ".frame0000.png", name + ".frame0001.png"})
      if (fs::exists(png))
        for (mm::Image& image : mm::read_images(png))
          if (image.pixels == got[0].pixels) want.push_back(std::move(image));
    REQUIRE(want.size() == 1);
    CHECK(got[0].format == "dicom");
    CHECK(got[0].channels == 3);
    CHECK(got[0].height == want[0].height);
    CHECK(got[0].width == want[0].width);
    CHECK(got[0].width == 2 * got[0].height);  // input beside overlay
    CHECK(got[0].pixels == want[0].pixels);

    if (have_dciodvfy) {
      const std::string findings = dciodvfy(path, dir.path() + "/dciodvfy.txt");
      CHECK_MESSAGE(findings.find("Error") == std::string::npos, findings);
      warnings += findings;
    }
    ++checked;
  }
  CHECK(checked == kImages);
  if (have_dciodvfy)
    MESSAGE("dciodvfy on " << checked << " captures: " << (warnings.empty() ? "no warnings\n" : "\n" + warnings));
  else
    MESSAGE("dciodvfy (dicom3tools) not found: the captures were not checked with it");
}

#endif  // MM_HAVE_SERVE
