// The model mm-predict and mm-eval use without --model (lib/model/default_model.h): looked for
// beside an installed executable first, then in the source tree (where the build tree finds it).
#include <doctest/doctest.h>

#include <filesystem>

#include "core/install_paths.h"
#include "model/default_model.h"
#include "model/model_file.h"

namespace fs = std::filesystem;

TEST_CASE("default model: the installed location relative to the executable, then the source tree") {
  const std::vector<std::string> candidates = mm::default_model_candidates();
  REQUIRE(candidates.size() == 2);
  const fs::path exe_dir = mm::executable_dir();
  CHECK(fs::exists(exe_dir / "mm-tests"));
  CHECK(candidates[0] == (exe_dir / "../share/medmamba/models/brain-mri-224.safetensors").lexically_normal().string());
  CHECK(candidates[1] == std::string(MM_SOURCE_DIR) + "/share/models/brain-mri-224.safetensors");
}

TEST_CASE("default model: the build tree finds the shipped brain MRI model, which loads") {
  const std::string path = mm::find_default_model();
  CHECK(fs::equivalent(path, std::string(MM_SOURCE_DIR) + "/share/models/brain-mri-224.safetensors"));
  const mm::LoadedModel loaded = mm::load_model(path);
  REQUIRE(loaded.meta.config.num_classes == 4);
  CHECK(loaded.meta.class_name(0) == "glioma");
  CHECK(loaded.meta.class_name(3) == "pituitary");
}
