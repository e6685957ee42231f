#pragma once
// Our native model file: safetensors with the reference state-dict keys, and
// __metadata__ holding what a user needs to run the model:
//   "format":      "medmamba-cpp/1"
//   "config":      ModelConfig as JSON (dims, depths, d_state, num_classes, in_chans, image_size)
//   "class_names": JSON list of strings, one per class
//   "preprocess":  JSON {"input_size", "mean", "std", "interpolation"}
//   "quantization": only in int8 files (mm-convert --quantize int8): see model/quantization.h
#include <string>
#include <vector>

#include "model/medmamba.h"
#include "model/quantization.h"

namespace mm {

struct SafetensorsFile;

struct Preprocess {
  int64_t input_size = 224;
  std::vector<float> mean{0.5f, 0.5f, 0.5f};  // the reference training script's normalisation
  std::vector<float> std{0.5f, 0.5f, 0.5f};
  std::string interpolation = "bilinear";     // torchvision's default Resize on PIL images

  std::string to_json() const;
  static Preprocess from_json(const std::string& text);
};

struct ModelMeta {
  ModelConfig config;
  std::vector<std::string> class_names;  // empty: "class_0", "class_1", ... are used
  Preprocess preprocess;
  // int8 files: the Linear weights are stored as int8 (load_model dequantises them, so
  // a float32 or bf16 run reads such a file too); scales for CpuInt8Model when calibrated.
  bool int8_weights = false;
  ActivationScales int8_activation_scales;
  std::string class_name(int64_t i) const;
};

// storage: F32, F16 or BF16 for the float tensors (BatchNorm statistics included);
// with meta.int8_weights the Linear weights are int8 whatever the storage.
void save_model(const std::string& path, const Model& model, const ModelMeta& meta,
                DType storage = DType::F32);
// The same from a snapshot of model.state() (a trainer writes it while the next epoch runs).
void save_model_state(const std::string& path, std::map<std::string, Tensor> state, const ModelConfig& config,
                      const ModelMeta& meta, DType storage = DType::F32);

struct LoadedModel {
  MedMamba model;
  ModelMeta meta;
};

// Throws mm::Error naming the file and every offending tensor when the file
// does not hold a valid model.
LoadedModel load_model(const std::string& path);
// What load_model reads before it builds a model (model_meta.cpp): the metadata, with an
// int8 file's weights dequantised in f.tensors, and a config whose parameters the tensors
// could hold (load_state then checks every name and shape). Throws mm::Error, without the file name.
ModelMeta read_model_meta(SafetensorsFile& f);

}  // namespace mm
