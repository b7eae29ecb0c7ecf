// Nearest-codeword search and residual VQ on CUDA: one block per row of x, the residual kept in
// shared memory across all stages, threads striding over the codebook with a running min/argmin,
// then a block reduction that breaks ties toward the lower index. No N x K buffer. Exact fp32
// direct distances; fp16/bf16 with D <= 128 on sm_80+ go to the tensor-core search (vq_tc.cu).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../checks.h"
#include "launch.h"
#include "vq_tc.h"

namespace fastcodec {
namespace {

constexpr int kThreads = 128;  // power of two: the tree reduction below relies on it
constexpr size_t kMaxResidualBytes = 48 * 1024;

template <typename acc_t>
__device__ __forceinline__ bool better(acc_t d1, int64_t k1, acc_t d2, int64_t k2) {
  return d1 < d2 || (d1 == d2 && k1 < k2);
}

// Block-wide argmin; every thread gets the result. Sentinel index K (no finite distance) maps to 0,
// which is what torch.argmin returns for an all-inf row.
template <typename acc_t>
__device__ void block_argmin(acc_t& d, int64_t& k, int64_t K) {
  __shared__ acc_t sd[kThreads];
  __shared__ int64_t sk[kThreads];
  sd[threadIdx.x] = d;
  sk[threadIdx.x] = k;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s && better(sd[threadIdx.x + s], sk[threadIdx.x + s], sd[threadIdx.x], sk[threadIdx.x])) {
      sd[threadIdx.x] = sd[threadIdx.x + s];
      sk[threadIdx.x] = sk[threadIdx.x + s];
    }
    __syncthreads();
  }
  d = sd[0];
  k = sk[0] == K ? 0 : sk[0];
  __syncthreads();
}

// Handles vq_nearest (n_q == 1, sqdist written), rvq_encode (quantized written) and rvq_residuals
// (each stage's residual and the last one written, [N, n_q + 1, D]).
template <typename scalar_t>
__global__ void rvq_encode_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ cbs,
                                  int64_t* __restrict__ codes, scalar_t* __restrict__ quantized,
                                  scalar_t* __restrict__ sqdist, scalar_t* __restrict__ residuals, int64_t N,
                                  int64_t K, int64_t D, int64_t n_q) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* r = reinterpret_cast<acc_t*>(smem_raw);
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      r[d] = acc_t(x[n * D + d]);
      if (quantized) quantized[n * D + d] = scalar_t(0);
    }
    __syncthreads();
    for (int64_t i = 0; i < n_q; ++i) {
      if (residuals)
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) residuals[(n * (n_q + 1) + i) * D + d] = scalar_t(r[d]);
      const scalar_t* cb = cbs + i * K * D;
      acc_t best = acc_t(INFINITY);
      int64_t best_k = K;
      for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        acc_t s = 0;
        for (int64_t d = 0; d < D; ++d) {
          const acc_t diff = r[d] - acc_t(cb[k * D + d]);
          s += diff * diff;
        }
        if (s < best) {
          best = s;
          best_k = k;
        }
      }
      block_argmin(best, best_k, K);
      if (threadIdx.x == 0) codes[n * n_q + i] = best_k;
      if (sqdist && threadIdx.x == 0) {
        // Recomputed rather than taken from the reduction so a NaN input reports NaN, not +inf.
        acc_t s = 0;
        for (int64_t d = 0; d < D; ++d) {
          const acc_t diff = r[d] - acc_t(cb[best_k * D + d]);
          s += diff * diff;
        }
        sqdist[n] = scalar_t(s);
      }
      if (quantized || residuals) {
        const scalar_t* c = cb + best_k * D;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
          r[d] = acc_t(scalar_t(r[d] - acc_t(c[d])));
          if (quantized) quantized[n * D + d] = scalar_t(acc_t(quantized[n * D + d]) + acc_t(c[d]));
        }
      }
      __syncthreads();
    }
    if (residuals)
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) residuals[(n * (n_q + 1) + n_q) * D + d] = scalar_t(r[d]);
    __syncthreads();
  }
}

template <typename scalar_t>
__global__ void rvq_decode_kernel(const int64_t* __restrict__ codes, const scalar_t* __restrict__ cbs,
                                  scalar_t* __restrict__ out, int64_t N, int64_t K, int64_t D, int64_t n_q) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * D; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / D, d = i % D;
    scalar_t v = scalar_t(0);
    for (int64_t q = 0; q < n_q; ++q) {
      const int64_t k = codes[n * n_q + q];
      // Unchecked codes (the Python op checks CPU codes only) give a NaN row, never a wild read.
      if (k < 0 || k >= K) {
        v = scalar_t(NAN);
        break;
      }
      v = scalar_t(acc_t(v) + acc_t(cbs[(q * K + k) * D + d]));
    }
    out[i] = v;
  }
}

template <typename scalar_t>
size_t residual_bytes(int64_t D) {
  return size_t(D) * sizeof(at::opmath_type<scalar_t>);
}

void launch_rvq(const at::Tensor& x, const at::Tensor& cbs, const at::Tensor& codes, const at::Tensor* quantized,
                const at::Tensor* sqdist, int64_t n_q, const at::Tensor* residuals = nullptr) {
  const int64_t N = x.size(0), D = x.size(1), K = cbs.size(1);
  if (N == 0) return;
  if (vqtc::applies(x, D)) return vqtc::rvq(x, cbs, codes, quantized, sqdist, n_q, residuals);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastcodec_rvq_encode_cuda", [&] {
    const size_t smem = residual_bytes<scalar_t>(D);
    TORCH_CHECK(smem <= kMaxResidualBytes, "fastcodec: cuda rvq supports D up to ",
                kMaxResidualBytes / sizeof(at::opmath_type<scalar_t>), ", got ", D);
    rvq_encode_kernel<scalar_t><<<grid_for(N, 1), kThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), cbs.data_ptr<scalar_t>(), codes.data_ptr<int64_t>(),
        quantized ? quantized->data_ptr<scalar_t>() : nullptr, sqdist ? sqdist->data_ptr<scalar_t>() : nullptr,
        residuals ? residuals->data_ptr<scalar_t>() : nullptr, N, K, D, n_q);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> vq_nearest_cuda(const at::Tensor& x_in, const at::Tensor& cb_in) {
  check_vq(x_in, cb_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), cb = cb_in.contiguous();
  at::Tensor index = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  at::Tensor dist = at::empty({x.size(0)}, x.options());
  launch_rvq(x, cb.unsqueeze(0), index, nullptr, &dist, 1);
  return {index, dist};
}

std::tuple<at::Tensor, at::Tensor> rvq_encode_cuda(const at::Tensor& x_in, const at::Tensor& cbs_in, int64_t n_q) {
  check_rvq(x_in, cbs_in, n_q);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), cbs = cbs_in.contiguous();
  at::Tensor codes = at::empty({x.size(0), n_q}, x.options().dtype(at::kLong));
  at::Tensor quantized = at::empty_like(x);
  launch_rvq(x, cbs, codes, &quantized, nullptr, n_q);
  return {codes, quantized};
}

std::tuple<at::Tensor, at::Tensor> rvq_residuals_cuda(const at::Tensor& x_in, const at::Tensor& cbs_in, int64_t n_q) {
  check_rvq(x_in, cbs_in, n_q);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), cbs = cbs_in.contiguous();
  at::Tensor codes = at::empty({x.size(0), n_q}, x.options().dtype(at::kLong));
  at::Tensor residuals = at::empty({x.size(0), n_q + 1, x.size(1)}, x.options());
  launch_rvq(x, cbs, codes, nullptr, nullptr, n_q, &residuals);
  return {codes, residuals};
}

at::Tensor rvq_decode_cuda(const at::Tensor& codes_in, const at::Tensor& cbs_in) {
  check_rvq_decode(codes_in, cbs_in);
  const c10::cuda::CUDAGuard guard(cbs_in.device());
  const at::Tensor codes = codes_in.contiguous(), cbs = cbs_in.contiguous();
  const int64_t N = codes.size(0), n_q = codes.size(1), K = cbs.size(1), D = cbs.size(2);
  at::Tensor out = at::empty({N, D}, cbs.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cbs.scalar_type(), "fastcodec_rvq_decode_cuda", [&] {
    rvq_decode_kernel<scalar_t><<<grid_for(N * D, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        codes.data_ptr<int64_t>(), cbs.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, K, D, n_q);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcodec, CUDA, m) {
  m.impl("vq_nearest", &vq_nearest_cuda);
  m.impl("rvq_encode", &rvq_encode_cuda);
  m.impl("rvq_residuals", &rvq_residuals_cuda);
  m.impl("rvq_decode", &rvq_decode_cuda);
}

}  // namespace fastcodec
