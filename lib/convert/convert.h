#pragma once
// What mm-convert does, as a library: read weights in any accepted form
// (PyTorch checkpoint, our safetensors model file, a foreign safetensors
// file), check them against the MedMamba architecture, and write our model
// file or a PyTorch checkpoint.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/model_file.h"

namespace mm {

enum class WeightsFormat { Torch, Safetensors };

// By extension: .pth .pt .bin .ckpt -> Torch; .safetensors -> Safetensors; else nullopt.
std::optional<WeightsFormat> weights_format_for(const std::string& path);

struct ConvertOptions {
  std::vector<std::string> class_names;      // empty: keep the input's
  std::optional<int64_t> image_size;         // sets the config's and the preprocessing's input size
  std::optional<std::vector<float>> mean, std;
  DType precision = DType::F32;              // of the float tensors written
  // int8 Linear weights per output channel (model/quantization.h); safetensors output only.
  bool quantize_int8 = false;
  // Static activation scales for the int8 file, from the model about to be written
  // (calibrate_int8_scales); unset: CpuInt8Model takes each input row's own scale.
  std::function<ActivationScales(const MedMamba&, const ModelMeta&)> calibrate;
};

struct ConvertReport {
  ModelMeta meta;                  // what was written
  std::vector<std::string> notes;  // how the input was read: wrapper, stripped prefixes, ignored entries
};

// Throws mm::Error naming the file and the reason; nothing is written on error.
ConvertReport convert_weights(const std::string& input, const std::string& output, const ConvertOptions& options);

// Any accepted weights file as a model in memory: what convert_weights would
// write, without writing it (mm-train --init). Throws mm::Error naming the file.
LoadedModel load_weights_as_model(const std::string& path);

// A listing of every tensor (name, dtype, shape) and how the file was read,
// plus whether the weights match a MedMamba architecture. Throws only when the
// file cannot be read at all.
std::string inspect_weights(const std::string& path);

// "fp32" | "fp16" | "bf16" (also "f32", "float32", ...); throws otherwise.
DType parse_precision(const std::string& name);
// One class name per line; blank lines at the end are ignored, '\r' is dropped.
std::vector<std::string> read_class_names(const std::string& path);

}  // namespace mm
