// A GEMM-shaped fp32 causal conv engine for the CPU, shared by causal_conv1d and (phase by phase)
// causal_conv_transpose1d.
//
// Per task (batch item b, tile of NT output columns): Y[Cout, NT] = W[Cout, Cin*K] . X[Cin*K, NT].
// X is never materialized: the tile's input window of each channel is copied once into `stride`
// phase rows (zeros where the causal padding is), after which tap k of output column j is the
// contiguous element (phase r_k, offset a_k + j), for any stride and dilation. Weights are packed
// once per call as [Cout/MR][Cin][K][MR] so the micro-kernel broadcasts them sequentially. The
// micro-kernel is 4 x 96 with AVX-512 (24 accumulators: one call per tile) or 4 x 24 with AVX2
// (12 accumulators, and an 8-wide one for the last columns); channels are blocked so the packed
// window and the weight block stay in L1/L2, with partial sums in a per-task tile buffer; interior tiles of
// stride-1 convs read x directly, unpacked. The epilogue (bias, activation, residual) runs once
// per tile, on data still in cache.
#pragma once

#include <cstdint>

#include "../epilogue.h"

namespace fastcodec {
namespace cpu {

constexpr int64_t kMR = 4;   // output channels per micro-tile
constexpr int64_t kNR = 24;  // output columns per AVX2 micro-tile (3 vectors)
constexpr int64_t kNT = 96;  // output columns per task

// Everything one conv launch needs. Pointers are to contiguous float data. With groups > 1 the
// input and output channels split into that many groups, output group g reading input group g
// only (as in torch's conv1d); the weights are packed per group.
struct ConvPlan {
  int64_t B, Cin, Cout, T, Tout, K, stride, dilation, pad;
  const float* x;         // [B, Cin, T]
  const float* wpack;     // [groups][ceil(Cout_g/MR)][Cin_g][K][MR], zero rows past Cout_g (see conv.cpp)
  const float* bias;      // [Cout] or null
  const float* alpha;     // [Cout] or null (snake)
  const float* residual;  // [B, Cout, Tout] or null
  Activation act;
  float negative_slope;
  float* y;                  // element (b, co, t) at y[b*y_bs + co*y_cs + t*y_ts]
  int64_t y_bs, y_cs, y_ts;  // output strides (the transposed conv writes one phase: y_ts = stride)
  int64_t groups = 1;        // Cin and Cout are multiples of it
};

// Runs the conv described by plan (parallel over batch items x column tiles).
void run_conv(const ConvPlan& plan);

// The same epilogue on rows already summed elsewhere (the few-output paths of conv.cpp): row co
// (n values, rows ldy apart) becomes act(row + bias[co]) + residual row co (rows ldr apart).
void epilogue_rows(float* y, int64_t rows, int64_t n, int64_t ldy, const float* bias, const float* alpha,
                   const float* residual, int64_t ldr, Activation act, float negative_slope);

}  // namespace cpu
}  // namespace fastcodec
