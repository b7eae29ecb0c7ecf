// The tensor-core convs' tile loop (csrc/cuda/conv_tc.cu) run on the CPU through the same
// index, masking and epilogue functions (csrc/cuda/conv_tiles.h), with scalar fp32 products in
// place of the fragments' MMAs: tests/test_conv_tiles.py compares it with the reference, so that
// what only a GPU can run is the fragment loads, the MMAs and the shared-memory staging.
#include <algorithm>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "../cuda/conv_tiles.h"

namespace fastcodec {
namespace {

using namespace tc;

at::Tensor emulate(const at::Tensor& x_in, const at::Tensor& w_in, const c10::optional<at::Tensor>& bias_in,
                   const c10::optional<at::Tensor>& alpha_in, const c10::optional<at::Tensor>& residual_in,
                   int64_t stride, int64_t dilation, c10::string_view activation, double negative_slope,
                   bool transposed) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "the tile emulator takes fp32");
  if (transposed) {
    TORCH_CHECK(!residual_in.has_value(), "the transposed conv takes no residual");
    check_conv_common(x_in, w_in, bias_in, alpha_in, /*cin_dim_of_weight=*/0, activation, stride);
  } else {
    check_conv1d(x_in, w_in, bias_in, alpha_in, residual_in, activation, stride, dilation);
  }
  const Activation act = parse_activation(activation);
  const at::Tensor x = x_in.contiguous();
  // The packed layout the kernels read: [K, Cout, Cin].
  const at::Tensor w = (transposed ? w_in.permute({2, 1, 0}) : w_in.permute({2, 0, 1})).contiguous();
  const auto bias = bias_in.has_value() ? c10::optional<at::Tensor>(bias_in->contiguous()) : c10::nullopt;
  const auto alpha = alpha_in.has_value() ? c10::optional<at::Tensor>(alpha_in->contiguous()) : c10::nullopt;
  const auto residual =
      residual_in.has_value() ? c10::optional<at::Tensor>(residual_in->contiguous()) : c10::nullopt;
  const Shape s = shape_of(x, w_in, stride, dilation, transposed);
  const int64_t B = x.size(0), Tout = s.out_len;
  at::Tensor y = at::full({B, s.Cout, Tout}, std::numeric_limits<float>::quiet_NaN(), x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  const float* ap = alpha ? alpha->data_ptr<float>() : nullptr;
  const float* rp = residual ? residual->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  std::vector<float> A(BM * BK), Bt(BK * BN), C(BM * BN);
  const int64_t grid_x = B * s.phases * s.col_blocks, grid_y = (s.Cout + BM - 1) / BM;
  for (int64_t bx = 0; bx < grid_x; ++bx) {
    for (int64_t by = 0; by < grid_y; ++by) {
      const Block blk = block_of(s, bx, by);
      const float* xb = xp + blk.b * s.Cin * s.T;
      std::fill(C.begin(), C.end(), 0.f);
      for (int64_t step = 0; step < steps(s, blk.p); ++step) {
        const Step st = step_at(s, blk, step);
        for (int e = 0; e < BM * BK; ++e) {  // (as the kernel stores them: row e / BK, column e % BK)
          const int64_t off = a_offset(s, blk, st, e);
          A[e] = off < 0 ? 0.f : wp[off];
        }
        for (int e = 0; e < BK * BN; ++e) {
          const int64_t off = b_offset(s, blk, st, e);
          Bt[e] = off < 0 ? 0.f : xb[off];
        }
        for (int m = 0; m < BM; ++m)
          for (int k = 0; k < BK; ++k)
            for (int n = 0; n < BN; ++n) C[m * BN + n] += A[m * BK + k] * Bt[k * BN + n];
      }
      for (int e = 0; e < BM * BN; ++e) {
        const int64_t off = y_offset(s, blk, e);
        if (off < 0) continue;
        const int64_t item = blk.b * s.Cout * Tout;
        const float r = rp ? rp[item + off] : 0.f;
        yp[item + off] = finish<float, float>(C[e], bp, blk.co0 + e / BN, act, float(negative_slope), ap, r);
      }
    }
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(fastcodec_dev, m) {
  m.def(
      "conv_tiles_emulate(Tensor x, Tensor weight, Tensor? bias, Tensor? alpha, Tensor? residual, int stride, "
      "int dilation, str activation, float negative_slope, bool transposed) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastcodec_dev, CPU, m) { m.impl("conv_tiles_emulate", &emulate); }

}  // namespace fastcodec
