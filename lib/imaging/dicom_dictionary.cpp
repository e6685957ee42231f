#include "imaging/dicom_dictionary.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

#include "core/install_paths.h"
#include "data/image.h"

namespace mm::dicom {

namespace {

namespace fs = std::filesystem;

// The skeleton DCMTK always has (item delimiters, group lengths) lacks Rows: knowing
// it tells a real dictionary from none, whatever DCMTK's loaded flag says.
bool dictionary_knows_rows() {
  const DcmDataDictionary& dictionary = dcmDataDict.rdlock();
  const bool known = dictionary.findEntry(DCM_Rows, nullptr) != nullptr;
  dcmDataDict.rdunlock();
  return known;
}

// Ours first (the package's copy, matching the DCMTK it was built with), then
// where Debian's (libdcmtk*) and a source build of DCMTK put theirs.
std::vector<std::string> dictionary_candidates() {
  std::vector<std::string> found;
  const std::string share = installed_share_dir();
  if (!share.empty()) found.push_back(share + "/dicom.dic");
  for (const auto& [root, prefix] : {std::pair{"/usr/share", "libdcmtk"}, std::pair{"/usr/local/share", "dcmtk"}}) {
    std::error_code ec;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().filename().string().rfind(prefix, 0) == 0) found.push_back((it->path() / "dicom.dic").string());
  }
  return found;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Empty when the dictionary is usable, else what is wrong.
std::string load_dictionary() {
  if (dictionary_knows_rows()) return {};  // DCMTK's own loading worked (DCMDICTPATH or its default path)
  const char* env = std::getenv("DCMDICTPATH");
  if (env != nullptr && *env != '\0')
    return std::string("DCMTK's data dictionary is not loaded: DCMDICTPATH=") + env +
           " names no readable DICOM dictionary (point it at DCMTK's dicom.dic, or unset it to use the one "
           "installed with the tools)";
  const std::vector<std::string> candidates = dictionary_candidates();
  for (const std::string& path : candidates) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) continue;
    dcmDataDict.wrlock().loadDictionary(path.c_str(), OFFalse);
    dcmDataDict.wrunlock();
    if (dictionary_knows_rows()) return {};
  }
  std::string looked = join(candidates);
#ifdef DCM_DICT_DEFAULT_PATH
  looked = std::string(DCM_DICT_DEFAULT_PATH) + (looked.empty() ? "" : ", ") + looked;
#endif
  return "DCMTK's data dictionary is not loaded, so no DICOM file can be read correctly (looked for dicom.dic in " +
         looked + "): set DCMDICTPATH to DCMTK's dicom.dic";
}

}  // namespace

void require_data_dictionary(const std::string& what) {
  static const std::string problem = load_dictionary();  // once per process; static init is thread-safe
  if (!problem.empty()) throw ImageError(ImageError::Kind::Io, what, problem);
}

}  // namespace mm::dicom
