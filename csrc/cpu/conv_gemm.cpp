// The fp32 conv engine declared in conv_gemm.h.
#include "conv_gemm.h"
#include "simd.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>


namespace fastcodec {
namespace cpu {
namespace {

// Taps per channel block: the packed window (block x phases x row) and the weight block
// (MR x block x K) then fit in L1/L2 while the micro-kernel streams over them.
constexpr int64_t kTapsPerBlock = 256;
constexpr int64_t kWindowBytesAvx512 = 32 << 10;  // of the 48 KB L1 on Zen 4/5 and recent Xeons

// Where tap k of output column j lives in a tile's packed window: element tap_off[k] + j of the
// channel's rows. With base = t0*stride - pad, tap k reads x[base + j*stride + k*dilation]; writing
// k*dilation = a*stride + r puts it in phase row r at position j + a.
struct Window {
  int64_t phases = 1;   // = stride
  int64_t row_len = 0;  // floats per phase row
  std::vector<int64_t> tap_off;
};

Window make_window(const ConvPlan& p) {
  Window w;
  w.phases = p.stride;
  int64_t amax = 0;
  for (int64_t k = 0; k < p.K; ++k) amax = std::max(amax, k * p.dilation / p.stride);
  w.row_len = kNT + amax;  // the micro-kernel reads up to column kNT - 1 at offset amax
  w.tap_off.resize(p.K);
  for (int64_t k = 0; k < p.K; ++k) {
    const int64_t off = k * p.dilation;
    w.tap_off[k] = (off % p.stride) * w.row_len + off / p.stride;
  }
  return w;
}

// Copies the input window of channels [ci0, ci0 + nci) for the tile starting at output t0,
// zero where the index falls outside [0, T): the causal padding on the left, the tile tail right.
void pack_window(const ConvPlan& p, const Window& w, const float* xb, int64_t ci0, int64_t nci, int64_t t0,
                 float* dst) {
  const int64_t base = t0 * p.stride - p.pad;  // x index of phase 0, element 0
  const int64_t s = p.stride, len = w.row_len;
  // Elements m in [lo, hi) have all their phases base + m*s + r inside [0, T): no checks there.
  const int64_t lo = std::min(len, std::max<int64_t>(0, (-base + s - 1) / s));
  const int64_t last = p.T - base - s;  // the largest m*s with every phase in range
  const int64_t hi = std::max(lo, std::min(len, last >= 0 ? last / s + 1 : 0));
  // Elements before zl read only left of x, those from zr on only right of it: zeros, set in bulk
  // (a short input's tile is mostly padding: the critics' deepest grouped layers see 16 outputs).
  const int64_t zl = base < 0 ? std::min(lo, -base / s) : 0;
  const int64_t zr = std::max(hi, std::min(len, std::max<int64_t>(0, (p.T - base + s - 1) / s)));
  for (int64_t c = 0; c < nci; ++c) {
    const float* xrow = xb + (ci0 + c) * p.T;
    float* rows = dst + c * s * len;
    auto checked = [&](int64_t m) {
      for (int64_t r = 0; r < s; ++r) {
        const int64_t src = base + m * s + r;
        rows[r * len + m] = (src >= 0 && src < p.T) ? xrow[src] : 0.0f;
      }
    };
    for (int64_t r = 0; r < s; ++r) {
      std::fill(rows + r * len, rows + r * len + zl, 0.0f);
      std::fill(rows + r * len + zr, rows + (r + 1) * len, 0.0f);
    }
    for (int64_t m = zl; m < lo; ++m) checked(m);
    if (s == 1) {
      std::memcpy(rows + lo, xrow + base + lo, sizeof(float) * (hi - lo));
    } else {  // deinterleave: read x contiguously, write one element to each phase row
      for (int64_t m = lo; m < hi; ++m) {
        const float* in = xrow + base + m * s;
        for (int64_t r = 0; r < s; ++r) rows[r * len + m] = in[r];
      }
    }
    for (int64_t m = hi; m < zr; ++m) checked(m);
  }
}

// c[i][0..NR) += sum over (ci, k) of wp[(ci*K + k)*MR + i] * window(ci, k)[0..NR).
// wp: this block's packed weights; xw: the window at this micro-tile's first column.
template <int64_t NR>
void ukernel_generic(const float* wp, const float* xw, const int64_t* tap_off, int64_t nci, int64_t K,
                     int64_t ci_stride, float* c, int64_t ldc, bool first) {
  float acc[kMR][NR];
  for (int64_t i = 0; i < kMR; ++i)
    for (int64_t j = 0; j < NR; ++j) acc[i][j] = first ? 0.0f : c[i * ldc + j];
  for (int64_t ci = 0; ci < nci; ++ci) {
    const float* xb = xw + ci * ci_stride;
    for (int64_t k = 0; k < K; ++k, wp += kMR) {
      const float* xr = xb + tap_off[k];
      for (int64_t i = 0; i < kMR; ++i)
        for (int64_t j = 0; j < NR; ++j) acc[i][j] += wp[i] * xr[j];
    }
  }
  for (int64_t i = 0; i < kMR; ++i)
    for (int64_t j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j];
}

#ifdef FASTCODEC_X86_SIMD
__attribute__((target("avx2,fma"))) void ukernel_avx2(const float* wp, const float* xw, const int64_t* tap_off,
                                                      int64_t nci, int64_t K, int64_t ci_stride, float* c,
                                                      int64_t ldc, bool first) {
  static_assert(kMR == 4 && kNR == 24, "the AVX2 micro-kernel is written for 4 x 24 tiles");
  __m256 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
  if (first) {
    c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = _mm256_setzero_ps();
  } else {
    c00 = _mm256_loadu_ps(c), c01 = _mm256_loadu_ps(c + 8), c02 = _mm256_loadu_ps(c + 16);
    c10 = _mm256_loadu_ps(c + ldc), c11 = _mm256_loadu_ps(c + ldc + 8), c12 = _mm256_loadu_ps(c + ldc + 16);
    c20 = _mm256_loadu_ps(c + 2 * ldc), c21 = _mm256_loadu_ps(c + 2 * ldc + 8), c22 = _mm256_loadu_ps(c + 2 * ldc + 16);
    c30 = _mm256_loadu_ps(c + 3 * ldc), c31 = _mm256_loadu_ps(c + 3 * ldc + 8), c32 = _mm256_loadu_ps(c + 3 * ldc + 16);
  }
  for (int64_t ci = 0; ci < nci; ++ci) {
    const float* xb = xw + ci * ci_stride;
    for (int64_t k = 0; k < K; ++k, wp += kMR) {
      const float* xr = xb + tap_off[k];
      const __m256 x0 = _mm256_loadu_ps(xr), x1 = _mm256_loadu_ps(xr + 8), x2 = _mm256_loadu_ps(xr + 16);
      __m256 w = _mm256_broadcast_ss(wp);
      c00 = _mm256_fmadd_ps(w, x0, c00);
      c01 = _mm256_fmadd_ps(w, x1, c01);
      c02 = _mm256_fmadd_ps(w, x2, c02);
      w = _mm256_broadcast_ss(wp + 1);
      c10 = _mm256_fmadd_ps(w, x0, c10);
      c11 = _mm256_fmadd_ps(w, x1, c11);
      c12 = _mm256_fmadd_ps(w, x2, c12);
      w = _mm256_broadcast_ss(wp + 2);
      c20 = _mm256_fmadd_ps(w, x0, c20);
      c21 = _mm256_fmadd_ps(w, x1, c21);
      c22 = _mm256_fmadd_ps(w, x2, c22);
      w = _mm256_broadcast_ss(wp + 3);
      c30 = _mm256_fmadd_ps(w, x0, c30);
      c31 = _mm256_fmadd_ps(w, x1, c31);
      c32 = _mm256_fmadd_ps(w, x2, c32);
    }
  }
  _mm256_storeu_ps(c, c00), _mm256_storeu_ps(c + 8, c01), _mm256_storeu_ps(c + 16, c02);
  _mm256_storeu_ps(c + ldc, c10), _mm256_storeu_ps(c + ldc + 8, c11), _mm256_storeu_ps(c + ldc + 16, c12);
  _mm256_storeu_ps(c + 2 * ldc, c20), _mm256_storeu_ps(c + 2 * ldc + 8, c21);
  _mm256_storeu_ps(c + 2 * ldc + 16, c22);
  _mm256_storeu_ps(c + 3 * ldc, c30), _mm256_storeu_ps(c + 3 * ldc + 8, c31);
  _mm256_storeu_ps(c + 3 * ldc + 16, c32);
}

// The same for 8 columns: streaming calls produce 1-16 outputs per layer at the codec's low rates,
// where a 24-column tile would be mostly wasted work.
__attribute__((target("avx2,fma"))) void ukernel_avx2_narrow(const float* wp, const float* xw,
                                                             const int64_t* tap_off, int64_t nci, int64_t K,
                                                             int64_t ci_stride, float* c, int64_t ldc, bool first) {
  __m256 c0, c1, c2, c3;
  if (first) {
    c0 = c1 = c2 = c3 = _mm256_setzero_ps();
  } else {
    c0 = _mm256_loadu_ps(c), c1 = _mm256_loadu_ps(c + ldc);
    c2 = _mm256_loadu_ps(c + 2 * ldc), c3 = _mm256_loadu_ps(c + 3 * ldc);
  }
  for (int64_t ci = 0; ci < nci; ++ci) {
    const float* xb = xw + ci * ci_stride;
    for (int64_t k = 0; k < K; ++k, wp += kMR) {
      const __m256 x = _mm256_loadu_ps(xb + tap_off[k]);
      c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wp), x, c0);
      c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(wp + 1), x, c1);
      c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(wp + 2), x, c2);
      c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(wp + 3), x, c3);
    }
  }
  _mm256_storeu_ps(c, c0), _mm256_storeu_ps(c + ldc, c1);
  _mm256_storeu_ps(c + 2 * ldc, c2), _mm256_storeu_ps(c + 3 * ldc, c3);
}

// 4 rows x 16V columns with AVX-512: 4V accumulators (24 of the 32 registers at V = 6, plus the V
// window vectors), each window vector loaded once per tap and used by the four output channels.
// A tile is kNT = 96 = 6 x 16 columns, so one call covers it; V shrinks with the columns left.
template <int V>
__attribute__((target("avx512f"))) void ukernel_avx512(const float* wp, const float* xw, const int64_t* tap_off,
                                                       int64_t nci, int64_t K, int64_t ci_stride, float* c,
                                                       int64_t ldc, bool first) {
  __m512 acc[kMR][V];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[i][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * ldc + 16 * v);
  for (int64_t ci = 0; ci < nci; ++ci) {
    const float* xb = xw + ci * ci_stride;
    for (int64_t k = 0; k < K; ++k, wp += kMR) {
      const float* xr = xb + tap_off[k];
      __m512 x[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_ps(xr + 16 * v);
#pragma GCC unroll 8
      for (int i = 0; i < kMR; ++i) {
        const __m512 w = _mm512_set1_ps(wp[i]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(w, x[v], acc[i][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
}
#endif

// The epilogue activation over one tile row, v[j] = act(v[j] + bias), with the activation switch
// outside the loop. ELU, SiLU and snake need exp and sin^2: the AVX2 path has its own.
void activate_row_generic(float* v, int64_t n, float bias, Activation act, float slope, float alpha) {
  switch (act) {
    case Activation::None:
      for (int64_t j = 0; j < n; ++j) v[j] += bias;
      break;
    case Activation::LeakyRelu:
      for (int64_t j = 0; j < n; ++j) {
        const float z = v[j] + bias;
        v[j] = z > 0.0f ? z : z * slope;
      }
      break;
    default:
      for (int64_t j = 0; j < n; ++j) v[j] = activate<float>(v[j] + bias, act, slope, alpha);
  }
}

#ifdef FASTCODEC_X86_SIMD
// The polynomials of the vector exp and sin^2 below, shared by the AVX2 and AVX-512 forms (the
// same operations in the same order). exp: Cephes expf's e^r - 1 - r over r^2, highest
// power first; sin: the odd Taylor terms r^11 .. r^3 (the same as fc_sin_sq in epilogue.h).
constexpr float kExpPoly[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                              4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
constexpr float kSinPoly[] = {1.6059043836821613e-10f, -2.5052108385441720e-8f, 2.7557319223985893e-6f,
                              -1.9841269841269841e-4f, 8.3333333333333333e-3f, -1.6666666666666667e-1f};

// exp(x) for 8 floats, ~1 ulp: x = n*ln2 + r with |r| <= ln2/2, a degree-5 polynomial for e^r
// (the Cephes expf coefficients), then the exponent bits for 2^n. Inputs are clamped to the float
// range, so -inf gives 0 and large x saturates at ~FLT_MAX.
__attribute__((target("avx2,fma"))) inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.37626f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(kExpPoly[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 6; ++i) y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpPoly[i]));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// fc_sin_sq (epilogue.h) for 8 floats, the same operations in the same order.
__attribute__((target("avx2,fma"))) inline __m256 sin_sq_avx2(__m256 v) {
  const __m256 k = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.318309886183790671f)),
                                                 _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_sub_ps(v, _mm256_mul_ps(k, _mm256_set1_ps(3.140625f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(k, _mm256_set1_ps(9.677410125732422e-4f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(k, _mm256_set1_ps(-8.742277657347586e-8f)));
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-1.57079632679f)), _mm256_set1_ps(1.57079632679f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(kSinPoly[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r2, _mm256_set1_ps(kSinPoly[i]));
  const __m256 sn = _mm256_fmadd_ps(_mm256_mul_ps(r, r2), p, r);
  return _mm256_mul_ps(sn, sn);
}

__attribute__((target("avx2,fma"))) void activate_row_avx2(float* v, int64_t n, float bias, Activation act,
                                                           float slope, float alpha) {
  if (act == Activation::None) return activate_row_generic(v, n, bias, act, slope, alpha);
  const __m256 vb = _mm256_set1_ps(bias), zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 vslope = _mm256_set1_ps(slope), va = _mm256_set1_ps(alpha);
  const __m256 inv_a = _mm256_set1_ps(1.0f / (alpha + static_cast<float>(kSnakeEps)));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 z = _mm256_add_ps(_mm256_loadu_ps(v + j), vb);
    __m256 out;
    if (act == Activation::Elu) {  // z > 0 ? z : exp(z) - 1
      const __m256 neg = _mm256_sub_ps(exp_avx2(_mm256_min_ps(z, zero)), one);
      out = _mm256_blendv_ps(neg, z, _mm256_cmp_ps(z, zero, _CMP_GT_OQ));
    } else if (act == Activation::Snake) {  // z + sin(a z)^2 / (a + eps)
      out = _mm256_fmadd_ps(sin_sq_avx2(_mm256_mul_ps(va, z)), inv_a, z);
    } else if (act == Activation::LeakyRelu) {
      out = _mm256_blendv_ps(_mm256_mul_ps(z, vslope), z, _mm256_cmp_ps(z, zero, _CMP_GT_OQ));
    } else {  // z / (1 + exp(-z))
      out = _mm256_div_ps(z, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(zero, z))));
    }
    _mm256_storeu_ps(v + j, out);
  }
  activate_row_generic(v + j, n - j, bias, act, slope, alpha);
}

// exp_avx2 and sin_sq_avx2 with 16 lanes: the same operations in the same order.
__attribute__((target("avx512f"))) inline __m512 exp_avx512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.37626f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(kExpPoly[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 6; ++i) y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpPoly[i]));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

__attribute__((target("avx512f"))) inline __m512 sin_sq_avx512(__m512 v) {
  const __m512 k = _mm512_roundscale_ps(
      _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.318309886183790671f)), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_sub_ps(v, _mm512_mul_ps(k, _mm512_set1_ps(3.140625f)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(k, _mm512_set1_ps(9.677410125732422e-4f)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(k, _mm512_set1_ps(-8.742277657347586e-8f)));
  r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-1.57079632679f)), _mm512_set1_ps(1.57079632679f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = _mm512_set1_ps(kSinPoly[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(kSinPoly[i]));
  const __m512 sn = _mm512_fmadd_ps(_mm512_mul_ps(r, r2), p, r);
  return _mm512_mul_ps(sn, sn);
}

// The row in 16-lane steps, the last partial step masked (no scalar tail).
__attribute__((target("avx512f"))) void activate_row_avx512(float* v, int64_t n, float bias, Activation act,
                                                             float slope, float alpha) {
  const __m512 vb = _mm512_set1_ps(bias), zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  const __m512 vslope = _mm512_set1_ps(slope), va = _mm512_set1_ps(alpha);
  const __m512 inv_a = _mm512_set1_ps(1.0f / (alpha + static_cast<float>(kSnakeEps)));
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512 z = _mm512_add_ps(_mm512_maskz_loadu_ps(m, v + j), vb);
    __m512 out;
    switch (act) {
      case Activation::None:
        out = z;
        break;
      case Activation::Elu:  // z > 0 ? z : exp(z) - 1
        out = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ),
                                   _mm512_sub_ps(exp_avx512(_mm512_min_ps(z, zero)), one), z);
        break;
      case Activation::Snake:  // z + sin(a z)^2 / (a + eps)
        out = _mm512_fmadd_ps(sin_sq_avx512(_mm512_mul_ps(va, z)), inv_a, z);
        break;
      case Activation::LeakyRelu:
        out = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ), _mm512_mul_ps(z, vslope), z);
        break;
      default:  // SiLU: z / (1 + exp(-z))
        out = _mm512_div_ps(z, _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(zero, z))));
    }
    _mm512_mask_storeu_ps(v + j, m, out);
  }
}
#endif

using ActivateRow = void (*)(float*, int64_t, float, Activation, float, float);

using UKernel = void (*)(const float*, const float*, const int64_t*, int64_t, int64_t, int64_t, float*, int64_t,
                        bool);

constexpr int64_t kNarrow = 8;  // columns of the narrow micro-kernel

// One tile row block: c[0..kMR)[0..ncols) (+)= the block's weights . window, for ncols <= kNT.
// Columns past ncols may be computed too (from in-bounds window data) and are never stored.
using TileKernel = void (*)(const float* wp, const float* src, const int64_t* tap_off, int64_t nci, int64_t K,
                            int64_t ci_stride, float* c, int64_t ncols, bool first);

// Full-width micro-tiles, then at most 16 leftover columns in narrow ones.
template <UKernel Wide, UKernel Narrow>
void tile_kernel_24x8(const float* wp, const float* src, const int64_t* tap_off, int64_t nci, int64_t K,
                      int64_t ci_stride, float* c, int64_t ncols, bool first) {
  int64_t j0 = 0;
  for (; ncols - j0 > 2 * kNarrow; j0 += kNR) Wide(wp, src + j0, tap_off, nci, K, ci_stride, c + j0, kNT, first);
  for (; j0 < ncols; j0 += kNarrow) Narrow(wp, src + j0, tap_off, nci, K, ci_stride, c + j0, kNT, first);
}

#ifdef FASTCODEC_X86_SIMD
static_assert(kNT == 6 * 16, "the AVX-512 tile kernel covers a tile with one 4 x 16V micro-kernel call");

void tile_kernel_avx512(const float* wp, const float* src, const int64_t* tap_off, int64_t nci, int64_t K,
                        int64_t ci_stride, float* c, int64_t ncols, bool first) {
  static constexpr UKernel by_vectors[] = {ukernel_avx512<1>, ukernel_avx512<2>, ukernel_avx512<3>,
                                           ukernel_avx512<4>, ukernel_avx512<5>, ukernel_avx512<6>};
  by_vectors[(ncols + 15) / 16 - 1](wp, src, tap_off, nci, K, ci_stride, c, kNT, first);
}
#endif

TileKernel pick_tile_kernel() {
#ifdef FASTCODEC_X86_SIMD
  if (has_avx512()) return tile_kernel_avx512;
  if (has_avx2_fma()) return tile_kernel_24x8<ukernel_avx2, ukernel_avx2_narrow>;
#endif
  return tile_kernel_24x8<ukernel_generic<kNR>, ukernel_generic<kNarrow>>;
}

ActivateRow pick_activate_row() {
#ifdef FASTCODEC_X86_SIMD
  if (has_avx512()) return activate_row_avx512;
  if (has_avx2_fma()) return activate_row_avx2;
#endif
  return activate_row_generic;
}

}  // namespace

void epilogue_rows(float* y, int64_t rows, int64_t n, int64_t ldy, const float* bias, const float* alpha,
                   const float* residual, int64_t ldr, Activation act, float negative_slope) {
  static const ActivateRow activate_row = pick_activate_row();
  for (int64_t co = 0; co < rows; ++co) {
    float* v = y + co * ldy;
    activate_row(v, n, bias ? bias[co] : 0.0f, act, negative_slope, alpha ? alpha[co] : 0.0f);
    if (residual)
      for (int64_t j = 0; j < n; ++j) v[j] += residual[co * ldr + j];
  }
}

void run_conv(const ConvPlan& p) {
  static const TileKernel tile_kernel = pick_tile_kernel();
  static const ActivateRow activate_row = pick_activate_row();
  const Window win = make_window(p);
  const int64_t G = p.groups, cin = p.Cin / G, cout = p.Cout / G;  // channels per group
  const int64_t ntiles = (p.Tout + kNT - 1) / kNT;
  const int64_t cblocks = (cout + kMR - 1) / kMR;
  const int64_t ci_stride = win.phases * win.row_len;
  int64_t ci_block = std::max<int64_t>(1, std::min(cin, kTapsPerBlock / p.K));
  // The AVX-512 kernel streams a block's whole window (every column of its channels' phase rows)
  // once per 4-row weight block, so the window is also kept within L1: 1x1 convs and wide strided
  // ones would otherwise stream 40-100 KB from L2. The AVX2 kernel reads 24-column slices and
  // keeps the taps rule alone.
  if (has_avx512())
    ci_block = std::max<int64_t>(1, std::min(ci_block, kWindowBytesAvx512 / (ci_stride * int64_t{sizeof(float)})));
  const float slope = p.negative_slope;

  // Fewer (item, group, column tile) triples than threads - one short item, say - would leave
  // threads idle: then each triple's output channels are split among tasks too (each packs its own
  // window).
  const int64_t pairs = p.B * G * ntiles;
  const int64_t splits = std::min(cblocks, std::max<int64_t>(1, at::get_num_threads() / pairs));
  const int64_t cb_per_split = (cblocks + splits - 1) / splits;

  at::parallel_for(0, pairs * splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> window(ci_block * ci_stride);
    std::vector<float> tile(cblocks * kMR * kNT);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t pair = task / splits, split = task % splits;
      const int64_t b = pair / (G * ntiles), g = pair / ntiles % G, t0 = (pair % ntiles) * kNT;
      const int64_t cb_lo = split * cb_per_split, cb_hi = std::min(cblocks, cb_lo + cb_per_split);
      if (cb_lo >= cb_hi) continue;
      const int64_t co_lo = cb_lo * kMR, co_hi = std::min(cout, cb_hi * kMR);
      const int64_t ncols = std::min(kNT, p.Tout - t0);
      const float* xb = p.x + (b * p.Cin + g * cin) * p.T;
      const float* wg = p.wpack + g * cblocks * cin * p.K * kMR;
      // With stride 1 the window of channel ci is x[ci, base .. base + row_len): when that lies
      // inside [0, T) the micro-kernel reads x itself (row stride T) and nothing is packed.
      const int64_t base = t0 - p.pad;
      const bool direct = p.stride == 1 && base >= 0 && base + win.row_len <= p.T;
      for (int64_t ci0 = 0; ci0 < cin; ci0 += ci_block) {
        const int64_t nci = std::min(ci_block, cin - ci0);
        const float* src = window.data();
        int64_t src_ci_stride = ci_stride;
        if (direct) {
          src = xb + ci0 * p.T + base;
          src_ci_stride = p.T;
        } else {
          pack_window(p, win, xb, ci0, nci, t0, window.data());
        }
        for (int64_t cb = cb_lo; cb < cb_hi; ++cb) {
          const float* wp = wg + (cb * cin + ci0) * p.K * kMR;
          float* c = tile.data() + cb * kMR * kNT;
          tile_kernel(wp, src, win.tap_off.data(), nci, p.K, src_ci_stride, c, ncols, ci0 == 0);
        }
      }
      // Epilogue on the tile while it is in cache: bias, activation, residual, one store.
      for (int64_t co_g = co_lo; co_g < co_hi; ++co_g) {
        const int64_t co = g * cout + co_g;
        float* v = tile.data() + co_g * kNT;
        activate_row(v, ncols, p.bias ? p.bias[co] : 0.0f, p.act, slope, p.alpha ? p.alpha[co] : 0.0f);
        float* y = p.y + b * p.y_bs + co * p.y_cs + t0 * p.y_ts;
        if (p.residual) {
          const float* res = p.residual + (b * p.Cout + co) * p.Tout + t0;
          for (int64_t j = 0; j < ncols; ++j) y[j] = v[j] + res[j];  // residual implies y_ts == 1
        } else if (p.y_ts == 1) {
          std::memcpy(y, v, sizeof(float) * ncols);
        } else {
          for (int64_t j = 0; j < ncols; ++j) y[j * p.y_ts] = v[j];
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace fastcodec
