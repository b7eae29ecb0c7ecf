// The fp32 stream steps of the CPU conv kernels (csrc/cpu/conv.cpp), for callers inside the
// extension: the conv1d_window and conv_transpose1d_stream ops without their argument checks.
// Inputs contiguous and already checked; shapes as in those ops' schemas.
#pragma once

#include <cstdint>
#include <tuple>

#include <ATen/ATen.h>

#include "../epilogue.h"

namespace fastcodec {
namespace cpu {

// w [Cout, Cin_g, K] in conv_gemm.h's packed layout for `groups` groups (1: an ungrouped conv).
at::Tensor pack_weights(const at::Tensor& w, int64_t groups = 1);

// y [B, Cout, out_len]: output t reads x[t*stride - pad + k*dilation] (zero outside [0, T)).
at::Tensor conv1d_window_f32(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& alpha, const c10::optional<at::Tensor>& residual,
                             Activation act, float slope, int64_t stride, int64_t dilation, int64_t pad,
                             int64_t out_len);

// How this thread's fp32 transposed convs run: 0 by the rule (transposed_by_gemm in conv.cpp),
// 1 as phase convs, 2 by one GEMM wherever its buffer fits the cap. Lets the measured 'auto' time
// the alternatives (fastcodec/ops/dispatch.py, VARIANTS). Returns the previous setting.
int set_transposed_variant(int variant);

// (y [B, Cout, T*stride], next tail [B, Cout, max(K - stride, 0)]) for one chunk x [B, Cin, T]
// after the previous chunk's tail (none at the start).
std::tuple<at::Tensor, at::Tensor> conv_transpose1d_stream_f32(const at::Tensor& x, const at::Tensor& w,
                                                              const c10::optional<at::Tensor>& bias,
                                                              const c10::optional<at::Tensor>& tail, int64_t stride,
                                                              Activation act, float slope,
                                                              const c10::optional<at::Tensor>& alpha);

}  // namespace cpu
}  // namespace fastcodec
