#pragma once
// Device scratch for the partial sums of deterministic reductions inside one op call
// (LayerNorm/BatchNorm/depthwise weight gradients, batch statistics, gradient norms).
//
// One grow-only buffer per host thread. An op takes it, uses it for its own launches on
// its stream, and is done with it when it returns: ops run one after another on one
// stream, so no two ops ever hold it at once. It grows (a synchronising cudaMalloc) only
// when a larger shape first appears, which in training is the first step.
#include <cstdint>

namespace mm::cuda {

// At least `bytes` bytes of device memory, 256-byte aligned, valid until the next call
// from the same thread.
void* reduction_scratch(int64_t bytes);

// The same kind of buffer, a second one: the bf16 copies of a GEMM's operands, which the
// ops that call GEMMs may do while they hold reduction_scratch.
void* gemm_operand_scratch(int64_t bytes);

// Counts the scratch buffers' reallocations, on every thread: a CUDA graph that captured their
// addresses is stale once it changes.
uint64_t scratch_generation();

}  // namespace mm::cuda
