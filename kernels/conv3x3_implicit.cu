// 3x3 pad-1 stride-1 convolution as an implicit GEMM on the tensor cores, for the inference
// engine's activations: bf16 or fp16 (mma m16n8k16), or float32 computed in TF32 (m16n8k8),
// in and out, with float32 sums:
//   out (P, Cout) = [relu](conv3x3([scale ⊙ x + shift]) + bias),  P = B·H·W pixels,
// the same product as im2col3x3 followed by GemmRunner, without the (P, 9·Cin) column matrix:
// at MedMamba-T's first stage, batch 128, that matrix is 347 MB (bf16) that im2col wrote to
// HBM and the GEMM read back, for each of a block's two convs.
//
// Tiling. A block of 8 warps computes kBM = 256 pixels (consecutive rows of the flattened
// (B,H,W) grid, wherever they fall in the images) by kBN = 48 or 64 output channels; warp
// (wm, wn) holds a 64 x kBN/2 tile of it as mma.sync accumulators (4 warps along M, 2 along
// N). Cin is walked in chunks of kBK channels (64, 48, 32 or 16: the largest that divides it
// and lets two blocks share an SM); per chunk the block copies (cp.async) into shared memory
//   - the weights of the 9 taps, (9·kBN, kBK);
//   - the halo: its pixels with W + 1 more each side, which are contiguous in the flattened
//     grid (the rows above and below), and a row of zeros;
// then walks the 9 taps. A tap's A operand is the halo shifted by kh·W + kw rows: each lane's
// ldmatrix row address moves per tap, and a row whose tap falls outside its image (padding,
// or another image's pixel) points at the zero row. The output tile goes out through shared
// memory as whole 16-byte pieces of rows.
//
// An eval BatchNorm before the conv (the block's first) is applied to the halo in shared
// memory by the threads that copied it: the padding stays 0, because rows outside an image
// are never read as such (the zero row is). In float32 the same pass rounds the halo to TF32.
//
// Measured on the H200 (ncu, MedMamba-T, bf16, a block's two convs, µs at batch 128 / 32):
//
//   stage (Cin)        im2col + GEMM   this kernel
//   1 (48)             549 / 146       182 / 56
//   2 (96)             279 /  81       168 / 61
//   3 (192)            151 /  56       155 / 64
//   4 (384)            110 /  46       208 / 120
//
// and in float32 (TF32 GEMMs against this kernel's TF32), batch 128: stage 1 874 / 354,
// stage 2 467 / 302, stage 3 311 / 308, stage 4 196 / 414.
//
// The kernel issues at about a third of the SMs' rate with 2 blocks (16 warps) an SM, which
// its 90 KB of shared memory and 126 registers allow: a chunk's copies are not overlapped
// with its own compute, only with the other block's. Where Cin is large (several chunks) or
// the grid is under a wave, im2col + cuBLAS wins (conv3x3_implicit_preferred). Earlier
// versions: each tap's rows gathered from global memory (L2-bound, stage 1 364 µs); the
// halo with a weight slice per tap, 128 pixels a block (324 µs: one barrier per tap).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "fast_divmod.h"

namespace mm::cuda {

namespace {

constexpr int kThreads = 256, kBM = 256;

// Shared memory of a block: a chunk's weights for the 9 taps (9·bn rows), then its halo of
// kBM + 2W + 2 rows and a zero row, rows of bk elements and one 16-byte piece; at the end the
// same room holds the (kBM, bn) output tile, rows of bn elements and a piece.
constexpr size_t tile_smem_bytes(int64_t W, int bk, int bn, int elem_bytes) {
  const size_t in = size_t(9 * bn + kBM + 2 * W + 3) * size_t(bk * elem_bytes + 16);
  const size_t out = size_t(kBM) * size_t(bn * elem_bytes + 16);
  return in > out ? in : out;
}

// kBM pixels by kBN output channels (48 or 64: MedMamba's channel counts are multiples of 48)
// per block, Cin in chunks of kBK (64, 48, 32 or 16; chunk_channels). Shared rows are kBK
// elements and one 16-byte piece apart, which puts the 8 consecutive rows of an ldmatrix in
// distinct banks. A K step is 32 bytes of a row: 16 channels of bf16/fp16 (m16n8k16), 8 of
// float (TF32, m16n8k8).
template <class T, int kBK, int kBN>
struct Tile {
  static constexpr int kElems = 16 / int(sizeof(T));  // per 16-byte piece
  static constexpr int kRow = kBK + kElems;
  static constexpr int kPieces = kBK / kElems;  // per row
  static constexpr int kSteps = kBK * int(sizeof(T)) / 32;
  static constexpr int kWarpM16 = kBM / 64;  // m16 tiles per warp (4 warps along M)
  static constexpr int kWarpN8 = kBN / 16;   // n8 tiles per warp (2 warps along N)
  using Row = T[kRow];
  static size_t smem_bytes(int W) { return tile_smem_bytes(W, kBK, kBN, int(sizeof(T))); }
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}

// d += a·b for one K step (32 bytes of each row): m16n8k16 for 16-bit types, m16n8k8 TF32 for
// float (whose fragments ldmatrix delivers the same way: lane (g, t) gets element (g, t) of
// each 8 x 4 float block), float32 accumulators.
template <class T>
__device__ __forceinline__ void mma_step(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_step<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                        const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_step<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_step<float>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// v rounded to TF32 (nearest, ties away), as a float; the tensor cores would truncate.
__device__ __forceinline__ float round_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
}

template <class T>
struct ConvParams {
  T* out;
  const T* x;
  const float *scale, *shift;  // (Cin) each, or nullptr
  const T* w;                  // (Cout, 3, 3, Cin)
  const T* bias;               // (Cout) or nullptr
  int64_t ldo, ldx;
  int P, H, W, Cin, Cout;
  FastDivmod by_w, by_h;
  bool relu;
};

template <class T, int kBK, int kBN>
__global__ void __launch_bounds__(kThreads, 2) conv3x3_implicit_kernel(ConvParams<T> a) {
  using Tl = Tile<T, kBK, kBN>;
  using Row = typename Tl::Row;
  constexpr int kM16 = Tl::kWarpM16, kN8 = Tl::kWarpN8, kPieces = Tl::kPieces, kE = Tl::kElems;
  // Copies: thread tid moves the 16-byte piece `piece` of rows tid / kPieces, + kRowStep, ...
  // (a fixed piece, so its BatchNorm scale and shift stay in registers).
  constexpr int kRowStep = kThreads / kPieces;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Row* wts = reinterpret_cast<Row*>(smem_raw);  // (tap, n) rows
  Row* halo = wts + 9 * kBN;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % 4, wn = warp / 4;  // warp tile: rows wm·16·kM16.., columns wn·(kBN/2)..
  const int p0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN;
  const int K = 9 * a.Cin;
  const int halo_rows = kBM + 2 * a.W + 2;  // then the zero row
  const int first = p0 - a.W - 1;           // the pixel of halo row 0
  const int piece = tid % kPieces, row0 = tid / kPieces;
  const bool copies = row0 < kRowStep;  // kThreads % kPieces threads have no piece

  if (tid < kPieces) *reinterpret_cast<uint4*>(&halo[halo_rows][tid * kE]) = make_uint4(0, 0, 0, 0);

  // This lane's ldmatrix rows (pixel p0 + lrow[mi]), with the taps inside its image as bits
  // kh·3+kw; none for pixels past P, whose outputs are dropped.
  int lrow[kM16];
  unsigned inside[kM16];
#pragma unroll
  for (int mi = 0; mi < kM16; ++mi) {
    lrow[mi] = (wm * kM16 + mi) * 16 + lane % 16;
    const int p = p0 + lrow[mi];
    const int q = int(a.by_w.div(unsigned(p))), pw = p - q * a.W;
    const int ph = q - int(a.by_h.div(unsigned(q))) * a.H;
    const unsigned rows = 0b010u | (ph > 0 ? 0b001u : 0u) | (ph < a.H - 1 ? 0b100u : 0u);  // kh allowed
    const unsigned cols = 0b010u | (pw > 0 ? 0b001u : 0u) | (pw < a.W - 1 ? 0b100u : 0u);  // kw allowed
    unsigned m = 0;
#pragma unroll
    for (int kh = 0; kh < 3; ++kh) m |= ((rows >> kh) & 1u ? cols : 0u) << (3 * kh);
    inside[mi] = p < a.P ? m : 0u;
  }

  // ldmatrix addresses in shared space: lane i gives row i % 16 of an A tile, at column 8·(i / 16)
  // (its tap's row, or the zero row), and row i % 8 of a B tile at column 8·((i / 8) % 2)
  // (lanes 16-31 repeat 0-15 for the x2 form).
  constexpr unsigned kRowBytes = sizeof(Row);
  const unsigned halo_addr = unsigned(__cvta_generic_to_shared(halo));
  const unsigned zero_addr = halo_addr + halo_rows * kRowBytes + (lane / 16) * 16;
  unsigned a_addr[kM16];
#pragma unroll
  for (int mi = 0; mi < kM16; ++mi) a_addr[mi] = halo_addr + lrow[mi] * kRowBytes + (lane / 16) * 16;
  const unsigned b_addr =
      unsigned(__cvta_generic_to_shared(wts)) + (wn * (kBN / 2) + lane % 8) * kRowBytes + ((lane / 8) % 2) * 16;

  float acc[kM16][kN8][4] = {};
  for (int ci0 = 0; ci0 < a.Cin; ci0 += kBK) {
    if (ci0 > 0) __syncthreads();  // every warp is done with the previous chunk
    if (copies) {
      const T* src = a.x + ci0 + piece * kE;
      for (int r = row0; r < halo_rows; r += kRowStep) {
        const int p = first + r;
        const bool ok = p >= 0 && p < a.P;
        cp_async16(&halo[r][piece * kE], ok ? src + int64_t(p) * a.ldx : a.x, ok);
      }
      for (int r = row0; r < 9 * kBN; r += kRowStep) {
        const int tap = r / kBN, n = n0 + r % kBN;
        const bool ok = n < a.Cout;
        cp_async16_ca(&wts[r][piece * kE], ok ? a.w + int64_t(n) * K + tap * a.Cin + ci0 + piece * kE : a.w, ok);
      }
    }
    cp_async_commit();
    cp_async_wait<0>();
    // The eval BatchNorm, and for float the rounding to TF32, on the pieces of the halo this
    // thread copied.
    if ((a.scale || std::is_same<T, float>::value) && copies) {
      float sc[kE], sh[kE];
#pragma unroll
      for (int e = 0; e < kE; ++e) sc[e] = 1.f, sh[e] = 0.f;
      if (a.scale) {
        load_floats(a.scale + ci0 + piece * kE, sc);
        load_floats(a.shift + ci0 + piece * kE, sh);
      }
      for (int r = row0; r < halo_rows; r += kRowStep) {
        float v[kE];
        load_pack(&halo[r][piece * kE], v);
#pragma unroll
        for (int e = 0; e < kE; ++e) {
          v[e] = fmaf(v[e], sc[e], sh[e]);
          if constexpr (std::is_same<T, float>::value) v[e] = round_tf32(v[e]);
        }
        store_pack(&halo[r][piece * kE], v);
      }
    }
    __syncthreads();
#pragma unroll 1
    for (int tap = 0; tap < 9; ++tap) {
      const unsigned shift = ((tap / 3) * a.W + tap % 3) * kRowBytes;
      unsigned arow[kM16];
#pragma unroll
      for (int mi = 0; mi < kM16; ++mi) arow[mi] = (inside[mi] >> tap) & 1u ? a_addr[mi] + shift : zero_addr;
      const unsigned brow = b_addr + tap * kBN * kRowBytes;
#pragma unroll
      for (int ks = 0; ks < Tl::kSteps; ++ks) {
        uint32_t af[kM16][4], bf[kN8][2];
#pragma unroll
        for (int mi = 0; mi < kM16; ++mi) ldmatrix_x4(af[mi], arow[mi] + ks * 32);
#pragma unroll
        for (int nj = 0; nj < kN8; ++nj) ldmatrix_x2(bf[nj], brow + nj * 8 * kRowBytes + ks * 32);
#pragma unroll
        for (int mi = 0; mi < kM16; ++mi)
#pragma unroll
          for (int nj = 0; nj < kN8; ++nj) mma_step<T>(acc[mi][nj], af[mi], bf[nj]);
      }
    }
  }

  // The (kBM, kBN) output tile goes through shared memory (free once every warp is done), so
  // that global stores are whole 16-byte pieces of rows. Accumulator (mi, nj): rows g and g+8 of
  // the m16 tile, columns 2t and 2t+1 of the n8 tile.
  using OutRow = T[kBN + kE];
  OutRow* tile = reinterpret_cast<OutRow*>(smem_raw);
  __syncthreads();
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nj = 0; nj < kN8; ++nj) {
    const int c = wn * (kBN / 2) + nj * 8 + 2 * t, col = n0 + c;
    const float b0 = a.bias && col < a.Cout ? to_f32(a.bias[col]) : 0.f;
    const float b1 = a.bias && col < a.Cout ? to_f32(a.bias[col + 1]) : 0.f;  // Cout is even
#pragma unroll
    for (int mi = 0; mi < kM16; ++mi)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float v[2] = {acc[mi][nj][2 * hr] + b0, acc[mi][nj][2 * hr + 1] + b1};
        if (a.relu) v[0] = fmaxf(v[0], 0.f), v[1] = fmaxf(v[1], 0.f);
        store_pack(&tile[(wm * kM16 + mi) * 16 + g + hr * 8][c], v);
      }
  }
  __syncthreads();
  const bool whole = a.Cout - n0 >= kBN && a.ldo % kE == 0 && reinterpret_cast<uintptr_t>(a.out) % 16 == 0;
  for (int q = tid; q < kBM * (kBN / kE); q += kThreads) {
    const int r = q / (kBN / kE), c = (q % (kBN / kE)) * kE, p = p0 + r;
    if (p >= a.P) continue;
    T* o = a.out + int64_t(p) * a.ldo + n0 + c;
    if (whole) {
      *reinterpret_cast<uint4*>(o) = *reinterpret_cast<const uint4*>(&tile[r][c]);
    } else {
      for (int e = 0; e < kE && n0 + c + e < a.Cout; ++e) o[e] = tile[r][c + e];
    }
  }
}

int device_attribute(cudaDeviceAttr attr) {
  int dev = 0, n = 0;
  MM_CUDA_CHECK(cudaGetDevice(&dev));
  MM_CUDA_CHECK(cudaDeviceGetAttribute(&n, attr, dev));
  return n;
}
int max_smem_per_block() {
  static const int bytes = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  return bytes;
}
int max_smem_per_sm() {
  static const int bytes = device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor);
  return bytes;
}

int block_channels(int64_t Cout) { return Cout % 48 == 0 ? 48 : 64; }

// The chunk of input channels: the largest of 64, 48, 32 and 16 that divides Cin and lets two
// blocks share an SM (each also holds 1 KB for the system), else the smallest that divides Cin
// (one block an SM, if it fits at all). 0 when none divides Cin.
int chunk_channels(int64_t W, int64_t Cin, int64_t Cout, int elem_bytes) {
  const size_t two_blocks = size_t(max_smem_per_sm()) / 2 - 1024;
  int smallest = 0;
  for (int bk : {64, 48, 32, 16}) {
    if (Cin % bk) continue;
    if (tile_smem_bytes(W, bk, block_channels(Cout), elem_bytes) <= two_blocks) return bk;
    smallest = bk;
  }
  return smallest;
}

template <class T>
void launch_conv(const ConvParams<T>& a, cudaStream_t s) {
  auto go = [&](auto bk, auto bn) {
    constexpr int kBK = decltype(bk)::value, kBN = decltype(bn)::value;
    auto* kernel = conv3x3_implicit_kernel<T, kBK, kBN>;
    static const bool opted_in = [&] {  // above 48 KB a kernel must ask for its shared memory
      MM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem_per_block()));
      return true;
    }();
    (void)opted_in;
    const dim3 grid(unsigned((a.P + kBM - 1) / kBM), unsigned((a.Cout + kBN - 1) / kBN));
    kernel<<<grid, kThreads, Tile<T, kBK, kBN>::smem_bytes(a.W), s>>>(a);
  };
  auto with_bn = [&](auto bk) {
    if (block_channels(a.Cout) == 48) go(bk, std::integral_constant<int, 48>{});
    else go(bk, std::integral_constant<int, 64>{});
  };
  switch (chunk_channels(a.W, a.Cin, a.Cout, int(sizeof(T)))) {
    case 64: with_bn(std::integral_constant<int, 64>{}); break;
    case 48: with_bn(std::integral_constant<int, 48>{}); break;
    case 32: with_bn(std::integral_constant<int, 32>{}); break;
    default: with_bn(std::integral_constant<int, 16>{}); break;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool conv3x3_implicit_supported(DType dt, const void* out, int64_t ldo, const void* x, int64_t ldx, const void* w,
                                int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout) {
  if (dt != DType::BF16 && dt != DType::F16 && dt != DType::F32) return false;
  const int elem = int(dtype_size(dt)), bk = Cin % 16 == 0 && W < (int64_t(1) << 20) ? chunk_channels(W, Cin, Cout, elem) : 0;
  return bk > 0 && Cout % 2 == 0 && ldx % (16 / elem) == 0 && ldo % 2 == 0 && aligned16(x) && aligned16(w) &&
         reinterpret_cast<uintptr_t>(out) % (2 * elem) == 0 && B * H * W < (int64_t(1) << 31) - kBM - 2 * W &&
         9 * Cin < (int64_t(1) << 31) / std::max<int64_t>(Cout, 1) &&
         tile_smem_bytes(W, bk, block_channels(Cout), elem) <= size_t(max_smem_per_block());
}

bool conv3x3_implicit_preferred(int64_t P, int64_t Cin, int64_t Cout) {
  static const int sms = sm_count();
  const int64_t blocks = (P + kBM - 1) / kBM * ((Cout + 47) / 48);
  return Cin <= 96 && blocks >= sms;
}

void conv3x3_implicit(DType dt, void* out, int64_t ldo, const void* x, int64_t ldx, const float* scale,
                      const float* shift, const void* w, const void* bias, bool relu, int64_t B, int64_t H, int64_t W,
                      int64_t Cin, int64_t Cout, Stream s) {
  MM_CHECK(B > 0 && H > 0 && W > 0 && Cin > 0 && Cout > 0, "conv3x3_implicit: empty shape");
  MM_CHECK(conv3x3_implicit_supported(dt, out, ldo, x, ldx, w, B, H, W, Cin, Cout),
           "conv3x3_implicit: needs bf16/fp16/fp32, Cin a multiple of 16, even Cout and ldo, rows of x in 16-byte "
           "pieces, x and w 16-byte aligned, and a tile's weights and halo in shared memory");
  MM_CHECK((scale == nullptr) == (shift == nullptr) && (!scale || (aligned16(scale) && aligned16(shift))),
           "conv3x3_implicit: scale and shift both or neither, 16-byte aligned");
  dispatch_dtype(dt, "conv3x3_implicit", [&](auto t) {
    using T = decltype(t);
    launch_conv(ConvParams<T>{static_cast<T*>(out), static_cast<const T*>(x), scale, shift,
                              static_cast<const T*>(w), static_cast<const T*>(bias), ldo, ldx, int(B * H * W),
                              int(H), int(W), int(Cin), int(Cout), FastDivmod(unsigned(W)),
                              FastDivmod(unsigned(H)), relu},
                s);
  });
  MM_CUDA_CHECK_LAUNCH("conv3x3_implicit");
}

}  // namespace mm::cuda
