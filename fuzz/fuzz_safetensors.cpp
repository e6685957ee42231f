// libFuzzer target: safetensors files (header length, JSON header, dtypes, shapes,
// data offsets) and what turns one into a model before any weight is used: our
// model metadata (config, class names, preprocessing, int8 scales and dequantisation)
// or, without it, architecture inference from the shapes, then the check of every
// parameter's name and shape. Any outcome but a model's tensors or an mm::Error is
// a finding. The body is in fuzz_safetensors_body.h (the doctest suite replays through it).
// gemm_int8.cpp only for quantize_per_channel (quantization.cpp's writer half); without
// MM_HAVE_DNNL and -fopenmp it builds alone.
//
// fuzz-sources: lib/io/safetensors.cpp lib/io/file_bytes.cpp lib/core/tensor.cpp lib/model/model_meta.cpp lib/model/config.cpp lib/model/params.cpp lib/model/quantization.cpp lib/ops/gemm_int8.cpp lib/convert/infer_config.cpp
// fuzz-seeds: fuzz/seeds/safetensors
// fuzz-runs: 100000
#include "fuzz_safetensors_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_safetensors(data, size);
  return 0;
}
