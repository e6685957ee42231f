#pragma once
// Static int8 activation scales from real images (mm-convert --quantize int8 --calibrate DATA).
#include <cstdint>
#include <functional>
#include <string>

#include "data/image.h"
#include "model/model_file.h"
#include "model/quantization.h"

namespace mm {

struct CalibrationReport {
  ActivationScales scales;  // max|x| / 127 per Linear over the images read
  int64_t images = 0;       // how many were read
  int64_t skipped = 0;      // files under DATA that were no readable image
};

// Runs CpuInt8Model over up to max_images files under `data` (a folder, walked
// recursively; or one list file's worth of paths as mm-predict takes them), spread
// evenly over its sorted listing, each read with read_image and preprocessed as
// meta says. Files that are no readable image are skipped and counted; throws
// mm::Error naming `data` when none can be read (with the first file's reason),
// and where the CPU has no int8 path.
CalibrationReport calibrate_int8_scales(const MedMamba& model, const ModelMeta& meta, const std::string& data,
                                        int64_t max_images, const std::function<Image(const std::string&)>& read_image);

}  // namespace mm
