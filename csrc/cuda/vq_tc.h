// The tensor-core RVQ search of vq_tc.cu, for the CUDA op launchers in vq.cu.
#pragma once

#include <ATen/core/Tensor.h>

namespace fastcodec {
namespace vqtc {

// Whether x's search runs on tensor cores: fp16/bf16 with D <= kMaxD on an sm_80+ device.
bool applies(const at::Tensor& x, int64_t D);

// The residual search of x [N, D] (contiguous) through codebooks [Q, K, D] (contiguous), n_q stages:
// codes [N, n_q] written, and each non-null output as csrc/cuda/vq.cu's kernel writes it (quantized
// [N, D], sqdist [N] of the last stage, residuals [N, n_q + 1, D]). Arguments checked by the caller.
void rvq(const at::Tensor& x, const at::Tensor& cbs, const at::Tensor& codes, const at::Tensor* quantized,
         const at::Tensor* sqdist, int64_t n_q, const at::Tensor* residuals);

}  // namespace vqtc
}  // namespace fastcodec
