// Causal conv and causal transposed conv on the CPU, with bias, activation and residual fused.
// fp32 runs on the GEMM-shaped engine of conv_gemm.h (the transposed conv as `stride` phase convs,
// or, over few input frames, as one sgemm and a gather);
// fp64 (used by gradcheck) runs a simple loop nest: one output row (b, co) per task, the tap loop
// over a contiguous time range.
#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "../epilogue.h"
#include "conv.h"
#include "conv_gemm.h"
#include "simd.h"
#include "skinny_gemm.h"
#include "weight_cache.h"

namespace fastcodec {
namespace {

template <typename scalar_t>
const scalar_t* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<scalar_t>() : nullptr;
}

c10::optional<at::Tensor> contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

}  // namespace

namespace cpu {

// w: [Cout, Cin_g, K] fp32 -> the engine's [groups][ceil(Cout_g/MR)][Cin_g][K][MR] layout with zero
// rows past each group's Cout_g. That is a padded transposing copy, which ATen does in parallel and
// vectorized (a scalar pack loop cost as much as the conv itself on wide layers with few output
// samples).
at::Tensor pack_weights(const at::Tensor& w, int64_t groups) {
  const int64_t cout = w.size(0) / groups, taps = w.size(1) * w.size(2), tail = (kMR - cout % kMR) % kMR;
  at::Tensor wg = w.reshape({groups, cout, taps});
  if (tail) wg = at::constant_pad_nd(wg, {0, 0, 0, tail});
  return wg.reshape({groups, -1, kMR, taps}).transpose(2, 3).contiguous();
}

}  // namespace cpu

namespace {

thread_local int t_transposed_variant = 0;  // see cpu::set_transposed_variant

}  // namespace

int cpu::set_transposed_variant(int variant) {
  TORCH_CHECK(variant >= 0 && variant <= 2, "fastcodec: transposed-conv variant must be 0, 1 or 2, got ", variant);
  const int previous = t_transposed_variant;
  t_transposed_variant = variant;
  return previous;
}

namespace {

using cpu::pack_weights;

// Few outputs (a stream's chunk: 1-320 per layer) make reading the weights the cost. Inside a
// weight-cache scope they are packed once as panels for the skinny product (skinny_gemm.h);
// without it, up to 8 outputs gather the windows as rows for ATen's sgemm (windows x W^T, the
// skinny matrix first), past that the conv engine. Window rows and sgemm also take deep strided
// layers over few columns in all, where the engine gets one narrow tile per item; the crossover
// depends on the SIMD level and on MKL being AVX-512 (Intel). Figures: benchmarks/RESULTS.md,
// "Where the code's rules come from".
constexpr int64_t kFewOutputsUncached = cpu::kSkinnyRows;

// Rows per parallel chunk for loops of `row_len` elements a row: ~32K elements, so a stream's few
// outputs stay on the calling thread rather than paying for a parallel region.
int64_t grain_for(int64_t row_len) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_len)); }

bool deep_strided_few_columns(const at::Tensor& x, const at::Tensor& w, int64_t stride, int64_t Tout) {
  const int64_t B = x.size(0), Kd = w.size(1) * w.size(2);
  const int64_t max_columns = !cpu::has_avx512() ? 1200 : cpu::is_intel() && Kd >= 2048 ? 400 : 64;
  return stride >= 4 && Kd >= 1024 && B * Tout <= max_columns && B * Tout * Kd * 4 <= (int64_t{64} << 20);
}

bool skinny_conv_fits(const at::Tensor& x, const at::Tensor& w, int64_t stride, int64_t Tout) {
  if (cpu::caches(w)) return Tout <= cpu::skinny_max_rows();
  return Tout <= kFewOutputsUncached || deep_strided_few_columns(x, w, stride, Tout);
}

// z [B * Tout, Cout] rows ldz apart, with z[b*Tout + t, co] the conv's sum for output t of item b.
at::Tensor conv_sums_skinny(const at::Tensor& x, const at::Tensor& w, int64_t stride, int64_t dilation, int64_t pad,
                            int64_t Tout) {
  const int64_t B = x.size(0), Cin = x.size(1), T = x.size(2), Cout = w.size(0), K = w.size(2), Kd = Cin * K;
  const float* xp = x.data_ptr<float>();
  if (!cpu::caches(w)) {
    at::Tensor rows = at::zeros({B * Tout, Kd}, x.options());
    float* rp = rows.data_ptr<float>();
    at::parallel_for(0, B * Tout, grain_for(Kd), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / Tout, t = row % Tout, s0 = t * stride - pad;
        // Taps k in [k_lo, k_hi) read inside [0, T); the rest stay zero (the causal padding).
        const int64_t k_lo = s0 >= 0 ? 0 : std::min(K, (-s0 + dilation - 1) / dilation);
        const int64_t k_hi = std::max(k_lo, std::min(K, (T - s0 + dilation - 1) / dilation));
        for (int64_t ci = 0; ci < Cin; ++ci) {
          const float* xrow = xp + (b * Cin + ci) * T;
          float* dst = rp + row * Kd + ci * K;
          if (dilation == 1 && k_hi > k_lo)
            std::memcpy(dst + k_lo, xrow + s0 + k_lo, sizeof(float) * (k_hi - k_lo));
          else
            for (int64_t k = k_lo; k < k_hi; ++k) dst[k] = xrow[s0 + k * dilation];
        }
      }
    });
    return at::mm(rows, w.view({Cout, Kd}).t());
  }
  const auto panels = cpu::cached<at::Tensor>(
      w, cpu::kPanelTag, [&] { return std::make_shared<at::Tensor>(cpu::pack_panels(w.view({Cout, Kd}))); });
  const int64_t P = cpu::panel_width(), ldz = (Cout + P - 1) / P * P;
  at::Tensor z = at::empty({B * Tout, ldz}, x.options());
  std::vector<int64_t> tap(K);
  for (int64_t k = 0; k < K; ++k) tap[k] = k * dilation;
  const int64_t L = (Tout - 1) * stride + (K - 1) * dilation + 1;  // the samples read, from -pad on
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = xp + b * Cin * T;
    cpu::SkinnyRows rows{nullptr, Tout, stride, T, tap.data(), Cin, K};
    at::Tensor window;
    if (pad <= 0 && L - pad <= T) {  // a stream's chunk: every sample read is in x
      rows.x = xb - pad;
    } else {  // the causal padding or past the end is read: a zero-padded copy of the span
      window = at::zeros({Cin, L}, x.options());
      const int64_t lo = std::max<int64_t>(0, pad), hi = std::min(L, T + pad);
      float* wp = window.data_ptr<float>();
      for (int64_t ci = 0; ci < Cin && hi > lo; ++ci)
        std::memcpy(wp + ci * L + lo, xb + ci * T + lo - pad, sizeof(float) * (hi - lo));
      rows.x = wp, rows.cstride = L;
    }
    cpu::skinny_gemm(rows, *panels, Cout, z.data_ptr<float>() + b * Tout * ldz, ldz);
  }
  return z;
}

void conv_skinny(const at::Tensor& x, const at::Tensor& w, const float* bias, const float* alpha,
                 const float* residual, Activation act, float slope, int64_t stride, int64_t dilation, int64_t pad,
                 at::Tensor& y) {
  const int64_t B = x.size(0), Cout = w.size(0), Tout = y.size(2);
  const at::Tensor z = conv_sums_skinny(x, w, stride, dilation, pad, Tout);
  const float* zp = z.data_ptr<float>();
  const int64_t ldz = z.stride(0);
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, B * Cout, grain_for(Tout), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / Cout, co = row % Cout;
      float* yr = yp + row * Tout;
      for (int64_t t = 0; t < Tout; ++t) yr[t] = zp[(b * Tout + t) * ldz + co];
      cpu::epilogue_rows(yr, 1, Tout, Tout, bias ? bias + co : nullptr, alpha ? alpha + co : nullptr,
                         residual ? residual + row * Tout : nullptr, Tout, act, slope);
    }
  });
}

// z[t, co*K + k] = sum_ci x[b, ci, t] * w[ci, co, k] for the frames of batch item b (xb: [Cin, T]
// contiguous): the per-frame contributions of a transposed conv, rows z.stride(0) apart. The
// skinny product on panels of w^T when cached, else sgemm.
at::Tensor transposed_contributions(const at::Tensor& xb, const at::Tensor& w) {
  const int64_t Cin = w.size(0), N = w.size(1) * w.size(2), T = xb.size(1);
  const auto w2 = [&] { return w.view({Cin, N}); };
  if (!cpu::caches(w) || T > cpu::skinny_max_rows()) return at::mm(xb.t(), w2());
  const auto panels = cpu::cached<at::Tensor>(
      w, cpu::kPanelTransposedTag, [&] { return std::make_shared<at::Tensor>(cpu::pack_panels(w2().t())); });
  const int64_t P = cpu::panel_width(), ldz = (N + P - 1) / P * P, zero_tap = 0;
  at::Tensor z = at::empty({T, ldz}, xb.options());
  cpu::skinny_gemm(cpu::SkinnyRows{xb.data_ptr<float>(), T, 1, T, &zero_tap, Cin, 1}, *panels, N,
                   z.data_ptr<float>(), ldz);
  return z;
}

// A transposed conv of few input frames is one stream step from an empty tail (x^T W by the
// skinny product or sgemm, then an overlap-add): the phase convs' tiles would idle.
constexpr int64_t kFewInputs = 16;

at::Tensor packed_conv_weights(const at::Tensor& w);

// fp32 conv with explicit padding: output t reads x[t*stride - pad + k*dilation], zero outside
// [0, T), for t < y's length. The few-outputs path or the tiled engine; inputs contiguous.
void conv1d_f32(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                const c10::optional<at::Tensor>& alpha, const c10::optional<at::Tensor>& residual, Activation act,
                float slope, int64_t stride, int64_t dilation, int64_t pad, at::Tensor& y) {
  const int64_t B = x.size(0), Cin = x.size(1), T = x.size(2), Cout = w.size(0), K = w.size(2), Tout = y.size(2);
  if (skinny_conv_fits(x, w, stride, Tout))
    return conv_skinny(x, w, ptr_or_null<float>(bias), ptr_or_null<float>(alpha), ptr_or_null<float>(residual), act,
                       slope, stride, dilation, pad, y);
  const at::Tensor wpack = packed_conv_weights(w);
  cpu::ConvPlan plan{B, Cin, Cout, T, Tout, K, stride, dilation, pad, x.data_ptr<float>(), wpack.data_ptr<float>(),
                     ptr_or_null<float>(bias), ptr_or_null<float>(alpha), ptr_or_null<float>(residual), act, slope,
                     y.data_ptr<float>(), Cout * Tout, Tout, 1};
  cpu::run_conv(plan);
}

// pack_weights(w), kept between calls inside an ops.weight_cache() scope.
at::Tensor packed_conv_weights(const at::Tensor& w) {
  return *cpu::cached<at::Tensor>(w, cpu::kConvTag, [&] { return std::make_shared<at::Tensor>(pack_weights(w)); });
}

// A transposed conv with few input frames per item (the codec's 75 and 600 Hz up-convs) as one
// GEMM over all items, z [B*T, Cout*K] = x^T W, then a gather: output q*stride + p sums
// z[q - j, co*K + p + j*stride] over the taps j that reach it, and the epilogue. The phase convs
// would run `stride` GEMMs of only T columns per item, too narrow to keep the engine's tiles busy.
void conv_transpose1d_gemm(const at::Tensor& x, const at::Tensor& w, const float* bias, const float* alpha,
                           Activation act, float slope, int64_t stride, at::Tensor& y) {
  const int64_t B = x.size(0), Cin = x.size(1), T = x.size(2), Cout = w.size(1), K = w.size(2);
  const int64_t N = Cout * K, Ty = T * stride;
  const at::Tensor z = at::mm(x.permute({0, 2, 1}).reshape({B * T, Cin}), w.view({Cin, N}));
  const float* zp = z.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, B * Cout, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / Cout, co = row % Cout;
      float* yr = yp + row * Ty;
      const float* zr = zp + b * T * N + co * K;  // element (q, k) of this row's contributions: zr[q*N + k]
      std::fill(yr, yr + Ty, 0.0f);
      for (int64_t q = 0; q < T; ++q) {
        float* dst = yr + q * stride;
        for (int64_t j = 0; j <= q && j * stride < K; ++j) {
          const float* src = zr + (q - j) * N + j * stride;
          const int64_t n = std::min(stride, K - j * stride);
          for (int64_t p = 0; p < n; ++p) dst[p] += src[p];
        }
      }
      cpu::epilogue_rows(yr, 1, Ty, Ty, bias ? bias + co : nullptr, alpha ? alpha + co : nullptr, nullptr, 0, act,
                         slope);
    }
  });
}

// One GEMM beats the phase convs for deep phases (Cin * taps per phase >= 256) over few columns
// in all (B * T up to 2400 with AVX2, 240 with AVX-512, whose phase convs run twice as fast; on
// Intel AVX-512, where MKL's sgemm is AVX-512 too, up to 4800 for Cin * taps >= 1024). The
// contributions buffer is capped at 64 MB. Figures: benchmarks/RESULTS.md, "Where the code's rules come from".
bool transposed_by_gemm(int64_t B, int64_t Cin, int64_t T, int64_t Cout, int64_t K, int64_t stride) {
  const bool fits = B * T * Cout * K * 4 <= (int64_t{64} << 20);
  switch (t_transposed_variant) {
    case 1: return false;
    case 2: return fits;
    default: break;
  }
  const int64_t taps = (K + stride - 1) / stride;
  int64_t max_columns = cpu::has_avx512() ? 240 : 2400;
  if (cpu::has_avx512() && cpu::is_intel() && Cin * taps >= 1024) max_columns = 4800;
  return Cin * taps >= 256 && B * T <= max_columns && fits;
}

// fp32 transposed conv as `stride` causal convs: output t' = q*stride + p (phase p) receives taps
// k = p + j*stride from input q - j, i.e. a stride-1 causal conv with J = ceil((K - p)/stride) taps
// (reversed) whose outputs land every stride-th sample.
void conv_transpose1d_phases(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& alpha, Activation act, float negative_slope,
                             int64_t stride, at::Tensor& y) {
  const int64_t B = x.size(0), Cin = x.size(1), T = x.size(2), Cout = w.size(1), K = w.size(2);
  const float* bp = ptr_or_null<float>(bias);
  const float* ap = ptr_or_null<float>(alpha);
  if (T <= kFewInputs) {  // the step's tail is the trimmed part of the full transposed conv
    y.copy_(std::get<0>(cpu::conv_transpose1d_stream_f32(x, w, bias, c10::nullopt, stride, act, negative_slope,
                                                         alpha)));
    return;
  }
  if (transposed_by_gemm(B, Cin, T, w.size(1), K, stride))
    return conv_transpose1d_gemm(x, w, bp, ap, act, negative_slope, stride, y);
  float* yp = y.data_ptr<float>();
  const auto wpacks_ptr = cpu::cached<std::vector<at::Tensor>>(w, stride, [&] {
    auto packs = std::make_shared<std::vector<at::Tensor>>();
    for (int64_t p = 0; p < stride; ++p) {
      const int64_t J = p < K ? (K - p + stride - 1) / stride : 0;
      if (J == 0) {
        packs->emplace_back();
        continue;
      }
      // Tap kk of this phase's causal conv is k = p + (J - 1 - kk) * stride of the transposed one.
      const at::Tensor taps = at::arange(p + (J - 1) * stride, p - 1, -stride, w.options().dtype(at::kLong));
      packs->push_back(pack_weights(w.index_select(2, taps).permute({1, 0, 2})));
    }
    return packs;
  });
  const std::vector<at::Tensor>& wpacks = *wpacks_ptr;
  for (int64_t p = 0; p < stride; ++p) {
    const int64_t J = p < K ? (K - p + stride - 1) / stride : 0;
    if (J == 0) {  // K < stride: this phase sees no tap, only the bias
      for (int64_t b = 0; b < B; ++b)
        for (int64_t co = 0; co < Cout; ++co) {
          const float v = activate<float>(bp ? bp[co] : 0.0f, act, negative_slope, ap ? ap[co] : 0.0f);
          float* row = yp + (b * Cout + co) * T * stride + p;
          for (int64_t q = 0; q < T; ++q) row[q * stride] = v;
        }
      continue;
    }
    cpu::ConvPlan plan{B, Cin, Cout, T, T, J, 1, 1, J - 1, x.data_ptr<float>(), wpacks[p].data_ptr<float>(), bp, ap,
                       nullptr, act,
                       negative_slope, yp + p, Cout * T * stride, T * stride, stride};
    cpu::run_conv(plan);
  }
}

at::Tensor causal_conv1d_cpu(const at::Tensor& x_in, const at::Tensor& w_in, const c10::optional<at::Tensor>& bias_in,
                             int64_t stride, int64_t dilation, c10::string_view activation, double negative_slope,
                             const c10::optional<at::Tensor>& alpha_in, const c10::optional<at::Tensor>& residual_in) {
  check_conv1d(x_in, w_in, bias_in, alpha_in, residual_in, activation, stride, dilation);
  const Activation act = parse_activation(activation);
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2);
  const int64_t Cout = w_in.size(0), K = w_in.size(2);
  const int64_t Tout = conv1d_out_len(T, stride);
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const c10::optional<at::Tensor> bias = contiguous(bias_in);
  const c10::optional<at::Tensor> alpha = contiguous(alpha_in);
  const c10::optional<at::Tensor> residual = contiguous(residual_in);
  at::Tensor y = at::empty({B, Cout, Tout}, x.options());
  if (y.numel() == 0) return y;
  const int64_t pad = (K - 1) * dilation;

  if (x.scalar_type() == at::kFloat) {
    conv1d_f32(x, w, bias, alpha, residual, act, static_cast<float>(negative_slope), stride, dilation, pad, y);
    return y;
  }

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastcodec_causal_conv1d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* bp = ptr_or_null<scalar_t>(bias);
    const scalar_t* ap = ptr_or_null<scalar_t>(alpha);
    const scalar_t* rp = ptr_or_null<scalar_t>(residual);
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * Cout, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(Tout);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / Cout, co = row % Cout;
        std::fill(acc.begin(), acc.end(), bp ? acc_t(bp[co]) : acc_t(0));
        for (int64_t ci = 0; ci < Cin; ++ci) {
          const scalar_t* xrow = xp + (b * Cin + ci) * T;
          const scalar_t* wrow = wp + (co * Cin + ci) * K;
          for (int64_t k = 0; k < K; ++k) {
            const acc_t wv = wrow[k];
            // Output t reads input t*stride + off; off <= 0, so only the left edge needs masking.
            const int64_t off = k * dilation - pad;
            const int64_t t0 = std::min(Tout, (-off + stride - 1) / stride);
            if (stride == 1) {
              const scalar_t* src = xrow + off;
              for (int64_t t = t0; t < Tout; ++t) acc[t] += wv * acc_t(src[t]);
            } else {
              for (int64_t t = t0; t < Tout; ++t) acc[t] += wv * acc_t(xrow[t * stride + off]);
            }
          }
        }
        const acc_t a = ap ? acc_t(ap[co]) : acc_t(0);
        const acc_t slope = acc_t(negative_slope);
        scalar_t* yrow = yp + row * Tout;
        const scalar_t* rrow = rp ? rp + row * Tout : nullptr;
        for (int64_t t = 0; t < Tout; ++t) {
          acc_t v = activate<acc_t>(acc[t], act, slope, a);
          if (rrow) v += acc_t(rrow[t]);
          yrow[t] = scalar_t(v);
        }
      }
    });
  });
  return y;
}

at::Tensor causal_conv_transpose1d_cpu(const at::Tensor& x_in, const at::Tensor& w_in,
                                       const c10::optional<at::Tensor>& bias_in, int64_t stride,
                                       c10::string_view activation, double negative_slope,
                                       const c10::optional<at::Tensor>& alpha_in) {
  check_conv_common(x_in, w_in, bias_in, alpha_in, /*cin_dim_of_weight=*/0, activation, stride);
  const Activation act = parse_activation(activation);
  const int64_t B = x_in.size(0), Cin = x_in.size(1), T = x_in.size(2);
  const int64_t Cout = w_in.size(1), K = w_in.size(2);
  const int64_t Tout = T * stride;
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const c10::optional<at::Tensor> bias = contiguous(bias_in);
  const c10::optional<at::Tensor> alpha = contiguous(alpha_in);
  at::Tensor y = at::empty({B, Cout, Tout}, x.options());
  if (y.numel() == 0) return y;

  if (x.scalar_type() == at::kFloat) {
    conv_transpose1d_phases(x, w, bias, alpha, act, static_cast<float>(negative_slope), stride, y);
    return y;
  }

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastcodec_causal_conv_transpose1d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* bp = ptr_or_null<scalar_t>(bias);
    const scalar_t* ap = ptr_or_null<scalar_t>(alpha);
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * Cout, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(Tout);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / Cout, co = row % Cout;
        std::fill(acc.begin(), acc.end(), bp ? acc_t(bp[co]) : acc_t(0));
        for (int64_t ci = 0; ci < Cin; ++ci) {
          const scalar_t* xrow = xp + (b * Cin + ci) * T;
          for (int64_t k = 0; k < K && k < Tout; ++k) {
            const acc_t wv = wp[(ci * Cout + co) * K + k];
            // Input t lands on output t*stride + k; samples at or past Tout are the trimmed tail.
            const int64_t t_end = std::min(T, (Tout - k + stride - 1) / stride);
            acc_t* dst = acc.data() + k;
            for (int64_t t = 0; t < t_end; ++t) dst[t * stride] += wv * acc_t(xrow[t]);
          }
        }
        const acc_t a = ap ? acc_t(ap[co]) : acc_t(0);
        const acc_t slope = acc_t(negative_slope);
        scalar_t* yrow = yp + row * Tout;
        for (int64_t t = 0; t < Tout; ++t) yrow[t] = scalar_t(activate<acc_t>(acc[t], act, slope, a));
      }
    });
  });
  return y;
}

// y[b, co, t] = act(bias + sum_{ci, k} w[co, ci, k] * x[b, ci, t*stride - pad + k*dilation]) + residual,
// x read as zero outside [0, T), for t < out_len. causal_conv1d is pad = (K-1)*dilation with
// out_len = ceil(T/stride); a stream passes its chunk with the previous samples in front and
// pad = (K-1)*dilation - (samples in front), so only the outputs it emits are computed (the causal
// op would also compute one output per sample in front, and discard it).
at::Tensor conv1d_window_cpu(const at::Tensor& x_in, const at::Tensor& w_in, const c10::optional<at::Tensor>& bias_in,
                             int64_t stride, int64_t dilation, int64_t pad, int64_t out_len,
                             c10::string_view activation, double negative_slope,
                             const c10::optional<at::Tensor>& alpha_in, const c10::optional<at::Tensor>& residual_in) {
  check_conv1d(x_in, w_in, bias_in, alpha_in, c10::nullopt, activation, stride, dilation);
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "fastcodec: conv1d_window is fp32 only, got ", x_in.scalar_type());
  TORCH_CHECK(out_len >= 0, "fastcodec: out_len must be >= 0, got ", out_len);
  const int64_t B = x_in.size(0), Cout = w_in.size(0);
  if (residual_in.has_value()) {
    check_same(x_in, residual_in, "residual");
    TORCH_CHECK(residual_in->sizes() == at::IntArrayRef({B, Cout, out_len}), "fastcodec: residual must be [", B,
                ", ", Cout, ", ", out_len, "], got ", residual_in->sizes());
  }
  return cpu::conv1d_window_f32(x_in.contiguous(), w_in.contiguous(), contiguous(bias_in), contiguous(alpha_in),
                                contiguous(residual_in), parse_activation(activation),
                                static_cast<float>(negative_slope), stride, dilation, pad, out_len);
}

// One chunk of a streamed transposed conv, fp32: the full transposed conv of x (T*stride + tail
// samples, tail = max(K - stride, 0)), the previous chunk's tail added to its first samples, then
// bias and activation on the T*stride samples that are final. Returns (y [B, Cout, T*stride], the
// next tail [B, Cout, tail], pre-bias and pre-activation). x^T W by sgemm on the weights as they are
// and an overlap-add: no zero frames appended and no separate bias/activation passes, as the
// composed stream (ops/streaming.py) needs.
std::tuple<at::Tensor, at::Tensor> conv_transpose1d_stream_cpu(const at::Tensor& x_in, const at::Tensor& w_in,
                                                              const c10::optional<at::Tensor>& bias_in,
                                                              const c10::optional<at::Tensor>& tail_in, int64_t stride,
                                                              c10::string_view activation, double negative_slope,
                                                              const c10::optional<at::Tensor>& alpha_in) {
  check_conv_common(x_in, w_in, bias_in, alpha_in, /*cin_dim_of_weight=*/0, activation, stride);
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "fastcodec: conv_transpose1d_stream is fp32 only, got ",
              x_in.scalar_type());
  const int64_t B = x_in.size(0), Cout = w_in.size(1), L = std::max<int64_t>(w_in.size(2) - stride, 0);
  if (tail_in.has_value()) {
    check_same(x_in, tail_in, "tail");
    TORCH_CHECK(tail_in->sizes() == at::IntArrayRef({B, Cout, L}), "fastcodec: tail must be [", B, ", ", Cout, ", ",
                L, "], got ", tail_in->sizes());
  }
  return cpu::conv_transpose1d_stream_f32(x_in.contiguous(), w_in.contiguous(), contiguous(bias_in), tail_in,
                                          stride, parse_activation(activation), static_cast<float>(negative_slope),
                                          contiguous(alpha_in));
}

}  // namespace

namespace cpu {

at::Tensor conv1d_window_f32(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& alpha, const c10::optional<at::Tensor>& residual,
                             Activation act, float slope, int64_t stride, int64_t dilation, int64_t pad,
                             int64_t out_len) {
  at::Tensor y = at::empty({x.size(0), w.size(0), out_len}, x.options());
  if (y.numel() == 0) return y;
  conv1d_f32(x, w, bias, alpha, residual, act, slope, stride, dilation, pad, y);
  return y;
}

std::tuple<at::Tensor, at::Tensor> conv_transpose1d_stream_f32(const at::Tensor& x, const at::Tensor& w,
                                                              const c10::optional<at::Tensor>& bias,
                                                              const c10::optional<at::Tensor>& tail, int64_t stride,
                                                              Activation act, float slope,
                                                              const c10::optional<at::Tensor>& alpha) {
  const int64_t B = x.size(0), T = x.size(2), Cout = w.size(1), K = w.size(2);
  const int64_t L = std::max<int64_t>(K - stride, 0), Ty = T * stride;
  at::Tensor buf = at::zeros({B, Cout, Ty + L}, x.options());
  float* bp = buf.data_ptr<float>();
  const int64_t len = Ty + L;
  for (int64_t b = 0; b < B && T > 0; ++b) {
    // [T, Cout*K] rows ldz apart: a frame or a few by the skinny product, a long chunk by sgemm.
    const at::Tensor z = transposed_contributions(x[b], w);
    const float* zp = z.data_ptr<float>();
    const int64_t ldz = z.stride(0);
    float* bb = bp + b * Cout * len;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t co = 0; co < Cout; ++co) {
        float* dst = bb + co * len + t * stride;
        const float* src = zp + t * ldz + co * K;
        for (int64_t k = 0; k < K; ++k) dst[k] += src[k];
      }
  }
  if (tail.has_value() && L > 0) buf.narrow(2, 0, L).add_(*tail);
  at::Tensor y = buf.narrow(2, 0, Ty).contiguous();
  at::Tensor next_tail = buf.narrow(2, Ty, L).contiguous();
  float* yp = y.data_ptr<float>();
  for (int64_t b = 0; b < B && Ty > 0; ++b)
    cpu::epilogue_rows(yp + b * Cout * Ty, Cout, Ty, Ty, ptr_or_null<float>(bias), ptr_or_null<float>(alpha), nullptr,
                       0, act, slope);
  return {y, next_tail};
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(fastcodec, CPU, m) {
  m.impl("conv_transpose1d_stream", &conv_transpose1d_stream_cpu);
  m.impl("conv1d_window", &conv1d_window_cpu);
  m.impl("causal_conv1d", &causal_conv1d_cpu);
  m.impl("causal_conv_transpose1d", &causal_conv_transpose1d_cpu);
}

}  // namespace fastcodec
