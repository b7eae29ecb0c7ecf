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

// Lane-wise running minima -> one index per row: the smallest value, ties to the lowest index.
void reduce_lanes(const float (&best)[kRows][kCodes], const int32_t (&idx)[kRows][kCodes], int64_t* out) {
  for (int64_t i = 0; i < kRows; ++i) {
    float bv = kInf;
    int64_t bk = -1;
    for (int64_t j = 0; j < kCodes; ++j) {
      if (best[i][j] < bv || (best[i][j] == bv && (bk < 0 || idx[i][j] < bk))) {
        bv = best[i][j];
        bk = idx[i][j];
      }
    }
    out[i] = bk < 0 ? 0 : bk;
  }
}

void nearest_generic(const PackedCodebook& pc, const float* xp, int64_t* out) {
  float best[kRows][kCodes];
  int32_t idx[kRows][kCodes];
  std::fill(&best[0][0], &best[0][0] + kRows * kCodes, kInf);
  std::fill(&idx[0][0], &idx[0][0] + kRows * kCodes, 0);
  for (int64_t t = 0; t < pc.tiles; ++t) {
    float acc[kRows][kCodes] = {};
    const float* ct = pc.ct.data() + t * pc.D * kCodes;
    for (int64_t d = 0; d < pc.D; ++d)
      for (int64_t i = 0; i < kRows; ++i)
        for (int64_t j = 0; j < kCodes; ++j) acc[i][j] += xp[d * kRows + i] * ct[d * kCodes + j];
    const float* csq = pc.csq.data() + t * kCodes;
    for (int64_t i = 0; i < kRows; ++i)
      for (int64_t j = 0; j < kCodes; ++j) {
        const float dist = csq[j] - 2.0f * acc[i][j];
        if (dist < best[i][j]) {
          best[i][j] = dist;
          idx[i][j] = static_cast<int32_t>(t * kCodes + j);
        }
      }
  }
  reduce_lanes(best, idx, out);
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
  static_assert(kRows == 4 && kCodes == 24, "written for 4 rows x 24 codes");
  alignas(32) float best[kRows][kCodes];
  alignas(32) int32_t idx[kRows][kCodes];
  std::fill(&best[0][0], &best[0][0] + kRows * kCodes, kInf);
  std::fill(&idx[0][0], &idx[0][0] + kRows * kCodes, 0);
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
    update(best[0], idx[0], _mm256_fmadd_ps(minus2, a00, s0), k0);
    update(best[0] + 8, idx[0] + 8, _mm256_fmadd_ps(minus2, a01, s1), k1);
    update(best[0] + 16, idx[0] + 16, _mm256_fmadd_ps(minus2, a02, s2), k2);
    update(best[1], idx[1], _mm256_fmadd_ps(minus2, a10, s0), k0);
    update(best[1] + 8, idx[1] + 8, _mm256_fmadd_ps(minus2, a11, s1), k1);
    update(best[1] + 16, idx[1] + 16, _mm256_fmadd_ps(minus2, a12, s2), k2);
    update(best[2], idx[2], _mm256_fmadd_ps(minus2, a20, s0), k0);
    update(best[2] + 8, idx[2] + 8, _mm256_fmadd_ps(minus2, a21, s1), k1);
    update(best[2] + 16, idx[2] + 16, _mm256_fmadd_ps(minus2, a22, s2), k2);
    update(best[3], idx[3], _mm256_fmadd_ps(minus2, a30, s0), k0);
    update(best[3] + 8, idx[3] + 8, _mm256_fmadd_ps(minus2, a31, s1), k1);
    update(best[3] + 16, idx[3] + 16, _mm256_fmadd_ps(minus2, a32, s2), k2);
  }
  reduce_lanes(best, idx, out);
}
#endif

using Search = void (*)(const PackedCodebook&, const float*, int64_t*);

Search pick() {
#ifdef FASTCODEC_X86_SIMD
  if (has_avx2_fma()) return nearest_avx2;
#endif
  return nearest_generic;
}

}  // namespace

void pack_codebook(const float* cb, int64_t K, int64_t D, PackedCodebook& out) {
  out.K = K;
  out.D = D;
  out.tiles = (K + kCodes - 1) / kCodes;
  out.ct.assign(out.tiles * D * kCodes, 0.0f);
  out.csq.assign(out.tiles * kCodes, kInf);
  for (int64_t k = 0; k < K; ++k) {
    const float* c = cb + k * D;
    float* dst = out.ct.data() + (k / kCodes) * D * kCodes + k % kCodes;
    float sq = 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      dst[d * kCodes] = c[d];
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
