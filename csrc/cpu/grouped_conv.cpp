// A plain (zero-padded on both sides, non-causal) grouped conv on the CPU, fp32, with its two
// gradients: what the training critics' waveform layers run (41 taps, stride 4, 4 input channels
// per group), where oneDNN's grouped kernels run at a fraction of their ungrouped rate.
//
// - forward: the conv engine of conv_gemm.h, one weight block per group;
// - input gradient: `stride` stride-1 phase convs of the output gradient on the same engine (each
//   input phase r receives the taps k = r + pad (mod stride)), written every stride-th sample;
// - weight gradient: a kernel of its own, vectorized over taps: with dilation 1 the taps of one
//   output column read consecutive input samples, so dW[co, ci, k..k+8) accumulates
//   gy[co, j] * x[ci, j*stride - pad + k ..] over every column j of every item, in registers.
#include <algorithm>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "conv.h"
#include "conv_gemm.h"
#include "simd.h"

namespace fastcodec {
namespace {

int64_t out_len(int64_t T, int64_t K, int64_t stride, int64_t padding) {
  return (T + 2 * padding - K) / stride + 1;
}

// x [B, C, T] (the input, or the output gradient) and a conv of Cout channels and K taps: the
// checks every entry point shares.
void check_grouped(const at::Tensor& x, int64_t Cout, int64_t K, int64_t stride, int64_t padding, int64_t groups,
                   const char* what) {
  TORCH_CHECK(x.dim() == 3, "fastcodec: ", what, ": expected [B, C, T], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat, "fastcodec: ", what, " is fp32 only, got ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu(), "fastcodec: ", what, " runs on CPU tensors, got ", x.device());
  TORCH_CHECK(groups >= 1 && stride >= 1 && padding >= 0, "fastcodec: ", what,
              ": need groups >= 1, stride >= 1, padding >= 0; got ", groups, ", ", stride, ", ", padding);
  TORCH_CHECK(Cout > 0 && Cout % groups == 0, "fastcodec: ", what, ": ", Cout, " output channels do not split into ",
              groups, " groups");
  TORCH_CHECK(K >= 1, "fastcodec: ", what, ": kernel size must be >= 1, got ", K);
}

void check_weight(const at::Tensor& x, const at::Tensor& weight, const char* what) {
  TORCH_CHECK(weight.dim() == 3, "fastcodec: ", what, ": weight must be [Cout, Cin/groups, K], got ", weight.sizes());
  check_same(x, weight, "weight");
}

at::Tensor grouped_conv1d_cpu(const at::Tensor& x_in, const at::Tensor& w_in, const c10::optional<at::Tensor>& bias_in,
                              int64_t stride, int64_t padding, int64_t groups) {
  check_weight(x_in, w_in, "grouped_conv1d");
  check_grouped(x_in, w_in.size(0), w_in.size(2), stride, padding, groups, "grouped_conv1d");
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2);
  const int64_t Cout = w_in.size(0), K = w_in.size(2);
  TORCH_CHECK(Cin == w_in.size(1) * groups, "fastcodec: grouped_conv1d: x has ", Cin, " channels; weight ",
              w_in.sizes(), " with ", groups, " groups takes ", w_in.size(1) * groups);
  TORCH_CHECK(T + 2 * padding >= K, "fastcodec: grouped_conv1d: ", T, " samples padded by ", padding,
              " on each side are shorter than the kernel (", K, ")");
  if (bias_in.has_value()) {
    check_same(x_in, bias_in, "bias");
    check_channel_vector(bias_in, Cout, "bias");
  }
  const int64_t Tout = out_len(T, K, stride, padding);
  const at::Tensor x = x_in.contiguous(), wpack = cpu::pack_weights(w_in.contiguous(), groups);
  const c10::optional<at::Tensor> bias = bias_in.has_value() ? c10::optional<at::Tensor>(bias_in->contiguous())
                                                             : c10::nullopt;
  at::Tensor y = at::empty({B, Cout, Tout}, x.options());
  if (y.numel() == 0) return y;
  cpu::ConvPlan plan{B, Cin, Cout, T, Tout, K, stride, 1, padding, x.data_ptr<float>(), wpack.data_ptr<float>(),
                     bias ? bias->data_ptr<float>() : nullptr, nullptr, nullptr, Activation::None, 0.0f,
                     y.data_ptr<float>(), Cout * Tout, Tout, 1, groups};
  cpu::run_conv(plan);
  return y;
}

// dL/dx [B, Cin, T] from gy [B, Cout, Tout]. Input sample i = m*stride + r received, in the
// forward, output j = m + c - u through tap k0 + u*stride (k0 = (r + pad) mod stride, c = (r + pad -
// k0) / stride), so phase r is a stride-1 conv of gy with those taps reversed, reading from
// m - (J - 1 - c) on: the engine's explicit padding J - 1 - c, which is negative (a read-ahead)
// when the phase's taps reach past its own position.
at::Tensor grouped_conv1d_input_grad_cpu(const at::Tensor& gy_in, const at::Tensor& w_in, int64_t T, int64_t stride,
                                         int64_t padding, int64_t groups) {
  check_weight(gy_in, w_in, "grouped_conv1d_input_grad");
  check_grouped(gy_in, w_in.size(0), w_in.size(2), stride, padding, groups, "grouped_conv1d_input_grad");
  const int64_t B = gy_in.size(0), Cout = w_in.size(0), cin = w_in.size(1), K = w_in.size(2), Cin = cin * groups;
  const int64_t cout = Cout / groups, Tout = gy_in.size(2);
  TORCH_CHECK(gy_in.size(1) == Cout && T >= 0 && T + 2 * padding >= K && out_len(T, K, stride, padding) == Tout,
              "fastcodec: grouped_conv1d_input_grad: gy ", gy_in.sizes(), " is not the output of weight ",
              w_in.sizes(), " over ", T, " samples (stride ", stride, ", padding ", padding, ")");
  const at::Tensor gy = gy_in.contiguous(), w = w_in.contiguous().view({groups, cout, cin, K});
  at::Tensor gx = at::empty({B, Cin, T}, gy.options());
  if (gx.numel() == 0) return gx;
  for (int64_t r = 0; r < std::min(stride, T); ++r) {
    const int64_t k0 = (r + padding) % stride, c = (r + padding - k0) / stride;
    const int64_t J = k0 < K ? (K - k0 + stride - 1) / stride : 0, Tr = (T - r + stride - 1) / stride;
    if (J == 0) {  // no tap lands on this phase (K < stride)
      gx.slice(2, r, T, stride).zero_();
      continue;
    }
    // Tap v of the phase conv is forward tap k0 + (J - 1 - v) * stride, channels swapped per group.
    const at::Tensor taps = at::arange(k0 + (J - 1) * stride, k0 - 1, -stride, gy.options().dtype(at::kLong));
    const at::Tensor wt = w.index_select(3, taps).permute({0, 2, 1, 3}).reshape({Cin, cout, J});
    const at::Tensor wpack = cpu::pack_weights(wt, groups);
    cpu::ConvPlan plan{B, Cout, Cin, Tout, Tr, J, 1, 1, J - 1 - c, gy.data_ptr<float>(), wpack.data_ptr<float>(),
                       nullptr, nullptr, nullptr, Activation::None, 0.0f, gx.data_ptr<float>() + r, Cin * T, T,
                       stride, groups};
    cpu::run_conv(plan);
  }
  return gx;
}

// acc[i][0..8V) += sum_{j < n} gy[i*ldg + j] * x[j*stride .. j*stride + 8V), for R rows: the
// weight gradient's inner loop over one item's output columns (taps vectorized, rows broadcast).
template <int R, int V>
void wgrad_generic(const float* gy, int64_t ldg, const float* x, int64_t n, int64_t stride, float* acc) {
  for (int64_t j = 0; j < n; ++j) {
    const float* xj = x + j * stride;
    for (int i = 0; i < R; ++i) {
      const float g = gy[i * ldg + j];
      for (int v = 0; v < 8 * V; ++v) acc[i * 8 * V + v] += g * xj[v];
    }
  }
}

#ifdef FASTCODEC_X86_SIMD
// R x V <= 12 accumulators of the 16 AVX2 registers. Also what AVX-512 hosts run: the loop is
// bound by its loads and broadcasts as much as by the FMAs.
template <int R, int V>
__attribute__((target("avx2,fma"))) void wgrad_avx2(const float* gy, int64_t ldg, const float* x, int64_t n,
                                                    int64_t stride, float* acc) {
  static_assert(R * V <= 12, "the AVX2 weight-gradient tile holds at most 12 accumulators");
  __m256 a[R][V];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) a[i][v] = _mm256_loadu_ps(acc + (i * V + v) * 8);
  for (int64_t j = 0; j < n; ++j) {
    const float* xj = x + j * stride;
    __m256 xv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) xv[v] = _mm256_loadu_ps(xj + 8 * v);
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const __m256 g = _mm256_broadcast_ss(gy + i * ldg + j);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) a[i][v] = _mm256_fmadd_ps(g, xv[v], a[i][v]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(acc + (i * V + v) * 8, a[i][v]);
}
#endif

using WgradKernel = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*);
constexpr int kWgradRows = 4, kWgradVectors = 3;  // a tile: 4 output channels x 24 taps

template <int R, int V>
WgradKernel wgrad_kernel() {
#ifdef FASTCODEC_X86_SIMD
  if (cpu::has_avx2_fma()) return wgrad_avx2<R, V>;
#endif
  return wgrad_generic<R, V>;
}

// The kernel for R rows (1..4) and V tap vectors (1..3), picked once per process.
WgradKernel pick_wgrad(int64_t R, int64_t V) {
  static const WgradKernel table[kWgradRows][kWgradVectors] = {
      {wgrad_kernel<1, 1>(), wgrad_kernel<1, 2>(), wgrad_kernel<1, 3>()},
      {wgrad_kernel<2, 1>(), wgrad_kernel<2, 2>(), wgrad_kernel<2, 3>()},
      {wgrad_kernel<3, 1>(), wgrad_kernel<3, 2>(), wgrad_kernel<3, 3>()},
      {wgrad_kernel<4, 1>(), wgrad_kernel<4, 2>(), wgrad_kernel<4, 3>()}};
  return table[R - 1][V - 1];
}

// dL/dW [Cout, Cin/groups, K] = sum over items b and columns j of gy[b, co, j] x[b, ci, j*stride -
// pad + k], from a zero-padded copy of x long enough for whole 8-tap vectors. One task per (group,
// 4-channel block, input channel); each reduces every item's columns in registers.
at::Tensor grouped_conv1d_weight_grad_cpu(const at::Tensor& gy_in, const at::Tensor& x_in, int64_t K, int64_t stride,
                                          int64_t padding, int64_t groups) {
  check_grouped(gy_in, gy_in.dim() == 3 ? gy_in.size(1) : 0, K, stride, padding, groups,
                "grouped_conv1d_weight_grad");
  check_same(gy_in, x_in, "x");
  TORCH_CHECK(x_in.dim() == 3, "fastcodec: grouped_conv1d_weight_grad: x must be [B, Cin, T], got ", x_in.sizes());
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2), Cout = gy_in.size(1), Tout = gy_in.size(2);
  TORCH_CHECK(Cin % groups == 0 && gy_in.size(0) == B && T + 2 * padding >= K &&
                  out_len(T, K, stride, padding) == Tout,
              "fastcodec: grouped_conv1d_weight_grad: gy ", gy_in.sizes(), " is not the output of a ", K,
              "-tap conv of x ", x_in.sizes(), " (stride ", stride, ", padding ", padding, ", groups ", groups, ")");
  const int64_t cin = Cin / groups, cout = Cout / groups;
  at::Tensor gw = at::empty({Cout, cin, K}, x_in.options());
  if (B == 0 || Tout == 0) return gw.zero_();
  const at::Tensor gy = gy_in.contiguous();
  const int64_t kvecs = (K + 7) / 8, Lp = (Tout - 1) * stride + 8 * kvecs;
  at::Tensor xpad = at::zeros({B, Cin, Lp}, x_in.options());
  const int64_t copy = std::min(T, Lp - padding);
  if (copy > 0) xpad.narrow(2, padding, copy).copy_(x_in.narrow(2, 0, copy));
  const float* gp = gy.data_ptr<float>();
  const float* xp = xpad.data_ptr<float>();
  float* wp = gw.data_ptr<float>();
  const int64_t rblocks = (cout + kWgradRows - 1) / kWgradRows;
  at::parallel_for(0, groups * rblocks * cin, 1, [&](int64_t begin, int64_t end) {
    float acc[kWgradRows * kWgradVectors * 8];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / (rblocks * cin), rb = task / cin % rblocks, ci = task % cin;
      const int64_t co0 = g * cout + rb * kWgradRows, R = std::min<int64_t>(kWgradRows, cout - rb * kWgradRows);
      for (int64_t kv0 = 0; kv0 < kvecs; kv0 += kWgradVectors) {
        const int64_t V = std::min<int64_t>(kWgradVectors, kvecs - kv0);
        const WgradKernel kernel = pick_wgrad(R, V);
        std::fill(acc, acc + R * V * 8, 0.0f);
        for (int64_t b = 0; b < B; ++b)
          kernel(gp + (b * Cout + co0) * Tout, Tout, xp + (b * Cin + g * cin + ci) * Lp + kv0 * 8, Tout, stride, acc);
        for (int64_t i = 0; i < R; ++i) {
          const int64_t k0 = kv0 * 8, n = std::min(K - k0, V * 8);
          std::memcpy(wp + ((co0 + i) * cin + ci) * K + k0, acc + i * V * 8, sizeof(float) * n);
        }
      }
    }
  });
  return gw;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcodec, CPU, m) {
  m.impl("grouped_conv1d", &grouped_conv1d_cpu);
  m.impl("grouped_conv1d_input_grad", &grouped_conv1d_input_grad_cpu);
  m.impl("grouped_conv1d_weight_grad", &grouped_conv1d_weight_grad_cpu);
}

}  // namespace fastcodec
