#pragma once
// The float32 inference forward of one block (eval mode, nothing kept for backward), which
// block_forward hands over to: the same ops as block_forward's, with its elementwise passes
// folded into their neighbours, since no intermediate has to be kept:
//   ln_1 reads the right half of x in place (no split copy), in_proj's two halves go straight
//   to xin and z (no (P,2D) product to split), the depthwise conv ends in SiLU, the out_norm
//   in the SiLU gate, each eval BatchNorm after a conv carries the ReLU after it, and the
//   last ReLU, the channel shuffle and the residual are one pass.
// The results differ from the unfused ops' only by the vectorised SiLU (within 2e-7 of
// silu()) and float rounding: test_model.cpp holds the model to the PyTorch fixtures.
#include "model/block.h"
#include "ops/conv2d.h"

namespace mm {

// The block's convolutions (c to c channels, k x k, padding k/2) at dims d.
Conv2dShape block_conv_shape(const BlockDims& d, int64_t k);

// out, x: (B,H,W,C), out not aliasing x; a: buffers as block_forward's (ensured here);
// conv_workspace: conv2d_workspace_floats() of the 3x3 conv; scan_workspace:
// block_scan_workspace_floats(d, false); conv3x3_caches: BlockContext's (two, or nullptr).
void block_forward_inference(float* out, const float* x, const BlockWeights& w, BlockActs& a, const BlockDims& d,
                             float* conv_workspace, float* scan_workspace, WinogradWeightCache* conv3x3_caches);

}  // namespace mm
