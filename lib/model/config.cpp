#include "model/config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace mm {

using json = nlohmann::json;

ModelConfig ModelConfig::variant(const std::string& name, int64_t num_classes) {
  ModelConfig c;
  c.num_classes = num_classes;
  if (name == "tiny" || name == "t" || name == "T") {
    c.depths = {2, 2, 4, 2};
  } else if (name == "small" || name == "s" || name == "S") {
    c.depths = {2, 2, 8, 2};
  } else if (name == "base" || name == "b" || name == "B") {
    c.depths = {2, 2, 12, 2};
    c.dims = {128, 256, 512, 1024};
  } else {
    throw Error("unknown model variant '" + name + "' (expected tiny, small or base)");
  }
  return c;
}

int64_t ModelConfig::num_blocks() const {
  int64_t n = 0;
  for (int64_t d : depths) n += d;
  return n;
}

void ModelConfig::validate() const {
  MM_CHECK(!depths.empty() && depths.size() == dims.size(),
           "config: depths and dims must be non-empty and of equal length");
  // Upper bounds keep a hostile config (it comes from file metadata) from
  // asking for absurd allocations; they are far beyond any real MedMamba. A
  // stage's bounds come first, so that the doubling and the sum cannot overflow.
  for (size_t i = 0; i < dims.size(); ++i) {
    MM_CHECK(depths[i] >= 1, "config: every stage needs at least one block");
    MM_CHECK(depths[i] <= 1024, "config: too many stages or blocks");
    MM_CHECK(dims[i] >= 2 && dims[i] % 2 == 0, "config: dims must be even (the block splits channels in half)");
    MM_CHECK(dims[i] <= 65536, "config: dims beyond 65536 channels");
    if (i > 0) MM_CHECK(dims[i] == 2 * dims[i - 1], "config: dims[i+1] must equal 2*dims[i] (patch merging)");
  }
  MM_CHECK(num_stages() <= 8 && num_blocks() <= 1024, "config: too many stages or blocks");
  MM_CHECK(d_state >= 1 && d_state <= 256, "config: d_state must be in [1, 256]");
  MM_CHECK(num_classes >= 1 && num_classes <= (1 << 20), "config: num_classes must be in [1, 2^20]");
  MM_CHECK(in_chans >= 1 && in_chans <= 64, "config: in_chans must be in [1, 64]");
  MM_CHECK(image_size <= 16384, "config: image_size beyond 16384");
  const int64_t div = 4 << (num_stages() - 1);
  MM_CHECK(image_size >= div && image_size % div == 0,
           "config: image_size " + std::to_string(image_size) + " must be a positive multiple of " +
               std::to_string(div));
}

std::string ModelConfig::to_json() const {
  json j = {{"depths", depths},         {"dims", dims},
            {"d_state", d_state},       {"num_classes", num_classes},
            {"in_chans", in_chans},     {"image_size", image_size},
            {"drop_path_rate", drop_path_rate}};
  return j.dump();
}

ModelConfig ModelConfig::from_json(const std::string& text) {
  ModelConfig c;
  try {
    json j = json::parse(text);
    // nlohmann casts a float to int64_t, undefined beyond its range (and 2.5 is no size).
    for (const char* key : {"depths", "dims", "d_state", "num_classes", "in_chans", "image_size"}) {
      const json v = j.value(key, json());
      for (const json& x : v.is_array() ? v : json::array({v}))
        MM_CHECK(!x.is_number_float(), std::string("model config JSON: '") + key + "' must hold integers");
    }
    c.depths = j.at("depths").get<std::vector<int64_t>>();
    c.dims = j.at("dims").get<std::vector<int64_t>>();
    c.d_state = j.value("d_state", int64_t(16));
    c.num_classes = j.at("num_classes").get<int64_t>();
    c.in_chans = j.value("in_chans", int64_t(3));
    c.image_size = j.value("image_size", int64_t(224));
    c.drop_path_rate = j.value("drop_path_rate", 0.1f);
  } catch (const json::exception& e) {
    throw Error(std::string("model config JSON: ") + e.what());
  }
  c.validate();
  return c;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> v;
  if (text.empty()) return v;
  size_t pos = 0;
  for (;;) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    try {
      v.push_back(std::stoll(item, &used));
    } catch (const std::exception&) {
      used = std::string::npos;
    }
    MM_CHECK(used == item.size() && !item.empty(),
             what + ": expected comma-separated integers, got '" + text + "'");
    if (comma == std::string::npos) return v;
    pos = comma + 1;
  }
}

}  // namespace mm
