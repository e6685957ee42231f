#include "model/int8_calibration.h"

#include <algorithm>
#include <exception>

#include "core/error.h"
#include "data/preprocess.h"
#include "model/cpu_int8_model.h"
#include "predict/inputs.h"

namespace mm {

CalibrationReport calibrate_int8_scales(const MedMamba& model, const ModelMeta& meta, const std::string& data,
                                        int64_t max_images, const std::function<Image(const std::string&)>& read_image) {
  MM_CHECK(max_images > 0, "calibration needs at least one image");
  const std::vector<InputFile> files = find_inputs({data}, {}).files;
  MM_CHECK(!files.empty(), data + ": no files to calibrate with");
  const size_t want = std::min(files.size(), size_t(max_images));
  CpuInt8Model int8(model);
  const ModelConfig& cfg = model.config();
  const int64_t side = meta.preprocess.input_size, item = cfg.in_chans * side * side;
  constexpr int64_t kBatch = 16;
  Tensor batch = Tensor::empty({kBatch, cfg.in_chans, side, side});
  CalibrationReport r;
  std::string first_error;
  int64_t filled = 0;
  auto run = [&] {
    if (filled == 0) return;
    int8.forward(filled == kBatch ? batch : batch.slice_view(0, {filled, cfg.in_chans, side, side}).clone());
    filled = 0;
  };
  // Evenly spread: file i * size / want for i < want, so every class folder of a sorted tree is sampled.
  for (size_t i = 0; i < want; ++i) {
    const std::string& path = files[i * files.size() / want].path;
    try {
      preprocess_into(read_image(path), meta.preprocess, batch.f32() + filled * item);
    } catch (const std::exception& e) {
      if (first_error.empty()) first_error = e.what();
      ++r.skipped;
      continue;
    }
    ++r.images;
    if (++filled == kBatch) run();
  }
  run();
  MM_CHECK(r.images > 0, data + ": none of the " + std::to_string(want) + " files tried is a readable image (first: " +
                             first_error + ")");
  r.scales = int8.observed_scales();
  return r;
}

}  // namespace mm
