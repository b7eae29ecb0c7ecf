// The tensor-core RVQ search's block loop (csrc/cuda/vq_tc.cu) run on the CPU through the same
// tiling, layout, tie rule and residual update (csrc/cuda/vq_tiles.h), with scalar fp32 sums of
// the exact 16-bit products in place of the fragments' MMAs: tests/test_vq_tiles.py checks it
// against the reference, so that what only a GPU runs is the fragment loads, MMAs and staging.
#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "../cuda/vq_tiles.h"

namespace fastcodec {
namespace {

using namespace vqtc;

}  // namespace

namespace vqtc {
template <typename T>  // c10::Half, c10::BFloat16: round to nearest even, as the kernel's intrinsics
struct HostCast {
  static T to(float v) { return T(v); }
  static float from(T v) { return float(v); }
};
template <>
struct Cast<c10::Half> : HostCast<c10::Half> {};
template <>
struct Cast<c10::BFloat16> : HostCast<c10::BFloat16> {};
}  // namespace vqtc

namespace {

// -> (codes [N, n_q], quantized [N, D], sqdist [N] of the last stage, residuals [N, n_q + 1, D]);
// every output NaN- or -1-poisoned first, so an element the loop misses shows. The s.cluster
// blocks of a row block run one after another per stage (each block's copy of the residual is the
// same, so one is kept), their bests kept per block for the cluster's merge.
template <typename T>
void run(const T* x, const T* cbs, const float* c_sq, const Shape& s, int64_t* codes, T* quantized, T* sqdist,
         T* residuals) {
  const int C = int(s.cluster);
  std::vector<float> R(RM * s.Dp), Cb(RK * s.Dp), Sc(RM * RK), best_d(kWarps * RM), block_d(C * RM);
  std::vector<int64_t> best_k(kWarps * RM), chosen(RM), block_k(C * RM);
  for (int64_t rb = 0; rb < s.row_blocks; ++rb) {
    const int64_t n0 = rb * RM;
    auto write_residual = [&](int64_t slot) {
      for (int64_t e = 0; e < RM * s.D; ++e) {
        const int64_t n = n0 + e / s.D;
        if (n < s.N) residuals[(n * (s.n_q + 1) + slot) * s.D + e % s.D] = T(R[(e / s.D) * s.Dp + e % s.D]);
      }
    };
    for (int64_t e = 0; e < RM * s.Dp; ++e) {
      const int64_t row = e / s.Dp, d = e % s.Dp, n = n0 + row;
      const bool in = n < s.N && d < s.D;
      R[e] = in ? float(x[n * s.D + d]) : 0.f;
      if (in) quantized[n * s.D + d] = T(0.f);
    }
    for (int64_t i = 0; i < s.n_q; ++i) {
      write_residual(i);
      for (int rank = 0; rank < C; ++rank) {
        for (int w = 0; w < kWarps; ++w) {
          float* mine = &best_d[w * RM];
          int64_t* mine_k = &best_k[w * RM];
          std::fill(mine, mine + RM, std::numeric_limits<float>::infinity());
          std::fill(mine_k, mine_k + RM, s.K);
          for (int64_t t = first_tile(rank, w); t < s.code_tiles; t += tile_stride(s)) {
            for (int64_t e = 0; e < RK * s.Dp; ++e) {
              const int64_t off = code_offset(s, i, t, e);
              Cb[e] = off < 0 ? 0.f : float(cbs[off]);
            }
            for (int row = 0; row < RM; ++row)
              for (int j = 0; j < RK; ++j) {
                float dot = 0.f;
                for (int64_t d = 0; d < s.Dp; ++d) dot += R[row * s.Dp + d] * Cb[j * s.Dp + d];
                Sc[row * RK + j] = dot;
              }
            for (int row = 0; row < RM; ++row)
              scan_tile(s, t, &Sc[row * RK], c_sq + i * s.K, mine[row], mine_k[row]);
          }
        }
        for (int row = 0; row < RM; ++row) {  // the block's best, which the cluster reads
          float& d = block_d[rank * RM + row];
          int64_t& k = block_k[rank * RM + row];
          d = std::numeric_limits<float>::infinity();
          k = s.K;
          merge_bests(best_d.data(), best_k.data(), kWarps, RM, row, d, k);
        }
      }
      for (int row = 0; row < RM; ++row) {
        float d = std::numeric_limits<float>::infinity();
        int64_t best = s.K;
        merge_bests(block_d.data(), block_k.data(), C, RM, row, d, best);
        const int64_t k = code_of(s, best), n = n0 + row;
        chosen[row] = k;
        if (n >= s.N) continue;
        codes[n * s.n_q + i] = k;
        if (i + 1 == s.n_q) {
          float acc = 0.f;
          for (int64_t d = 0; d < s.D; ++d) {
            const float diff = R[row * s.Dp + d] - float(cbs[(i * s.K + k) * s.D + d]);
            acc += diff * diff;
          }
          sqdist[n] = T(acc);
        }
      }
      for (int64_t e = 0; e < RM * s.D; ++e) {
        const int64_t row = e / s.D, d = e % s.D, n = n0 + row;
        const float c = float(cbs[(i * s.K + chosen[row]) * s.D + d]);
        R[row * s.Dp + d] = next_residual<T>(R[row * s.Dp + d], c);
        if (n < s.N) quantized[n * s.D + d] = T(next_quantized<T>(float(quantized[n * s.D + d]), c));
      }
    }
    write_residual(s.n_q);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> emulate(const at::Tensor& x_in, const at::Tensor& cbs_in,
                                                                   int64_t n_q, int64_t cluster) {
  check_rvq(x_in, cbs_in, n_q);
  TORCH_CHECK(x_in.scalar_type() == at::kHalf || x_in.scalar_type() == at::kBFloat16,
              "the RVQ tile emulator takes fp16 or bf16");
  TORCH_CHECK(x_in.size(1) <= kMaxD, "the tensor-core search takes D up to ", kMaxD);
  const at::Tensor x = x_in.contiguous(), cbs = cbs_in.contiguous();
  TORCH_CHECK(cluster >= 1 && cluster <= kMaxCluster, "cluster: 1 to ", kMaxCluster, " blocks, got ", cluster);
  const Shape s = make_shape(x.size(0), cbs.size(1), x.size(1), n_q, cluster);
  at::Tensor codes = at::full({s.N, n_q}, -1, x.options().dtype(at::kLong));
  at::Tensor quantized = at::full({s.N, s.D}, NAN, x.options());
  at::Tensor sqdist = at::full({s.N}, NAN, x.options());
  at::Tensor residuals = at::full({s.N, n_q + 1, s.D}, NAN, x.options());
  const at::Tensor c_sq = code_norms(cbs, n_q);
  if (x.scalar_type() == at::kHalf)
    run<c10::Half>(x.data_ptr<c10::Half>(), cbs.data_ptr<c10::Half>(), c_sq.data_ptr<float>(), s, codes.data_ptr<int64_t>(),
                   quantized.data_ptr<c10::Half>(), sqdist.data_ptr<c10::Half>(), residuals.data_ptr<c10::Half>());
  else
    run<c10::BFloat16>(x.data_ptr<c10::BFloat16>(), cbs.data_ptr<c10::BFloat16>(), c_sq.data_ptr<float>(), s,
                       codes.data_ptr<int64_t>(),
                       quantized.data_ptr<c10::BFloat16>(), sqdist.data_ptr<c10::BFloat16>(),
                       residuals.data_ptr<c10::BFloat16>());
  return {codes, quantized, sqdist, residuals};
}

// The shared-memory layout as numbers, for the tests: (bytes, offsets in order).
std::vector<int64_t> layout(int64_t D) {
  const Smem m = smem_layout(make_shape(1, 1, D, 1));
  return {m.bytes, m.r, m.ra, m.cb, m.scores, m.best_d, m.best_k, m.chosen, m.block_d, m.block_k};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastcodec_dev, m) {
  m.def("rvq_tiles_emulate(Tensor x, Tensor codebooks, int n_q, int cluster=1) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("rvq_tiles_cluster(int N, int K, int sms) -> int", &cluster_for);
  m.def("rvq_tiles_smem(int D) -> int[]", &layout);
}

TORCH_LIBRARY_IMPL(fastcodec_dev, CPU, m) { m.impl("rvq_tiles_emulate", &emulate); }

}  // namespace fastcodec
