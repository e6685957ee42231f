#include "model/default_model.h"

#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "core/install_paths.h"

namespace mm {

std::vector<std::string> default_model_candidates() {
  const std::string file = std::string(kDefaultModelName) + ".safetensors";
  std::vector<std::string> out;
  const std::string share = installed_share_dir();
  if (!share.empty()) out.push_back(share + "/models/" + file);
  out.push_back(std::string(MM_SOURCE_DIR) + "/share/models/" + file);  // CMakeLists.txt defines MM_SOURCE_DIR
  return out;
}

std::string find_default_model() {
  const std::vector<std::string> candidates = default_model_candidates();
  std::string looked;
  for (const std::string& path : candidates) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) return path;
    looked += (looked.empty() ? "" : ", ") + path;
  }
  throw Error(std::string("no --model given and the default model ") + kDefaultModelName +
              " is not installed (looked in " + looked + "): give --model FILE.safetensors");
}

}  // namespace mm
