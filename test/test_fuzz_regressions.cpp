// Replays each fuzz target's committed corpus (its seeds and fuzz/regressions/<target>/,
// every input that ever crashed, hung or ran out of memory) through the same body the
// libFuzzer target runs (fuzz/<target>_body.h), so the suite checks them without clang.
// The body returns for a result or an mm::Error; a crash or any other exception fails.
// Hangs and memory limits are enforced where a time and RSS limit exist: fuzz/run.sh.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "../fuzz/fuzz_npz_body.h"
#include "../fuzz/fuzz_safetensors_body.h"
#include "../fuzz/fuzz_tables_body.h"
#include "../fuzz/fuzz_torch_checkpoint_body.h"
#include "../fuzz/fuzz_torch_pickle_body.h"
#ifdef MM_HAVE_IMAGING
#include "../fuzz/fuzz_dicom_body.h"
#include "../fuzz/fuzz_jpeg_lossless_body.h"
#include "../fuzz/fuzz_jpegls_body.h"
#include "../fuzz/fuzz_nifti_body.h"
#include "../fuzz/fuzz_picture_body.h"
#endif

namespace fs = std::filesystem;

namespace {

// The seed folders a target declares in its "// fuzz-seeds:" line (fuzz/run.sh reads the same line).
std::vector<fs::path> declared_seed_dirs(const std::string& target) {
  const fs::path root = MM_SOURCE_DIR;
  std::ifstream src(root / "fuzz" / (target + ".cpp"));
  REQUIRE_MESSAGE(src, "fuzz/" << target << ".cpp not found");
  const std::string prefix = "// fuzz-seeds:";
  std::vector<fs::path> dirs;
  for (std::string line; std::getline(src, line);) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    std::istringstream words(line.substr(prefix.size()));
    for (std::string dir; words >> dir;) dirs.push_back(root / dir);
  }
  return dirs;
}

// Every committed input of a target, sorted so a failure names the same file each run.
std::vector<fs::path> committed_inputs(const std::string& target) {
  std::vector<fs::path> dirs = declared_seed_dirs(target);
  dirs.push_back(fs::path(MM_SOURCE_DIR) / "fuzz" / "regressions" / target);
  std::vector<fs::path> files;
  for (const fs::path& dir : dirs) {
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      const std::string ext = entry.path().extension().string();
      if (entry.is_regular_file() && name[0] != '.' && ext != ".md" && ext != ".py") files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void replay(const std::string& target, void (*fuzz_one)(const uint8_t*, size_t)) {
  const std::vector<fs::path> inputs = committed_inputs(target);
  REQUIRE_MESSAGE(!inputs.empty(), target << " has no seeds");
  for (const fs::path& path : inputs) {
    const std::vector<uint8_t> bytes = file_bytes(path);
    INFO(target << " input " << fs::relative(path, MM_SOURCE_DIR).string() << " (" << bytes.size() << " bytes)");
    CHECK_NOTHROW(fuzz_one(bytes.data(), bytes.size()));
  }
}

}  // namespace

TEST_CASE("fuzz regressions: fuzz_npz") { replay("fuzz_npz", fuzz_one_npz); }
TEST_CASE("fuzz regressions: fuzz_safetensors") { replay("fuzz_safetensors", fuzz_one_safetensors); }
TEST_CASE("fuzz regressions: fuzz_tables") { replay("fuzz_tables", fuzz_one_table); }
TEST_CASE("fuzz regressions: fuzz_torch_checkpoint") { replay("fuzz_torch_checkpoint", fuzz_one_torch_checkpoint); }
TEST_CASE("fuzz regressions: fuzz_torch_pickle") { replay("fuzz_torch_pickle", fuzz_one_torch_pickle); }
#ifdef MM_HAVE_IMAGING
TEST_CASE("fuzz regressions: fuzz_dicom") { replay("fuzz_dicom", fuzz_one_dicom); }
TEST_CASE("fuzz regressions: fuzz_nifti") { replay("fuzz_nifti", fuzz_one_nifti); }
TEST_CASE("fuzz regressions: fuzz_picture") { replay("fuzz_picture", fuzz_one_picture); }
TEST_CASE("fuzz regressions: fuzz_jpeg_lossless") { replay("fuzz_jpeg_lossless", fuzz_one_jpeg_lossless); }
TEST_CASE("fuzz regressions: fuzz_jpegls") { replay("fuzz_jpegls", fuzz_one_jpegls); }
#endif
