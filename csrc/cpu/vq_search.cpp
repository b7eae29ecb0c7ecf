// The search declared in vq_search.h.
#include "vq_search.h"
#include "simd.h"

#include <algorithm>
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

__attribute__((target("avx2,fma"))) void nearest_avx2(const PackedCodebook& pc, const float* xp, int64_t* out) {
  static_assert(kRows == 4, "written for 4 rows x 24 codes");
  constexpr int64_t kCodes = kCodesAvx2;
  LaneMinima m;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 minus2 = _mm256_set1_ps(-2.0f);
  const int64_t D = pc.D;
  for (int64_t t = 0; t < pc.tiles; ++t) {
    const float* ct = pc.ct.data() + t * D * kCodes;
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    for (int64_t d = 0; d < D; ++d, ct += kCodes) {
      const __m256 c0 = _mm256_loadu_ps(ct), c1 = _mm256_loadu_ps(ct + 8), c2 = _mm256_loadu_ps(ct + 16);
      const float* x = xp + d * kRows;
      __m256 v = _mm256_broadcast_ss(x);
      a00 = _mm256_fmadd_ps(v, c0, a00), a01 = _mm256_fmadd_ps(v, c1, a01), a02 = _mm256_fmadd_ps(v, c2, a02);
      v = _mm256_broadcast_ss(x + 1);
      a10 = _mm256_fmadd_ps(v, c0, a10), a11 = _mm256_fmadd_ps(v, c1, a11), a12 = _mm256_fmadd_ps(v, c2, a12);
      v = _mm256_broadcast_ss(x + 2);
      a20 = _mm256_fmadd_ps(v, c0, a20), a21 = _mm256_fmadd_ps(v, c1, a21), a22 = _mm256_fmadd_ps(v, c2, a22);
      v = _mm256_broadcast_ss(x + 3);
      a30 = _mm256_fmadd_ps(v, c0, a30), a31 = _mm256_fmadd_ps(v, c1, a31), a32 = _mm256_fmadd_ps(v, c2, a32);
    }
    const float* csq = pc.csq.data() + t * kCodes;
    const __m256 s0 = _mm256_loadu_ps(csq), s1 = _mm256_loadu_ps(csq + 8), s2 = _mm256_loadu_ps(csq + 16);
    const __m256i k0 = _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(t * kCodes)));
    const __m256i k1 = _mm256_add_epi32(k0, _mm256_set1_epi32(8)), k2 = _mm256_add_epi32(k0, _mm256_set1_epi32(16));
    // dist = ||c||^2 - 2 x.c, the same expression as the reference.
    update(m.best[0], m.idx[0], _mm256_fmadd_ps(minus2, a00, s0), k0);
    update(m.best[0] + 8, m.idx[0] + 8, _mm256_fmadd_ps(minus2, a01, s1), k1);
    update(m.best[0] + 16, m.idx[0] + 16, _mm256_fmadd_ps(minus2, a02, s2), k2);
    update(m.best[1], m.idx[1], _mm256_fmadd_ps(minus2, a10, s0), k0);
    update(m.best[1] + 8, m.idx[1] + 8, _mm256_fmadd_ps(minus2, a11, s1), k1);
    update(m.best[1] + 16, m.idx[1] + 16, _mm256_fmadd_ps(minus2, a12, s2), k2);
    update(m.best[2], m.idx[2], _mm256_fmadd_ps(minus2, a20, s0), k0);
    update(m.best[2] + 8, m.idx[2] + 8, _mm256_fmadd_ps(minus2, a21, s1), k1);
    update(m.best[2] + 16, m.idx[2] + 16, _mm256_fmadd_ps(minus2, a22, s2), k2);
    update(m.best[3], m.idx[3], _mm256_fmadd_ps(minus2, a30, s0), k0);
    update(m.best[3] + 8, m.idx[3] + 8, _mm256_fmadd_ps(minus2, a31, s1), k1);
    update(m.best[3] + 16, m.idx[3] + 16, _mm256_fmadd_ps(minus2, a32, s2), k2);
  }
  m.reduce(kCodes, out);
}

// The same search on 48-code tiles: 4 rows x 3 vectors of 16 codes.
__attribute__((target("avx512f"))) void nearest_avx512(const PackedCodebook& pc, const float* xp, int64_t* out) {
  constexpr int64_t kCodes = kCodesAvx512;
  LaneMinima m;
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 minus2 = _mm512_set1_ps(-2.0f);
  const int64_t D = pc.D;
  for (int64_t t = 0; t < pc.tiles; ++t) {
    const float* ct = pc.ct.data() + t * D * kCodes;
    __m512 acc[kRows][3];
#pragma GCC unroll 4
    for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 3
      for (int v = 0; v < 3; ++v) acc[i][v] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d, ct += kCodes) {
      const __m512 c[3] = {_mm512_loadu_ps(ct), _mm512_loadu_ps(ct + 16), _mm512_loadu_ps(ct + 32)};
#pragma GCC unroll 4
      for (int i = 0; i < kRows; ++i) {
        const __m512 x = _mm512_set1_ps(xp[d * kRows + i]);
#pragma GCC unroll 3
        for (int v = 0; v < 3; ++v) acc[i][v] = _mm512_fmadd_ps(x, c[v], acc[i][v]);
      }
    }
    const float* csq = pc.csq.data() + t * kCodes;
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      const __m512 sq = _mm512_loadu_ps(csq + 16 * v);
      const __m512i code = _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int32_t>(t * kCodes + 16 * v)));
#pragma GCC unroll 4
      for (int i = 0; i < kRows; ++i) {
        // dist = ||c||^2 - 2 x.c, the same expression as the reference; strictly better only, so
        // earlier tiles keep ties.
        const __m512 dist = _mm512_fmadd_ps(minus2, acc[i][v], sq);
        const __m512 b = _mm512_load_ps(m.best[i] + 16 * v);
        const __mmask16 better = _mm512_cmp_ps_mask(dist, b, _CMP_LT_OQ);
        _mm512_store_ps(m.best[i] + 16 * v, _mm512_mask_mov_ps(b, better, dist));
        const __m512i k = _mm512_load_si512(m.idx[i] + 16 * v);
        _mm512_store_si512(m.idx[i] + 16 * v, _mm512_mask_mov_epi32(k, better, code));
      }
    }
  }
  m.reduce(kCodes, out);
}
#endif

using Search = void (*)(const PackedCodebook&, const float*, int64_t*);

Search pick() {
#ifdef FASTCODEC_X86_SIMD
  if (has_avx512()) return nearest_avx512;
  if (has_avx2_fma()) return nearest_avx2;
#endif
  return nearest_generic;
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

void nearest_rows(const PackedCodebook& pc, const float* xp, int64_t* out) {
  static const Search search = pick();
  search(pc, xp, out);
}

}  // namespace cpu
}  // namespace fastcodec
