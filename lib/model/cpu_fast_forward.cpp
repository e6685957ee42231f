#include "model/cpu_fast_forward.h"

#include <cmath>

#include <sys/mman.h>

#include "core/half.h"
#include "ops/layout.h"
#include "ops/vector_math.h"

namespace mm::fast_forward {

namespace {
constexpr float kNormEps = 1e-5f;  // LayerNorm and BatchNorm, as the reference
}

void advise_huge_pages(void* p, size_t bytes) {
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);  // refused or ignored: 4 KiB pages, as without it
#else
  (void)p;
  (void)bytes;
#endif
}

ChannelAffine batchnorm_affine(const BatchNormWeights& bn, int64_t c) {
  ChannelAffine a{std::vector<float>(size_t(c)), std::vector<float>(size_t(c))};
  for (int64_t i = 0; i < c; ++i) {
    const float s = bn.weight[i] / std::sqrt(bn.running_var[i] + kNormEps);
    a.scale[size_t(i)] = s;
    a.shift[size_t(i)] = bn.bias[i] - bn.running_mean[i] * s;
  }
  return a;
}

void affine_row_to_bf16(uint16_t* out, const float* x, const ChannelAffine& a, int64_t c, float* tmp) {
  for (int64_t i = 0; i < c; ++i) tmp[i] = x[i] * a.scale[size_t(i)] + a.shift[size_t(i)];
  to_bf16(out, tmp, c);
}

void affine_to_bf16(uint16_t* out, const float* x, int64_t C, const ChannelAffine& a, int64_t P, int64_t c) {
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) affine_row_to_bf16(out + p * c, x + p * C, a, c, row.data());
  }
}

Conv2dShape conv_geometry(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad) {
  Conv2dShape s;
  s.Cin = cin; s.Cout = cout; s.KH = s.KW = k; s.stride = stride; s.pad = pad;
  return s;
}

// The float32 normalisation and the gate of one row in one pass.
void layernorm_row(float* o, const float* xr, const float* zr, const float* weight, const float* bias, int64_t C) {
  float m, r;
  layernorm_row_stats(xr, C, kNormEps, m, r);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) o[c] = (xr[c] - m) * r * weight[c] + bias[c];
  if (zr) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] *= silu_vectorisable(zr[c]);
  }
}

void layernorm_rows(const float* x, int64_t ld, const float* z, const float* weight, const float* bias, int64_t P,
                    int64_t C, const std::function<void(int64_t, const float*)>& store) {
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      layernorm_row(row.data(), x + p * ld, z ? z + p * C : nullptr, weight, bias, C);
      store(p, row.data());
    }
  }
}

void merge_layernorm_rows(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, const float* weight,
                          const float* bias, const std::function<void(int64_t, const float*)>& store) {
  const int64_t Q = B * (H / 2) * (W / 2), K = 4 * C;
#pragma omp parallel
  {
    std::vector<float> in(static_cast<size_t>(K)), row(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t q = 0; q < Q; ++q) {
      patch_gather_row(in.data(), x, q, H, W, C);
      layernorm_row(row.data(), in.data(), nullptr, weight, bias, K);
      store(q, row.data());
    }
  }
}

void shuffle_residual(float* out, const float* l, const float* s, const float* x, int64_t P, int64_t c,
                      const std::function<void(int64_t, const float*)>& row_done) {
  const int64_t D = 2 * c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < P; ++p) {
    float* o = out + p * D;
    const float* xr = x + p * D;
#pragma omp simd
    for (int64_t m = 0; m < c; ++m) {
      o[2 * m] = l[p * c + m] + xr[2 * m];
      o[2 * m + 1] = s[p * c + m] + xr[2 * m + 1];
    }
    if (row_done) row_done(p, o);
  }
}

void images_to_patches_bf16(uint16_t* out, const float* img, int64_t B, int64_t Cin, int64_t S, int64_t k) {
  const int64_t side = S / k, row = Cin * k * k;
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oh = 0; oh < side; ++oh)
      for (int64_t ci = 0; ci < Cin; ++ci)
        for (int64_t kh = 0; kh < k; ++kh) {
          const float* src = img + ((b * Cin + ci) * S + oh * k + kh) * S;  // one image row
          uint16_t* dst = out + (b * side + oh) * side * row + (ci * k + kh) * k;
          for (int64_t ow = 0; ow < side; ++ow)
            for (int64_t kw = 0; kw < k; ++kw) dst[ow * row + kw] = float_to_bf16(src[ow * k + kw]);
        }
}

void check_images(const Tensor& images, const ModelConfig& cfg, const char* precision) {
  const int64_t multiple = 4 << (cfg.num_stages() - 1);
  MM_CHECK(images.dtype() == DType::F32 && images.device() == Device::CPU && images.ndim() == 4 &&
               images.dim(1) == cfg.in_chans && images.dim(2) == images.dim(3) && images.dim(2) % multiple == 0 &&
               images.dim(2) > 0,
           std::string(precision) + " forward expects a float32 CPU tensor (B," + std::to_string(cfg.in_chans) +
               ",S,S) with S divisible by " + std::to_string(multiple) + ", got " + shape_str(images.shape()));
}

}  // namespace mm::fast_forward
