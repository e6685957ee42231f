#pragma once
// The model mm-predict and mm-eval use when --model is not given: the shipped
// share/models/<kDefaultModelName>.safetensors, found beside an installed or
// copied toolkit (<prefix>/share/medmamba/models/), else in the source tree the
// tools were built from (a build tree's executables).
#include <string>
#include <vector>

namespace mm {

inline constexpr const char* kDefaultModelName = "brain-mri-224";

// Where the default model is looked for, in order.
std::vector<std::string> default_model_candidates();

// The first candidate that is a file; throws mm::Error listing every place looked in.
std::string find_default_model();

}  // namespace mm
