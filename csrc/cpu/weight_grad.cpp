// The weight gradient of a stride-1 conv (any dilation, explicit left padding), fp32 on the CPU:
//
//   dW[co, ci, k] = sum over items b and outputs t of gz[b, co, t] * x[b, ci, t - pad + k*dilation]
//
// Every (co, (ci, k)) entry is a dot product along time of a gz row and a shifted x row, both
// contiguous, so a register tile of 4 output channels x 3 (ci, k) columns loads 7 vectors per 12
// FMAs and reduces in its lanes, with no im2col copy (ATen's backward-weights runs the codec's
// k7 layers at 40-75 GFLOP/s on 2 Zen 3 cores). Time is walked in chunks that keep a chunk's gz
// and x rows in L2 while every tile of a thread passes over them.
#include <algorithm>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "simd.h"

namespace fastcodec {
namespace {

constexpr int kRows = 4, kCols = 3;
constexpr int64_t kChunk = 1024;  // samples per pass: 4 + 3 rows of it are 28 KB

// out[r*ld + c] += sum_{t < n} g[r][t] * xs[c][t] for R rows and C columns.
template <int R, int C>
void dots_generic(const float* const* g, const float* const* xs, int64_t n, float* out, int64_t ld) {
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float s = 0.0f;
      for (int64_t t = 0; t < n; ++t) s += g[r][t] * xs[c][t];
      out[r * ld + c] += s;
    }
}

#ifdef FASTCODEC_X86_SIMD
__attribute__((target("avx2,fma"))) inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One 8-sample step of the tile: the masked form for the last, partial step.
template <int R, int C, bool Masked>
__attribute__((target("avx2,fma"), always_inline)) inline void dots_step(const float* const* g, const float* const* xs,
                                                                          int64_t t, __m256i mask, __m256 (&acc)[R][C]) {
  __m256 xv[C];
#pragma GCC unroll 3
  for (int c = 0; c < C; ++c) xv[c] = Masked ? _mm256_maskload_ps(xs[c] + t, mask) : _mm256_loadu_ps(xs[c] + t);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m256 gv = Masked ? _mm256_maskload_ps(g[r] + t, mask) : _mm256_loadu_ps(g[r] + t);
#pragma GCC unroll 3
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(gv, xv[c], acc[r][c]);
  }
}

// Also what AVX-512 hosts run: the layers this serves are small, and a 16-lane tile would need
// twice the rows to stay FMA-bound.
template <int R, int C>
__attribute__((target("avx2,fma"))) void dots_avx2(const float* const* g, const float* const* xs, int64_t n,
                                                   float* out, int64_t ld) {
  __m256 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  const __m256i all = _mm256_set1_epi32(-1);
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) dots_step<R, C, false>(g, xs, t, all, acc);
  if (t < n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    dots_step<R, C, true>(g, xs, t, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - t)), lane), acc);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int c = 0; c < C; ++c) out[r * ld + c] += hsum_avx2(acc[r][c]);
}
#endif

using Dots = void (*)(const float* const*, const float* const*, int64_t, float*, int64_t);

template <int R, int C>
Dots dots_kernel() {
#ifdef FASTCODEC_X86_SIMD
  if (cpu::has_avx2_fma()) return dots_avx2<R, C>;
#endif
  return dots_generic<R, C>;
}

Dots pick_dots(int64_t R, int64_t C) {
  static const Dots table[kRows][kCols] = {{dots_kernel<1, 1>(), dots_kernel<1, 2>(), dots_kernel<1, 3>()},
                                           {dots_kernel<2, 1>(), dots_kernel<2, 2>(), dots_kernel<2, 3>()},
                                           {dots_kernel<3, 1>(), dots_kernel<3, 2>(), dots_kernel<3, 3>()},
                                           {dots_kernel<4, 1>(), dots_kernel<4, 2>(), dots_kernel<4, 3>()}};
  return table[R - 1][C - 1];
}

// gz [B, Cout, T'], x [B, Cin, T] -> dW [Cout, Cin, K] for the stride-1 conv whose output t reads
// x[t - pad + k*dilation] (zero outside [0, T)).
at::Tensor conv1d_weight_grad_cpu(const at::Tensor& gz_in, const at::Tensor& x_in, int64_t K, int64_t dilation,
                                  int64_t pad) {
  TORCH_CHECK(gz_in.dim() == 3 && x_in.dim() == 3, "fastcodec: conv1d_weight_grad: gz and x must be [B, C, T], got ",
              gz_in.sizes(), " and ", x_in.sizes());
  TORCH_CHECK(gz_in.scalar_type() == at::kFloat && x_in.scalar_type() == at::kFloat,
              "fastcodec: conv1d_weight_grad is fp32 only, got ", gz_in.scalar_type(), " and ", x_in.scalar_type());
  TORCH_CHECK(gz_in.device().is_cpu() && x_in.device().is_cpu(), "fastcodec: conv1d_weight_grad runs on CPU tensors");
  TORCH_CHECK(gz_in.size(0) == x_in.size(0), "fastcodec: conv1d_weight_grad: gz has ", gz_in.size(0),
              " items, x has ", x_in.size(0));
  TORCH_CHECK(K >= 1 && dilation >= 1 && pad >= 0, "fastcodec: conv1d_weight_grad: need K >= 1, dilation >= 1, "
              "pad >= 0; got ", K, ", ", dilation, ", ", pad);
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2), Cout = gz_in.size(1), Tz = gz_in.size(2);
  at::Tensor gw = at::zeros({Cout, Cin, K}, x_in.options());
  if (B == 0 || Tz == 0 || Cout == 0 || Cin == 0) return gw;
  // x padded so every read is in range: pad zeros in front, zeros past T up to the last read.
  const int64_t Lx = std::max(T + pad, Tz + (K - 1) * dilation);
  const at::Tensor xp = at::constant_pad_nd(x_in, {pad, Lx - T - pad});
  const at::Tensor gz = gz_in.contiguous();
  const float* gp = gz.data_ptr<float>();
  const float* xpp = xp.data_ptr<float>();
  float* wp = gw.data_ptr<float>();
  const int64_t N = Cin * K, rblocks = (Cout + kRows - 1) / kRows, cgroups = (N + kCols - 1) / kCols;
  at::parallel_for(0, rblocks * cgroups, 1, [&](int64_t begin, int64_t end) {
    const float* g[kRows];
    const float* xs[kCols];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t0 = 0; t0 < Tz; t0 += kChunk) {
        const int64_t n = std::min(kChunk, Tz - t0);
        for (int64_t tile = begin; tile < end; ++tile) {
          const int64_t co0 = tile / cgroups * kRows, n0 = tile % cgroups * kCols;
          const int64_t R = std::min<int64_t>(kRows, Cout - co0), C = std::min<int64_t>(kCols, N - n0);
          for (int64_t r = 0; r < R; ++r) g[r] = gp + (b * Cout + co0 + r) * Tz + t0;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t ci = (n0 + c) / K, k = (n0 + c) % K;
            xs[c] = xpp + (b * Cin + ci) * Lx + t0 + k * dilation;
          }
          pick_dots(R, C)(g, xs, n, wp + co0 * N + n0, N);
        }
      }
  });
  return gw;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcodec, CPU, m) { m.impl("conv1d_weight_grad", &conv1d_weight_grad_cpu); }

}  // namespace fastcodec
