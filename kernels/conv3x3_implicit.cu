// 3x3 pad-1 stride-1 convolution as an implicit GEMM on the tensor cores, for the inference
// engine's 16-bit activations (bf16 or fp16 in and out, float32 sums):
//   out (P, Cout) = [relu](conv3x3(x) + bias),  P = B·H·W pixels,
// the same product as im2col3x3 followed by GemmRunner, without the (P, 9·Cin) column matrix:
// at MedMamba-T's first stage, batch 128, that matrix is 347 MB that im2col wrote to HBM and
// the GEMM read back, for each of a block's two convs (ncu: the pass's 20 im2col launches
// were 12% of its kernel time).
//
// Tiling. A block of 8 warps computes kBM = 128 pixels (consecutive rows of the flattened
// (B,H,W) grid, wherever they fall in the images) by kBN = 48 or 64 output channels; warp
// (wm, wn) holds a 32 x kBN/2 tile of it as mma.sync.m16n8k16 accumulators (4 warps along M,
// 2 along N). The K loop walks the taps (kh, kw) and, in each, Cin in steps of kBK channels
// (64, 48, 32 or 16: the largest that divides Cin), in the weight's (Cout, kh, kw, Cin) column
// order. A step stages in shared memory, by cp.async kStages deep:
//   - A (kBM, kBK): each pixel's kBK channels at its tap neighbour, zeros outside the image
//     (the copy's source size 0);
//   - B (kBN, kBK): the weights' slice, rows past Cout zero.
// An eval BatchNorm before the conv (the block's first) is applied by channel_affine into a
// (P, Cin) buffer first: it reads and writes P·Cin values where im2col wrote 9 times that.
//
// Where it runs (conv3x3_implicit_preferred): measured on the H200 (ncu, MedMamba-T, bf16,
// batch 128), a block's two convs at stage 1 (Cin 48, one K step a tap) took 0.36 ms against
// im2col + GEMM's 0.55, but at stage 2 (Cin 96) 0.35 against 0.28, and at batch 1 the pass
// took 1.05 ms against 0.69. A K step costs about 2.4 us of a block's time (3 blocks an SM)
// at every stage: the taps re-read each input pixel 9 times through L2 (about 820 MB a conv
// at stage 1), and a smaller shared-memory carveout, to keep them in L1, was slower (fewer
// blocks an SM). The next step is to stage a block's input halo (its pixels plus a row and a
// pixel each side, contiguous in the flattened grid) once per channel chunk and shift the
// ldmatrix row addresses per tap, pointing those outside the image at a zero row.
#include <algorithm>
#include <cstdint>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace mm::cuda {

namespace {

constexpr int kBM = 128, kStages = 3, kThreads = 256;

// kBK input channels per K step (a divisor of Cin: 64, 48, 32 or 16), kBN output channels per
// block (48 or 64: MedMamba's channel counts are multiples of 48). Shared rows are kBK + 8
// elements apart, which puts the 8 rows of every ldmatrix in distinct banks for these kBK.
template <class T, int kBK, int kBN>
struct Tile {
  static constexpr int kRow = kBK + 8;
  static constexpr int kChunks = kBK / 8;                      // 16-byte chunks per row
  static constexpr int kAPerThread = kBM * kChunks / kThreads;  // A chunks each thread copies
  static constexpr int kWarpN8 = kBN / 16;                      // n8 tiles per warp (2 warps along N)
  static_assert(kBM * kChunks % kThreads == 0, "A chunks must split evenly over the threads");
  struct Stage {
    T a[kBM][kRow];
    T b[kBN][kRow];
  };
  static constexpr size_t kSmem = kStages * sizeof(Stage);
};

__device__ __forceinline__ void cp_async16_ca(void* smem, const void* gmem, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const unsigned a = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* smem) {
  const unsigned a = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
}

// d += a·b for one m16n8k16 tile, float32 accumulators.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <class T>
struct ConvParams {
  T* out;
  const T* x;
  const T* w;     // (Cout, 3, 3, Cin)
  const T* bias;  // (Cout) or nullptr
  int64_t ldo, ldx;
  int P, H, W, Cin, Cout;
  bool relu;
};

template <class T, int kBK, int kBN>
__global__ void __launch_bounds__(kThreads) conv3x3_implicit_kernel(ConvParams<T> a) {
  using Tl = Tile<T, kBK, kBN>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* st = reinterpret_cast<typename Tl::Stage*>(smem_raw);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % 4, wn = warp / 4;  // warp tile: rows wm·32.., columns wn·(kBN/2)..
  const int p0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN;
  const int cin_steps = a.Cin / kBK, steps = 9 * cin_steps, K = 9 * a.Cin;

  // The A chunks this thread copies: (row, 8 channels at part·8) for j < kAPerThread, with
  // the taps inside the image for that row's pixel as bits kh·3+kw.
  int arow[Tl::kAPerThread], apart[Tl::kAPerThread];
  unsigned inside[Tl::kAPerThread];
#pragma unroll
  for (int j = 0; j < Tl::kAPerThread; ++j) {
    const int q = tid + j * kThreads;
    arow[j] = q / Tl::kChunks;
    apart[j] = (q % Tl::kChunks) * 8;
    const int p = p0 + arow[j];
    inside[j] = 0;
    if (p < a.P) {
      const int pw = p % a.W, ph = (p / a.W) % a.H;
#pragma unroll
      for (int t = 0; t < 9; ++t) {
        const int ih = ph + t / 3 - 1, iw = pw + t % 3 - 1;
        if (ih >= 0 && ih < a.H && iw >= 0 && iw < a.W) inside[j] |= 1u << t;
      }
    }
  }

  auto load = [&](int slot, int step) {
    const int tap = step / cin_steps, ci0 = (step % cin_steps) * kBK;
    const int shift = (tap / 3 - 1) * a.W + (tap % 3 - 1);
#pragma unroll
    for (int j = 0; j < Tl::kAPerThread; ++j) {
      const bool in = (inside[j] >> tap) & 1u;
      const T* src = in ? a.x + (int64_t(p0 + arow[j]) + shift) * a.ldx + ci0 + apart[j] : a.x;
      cp_async16_ca(&st[slot].a[arow[j]][apart[j]], src, in);
    }
    for (int q = tid; q < kBN * Tl::kChunks; q += kThreads) {
      const int r = q / Tl::kChunks, part = (q % Tl::kChunks) * 8, n = n0 + r;
      const bool ok = n < a.Cout;
      cp_async16_ca(&st[slot].b[r][part], ok ? a.w + int64_t(n) * K + tap * a.Cin + ci0 + part : a.w, ok);
    }
  };

  float acc[2][Tl::kWarpN8][4] = {};
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) load(s, s);
    cp_async_commit();
  }
  for (int s = 0; s < steps; ++s) {
    const int slot = s % kStages;
    cp_async_wait<kStages - 2>();  // this thread's copies of step s have landed
    __syncthreads();               // everyone's have; step s-1's slot is free
    if (s + kStages - 1 < steps) load((s + kStages - 1) % kStages, s + kStages - 1);
    cp_async_commit();
    const typename Tl::Stage& sg = st[slot];
#pragma unroll
    for (int k16 = 0; k16 < kBK; k16 += 16) {
      uint32_t af[2][4], bf[Tl::kWarpN8][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
        ldmatrix_x4(af[mi], &sg.a[wm * 32 + mi * 16 + lane % 16][k16 + (lane / 16) * 8]);
#pragma unroll
      for (int nj = 0; nj < Tl::kWarpN8; ++nj)  // lanes 0-15 address (b0, b1); 16-31 repeat them
        ldmatrix_x2(bf[nj], &sg.b[wn * (kBN / 2) + nj * 8 + lane % 8][k16 + ((lane / 8) % 2) * 8]);
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int nj = 0; nj < Tl::kWarpN8; ++nj) mma_16816<T>(acc[mi][nj], af[mi], bf[nj]);
    }
  }
  cp_async_wait<0>();

  // Accumulator (mi, nj): rows g and g+8 of the m16 tile, columns 2t and 2t+1 of the n8 tile.
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nj = 0; nj < Tl::kWarpN8; ++nj) {
    const int col = n0 + wn * (kBN / 2) + nj * 8 + 2 * t;
    if (col >= a.Cout) continue;  // Cout is even: col + 1 is inside too
    const float b0 = a.bias ? to_f32(a.bias[col]) : 0.f, b1 = a.bias ? to_f32(a.bias[col + 1]) : 0.f;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int row = p0 + wm * 32 + mi * 16 + g + hr * 8;
        if (row >= a.P) continue;
        float v0 = acc[mi][nj][2 * hr] + b0, v1 = acc[mi][nj][2 * hr + 1] + b1;
        if (a.relu) v0 = fmaxf(v0, 0.f), v1 = fmaxf(v1, 0.f);
        T* o = a.out + int64_t(row) * a.ldo + col;
        o[0] = from_f32<T>(v0);
        o[1] = from_f32<T>(v1);
      }
  }
}

template <class T, int kBK, int kBN>
void launch_conv(const ConvParams<T>& a, cudaStream_t s) {
  constexpr size_t smem = Tile<T, kBK, kBN>::kSmem;
  static const bool opted_in = [] {  // above 48 KB a kernel must ask for its shared memory
    MM_CUDA_CHECK(cudaFuncSetAttribute(conv3x3_implicit_kernel<T, kBK, kBN>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    return true;
  }();
  (void)opted_in;
  const dim3 grid(unsigned((a.P + kBM - 1) / kBM), unsigned((a.Cout + kBN - 1) / kBN));
  conv3x3_implicit_kernel<T, kBK, kBN><<<grid, kThreads, smem, s>>>(a);
}

template <class T, int kBN>
void launch_bk(const ConvParams<T>& a, cudaStream_t s) {
  if (a.Cin % 64 == 0) launch_conv<T, 64, kBN>(a, s);
  else if (a.Cin % 48 == 0) launch_conv<T, 48, kBN>(a, s);
  else if (a.Cin % 32 == 0) launch_conv<T, 32, kBN>(a, s);
  else launch_conv<T, 16, kBN>(a, s);
}

template <class T>
__global__ void channel_affine_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t ldx,
                                      const float* __restrict__ scale, const float* __restrict__ shift, int64_t P,
                                      int C8) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (pixel, 8 channels)
  if (i >= P * C8) return;
  const int64_t p = i / C8;
  const int c = int(i % C8) * 8;
  float v[8], sc[8], sh[8];
  load_pack(x + p * ldx + c, v);
  load_floats(scale + c, sc);
  load_floats(shift + c, sh);
#pragma unroll
  for (int e = 0; e < 8; ++e) v[e] = fmaf(v[e], sc[e], sh[e]);
  store_pack(out + p * int64_t(C8) * 8 + c, v);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool conv3x3_implicit_supported(DType dt, const void* out, int64_t ldo, const void* x, int64_t ldx, const void* w,
                                int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout) {
  return (dt == DType::BF16 || dt == DType::F16) && Cin % 16 == 0 && Cout % 2 == 0 && ldx % 8 == 0 &&
         ldo % 2 == 0 && aligned16(x) && aligned16(w) && reinterpret_cast<uintptr_t>(out) % 4 == 0 &&
         B * H * W < (int64_t(1) << 31) - kBM && 9 * Cin < (int64_t(1) << 31) / std::max<int64_t>(Cout, 1);
}

bool conv3x3_implicit_preferred(int64_t P, int64_t Cin) {
  static const int sms = sm_count();
  return Cin <= 64 && P >= int64_t(kBM) * 4 * sms;
}

void conv3x3_implicit(DType dt, void* out, int64_t ldo, const void* x, int64_t ldx, const void* w,
                      const void* bias, bool relu, int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout,
                      Stream s) {
  MM_CHECK(B > 0 && H > 0 && W > 0 && Cin > 0 && Cout > 0, "conv3x3_implicit: empty shape");
  MM_CHECK(conv3x3_implicit_supported(dt, out, ldo, x, ldx, w, B, H, W, Cin, Cout),
           "conv3x3_implicit: needs bf16/fp16, Cin a multiple of 16, even Cout and ldo, ldx a multiple of 8, "
           "x and w 16-byte aligned");
  auto launch = [&](auto t) {
    using T = decltype(t);
    const ConvParams<T> a{static_cast<T*>(out), static_cast<const T*>(x), static_cast<const T*>(w),
                          static_cast<const T*>(bias), ldo, ldx, int(B * H * W), int(H), int(W), int(Cin),
                          int(Cout), relu};
    if (Cout % 48 == 0) launch_bk<T, 48>(a, s);
    else launch_bk<T, 64>(a, s);
  };
  if (dt == DType::BF16) launch(__nv_bfloat16{});
  else launch(__half{});
  MM_CUDA_CHECK_LAUNCH("conv3x3_implicit");
}

void channel_affine(DType dt, void* out, const void* x, int64_t ldx, const float* scale, const float* shift,
                    int64_t P, int64_t C, Stream s) {
  MM_CHECK(P > 0 && C > 0 && C % 8 == 0 && ldx % 8 == 0 && aligned16(x) && aligned16(out) && aligned16(scale) &&
               aligned16(shift),
           "channel_affine: needs C and ldx multiples of 8 and 16-byte aligned pointers");
  MM_CHECK(dt == DType::BF16 || dt == DType::F16, "channel_affine: bf16 or fp16 only");
  auto launch = [&](auto t) {
    using T = decltype(t);
    const int64_t n = P * (C / 8);
    channel_affine_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(static_cast<T*>(out), static_cast<const T*>(x), ldx,
                                                               scale, shift, P, int(C / 8));
  };
  if (dt == DType::BF16) launch(__nv_bfloat16{});
  else launch(__half{});
  MM_CUDA_CHECK_LAUNCH("channel_affine");
}

}  // namespace mm::cuda
