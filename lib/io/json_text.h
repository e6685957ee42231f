#pragma once
// JSON text from strings that may not be UTF-8: file names, and DICOM strings in
// other character sets (ISO-IR 100 patient names), which nlohmann_json's dump()
// refuses with an exception. Such bytes become U+FFFD here, as in mm-predict's records.
#include <string>

#include <nlohmann/json.hpp>

namespace mm {

template <class Json>
std::string json_text(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

// Whether s is valid UTF-8 (what JSON text must be).
inline bool is_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace mm
