// Argument checks at the C++ boundary, shared by the CPU and CUDA kernels. The Python API checks
// the same things first with friendlier messages; these guard direct torch.ops.fastcodec.* calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

namespace fastcodec {

inline int64_t conv1d_out_len(int64_t T, int64_t stride) { return (T + stride - 1) / stride; }

inline void check_same(const at::Tensor& x, const c10::optional<at::Tensor>& t, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->scalar_type() == x.scalar_type(), "fastcodec: ", name, " has dtype ", t->scalar_type(),
              " but x has ", x.scalar_type());
  TORCH_CHECK(t->device() == x.device(), "fastcodec: ", name, " is on ", t->device(), " but x is on ", x.device());
}

inline void check_channel_vector(const c10::optional<at::Tensor>& t, int64_t channels, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == channels, "fastcodec: ", name, " must have shape [", channels,
              "], got ", t->sizes());
}

// x [B, Cin, T], weight [Cout, Cin, K] (conv) or [Cin, Cout, K] (transposed).
inline void check_conv_common(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                              const c10::optional<at::Tensor>& alpha, int64_t cin_dim_of_weight,
                              c10::string_view activation, int64_t stride) {
  TORCH_CHECK(x.dim() == 3, "fastcodec: x must be [B, Cin, T], got ", x.sizes());
  TORCH_CHECK(weight.dim() == 3, "fastcodec: weight must be 3-D, got ", weight.sizes());
  TORCH_CHECK(weight.size(cin_dim_of_weight) == x.size(1), "fastcodec: weight ", weight.sizes(),
              " does not match x with ", x.size(1), " input channels");
  TORCH_CHECK(weight.size(2) >= 1, "fastcodec: kernel size must be >= 1");
  TORCH_CHECK(stride >= 1, "fastcodec: stride must be >= 1, got ", stride);
  TORCH_CHECK(x.is_floating_point(), "fastcodec: x must be floating point, got ", x.scalar_type());
  const int64_t cout = weight.size(1 - cin_dim_of_weight);
  check_same(x, weight, "weight");
  check_same(x, bias, "bias");
  check_same(x, alpha, "alpha");
  check_channel_vector(bias, cout, "bias");
  check_channel_vector(alpha, cout, "alpha");
  TORCH_CHECK(activation != "snake" || alpha.has_value(), "fastcodec: activation 'snake' needs alpha");
}

// causal_conv1d: the common checks, dilation, and the residual's shape [B, Cout, ceil(T/stride)].
inline void check_conv1d(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         const c10::optional<at::Tensor>& alpha, const c10::optional<at::Tensor>& residual,
                         c10::string_view activation, int64_t stride, int64_t dilation) {
  check_conv_common(x, weight, bias, alpha, /*cin_dim_of_weight=*/1, activation, stride);
  TORCH_CHECK(dilation >= 1, "fastcodec: dilation must be >= 1, got ", dilation);
  if (!residual.has_value()) return;
  check_same(x, residual, "residual");
  const int64_t B = x.size(0), Cout = weight.size(0), Tout = conv1d_out_len(x.size(2), stride);
  TORCH_CHECK(residual->sizes() == at::IntArrayRef({B, Cout, Tout}), "fastcodec: residual must be [", B, ", ", Cout,
              ", ", Tout, "], got ", residual->sizes());
}

inline void check_vq(const at::Tensor& x, const at::Tensor& codebook) {
  TORCH_CHECK(x.dim() == 2, "fastcodec: x must be [N, D], got ", x.sizes());
  TORCH_CHECK(codebook.dim() == 2, "fastcodec: codebook must be [K, D], got ", codebook.sizes());
  TORCH_CHECK(codebook.size(1) == x.size(1), "fastcodec: codebook dim ", codebook.size(1), " != x dim ", x.size(1));
  TORCH_CHECK(codebook.size(0) >= 1, "fastcodec: codebook is empty");
  TORCH_CHECK(x.is_floating_point(), "fastcodec: x must be floating point, got ", x.scalar_type());
  check_same(x, codebook, "codebook");
}

inline void check_rvq(const at::Tensor& x, const at::Tensor& codebooks, int64_t n_q) {
  TORCH_CHECK(x.dim() == 2, "fastcodec: x must be [N, D], got ", x.sizes());
  TORCH_CHECK(codebooks.dim() == 3, "fastcodec: codebooks must be [Q, K, D], got ", codebooks.sizes());
  TORCH_CHECK(codebooks.size(2) == x.size(1), "fastcodec: codebook dim ", codebooks.size(2), " != x dim ", x.size(1));
  TORCH_CHECK(codebooks.size(1) >= 1, "fastcodec: codebooks are empty");
  TORCH_CHECK(n_q >= 1 && n_q <= codebooks.size(0), "fastcodec: n_q must be in [1, ", codebooks.size(0), "], got ", n_q);
  TORCH_CHECK(x.is_floating_point(), "fastcodec: x must be floating point, got ", x.scalar_type());
  check_same(x, codebooks, "codebooks");
}

inline void check_rvq_decode(const at::Tensor& codes, const at::Tensor& codebooks) {
  TORCH_CHECK(codes.dim() == 2, "fastcodec: codes must be [N, n_q], got ", codes.sizes());
  TORCH_CHECK(codes.scalar_type() == at::kLong, "fastcodec: codes must be int64, got ", codes.scalar_type());
  TORCH_CHECK(codebooks.dim() == 3, "fastcodec: codebooks must be [Q, K, D], got ", codebooks.sizes());
  TORCH_CHECK(codes.size(1) <= codebooks.size(0), "fastcodec: codes have ", codes.size(1), " stages but only ",
              codebooks.size(0), " codebooks");
  TORCH_CHECK(codes.device() == codebooks.device(), "fastcodec: codes on ", codes.device(), ", codebooks on ",
              codebooks.device());
}

}  // namespace fastcodec
