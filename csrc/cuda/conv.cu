// Causal conv and causal transposed conv on CUDA: on tensor cores (conv_tc.cu) for fp16/bf16, and
// fp32 where TF32 is allowed, on sm_80+; otherwise one thread per output sample with the whole
// epilogue fused, the exact baseline (fp32 and fp64 exact, fp32 accumulation for 16-bit).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../checks.h"
#include "../epilogue.h"
#include "conv_tc.h"
#include "launch.h"

namespace fastcodec {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void causal_conv1d_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                                     const scalar_t* __restrict__ bias, const scalar_t* __restrict__ alpha,
                                     const scalar_t* __restrict__ residual, scalar_t* __restrict__ y, int64_t Cin,
                                     int64_t Cout, int64_t T, int64_t Tout, int64_t K, int64_t stride,
                                     int64_t dilation, int64_t total, Activation act, double negative_slope) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pad = (K - 1) * dilation;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i % Tout, row = i / Tout;
    const int64_t co = row % Cout, b = row / Cout;
    acc_t acc = bias ? acc_t(bias[co]) : acc_t(0);
    for (int64_t ci = 0; ci < Cin; ++ci) {
      const scalar_t* xrow = x + (b * Cin + ci) * T;
      const scalar_t* wrow = w + (co * Cin + ci) * K;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t src = t * stride + k * dilation - pad;  // < 0 is the causal zero padding
        if (src >= 0) acc += acc_t(wrow[k]) * acc_t(xrow[src]);
      }
    }
    acc_t v = activate<acc_t>(acc, act, acc_t(negative_slope), alpha ? acc_t(alpha[co]) : acc_t(0));
    if (residual) v += acc_t(residual[i]);
    y[i] = scalar_t(v);
  }
}

template <typename scalar_t>
__global__ void causal_conv_transpose1d_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                                               const scalar_t* __restrict__ bias, const scalar_t* __restrict__ alpha,
                                               scalar_t* __restrict__ y, int64_t Cin, int64_t Cout, int64_t T,
                                               int64_t Tout, int64_t K, int64_t stride, int64_t total, Activation act,
                                               double negative_slope) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t_out = i % Tout, row = i / Tout;
    const int64_t co = row % Cout, b = row / Cout;
    acc_t acc = bias ? acc_t(bias[co]) : acc_t(0);
    // Output t_out gathers input t with t*stride + k == t_out: k runs over one residue class mod stride.
    for (int64_t k = t_out % stride; k < K && k <= t_out; k += stride) {
      const int64_t t = (t_out - k) / stride;
      if (t >= T) continue;
      for (int64_t ci = 0; ci < Cin; ++ci) acc += acc_t(w[(ci * Cout + co) * K + k]) * acc_t(x[(b * Cin + ci) * T + t]);
    }
    y[i] = scalar_t(activate<acc_t>(acc, act, acc_t(negative_slope), alpha ? acc_t(alpha[co]) : acc_t(0)));
  }
}

at::Tensor causal_conv1d_cuda(const at::Tensor& x_in, const at::Tensor& w_in, const c10::optional<at::Tensor>& bias_in,
                              int64_t stride, int64_t dilation, c10::string_view activation, double negative_slope,
                              const c10::optional<at::Tensor>& alpha_in, const c10::optional<at::Tensor>& residual_in) {
  check_conv1d(x_in, w_in, bias_in, alpha_in, residual_in, activation, stride, dilation);
  const Activation act = parse_activation(activation);
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2);
  const int64_t Cout = w_in.size(0), K = w_in.size(2);
  const int64_t Tout = conv1d_out_len(T, stride);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const auto bias = contiguous_or_null(bias_in), alpha = contiguous_or_null(alpha_in);
  const auto residual = contiguous_or_null(residual_in);
  at::Tensor y = at::empty({B, Cout, Tout}, x.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  if (tc::applies(x)) {
    tc::conv(x, w, bias, alpha, residual, y, stride, dilation, act, negative_slope, /*transposed=*/false);
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastcodec_causal_conv1d_cuda", [&] {
    causal_conv1d_kernel<scalar_t><<<grid_for(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(bias), ptr_or_null<scalar_t>(alpha),
        ptr_or_null<scalar_t>(residual), y.data_ptr<scalar_t>(), Cin, Cout, T, Tout, K, stride, dilation, total, act,
        negative_slope);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor causal_conv_transpose1d_cuda(const at::Tensor& x_in, const at::Tensor& w_in,
                                        const c10::optional<at::Tensor>& bias_in, int64_t stride,
                                        c10::string_view activation, double negative_slope,
                                        const c10::optional<at::Tensor>& alpha_in) {
  check_conv_common(x_in, w_in, bias_in, alpha_in, /*cin_dim_of_weight=*/0, activation, stride);
  const Activation act = parse_activation(activation);
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2);
  const int64_t Cout = w_in.size(1), K = w_in.size(2);
  const int64_t Tout = T * stride;
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const auto bias = contiguous_or_null(bias_in), alpha = contiguous_or_null(alpha_in);
  at::Tensor y = at::empty({B, Cout, Tout}, x.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  if (tc::applies(x)) {
    tc::conv(x, w, bias, alpha, c10::nullopt, y, stride, 1, act, negative_slope, /*transposed=*/true);
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastcodec_conv_transpose1d_cuda", [&] {
    causal_conv_transpose1d_kernel<scalar_t>
        <<<grid_for(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(bias),
            ptr_or_null<scalar_t>(alpha), y.data_ptr<scalar_t>(), Cin, Cout, T, Tout, K, stride, total, act,
            negative_slope);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcodec, CUDA, m) {
  m.impl("causal_conv1d", &causal_conv1d_cuda);
  m.impl("causal_conv_transpose1d", &causal_conv_transpose1d_cuda);
}

}  // namespace fastcodec
