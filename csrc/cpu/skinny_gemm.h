// Y = X . M^T for a few rows of X against a large M (the weights): the shape of a conv layer in a
// stream, which emits 1-320 outputs per call when the codec is fed a 13 ms frame at a time. With
// 1-8 rows each weight is used that many times and reading M is the cost; MKL's sgemm packs M
// again at every call (about 1.5x the product), so M is packed once, kept by the weight cache, in panels of P of its rows: [ceil(N/P)][Kd][P],
// P = one vector (16 floats with AVX-512, else 8). The micro-kernel holds R rows x V panels of
// accumulators, broadcasts one X element per row and streams V panels sequentially, which the
// hardware prefetcher follows. Up to 8 rows, one pass over M; beyond, groups of 6 rows (8 with
// AVX-512), each a pass over M (from L2 for the codec's wide-T layers).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace fastcodec {
namespace cpu {

constexpr int64_t kSkinnyRows = 8;    // up to this many rows, one pass over M

// Rows of M per panel in this process: 16 with AVX-512, else 8 (simd.h).
int64_t panel_width();

// The most rows worth this path when M is already packed: every stream chunk with AVX2, up to 64
// with AVX-512, whose conv engine is twice as fast (benchmarks/RESULTS.md, "Where the code's rules come from").
int64_t skinny_max_rows();

// m: [N, Kd] fp32 (any strides) -> panels [ceil(N/P), Kd, P], zero rows past N, P = panel_width().
at::Tensor pack_panels(const at::Tensor& m);

// The rows of X, read in place: element (r, ci*K + k) is x[r*rstride + ci*cstride + tap[k]]. A
// conv's input windows are rows of this form (rstride = stride, tap[k] = k*dilation), so they
// need no im2col copy; a transposed conv's input frames are too (rstride = 1, K = 1).
struct SkinnyRows {
  const float* x;
  int64_t n, rstride, cstride;
  const int64_t* tap;
  int64_t Cin, K;
};

// y[r, j] = sum_kk X[r, kk] * m[j, kk] for r < n, j < N (the panels' logical rows), y rows ldy
// apart, ldy >= round_up(N, panel_width()): the padding columns are written too. Rows go in groups
// (one group when n <= 8, so the weights are read once); parallel over panels.
void skinny_gemm(const SkinnyRows& rows, const at::Tensor& panels, int64_t N, float* y, int64_t ldy);

}  // namespace cpu
}  // namespace fastcodec
