// The tensor-core convs of conv_tc.cu, for the CUDA op launchers in conv.cu.
#pragma once

#include <ATen/core/Tensor.h>

#include "../epilogue.h"

namespace fastcodec {
namespace tc {

// Whether x's conv runs on tensor cores: fp16/bf16, or fp32 where torch.backends.cudnn.allow_tf32
// allows TF32, on an sm_80+ device.
bool applies(const at::Tensor& x);

// y (allocated, [B, Cout, out_len]) = the causal conv (weight [Cout, Cin, K]) or causal transposed
// conv (weight [Cin, Cout, K], stride = upsampling) of x [B, Cin, T], epilogue fused; arguments
// checked by the caller.
void conv(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
          const c10::optional<at::Tensor>& alpha, const c10::optional<at::Tensor>& residual, at::Tensor& y,
          int64_t stride, int64_t dilation, Activation act, double negative_slope, bool transposed);

}  // namespace tc
}  // namespace fastcodec
