// The weight gradient of a stride-1 conv (any dilation, explicit left padding), fp32 on the CPU:
//
//   dW[co, ci, k] = sum over items b and outputs t of gz[b, co, t] * x[b, ci, t - pad + k*dilation]
//
// Every (co, (ci, k)) entry is a dot product along time of a gz row and a shifted x row, both
// contiguous, so a register tile of R output channels x C (ci, k) columns loads R + C vectors per
// R*C FMAs and reduces in its lanes, with no im2col copy (ATen's backward-weights is slow on the
// codec's k7 layers: benchmarks/RESULTS.md, "Where the code's rules come from"). The tile is
// 4 x 3 with AVX2 (12 of the 16 registers) and 4 x 6 with AVX-512 (24 of 32: 10 loads per 24
// FMAs, which two load ports feed).
// Time is walked in passes that keep a pass's gz and x rows in L2 while every tile of a thread
// goes over them: a 1024-sample chunk of one item, or, where items are shorter, up to 16 whole
// items, summed in the same registers so that the tile's horizontal sums come once per pass (at
// short items they would otherwise be a large share of the work).
#include <algorithm>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "simd.h"

namespace fastcodec {
namespace {

constexpr int kRows = 4;                     // output channels per tile
constexpr int kColsAvx2 = 3, kColsMax = 6;  // (ci, k) columns per tile: AVX2 and portable, AVX-512
constexpr int64_t kChunk = 1024;            // samples per pass: 4 + 6 rows of it are 40 KB
constexpr int kMaxSegs = 16;                // items per pass, where items are short

// A pass: nseg segments, segment s being n[s] samples at g[s*kRows + r] (gz rows) and
// xs[s*kColsMax + c] (x rows, shifted to the tile's tap).
struct Pass {
  const float* const* g;
  const float* const* xs;
  const int64_t* n;
  int nseg;
};

// out[r*ld + c] += sum over the pass's segments and their samples t of g[r][t] * xs[c][t], for
// R rows and C columns.
template <int R, int C>
void dots_generic(const Pass& p, float* out, int64_t ld) {
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float s = 0.0f;
      for (int q = 0; q < p.nseg; ++q) {
        const float* g = p.g[q * kRows + r];
        const float* x = p.xs[q * kColsMax + c];
        for (int64_t t = 0; t < p.n[q]; ++t) s += g[t] * x[t];
      }
      out[r * ld + c] += s;
    }
}

#ifdef FASTCODEC_X86_SIMD
// target avx2 alone (no fma), so the AVX-512 tile, whose target implies it, can inline it too.
__attribute__((target("avx2"), always_inline)) inline float hsum_avx2(__m256 v) {
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

template <int R, int C>
__attribute__((target("avx2,fma"))) void dots_avx2(const Pass& p, float* out, int64_t ld) {
  __m256 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  const __m256i all = _mm256_set1_epi32(-1);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int q = 0; q < p.nseg; ++q) {
    const float* const* g = p.g + q * kRows;
    const float* const* xs = p.xs + q * kColsMax;
    const int64_t n = p.n[q];
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) dots_step<R, C, false>(g, xs, t, all, acc);
    if (t < n)
      dots_step<R, C, true>(g, xs, t, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - t)), lane), acc);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int c = 0; c < C; ++c) out[r * ld + c] += hsum_avx2(acc[r][c]);
}

// The halves by zero-masked extracts: _mm512_reduce_add_ps and the plain extracts pass an
// undefined placeholder that gcc 12 warns about wherever they are inlined (GCC bug 105593).
__attribute__((target("avx512f"), always_inline)) inline float hsum_avx512(__m512 v) {
  const __m512d d = _mm512_castps_pd(v);
  const __mmask8 all = 0xF;
  return hsum_avx2(_mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(all, d, 0)),
                                 _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(all, d, 1))));
}

// One 16-sample step of the AVX-512 tile; the last, partial step loads under a lane mask.
template <int R, int C>
__attribute__((target("avx512f"), always_inline)) inline void dots_step512(const float* const* g,
                                                                            const float* const* xs, int64_t t,
                                                                            __mmask16 m, __m512 (&acc)[R][C]) {
  __m512 xv[C];
#pragma GCC unroll 6
  for (int c = 0; c < C; ++c) xv[c] = _mm512_maskz_loadu_ps(m, xs[c] + t);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m512 gv = _mm512_maskz_loadu_ps(m, g[r] + t);
#pragma GCC unroll 6
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(gv, xv[c], acc[r][c]);
  }
}

template <int R, int C>
__attribute__((target("avx512f"))) void dots_avx512(const Pass& p, float* out, int64_t ld) {
  __m512 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int q = 0; q < p.nseg; ++q) {
    const float* const* g = p.g + q * kRows;
    const float* const* xs = p.xs + q * kColsMax;
    const int64_t n = p.n[q];
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) dots_step512<R, C>(g, xs, t, static_cast<__mmask16>(0xFFFF), acc);
    if (t < n) dots_step512<R, C>(g, xs, t, static_cast<__mmask16>((1u << (n - t)) - 1), acc);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int c = 0; c < C; ++c) out[r * ld + c] += hsum_avx512(acc[r][c]);
  // gcc leaves this function's upper register state dirty (its other AVX-512 kernels get a
  // vzeroupper), which slows the caller's SSE code.
  _mm256_zeroupper();
}
#endif

using Dots = void (*)(const Pass&, float*, int64_t);

template <int R, int C>
Dots dots_kernel() {
#ifdef FASTCODEC_X86_SIMD
  if (cpu::has_avx512()) return dots_avx512<R, C>;
  if constexpr (C <= kColsAvx2) {
    if (cpu::has_avx2_fma()) return dots_avx2<R, C>;
  }
#endif
  return dots_generic<R, C>;
}

// Tile columns at this process's SIMD level.
int64_t tile_cols() { return cpu::has_avx512() ? kColsMax : kColsAvx2; }

Dots pick_dots(int64_t R, int64_t C) {
  static const Dots table[kRows][kColsMax] = {
      {dots_kernel<1, 1>(), dots_kernel<1, 2>(), dots_kernel<1, 3>(), dots_kernel<1, 4>(), dots_kernel<1, 5>(),
       dots_kernel<1, 6>()},
      {dots_kernel<2, 1>(), dots_kernel<2, 2>(), dots_kernel<2, 3>(), dots_kernel<2, 4>(), dots_kernel<2, 5>(),
       dots_kernel<2, 6>()},
      {dots_kernel<3, 1>(), dots_kernel<3, 2>(), dots_kernel<3, 3>(), dots_kernel<3, 4>(), dots_kernel<3, 5>(),
       dots_kernel<3, 6>()},
      {dots_kernel<4, 1>(), dots_kernel<4, 2>(), dots_kernel<4, 3>(), dots_kernel<4, 4>(), dots_kernel<4, 5>(),
       dots_kernel<4, 6>()}};
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
  const at::Tensor x = x_in.contiguous();
  const at::Tensor gz = gz_in.contiguous();
  const float* gp = gz.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* wp = gw.data_ptr<float>();
  const int64_t N = Cin * K, rblocks = (Cout + kRows - 1) / kRows, cols = tile_cols(),
                cgroups = (N + cols - 1) / cols, span = (K - 1) * dilation;
  // Segments (item, first sample, length), grouped into passes: segs[first[p] .. first[p+1]).
  struct Seg {
    int64_t b, t0, n;
  };
  std::vector<Seg> segs;
  std::vector<int64_t> first;
  const int64_t per_pass = std::clamp<int64_t>(kChunk / Tz, 1, kMaxSegs);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t0 = 0; t0 < Tz; t0 += kChunk) {
      if (per_pass == 1 || b % per_pass == 0) first.push_back(static_cast<int64_t>(segs.size()));
      segs.push_back({b, t0, std::min(kChunk, Tz - t0)});
    }
  first.push_back(static_cast<int64_t>(segs.size()));
  at::parallel_for(0, rblocks * cgroups, 1, [&](int64_t begin, int64_t end) {
    const float* g[kMaxSegs * kRows];
    const float* xs[kMaxSegs * kColsMax];
    int64_t n[kMaxSegs];
    const float* rows[kMaxSegs];  // segment q's x row ci at rows[q] + ci*ld[q] holds x[t0 - pad + j]
    int64_t ld[kMaxSegs], win_at[kMaxSegs];
    // A segment whose reads leave [0, T) (the padding at the front, and past the end when pad is
    // short of the span) reads a zero-filled copy of its window instead: x itself is never padded,
    // which saved a fill and a copy of all of x per call (a tenth of a 64-channel layer's backward).
    std::vector<float> window;
    for (size_t p = 0; p + 1 < first.size(); ++p) {
      const int nseg = static_cast<int>(first[p + 1] - first[p]);
      window.clear();
      for (int q = 0; q < nseg; ++q) {
        const Seg& sg = segs[first[p] + q];
        const int64_t lo = sg.t0 - pad, len = sg.n + span;
        n[q] = sg.n;
        if (lo >= 0 && lo + len <= T) {
          rows[q] = xp + sg.b * Cin * T + lo;
          ld[q] = T;
          win_at[q] = -1;
          continue;
        }
        const int64_t at = static_cast<int64_t>(window.size());
        window.resize(at + Cin * len, 0.0f);
        const int64_t j0 = std::max<int64_t>(0, -lo), j1 = std::min(len, T - lo);
        for (int64_t ci = 0; ci < Cin && j1 > j0; ++ci) {
          const float* src = xp + (sg.b * Cin + ci) * T + lo;
          std::copy(src + j0, src + j1, window.data() + at + ci * len + j0);
        }
        ld[q] = len;
        win_at[q] = at;
      }
      for (int q = 0; q < nseg; ++q)  // once the window has stopped growing
        if (win_at[q] >= 0) rows[q] = window.data() + win_at[q];
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t co0 = tile / cgroups * kRows, n0 = tile % cgroups * cols;
        const int64_t R = std::min<int64_t>(kRows, Cout - co0), C = std::min<int64_t>(cols, N - n0);
        for (int q = 0; q < nseg; ++q) {
          const Seg& sg = segs[first[p] + q];
          for (int64_t r = 0; r < R; ++r) g[q * kRows + r] = gp + (sg.b * Cout + co0 + r) * Tz + sg.t0;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t ci = (n0 + c) / K, k = (n0 + c) % K;
            xs[q * kColsMax + c] = rows[q] + ci * ld[q] + k * dilation;
          }
        }
        pick_dots(R, C)(Pass{g, xs, n, nseg}, wp + co0 * N + n0, N);
      }
    }
  });
  return gw;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcodec, CPU, m) { m.impl("conv1d_weight_grad", &conv1d_weight_grad_cpu); }

}  // namespace fastcodec
