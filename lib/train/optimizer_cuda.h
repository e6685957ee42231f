#pragma once
// The CUDA side of optimizer.h: AdamW and gradient clipping on device buffers.
// Internal to lib/train; in builds without CUDA every function throws.
#include <cstdint>

#include "core/tensor.h"
#include "model/params.h"

namespace mm {

struct AdamWOptions;

// param_roles(table) on the device, built once per table layout and kept.
const Tensor& device_roles(const ParamTable& table);

void adamw_step_cuda(Tensor& params, const Tensor& grads, Tensor& m, Tensor& v, const Tensor& roles, float lr,
                     const AdamWOptions& options, int64_t step);

double clip_grad_norm_cuda(Tensor& grads, const Tensor& roles, double max_norm);

}  // namespace mm
