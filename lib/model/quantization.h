#pragma once
// int8 model files: which weights are stored as int8 and how (mm-convert --quantize int8).
//
// Scheme "int8-per-channel-symmetric": the weights of every Linear layer that
// CpuInt8Model runs in int8 (in_proj, x_proj, out_proj, the 1x1 conv of the conv
// branch, patch-merging reduction), of the two 3x3 convs of the conv branch and of
// dt_projs (which run in bf16 or float32 from the dequantised weights) are stored as I8 q
// (same name and shape) with an F32 tensor NAME_scale, one per output channel,
// such that weight = q * scale, q in [-127, 127], scale = max|row| / 127 (a row:
// one output channel's weights). For the Linears that is the quantisation
// CpuInt8Model applies, so it computes the same from the file as from the float32
// weights. Everything else keeps the file's float storage. __metadata__["quantization"] is JSON:
//   {"scheme": "int8-per-channel-symmetric", "weights": "I8 + NAME_scale (F32, per output channel)",
//    "activations": "dynamic per row" | "static per tensor",
//    (files written before per-row scales say "dynamic per tensor"; the field is not read)
//    "activation_scales": {"layers.0.blocks.0.in_proj_x": 0.031, ...}}   (static only)
#include <map>
#include <string>

#include "core/tensor.h"

namespace mm {

inline constexpr const char* kInt8Scheme = "int8-per-channel-symmetric";

// Static activation scales by Linear name ("layers.0.blocks.1.in_proj_x", ...): a
// Linear's input is quantised as round(x / scale), saturating.
using ActivationScales = std::map<std::string, float>;

// Whether a state-dict entry is one of the weights the scheme stores as int8.
bool is_int8_weight(const std::string& name);

// The state with those weights replaced by I8 + NAME_scale tensors (F32 input).
std::map<std::string, Tensor> quantize_state_int8(const std::map<std::string, Tensor>& state);
// The inverse (I8 tensors dequantised to F32, the _scale tensors removed). Throws
// mm::Error naming the tensor when an I8 tensor has no matching scale or shapes differ.
std::map<std::string, Tensor> dequantize_state_int8(const std::map<std::string, Tensor>& state);

std::string quantization_metadata(const ActivationScales& scales);
// Parses quantization_metadata's JSON; throws mm::Error on an unknown scheme or bad JSON.
ActivationScales parse_quantization_metadata(const std::string& json_text);

}  // namespace mm
