// CudaMedMamba in builds without CUDA: every entry point says so.
#ifndef MM_HAVE_CUDA

#include "core/error.h"
#include "model/cuda_model.h"

namespace mm {

struct CudaMedMamba::Impl {};

CudaMedMamba::CudaMedMamba(const MedMamba&, CudaModelOptions) { throw Error("CudaMedMamba: built without CUDA"); }
CudaMedMamba::~CudaMedMamba() = default;
void CudaMedMamba::reload_weights(const MedMamba&) { throw Error("CudaMedMamba: built without CUDA"); }
const ModelConfig& CudaMedMamba::config() const { throw Error("CudaMedMamba: built without CUDA"); }
const CudaModelOptions& CudaMedMamba::options() const { throw Error("CudaMedMamba: built without CUDA"); }
std::string CudaMedMamba::device_name() const { throw Error("CudaMedMamba: built without CUDA"); }
Tensor CudaMedMamba::forward(const Tensor&) { throw Error("CudaMedMamba: built without CUDA"); }
Tensor CudaMedMamba::forward_device(const Tensor&) { throw Error("CudaMedMamba: built without CUDA"); }
void CudaMedMamba::synchronize() { throw Error("CudaMedMamba: built without CUDA"); }
CUstream_st* CudaMedMamba::stream() const { throw Error("CudaMedMamba: built without CUDA"); }

}  // namespace mm

#endif  // MM_HAVE_CUDA
