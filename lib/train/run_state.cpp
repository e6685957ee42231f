#include "train/run_state.h"

#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/durable_file.h"
#include "io/json_text.h"
#include "io/safetensors.h"

namespace mm {

using json = nlohmann::json;
static const char* kFormat = "medmamba-cpp-train-state/1";

void save_run_state(const std::string& path, const RunState& s, CommitQueue* later) {
  const RunProgress& p = s.progress;
  Tensor tracked = Tensor::empty({int64_t(s.batches_tracked.size())}, DType::I64);
  std::memcpy(tracked.data(), s.batches_tracked.data(), tracked.nbytes());
  const json progress{{"epoch", p.epoch}, {"batches_done", p.batches_done}, {"step", p.step},
                      {"loss_sum", p.loss_sum}, {"correct", p.correct}, {"seen", p.seen},
                      {"train_seconds", p.train_seconds}, {"best_value", p.best_value},
                      {"best_epoch", p.best_epoch}, {"processes", p.processes}};
  const std::string tmp = path + ".partial";
  auto write = [tmp, tensors = std::map<std::string, Tensor>{{"params", s.params}, {"adam.m", s.adam_m},
                                                             {"adam.v", s.adam_v}, {"batches_tracked", tracked}},
                metadata = std::map<std::string, std::string>{
                    {"format", kFormat}, {"progress", json_text(progress)}, {"options", s.options_json}}] {
    write_safetensors(tmp, tensors, metadata);
  };
  if (!later) {
    write();
    return durable_commit(tmp, path);
  }
  later->add(tmp, path, std::move(write));  // s's tensors are the caller's copies, which the queue now shares
}

RunState load_run_state(const std::string& path) {
  SafetensorsFile f = read_safetensors(path);
  auto fmt = f.metadata.find("format");
  MM_CHECK(fmt != f.metadata.end() && fmt->second == kFormat, path + ": not an mm-train state file");
  RunState s;
  try {
    const json j = json::parse(f.metadata.at("progress"));
    RunProgress& p = s.progress;
    p.epoch = j.at("epoch"); p.batches_done = j.at("batches_done"); p.step = j.at("step");
    p.loss_sum = j.at("loss_sum"); p.correct = j.at("correct"); p.seen = j.at("seen");
    p.train_seconds = j.at("train_seconds"); p.best_value = j.at("best_value"); p.best_epoch = j.at("best_epoch");
    p.processes = j.value("processes", int64_t(1));  // states from before data parallelism: one process
    s.options_json = f.metadata.at("options");
  } catch (const std::exception& e) {
    throw Error(path + ": damaged progress record (" + e.what() + ")");
  }
  s.params = f.at("params");
  s.adam_m = f.at("adam.m");
  s.adam_v = f.at("adam.v");
  const Tensor& tracked = f.at("batches_tracked");
  MM_CHECK(tracked.dtype() == DType::I64, path + ": batches_tracked is not int64");
  MM_CHECK(s.params.dtype() == DType::F32 && s.adam_m.shape() == s.params.shape() &&
               s.adam_v.shape() == s.params.shape(),
           path + ": parameter and moment buffers disagree");
  s.batches_tracked.assign(tracked.as<int64_t>(), tracked.as<int64_t>() + tracked.numel());
  return s;
}

}  // namespace mm
