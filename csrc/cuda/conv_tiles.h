// The index arithmetic, masking and epilogue of the tensor-core convs (conv_tc.cu), as host/device
// functions: the CPU emulator (csrc/cpu/conv_tile_emulator.cpp) runs the same tile loop through
// them, so everything of a kernel but its fragment loads and MMAs is tested where no GPU is.
//
// Both convs are one implicit GEMM per batch item and output phase: Y[co, col] = sum over
// reduction steps (tap j, input-channel block) of W[tap(j)][co][ci] * X[ci][source(col, j)], with
// the weight packed to [K, Cout, Cin] (Cin contiguous). The causal conv has one phase, columns are
// output times t, tap j = k and source t*stride + k*dilation - pad. The transposed conv has
// `stride` phases p; columns are input frames q, output t' = q*stride + p, taps k = p + j*stride,
// source q - j (every tile dense, no masked-out multiplies).
#pragma once

#include <cstdint>

#include "../epilogue.h"

namespace fastcodec {
namespace tc {

// Block tile: BM output channels x BN columns, BK input channels per reduction step; 4 warps in
// a 2 x 2 grid, each 32 x 32 (2 x 2 fragments of 16 x 16).
constexpr int BM = 64, BN = 64, BK = 16, kThreads = 128;

struct Shape {
  int64_t Cin, Cout, T, K, stride, dilation;
  bool transposed;
  // Derived once on the host (make_shape), so that a kernel divides by none of them per element.
  int64_t out_len, phases, columns, col_blocks, ci_blocks;
};

inline Shape make_shape(int64_t Cin, int64_t Cout, int64_t T, int64_t K, int64_t stride, int64_t dilation,
                        bool transposed) {
  Shape s{Cin, Cout, T, K, stride, transposed ? 1 : dilation, transposed, 0, 0, 0, 0, 0};
  s.out_len = transposed ? T * stride : (T + stride - 1) / stride;
  s.phases = transposed ? stride : 1;
  s.columns = transposed ? T : s.out_len;  // output times (conv) or input frames (transposed)
  s.col_blocks = (s.columns + BN - 1) / BN;
  s.ci_blocks = (Cin + BK - 1) / BK;
  return s;
}

// The Shape of a conv of x [B, Cin, T] with w [Cout, Cin, K] (transposed: [Cin, Cout, K]); a template
// so that this header needs no ATen.
template <typename Tensor>
Shape shape_of(const Tensor& x, const Tensor& w, int64_t stride, int64_t dilation, bool transposed) {
  return make_shape(x.size(1), transposed ? w.size(1) : w.size(0), x.size(2), w.size(2), stride, dilation, transposed);
}

FC_HOST_DEVICE int64_t taps(const Shape& s, int64_t p) {
  return s.transposed ? (s.K - p + s.stride - 1) / s.stride : s.K;
}
FC_HOST_DEVICE int64_t steps(const Shape& s, int64_t p) { return taps(s, p) * s.ci_blocks; }

// The grid: blockIdx.x runs over (batch item, phase, column block), blockIdx.y over channel blocks.
struct Block {
  int64_t b, p, col0, co0;
};
FC_HOST_DEVICE Block block_of(const Shape& s, int64_t bx, int64_t by) {
  return {bx / (s.col_blocks * s.phases), (bx / s.col_blocks) % s.phases, (bx % s.col_blocks) * BN, by * BM};
}

// Reduction step `step` of a block: tap j (weight tap k) and the first input channel ci0.
struct Step {
  int64_t j, k, ci0;
};
FC_HOST_DEVICE Step step_at(const Shape& s, const Block& blk, int64_t step) {
  const int64_t j = step / s.ci_blocks;
  return {j, s.transposed ? blk.p + j * s.stride : j, (step % s.ci_blocks) * BK};
}

// Element e (0 <= e < BM*BK) of a step's weight tile A [BM][BK]: its global offset in the packed
// weight, or -1 where it is zero (channel past Cout or Cin). Row e / BK, column e % BK.
FC_HOST_DEVICE int64_t a_offset(const Shape& s, const Block& blk, const Step& st, int e) {
  const int64_t co = blk.co0 + e / BK, ci = st.ci0 + e % BK;
  if (co >= s.Cout || ci >= s.Cin) return -1;
  return (st.k * s.Cout + co) * s.Cin + ci;
}

// Element e (0 <= e < BK*BN) of a step's input tile B [BK][BN]: its offset in item b's x [Cin, T]
// (contiguous), or -1 where it reads zero: a channel past Cin, a column past the end, or a source
// time outside [0, T) (the causal padding). Row e / BN, column e % BN.
FC_HOST_DEVICE int64_t b_offset(const Shape& s, const Block& blk, const Step& st, int e) {
  const int64_t ci = st.ci0 + e / BN, c = blk.col0 + e % BN;
  if (ci >= s.Cin || c >= s.columns) return -1;
  const int64_t src = s.transposed ? c - st.j : c * s.stride + (st.j - (s.K - 1)) * s.dilation;
  if (src < 0 || src >= s.T) return -1;
  return ci * s.T + src;
}

// Element e (0 <= e < BM*BN) of the output tile: its offset in item b's y [Cout, out_len], or -1
// outside. Row e / BN (channel co0 + row), column e % BN.
FC_HOST_DEVICE int64_t y_offset(const Shape& s, const Block& blk, int e) {
  const int64_t co = blk.co0 + e / BN, c = blk.col0 + e % BN;
  if (co >= s.Cout || c >= s.columns) return -1;
  return co * s.out_len + (s.transposed ? c * s.stride + blk.p : c);
}

// The fused epilogue of one output: bias, activation, then the residual (conv only).
template <typename acc_t, typename scalar_t>
FC_HOST_DEVICE acc_t finish(acc_t acc, const scalar_t* bias, int64_t co, Activation act, acc_t slope,
                            const scalar_t* alpha, acc_t residual) {
  if (bias) acc += acc_t(bias[co]);
  return activate<acc_t>(acc, act, slope, alpha ? acc_t(alpha[co]) : acc_t(0)) + residual;
}

}  // namespace tc
}  // namespace fastcodec
