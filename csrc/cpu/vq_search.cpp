// The search declared in vq_search.h.
#include "vq_search.h"
#include "simd.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>


namespace fastcodec {
namespace cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

constexpr int64_t kCodesAvx2 = 24, kCodesAvx512 = 48;

// Per row and lane (W lanes used of kMaxCodes), the smallest distance so far and its code. reduce()
// gives one index per row: the smallest value, ties to the lowest index.
struct LaneMinima {
  alignas(64) float best[kRows][kMaxCodes];
  alignas(64) int32_t idx[kRows][kMaxCodes];

  LaneMinima() {
    std::fill(&best[0][0], &best[0][0] + kRows * kMaxCodes, kInf);
    std::fill(&idx[0][0], &idx[0][0] + kRows * kMaxCodes, 0);
  }

  void reduce(int64_t W, int64_t* out) const {
    for (int64_t i = 0; i < kRows; ++i) {
      float bv = kInf;
      int64_t bk = -1;
      for (int64_t j = 0; j < W; ++j) {
        if (best[i][j] < bv || (best[i][j] == bv && (bk < 0 || idx[i][j] < bk))) {
          bv = best[i][j];
          bk = idx[i][j];
        }
      }
      out[i] = bk < 0 ? 0 : bk;
    }
  }
};

void nearest_generic(const PackedCodebook& pc, const float* xp, int64_t* out) {
  const int64_t W = pc.width;
  LaneMinima m;
  for (int64_t t = 0; t < pc.tiles; ++t) {
    float acc[kRows][kMaxCodes] = {};
    const float* ct = pc.ct.data() + t * pc.D * W;
    for (int64_t d = 0; d < pc.D; ++d)
      for (int64_t i = 0; i < kRows; ++i)
        for (int64_t j = 0; j < W; ++j) acc[i][j] += xp[d * kRows + i] * ct[d * W + j];
    const float* csq = pc.csq.data() + t * W;
    for (int64_t i = 0; i < kRows; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const float dist = csq[j] - 2.0f * acc[i][j];
        if (dist < m.best[i][j]) {
          m.best[i][j] = dist;
          m.idx[i][j] = static_cast<int32_t>(t * W + j);
        }
      }
  }
  m.reduce(W, out);
}

#ifdef FASTCODEC_X86_SIMD
__attribute__((target("avx2,fma"))) inline void update(float* best, int32_t* idx, __m256 dist, __m256i code) {
  const __m256 b = _mm256_load_ps(best);
  const __m256 better = _mm256_cmp_ps(dist, b, _CMP_LT_OQ);  // strict: earlier tiles keep ties
  _mm256_store_ps(best, _mm256_blendv_ps(b, dist, better));
  const __m256 k = _mm256_blendv_ps(_mm256_load_ps(reinterpret_cast<const float*>(idx)), _mm256_castsi256_ps(code),
                                    better);
  _mm256_store_ps(reinterpret_cast<float*>(idx), k);
}

// P consecutive tiles from tile t for the first R rows of the block: R x 3 vectors of 8 codes per
// tile. Each accumulator sums over d in order with one FMA per step, whatever R and P are, so a row
// gets bit for bit the distances, and so the code, of the 4-row kernel: a stream coding one frame
// per call picks what the whole signal coded at once picks.
template <int R, int P>
__attribute__((target("avx2,fma"))) inline void tiles_avx2(const PackedCodebook& pc, const float* xp, int64_t t,
                                                           LaneMinima& m) {
  constexpr int64_t kCodes = kCodesAvx2;
  const int64_t D = pc.D;
  __m256 acc[P][R][3];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
      for (int v = 0; v < 3; ++v) acc[p][i][v] = _mm256_setzero_ps();
  const float* ct = pc.ct.data() + t * D * kCodes;
  // Per tile: its 3 code vectors, then one broadcast row at a time. With R = 4 that is 12
  // accumulators + 3 codes + 1 row = all 16 ymm registers; holding every row's broadcast at once
  // would spill.
  for (int64_t d = 0; d < D; ++d, ct += kCodes) {
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      __m256 c[3];
#pragma GCC unroll 3
      for (int v = 0; v < 3; ++v) c[v] = _mm256_loadu_ps(ct + p * D * kCodes + 8 * v);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        const __m256 x = _mm256_broadcast_ss(xp + d * kRows + i);
#pragma GCC unroll 3
        for (int v = 0; v < 3; ++v) acc[p][i][v] = _mm256_fmadd_ps(x, c[v], acc[p][i][v]);
      }
    }
  }
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 minus2 = _mm256_set1_ps(-2.0f);
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const float* csq = pc.csq.data() + (t + p) * kCodes;
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      const __m256 sq = _mm256_loadu_ps(csq + 8 * v);
      const __m256i code = _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>((t + p) * kCodes + 8 * v)));
      // dist = ||c||^2 - 2 x.c, the same expression as the reference.
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
        update(m.best[i] + 8 * v, m.idx[i] + 8 * v, _mm256_fmadd_ps(minus2, acc[p][i][v], sq), code);
    }
  }
}

// The first R rows of a block: tiles P at a time, then one at a time. Fewer rows than kRows leave
// FMA latency exposed on 3 accumulators per row, so one row scans two tiles at once (6 chains);
// R x 3 x P stays within the 16 ymm registers with the codes and x.
template <int R, int P>
__attribute__((target("avx2,fma"))) void nearest_avx2(const PackedCodebook& pc, const float* xp, int64_t* out) {
  static_assert(R >= 1 && R <= kRows && R * 3 * P <= 12, "accumulators must fit in registers");
  LaneMinima m;
  int64_t t = 0;
  for (; t + P <= pc.tiles; t += P) tiles_avx2<R, P>(pc, xp, t, m);
  for (; t < pc.tiles; ++t) tiles_avx2<R, 1>(pc, xp, t, m);
  m.reduce(kCodesAvx2, out);
}

// The same search on 48-code tiles, 3 vectors of 16 codes per tile; R rows and P tiles as in
// tiles_avx2 (the same order of FMAs, so the same distances bit for bit).
template <int R, int P>
__attribute__((target("avx512f"))) inline void tiles_avx512(const PackedCodebook& pc, const float* xp, int64_t t,
                                                            LaneMinima& m) {
  constexpr int64_t kCodes = kCodesAvx512;
  const int64_t D = pc.D;
  __m512 acc[P][R][3];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
      for (int v = 0; v < 3; ++v) acc[p][i][v] = _mm512_setzero_ps();
  const float* ct = pc.ct.data() + t * D * kCodes;
  for (int64_t d = 0; d < D; ++d, ct += kCodes) {
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      __m512 c[3];
#pragma GCC unroll 3
      for (int v = 0; v < 3; ++v) c[v] = _mm512_loadu_ps(ct + p * D * kCodes + 16 * v);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        const __m512 x = _mm512_set1_ps(xp[d * kRows + i]);
#pragma GCC unroll 3
        for (int v = 0; v < 3; ++v) acc[p][i][v] = _mm512_fmadd_ps(x, c[v], acc[p][i][v]);
      }
    }
  }
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 minus2 = _mm512_set1_ps(-2.0f);
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const float* csq = pc.csq.data() + (t + p) * kCodes;
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      const __m512 sq = _mm512_loadu_ps(csq + 16 * v);
      const __m512i code =
          _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int32_t>((t + p) * kCodes + 16 * v)));
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        // dist = ||c||^2 - 2 x.c, the same expression as the reference; strictly better only, so
        // earlier tiles keep ties.
        const __m512 dist = _mm512_fmadd_ps(minus2, acc[p][i][v], sq);
        const __m512 b = _mm512_load_ps(m.best[i] + 16 * v);
        const __mmask16 better = _mm512_cmp_ps_mask(dist, b, _CMP_LT_OQ);
        _mm512_store_ps(m.best[i] + 16 * v, _mm512_mask_mov_ps(b, better, dist));
        const __m512i k = _mm512_load_si512(m.idx[i] + 16 * v);
        _mm512_store_si512(m.idx[i] + 16 * v, _mm512_mask_mov_epi32(k, better, code));
      }
    }
  }
}

template <int R, int P>
__attribute__((target("avx512f"))) void nearest_avx512(const PackedCodebook& pc, const float* xp, int64_t* out) {
  static_assert(R >= 1 && R <= kRows && R * 3 * P <= 12, "accumulators must fit in registers");
  LaneMinima m;
  int64_t t = 0;
  for (; t + P <= pc.tiles; t += P) tiles_avx512<R, P>(pc, xp, t, m);
  for (; t < pc.tiles; ++t) tiles_avx512<R, 1>(pc, xp, t, m);
  m.reduce(kCodesAvx512, out);
}
#endif

using Search = void (*)(const PackedCodebook&, const float*, int64_t*);

// Indexed by the number of live rows in the block, 1 to kRows (a stream's blocks hold one row per
// item). The portable search always computes kRows rows, and so does AVX-512 for 3 (no faster
// than 3 rows alone: benchmarks/RESULTS.md, the single-row RVQ search).
using Searches = std::array<Search, kRows + 1>;

Searches pick() {
#ifdef FASTCODEC_X86_SIMD
  if (has_avx512())
    return {nullptr, nearest_avx512<1, 4>, nearest_avx512<2, 2>, nearest_avx512<4, 1>, nearest_avx512<4, 1>};
  if (has_avx2_fma())
    return {nullptr, nearest_avx2<1, 2>, nearest_avx2<2, 2>, nearest_avx2<3, 1>, nearest_avx2<4, 1>};
#endif
  return {nullptr, nearest_generic, nearest_generic, nearest_generic, nearest_generic};
}

int64_t tile_width() { return has_avx512() ? kCodesAvx512 : kCodesAvx2; }

}  // namespace

void pack_codebook(const float* cb, int64_t K, int64_t D, PackedCodebook& out) {
  const int64_t W = tile_width();
  out.K = K;
  out.D = D;
  out.width = W;
  out.tiles = (K + W - 1) / W;
  out.ct.assign(out.tiles * D * W, 0.0f);
  out.csq.assign(out.tiles * W, kInf);
  for (int64_t k = 0; k < K; ++k) {
    const float* c = cb + k * D;
    float* dst = out.ct.data() + (k / W) * D * W + k % W;
    float sq = 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      dst[d * W] = c[d];
      sq += c[d] * c[d];
    }
    out.csq[k] = sq;
  }
}

void nearest_rows(const PackedCodebook& pc, const float* xp, int64_t rows, int64_t* out) {
  static const Searches searches = pick();
  TORCH_CHECK(rows >= 1 && rows <= kRows, "nearest_rows: ", rows, " rows in a block of ", kRows);
  searches[rows](pc, xp, out);
}

}  // namespace cpu
}  // namespace fastcodec
