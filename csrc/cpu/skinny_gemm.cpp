// The few-rows product declared in skinny_gemm.h.
#include "skinny_gemm.h"
#include "simd.h"

#include <algorithm>
#include <utility>

#include <ATen/Parallel.h>

namespace fastcodec {
namespace cpu {
namespace {

// y[r, 0..P*V) for r < R over V consecutive panels of width P (pstride floats apart), portable.
// x: the group's first row.
template <int R, int V, int P>
void micro_generic(const SkinnyRows& a, const float* x, const float* wp, int64_t pstride, float* y, int64_t ldy) {
  float acc[R][V * P] = {};
  for (int64_t ci = 0; ci < a.Cin; ++ci)
    for (int64_t k = 0; k < a.K; ++k, wp += P) {
      const float* xk = x + ci * a.cstride + a.tap[k];
      for (int r = 0; r < R; ++r) {
        const float xv = xk[r * a.rstride];
        for (int v = 0; v < V; ++v)
          for (int j = 0; j < P; ++j) acc[r][v * P + j] += xv * wp[v * pstride + j];
      }
    }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V * P; ++j) y[r * ldy + j] = acc[r][j];
}

#ifdef FASTCODEC_X86_SIMD
// The AVX2 form (P = 8). The unroll pragmas matter: without them gcc keeps the accumulator array
// in memory and stores it every iteration, which halves the rate. With one or two panel streams
// the hardware prefetcher falls behind when the weights come from L3 or DRAM, as they do when a
// stream cycles through a whole model per frame, so those prefetch 2 KB ahead.
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
    for (int64_t k = 0; k < a.K; ++k, wp += 8) {
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
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(y + r * ldy + v * 8, acc[r][v]);
}

// The AVX-512 form (P = 16), the same loop with twice the lanes and up to 24 accumulators.
template <int R, int V>
__attribute__((target("avx512f"))) void micro_avx512(const SkinnyRows& a, const float* x, const float* wp,
                                                     int64_t pstride, float* y, int64_t ldy) {
  constexpr bool kPrefetch = V <= 2;
  const int64_t rs = a.rstride;
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t ci = 0; ci < a.Cin; ++ci) {
    const float* xc = x + ci * a.cstride;
    for (int64_t k = 0; k < a.K; ++k, wp += 16) {
      if (kPrefetch) {
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) _mm_prefetch(reinterpret_cast<const char*>(wp + v * pstride + 512), _MM_HINT_T0);
      }
      __m512 w[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) w[v] = _mm512_loadu_ps(wp + v * pstride);
      const float* xk = xc + a.tap[k];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 xb = _mm512_set1_ps(xk[r * rs]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(xb, w[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(y + r * ldy + v * 16, acc[r][v]);
}
#endif

using Micro = void (*)(const SkinnyRows&, const float*, const float*, int64_t, float*, int64_t);

// Panels per micro-tile for R rows: at most 12 accumulators (of 16 vector registers), and no
// more panels than reading each weight once needs (the choices: benchmarks/RESULTS.md, "Where
// the code's rules come from").
constexpr int panels_avx2(int R) { return R <= 3 ? 4 : R == 4 ? 3 : R <= 6 ? 2 : 1; }
// With AVX-512's 32 registers: up to 24 accumulators, so 8 rows keep 3 panels in flight.
constexpr int panels_avx512(int R) { return R <= 4 ? 6 : R <= 6 ? 4 : 3; }

constexpr int kMaxPanels = 6;

struct Kernels {
  int64_t width = 8;                              // P: floats per panel row
  int64_t group = 6;                              // rows per group when there are more than kSkinnyRows
  int panels[kSkinnyRows + 1];                    // V for R rows
  Micro micro[kSkinnyRows + 1][kMaxPanels + 1];   // [R][v]: R rows x v panels, v <= panels[R]
};

// micro[R][1..V] from the kernel template Kern<R, v>: a row group's panels go V at a time, and the
// last v < V of them in one call too (one panel at a time would idle the FMA units on latency).
template <int R, template <int, int> class Kern, int... v>
void fill_micro(Kernels& k, std::integer_sequence<int, v...>) {
  ((k.micro[R][v + 1] = Kern<R, v + 1>::fn), ...);
}

template <int R, int V, template <int, int> class Kern>
void fill_row(Kernels& k) {
  static_assert(V <= kMaxPanels, "too many panels per micro-tile");
  k.panels[R] = V;
  fill_micro<R, Kern>(k, std::make_integer_sequence<int, V>{});
}

template <int R, int V>
struct Generic { static constexpr Micro fn = micro_generic<R, V, 8>; };
#ifdef FASTCODEC_X86_SIMD
template <int R, int V>
struct Avx2 { static constexpr Micro fn = micro_avx2<R, V>; };
template <int R, int V>
struct Avx512 { static constexpr Micro fn = micro_avx512<R, V>; };
#endif

template <int R>
void fill(Kernels& k, SimdLevel level) {
#ifdef FASTCODEC_X86_SIMD
  if (level == SimdLevel::Avx512) return fill_row<R, panels_avx512(R), Avx512>(k);
  if (level == SimdLevel::Avx2) return fill_row<R, panels_avx2(R), Avx2>(k);
#endif
  (void)level;
  fill_row<R, panels_avx2(R), Generic>(k);
}

Kernels make_kernels() {
  Kernels k{};
  const SimdLevel level = simd_level();
  if (level == SimdLevel::Avx512) k.width = 16, k.group = 8;
  fill<1>(k, level), fill<2>(k, level), fill<3>(k, level), fill<4>(k, level);
  fill<5>(k, level), fill<6>(k, level), fill<7>(k, level), fill<8>(k, level);
  return k;
}

const Kernels& kernels() {
  static const Kernels k = make_kernels();
  return k;
}

}  // namespace

int64_t panel_width() { return kernels().width; }

// See skinny_gemm.h; the AVX-512 cut at 64 rows: benchmarks/RESULTS.md, "Where the code's rules come from".
int64_t skinny_max_rows() { return has_avx512() ? 64 : 512; }

at::Tensor pack_panels(const at::Tensor& m) {
  const int64_t P = panel_width(), N = m.size(0), tail = (P - N % P) % P;
  const at::Tensor padded = tail ? at::constant_pad_nd(m, {0, 0, 0, tail}) : m;
  return padded.reshape({-1, P, m.size(1)}).transpose(1, 2).contiguous();
}

void skinny_gemm(const SkinnyRows& rows, const at::Tensor& panels, int64_t N, float* y, int64_t ldy) {
  const Kernels& k = kernels();
  const int64_t P = k.width, np = (N + P - 1) / P, Kd = panels.size(1), pstride = Kd * P, n = rows.n;
  TORCH_CHECK(panels.size(2) == P && Kd == rows.Cin * rows.K && ldy >= np * P,
              "fastcodec: skinny_gemm shapes do not match");
  const float* wp = panels.data_ptr<float>();
  const int64_t group = n <= kSkinnyRows ? kSkinnyRows : k.group;
  // Each thread takes whole panels; below ~256 KFLOP per chunk a thread is not worth waking.
  const int64_t grain = std::max<int64_t>(1, (1 << 17) / std::max<int64_t>(1, n * Kd * P));
  at::parallel_for(0, np, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t r0 = 0; r0 < n; r0 += group) {
      const int R = static_cast<int>(std::min(group, n - r0));
      const int V = k.panels[R];
      const float* xr = rows.x + r0 * rows.rstride;
      float* yr = y + r0 * ldy;
      for (int64_t p = p0; p < p1; p += V) {
        const int64_t v = std::min<int64_t>(V, p1 - p);
        k.micro[R][v](rows, xr, wp + p * pstride, pstride, yr + p * P, ldy);
      }
    }
  });
}

}  // namespace cpu
}  // namespace fastcodec
