#pragma once
// Host-callable entry points of the CUDA inference kernels behind CudaMedMamba.
//
// Plain C++ (no CUDA headers), so lib/ and the tests can include it. Every pointer
// is a device pointer. Activations are channels-last; their element type is `dt`
// (F32, BF16 or F16) unless a parameter says float. Norm weights, scan parameters
// and statistics are float32. Every launch is asynchronous on `stream` and its
// launch error is checked (mm::Error naming the kernel).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"

struct CUstream_st;

namespace mm::cuda {

using Stream = CUstream_st*;  // cudaStream_t

// What a training backward op does with the old contents of its input-gradient outputs (dx,
// du, ...; weight and bias gradients always accumulate). Accumulate (+=) is the CPU ops'
// convention; Overwrite (=) spares the caller zeroing a buffer that only this op writes.
enum class GradOut { Accumulate, Overwrite };

// ---------------------------------------------------------------------------
// Runtime

Stream stream_create();           // does not wait for, nor hold up, the legacy stream
Stream stream_create_blocking();  // ordered with the legacy stream (Tensor copies, cudaMemset), both ways
void stream_destroy(Stream s);
void stream_sync(Stream s);
void copy_async(void* dst, const void* src, size_t bytes, Stream s);  // any direction
void memset_zero_async(void* p, size_t bytes, Stream s);
int sm_count();
std::string device_name();
void memory_info(size_t* free_bytes, size_t* total_bytes);  // of the current device

// Page-locked host memory (copies from it run at the bus's speed and do not block the
// host); throws mm::Error when it cannot be had.
void* malloc_host_pinned(size_t bytes);
void free_host_pinned(void* p);

// A point in a stream that the host can wait for.
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(Stream s);
  void synchronize();  // returns at once when nothing was recorded
  void wait_in(Stream s);  // work queued on s from now on waits for the last record (none: no wait)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One stream capture replayed as a CUDA graph (for fixed shapes and buffers).
class CapturedGraph {
 public:
  CapturedGraph();
  ~CapturedGraph();
  void begin_capture(Stream s);
  void end_capture(Stream s);  // instantiates
  // begin_capture, record(), end_capture. When record throws, the capture is ended and
  // dropped (the stream stays usable, nothing recorded ran) and the exception goes on.
  void capture(Stream s, const std::function<void()>& record);
  void launch(Stream s);
  bool ready() const;
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Wall time between two points of a stream, in milliseconds.
class StreamTimer {
 public:
  StreamTimer();
  ~StreamTimer();
  void start(Stream s);
  double stop_ms(Stream s);  // synchronizes

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------
// GEMM (cuBLASLt):  out (M,N) = act( x (M,K) · w (N,K)^T + bias (N) )
// w has the type of x and PyTorch's Linear layout; bias has the type of out.
// Float32 inputs use TF32 tensor cores when allow_tf32; 16-bit inputs accumulate in float32.

struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const void* x = nullptr;
  int64_t ldx = 0;  // row stride of x, elements
  DType x_type = DType::F32;
  const void* w = nullptr;  // (N,K), row stride K
  void* out = nullptr;
  int64_t ldo = 0;
  DType out_type = DType::F32;
  const void* bias = nullptr;  // (N) or nullptr
  bool relu = false;
};

class GemmRunner {
 public:
  explicit GemmRunner(bool allow_tf32);
  ~GemmRunner();
  void run(const GemmArgs& a, Stream s);  // plans are cached per shape

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------
// Norms (one warp per row; statistics in float32, eps 1e-5).

// out (rows,C) contiguous = LayerNorm(x row r at x + r·ldx) · w + b
void layernorm(DType dt, void* out, const void* x, int64_t ldx, const float* w, const float* b,
               int64_t rows, int64_t C, Stream s);

// Patch merging: x (B,H,W,C) -> gather x0,x1,x2,x3 -> (B,H/2,W/2,4C) -> LayerNorm(4C) into out.
void merge_layernorm(DType dt, void* out, const void* x, const float* w, const float* b, int64_t B,
                     int64_t H, int64_t W, int64_t C, Stream s);

// SS2D tail: out (P,D) = (LayerNorm(y)·w + b) ⊙ SiLU(z), y float32 (P,D), z row stride ldz.
void layernorm_gate(DType dt, void* out, const float* y, const void* z, int64_t ldz, const float* w,
                    const float* b, int64_t P, int64_t D, Stream s);

// ---------------------------------------------------------------------------
// Convolution helpers and layout ops.

// u (B,H,W,C) = SiLU(depthwise 3x3 pad 1 of x + bias); x rows of stride ldx;
// w tap-major (3,3,C): w[(kh·3+kw)·C + c] is PyTorch's weight[c,0,kh,kw].
// zero: nullptr, or float32 (B,H,W,C) set to 0 in the same pass (16-byte aligned).
void dwconv3x3_silu(DType dt, void* u, const void* x, int64_t ldx, const float* w, const float* bias,
                    int64_t B, int64_t H, int64_t W, int64_t C, Stream s, float* zero = nullptr);

// out (P,Cout) rows ldo apart = [relu](conv3x3 pad 1 of (scale ⊙ x + shift) + bias) as an
// implicit GEMM on the tensor cores (no im2col matrix): x (B,H,W,Cin) rows ldx apart; scale and
// shift (Cin) float32, an eval BatchNorm applied inside the image (the padding stays 0), or
// both nullptr; w (Cout,kh,kw,Cin) and bias (Cout) of dt. bf16/fp16 with float32 sums, or
// float32 computed in TF32 (x rounded to nearest; w as it is, the tensor cores ignoring its
// low 13 bits: round it beforehand for round-to-nearest). The shapes conv3x3_implicit_supported
// accepts (MedMamba's all at the usual sizes: a tile's weights and halo, 256 + 2W + 2 pixels of
// a channel chunk, must fit in shared memory); otherwise im2col3x3 + GemmRunner.
bool conv3x3_implicit_supported(DType dt, const void* out, int64_t ldo, const void* x, int64_t ldx, const void* w,
                                int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout);
// Where conv3x3_implicit is faster than im2col3x3 + GEMM (measured, see conv3x3_implicit.cu):
// P = B·H·W output pixels, Cin and Cout channels.
bool conv3x3_implicit_preferred(int64_t P, int64_t Cin, int64_t Cout);
void conv3x3_implicit(DType dt, void* out, int64_t ldo, const void* x, int64_t ldx, const float* scale,
                      const float* shift, const void* w, const void* bias, bool relu, int64_t B, int64_t H, int64_t W,
                      int64_t Cin, int64_t Cout, Stream s);

// 3x3 pad 1 im2col with an optional per-channel affine on the input (an eval BatchNorm
// that precedes the conv: applied inside the image, the padding stays 0):
//   col (B·H·W, 9·C), col[p, (kh·3+kw)·C + ci] = scale[ci]·x[p shifted by (kh-1,kw-1), ci] + shift[ci]
// x rows of stride ldx; scale/shift nullptr for none. The matching weight layout is (Cout,kh,kw,Cin).
void im2col3x3(DType dt, void* col, const void* x, int64_t ldx, const float* scale, const float* shift,
               int64_t B, int64_t H, int64_t W, int64_t C, Stream s);

// Patch embedding im2col straight from float32 NCHW images (B,Cin,S,S):
//   col (B·(S/k)², Cin·k·k), columns in PyTorch's (ci,kh,kw) weight order.
void patchify(DType dt, void* col, const float* images, int64_t B, int64_t Cin, int64_t S, int64_t k,
              Stream s);

// Block output: out (P,2c), out[2m] = l[m] + x[2m], out[2m+1] = sb[m] + x[2m+1]
// (concat, channel shuffle with 2 groups, residual).
void shuffle_residual(DType dt, void* out, const void* l, const void* sb, const void* x, int64_t P,
                      int64_t c, Stream s);

// out (B,C) = mean over L of x (B,L,C), accumulated in float32.
void avgpool(DType dt, void* out, const void* x, int64_t B, int64_t L, int64_t C, Stream s);

// ---------------------------------------------------------------------------
// SS2D selective scan: cross-scan, the four directional scans and cross-merge in one
// kernel (see scan_kernel.cu). d_state N = 16.

constexpr int kScanStates = 16;

// The dt block of each direction's x_proj row is padded with zero columns to this width
// (4, 8, 16 or 32), so that rows are whole 16-byte words the kernel can stage as such.
int64_t scan_padded_rank(int64_t R);

struct ScanArgs {
  int64_t B = 0, H = 0, W = 0, D = 0, R = 0;  // D·sizeof(u_type) must be a multiple of 16 bytes
  DType u_type = DType::F32;
  const void* u = nullptr;          // (B,H,W,D)
  // (B·H·W, 4, Rp+2N) with Rp = scan_padded_rank(R): x_proj of every position, per direction
  // [dt (R values, then Rp-R zeros) | B (N) | C (N)]
  const float* dbl = nullptr;
  const float* dt_w = nullptr;      // (4, D, R)
  const float* dt_b = nullptr;      // (4·D)
  const float* A_logs = nullptr;    // (4·D, N)
  const float* Ds = nullptr;        // (4·D)
  float* y = nullptr;               // (B,H,W,D) float32, ACCUMULATED: the caller zeroes it
  int lanes_per_channel = 0;        // 1, 2 or 4 lanes share a channel's 16 states; 0 = choose
  // Segmented scan (see scan_kernel.cu): each sequence is cut into this many segments, each
  // scanned by its own warp (two passes and a combine of the segments' end states).
  // 0 = choose: only when the batch is too small to fill the GPU, and only with a workspace;
  // 1 = never; more = about that many (rounded so that segments are whole 16-step chunks).
  int segments = 0;
  float* workspace = nullptr;       // ss2d_scan_workspace_floats(*this) floats, 16-byte aligned
};

// Floats of workspace the segmented scan needs for these arguments (0 when ss2d_scan would
// not segment them). Depends on the shape, the device's SM count and the MM_SCAN_* tuning
// variables, so size it on the device that runs the scan.
int64_t ss2d_scan_workspace_floats(const ScanArgs& a);

void ss2d_scan(const ScanArgs& a, Stream s);

// ---------------------------------------------------------------------------
// Model inputs from decoded images: lib/data/preprocess.h's preprocess_into on the GPU
// (window, separable resize with the vertical pass first, channels, normalisation), with the
// same arithmetic: the window in double, each pass accumulating its taps in order in double
// into a float. Results agree with the CPU's to about a float ulp.

struct ResizeAxisDevice {  // lib/data/preprocess.h's AxisWeights, on the device
  const int32_t* first = nullptr;
  const int32_t* count = nullptr;
  const double* weights = nullptr;  // (S, stride)
  int32_t stride = 0;
};

struct PreprocessItem {
  int64_t pixels = 0;  // offset (floats) of the image, H x W x channels interleaved, in physical units
  int64_t rows_done = 0;  // offset (floats) of its vertical pass's result, S x W x channels
  int32_t height = 0, width = 0, channels = 0;  // channels: 1 or 3
  double window_low = 0, window_high = 1;
  ResizeAxisDevice rows, cols;  // rows: H -> S (vertical), cols: W -> S (horizontal)
};

struct PreprocessArgs {
  const PreprocessItem* items = nullptr;  // device, n of them
  int64_t n = 0;
  const float* pixels = nullptr;  // the images
  float* rows_done = nullptr;     // scratch for the vertical passes
  float* out = nullptr;           // (n, out_channels, S, S) float32 NCHW
  int64_t max_rows_done = 0;      // the largest S x W x channels of an item (grid size)
  int32_t side = 0, out_channels = 0;  // S; 1 or 3
  float mean[3] = {}, inv_std[3] = {};
};

void preprocess_images(const PreprocessArgs& a, Stream s);

}  // namespace mm::cuda
