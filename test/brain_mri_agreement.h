#pragma once
// Whole-model agreement of a low-precision CPU model (CpuBf16Model, CpuInt8Model)
// with float32 on the shipped brain-MRI model's test split (test_bf16.cpp, test_int8.cpp).
#include <string>

namespace mm::test {
inline std::string brain_mri_model_path() { return std::string(MM_SOURCE_DIR) + "/share/models/brain-mri-96.safetensors"; }
}  // namespace mm::test

#ifdef MM_HAVE_IMAGING
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "data/preprocess.h"
#include "imaging/image_reader.h"
#include "model/model_file.h"
#include "test_util.h"

namespace mm::test {

struct Agreement {
  int64_t images = 0, agree = 0, correct_fp32 = 0, correct_low = 0;
};

// share/models/brain-mri-96.safetensors over every `stride`-th image of its test split
// (sorted paths): top-1 agreement between LowPrecisionModel and float32, and each
// one's accuracy. LowPrecisionModel runs the model in low_precision_file (a converted
// copy, say; default: the same file), with the file's int8 activation scales where
// it takes them.
template <class LowPrecisionModel>
Agreement brain_mri_agreement(size_t stride, const std::string& low_precision_file = brain_mri_model_path()) {
  namespace fs = std::filesystem;
  LoadedModel lm = load_model(brain_mri_model_path()), low_lm = load_model(low_precision_file);
  const std::string root = std::string(MM_SHARED_DATA_DIR) + "/brain-tumor-mri/Testing";
  std::vector<std::pair<std::string, int64_t>> files;  // path, class index
  for (size_t k = 0; k < lm.meta.class_names.size(); ++k)
    for (const auto& e : fs::directory_iterator(root + "/" + lm.meta.class_names[k]))
      files.emplace_back(e.path().string(), int64_t(k));
  std::sort(files.begin(), files.end());
  std::vector<std::pair<std::string, int64_t>> chosen;
  for (size_t i = 0; i < files.size(); i += stride) chosen.push_back(files[i]);

  LowPrecisionModel low = [&] {
    if constexpr (std::is_constructible_v<LowPrecisionModel, const MedMamba&, const ActivationScales&>)
      return LowPrecisionModel(low_lm.model, low_lm.meta.int8_activation_scales);
    else
      return LowPrecisionModel(low_lm.model);
  }();
  const ModelConfig& cfg = lm.model.config();
  const int64_t side = lm.meta.preprocess.input_size, item = cfg.in_chans * side * side, K = cfg.num_classes;
  Agreement a;
  constexpr int64_t kBatch = 16;
  for (size_t start = 0; start < chosen.size(); start += kBatch) {
    const int64_t b = std::min<int64_t>(kBatch, int64_t(chosen.size() - start));
    Tensor batch = Tensor::empty({b, cfg.in_chans, side, side});
    for (int64_t i = 0; i < b; ++i)
      preprocess_into(read_images(chosen[start + size_t(i)].first).at(0), lm.meta.preprocess, batch.f32() + i * item);
    const Tensor want = lm.model.forward(batch, /*train=*/false), got = low.forward(batch);
    for (int64_t i = 0; i < b; ++i) {
      const float *w = want.f32() + i * K, *g = got.f32() + i * K;
      const int64_t top_w = std::max_element(w, w + K) - w, top_g = std::max_element(g, g + K) - g;
      const int64_t label = chosen[start + size_t(i)].second;
      a.agree += top_w == top_g;
      a.correct_fp32 += top_w == label;
      a.correct_low += top_g == label;
      ++a.images;
    }
  }
  return a;
}

// Top-1 agreement >= min_agree_percent and accuracy within 0.5 points of float32.
inline void check_agreement(const Agreement& a, const char* precision, double min_agree_percent) {
  const double agree = 100.0 * double(a.agree) / double(a.images);
  const double acc32 = 100.0 * double(a.correct_fp32) / double(a.images);
  const double acc_low = 100.0 * double(a.correct_low) / double(a.images);
  MESSAGE(a.images << " brain-MRI test images: top-1 agreement " << agree << "%, accuracy fp32 " << acc32 << "%, "
                   << std::string(precision) << " " << acc_low << "%");
  CHECK(agree >= min_agree_percent);
  CHECK(std::fabs(acc32 - acc_low) <= 0.5);
}

}  // namespace mm::test
#endif
