#pragma once
// Reading the MedMamba architecture off a state dict's tensor shapes, for
// weights that arrive without our metadata (PyTorch checkpoints, foreign
// safetensors files).
#include <map>
#include <string>

#include "core/tensor.h"
#include "model/config.h"

namespace mm {

// dims (from patch_embed.proj.weight, doubling per stage), depths (from the
// layers.{i}.blocks.{j} keys), num_classes (head.weight), d_state (A_logs),
// in_chans; checks every stage's dt_rank against ceil(dims[i]/32), the only
// rank the reference architecture uses. The image size is not in the weights:
// the caller gives it. Throws mm::Error saying which tensor is missing or odd.
// This only reads shapes: MedMamba::load_state then checks every key and shape.
ModelConfig infer_model_config(const std::map<std::string, Tensor>& state, int64_t image_size = 224);

// Strips a prefix that every key shares when the reference keys sit under it
// ("model." from a PyTorch Lightning module, "backbone.", ...). Returns it, or "".
std::string strip_model_prefix(std::map<std::string, Tensor>& state);

}  // namespace mm
