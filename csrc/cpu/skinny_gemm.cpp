// The few-rows product declared in skinny_gemm.h.
#include "skinny_gemm.h"
#include "simd.h"

#include <algorithm>

#include <ATen/Parallel.h>

namespace fastcodec {
namespace cpu {
namespace {

// y[r, 0..8V) for r < R over V consecutive panels (pstride floats apart), portable. x: the
// group's first row.
template <int R, int V>
void micro_generic(const SkinnyRows& a, const float* x, const float* wp, int64_t pstride, float* y, int64_t ldy) {
  float acc[R][V * kPanel] = {};
  for (int64_t ci = 0; ci < a.Cin; ++ci)
    for (int64_t k = 0; k < a.K; ++k, wp += kPanel) {
      const float* xk = x + ci * a.cstride + a.tap[k];
      for (int r = 0; r < R; ++r) {
        const float xv = xk[r * a.rstride];
        for (int v = 0; v < V; ++v)
          for (int j = 0; j < kPanel; ++j) acc[r][v * kPanel + j] += xv * wp[v * pstride + j];
      }
    }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V * kPanel; ++j) y[r * ldy + j] = acc[r][j];
}

#ifdef FASTCODEC_X86_SIMD
// The AVX2 form. The unroll pragmas matter: without them gcc keeps the accumulator array in
// memory and stores it every iteration, which halves the rate (measured: 50 vs 100 GFLOP/s).
// With one or two panel streams the hardware prefetcher falls behind when the weights come from
// L3 or DRAM, as they do when a stream cycles through a whole model per frame; prefetching 2 KB
// ahead took a cold 256 x 1792 product at 8 rows from 227 to 118 us (512 bytes ahead: no gain).
template <int R, int V>
__attribute__((target("avx2,fma"))) void micro_avx2(const SkinnyRows& a, const float* x, const float* wp,
                                                    int64_t pstride, float* y, int64_t ldy) {
  constexpr bool kPrefetch = V <= 2;
  const int64_t rs = a.rstride;
  __m256 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t ci = 0; ci < a.Cin; ++ci) {
    const float* xc = x + ci * a.cstride;
    for (int64_t k = 0; k < a.K; ++k, wp += kPanel) {
      if (kPrefetch) {
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) _mm_prefetch(reinterpret_cast<const char*>(wp + v * pstride + 512), _MM_HINT_T0);
      }
      __m256 w[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) w[v] = _mm256_loadu_ps(wp + v * pstride);
      const float* xk = xc + a.tap[k];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 xb = _mm256_broadcast_ss(xk + r * rs);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(xb, w[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(y + r * ldy + v * kPanel, acc[r][v]);
}
#endif

using Micro = void (*)(const SkinnyRows&, const float*, const float*, int64_t, float*, int64_t);

// Panels per micro-tile for R rows: at most 12 accumulators (of 16 vector registers), and no
// more panels than reading each weight once needs. Measured on the 2-core EPYC: for 8 rows of
// 256 x 1792 weights, 1 panel with prefetch (4 with 3 panels was as fast hot, slower from L3);
// for 48 rows of 128 x 896 (in L2), groups of 6 rows x 2 panels (114 GFLOP/s, above 8 x 1 by 25%).
constexpr int panels_for(int R) { return R <= 3 ? 4 : R == 4 ? 3 : R <= 6 ? 2 : 1; }
constexpr int64_t kGroupRows = 6;  // rows per group when there are more than 8

struct Kernels {
  Micro wide[kSkinnyRows + 1];    // R rows x panels_for(R) panels
  Micro single[kSkinnyRows + 1];  // R rows x 1 panel (the leftover panels)
};

template <int R>
void fill(Kernels& k, bool simd) {
  constexpr int V = panels_for(R);
#ifdef FASTCODEC_X86_SIMD
  if (simd) {
    k.wide[R] = micro_avx2<R, V>;
    k.single[R] = micro_avx2<R, 1>;
    return;
  }
#endif
  (void)simd;
  k.wide[R] = micro_generic<R, V>;
  k.single[R] = micro_generic<R, 1>;
}

Kernels make_kernels() {
  Kernels k{};
  const bool simd = has_avx2_fma();
  fill<1>(k, simd), fill<2>(k, simd), fill<3>(k, simd), fill<4>(k, simd);
  fill<5>(k, simd), fill<6>(k, simd), fill<7>(k, simd), fill<8>(k, simd);
  return k;
}

}  // namespace

at::Tensor pack_panels(const at::Tensor& m) {
  const int64_t N = m.size(0), tail = (kPanel - N % kPanel) % kPanel;
  const at::Tensor padded = tail ? at::constant_pad_nd(m, {0, 0, 0, tail}) : m;
  return padded.reshape({-1, kPanel, m.size(1)}).transpose(1, 2).contiguous();
}

void skinny_gemm(const SkinnyRows& rows, const at::Tensor& panels, int64_t N, float* y, int64_t ldy) {
  static const Kernels kernels = make_kernels();
  const int64_t np = (N + kPanel - 1) / kPanel, Kd = panels.size(1), pstride = Kd * kPanel, n = rows.n;
  TORCH_CHECK(Kd == rows.Cin * rows.K && ldy >= np * kPanel, "fastcodec: skinny_gemm shapes do not match");
  const float* wp = panels.data_ptr<float>();
  const int64_t group = n <= kSkinnyRows ? kSkinnyRows : kGroupRows;
  // Each thread takes whole panels; below ~256 KFLOP per chunk a thread is not worth waking.
  const int64_t grain = std::max<int64_t>(1, (1 << 17) / std::max<int64_t>(1, n * Kd * kPanel));
  at::parallel_for(0, np, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t r0 = 0; r0 < n; r0 += group) {
      const int R = static_cast<int>(std::min(group, n - r0));
      const int V = panels_for(R);
      const float* xr = rows.x + r0 * rows.rstride;
      float* yr = y + r0 * ldy;
      int64_t p = p0;
      for (; p + V <= p1; p += V) kernels.wide[R](rows, xr, wp + p * pstride, pstride, yr + p * kPanel, ldy);
      for (; p < p1; ++p) kernels.single[R](rows, xr, wp + p * pstride, pstride, yr + p * kPanel, ldy);
    }
  });
}

}  // namespace cpu
}  // namespace fastcodec
