// Causal conv and causal transposed conv on tensor cores (sm_80+): the implicit GEMM of
// conv_tiles.h with WMMA fragments and fp32 accumulation; fp16/bf16 inputs, or fp32 as TF32 where
// torch.backends.cudnn.allow_tf32 allows. Each step's tiles are staged through registers into one
// of two shared-memory buffers while the other feeds the MMAs (one barrier per step). Causal
// padding is the loads' predicate; bias, activation and residual are applied once, from the
// accumulators staged in shared memory, in the store.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <type_traits>

#include <ATen/ATen.h>

#include "arch.h"
#include "cast.cuh"
#include "conv_tc.h"
#include "conv_tiles.h"
#include "launch.h"

namespace fastcodec {
namespace tc {
namespace {

// Per element type: the fragments' input type and MMA depth, and the shared-memory row padding
// (rows stay 32-byte aligned for the fragment loads and off one bank).
template <typename T>
struct Mma {
  using frag_t = T;
  static constexpr int kK = 16, kPad = 8;
};
template <>
struct Mma<float> {
  using frag_t = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8, kPad = 4;
};

constexpr int kPerThreadA = BM * BK / kThreads, kPerThreadB = BK * BN / kThreads;
constexpr int LDC = BN + 4;

template <typename T>
struct Smem {
  static constexpr int LDA = BK + Mma<T>::kPad, LDB = BN + Mma<T>::kPad;
  static constexpr int A = BM * LDA, B = BK * LDB;  // elements of one buffer
  static constexpr int bytes_ab = 2 * (A + B) * int(sizeof(T)), bytes_c = BM * LDC * int(sizeof(float));
  static constexpr int bytes = bytes_ab > bytes_c ? bytes_ab : bytes_c;
};

// x: [B, Cin, T], w: packed [K, Cout, Cin], y: [B, Cout, out_len] (all contiguous); bias, alpha:
// fp32 [Cout] or null; residual like y or null.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_tc_kernel(const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ bias,
                   const float* __restrict__ alpha, const T* __restrict__ residual, T* __restrict__ y, Shape s,
                   Activation act, float slope) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  using S = Smem<T>;
  constexpr int MK = Mma<T>::kK;
  using frag_t = typename Mma<T>::frag_t;
  __shared__ __align__(128) unsigned char smem[S::bytes];
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = As + 2 * S::A;

  const Block blk = block_of(s, blockIdx.x, blockIdx.y);
  const T* xb = x + blk.b * s.Cin * s.T;
  const int64_t nsteps = steps(s, blk.p);
  const T zero = from_float<T>(0.f);
  T ra[kPerThreadA], rb[kPerThreadB];
  auto load = [&](int64_t step) {
    const Step st = step_at(s, blk, step);
#pragma unroll
    for (int i = 0; i < kPerThreadA; ++i) {
      const int64_t off = a_offset(s, blk, st, threadIdx.x + i * kThreads);
      ra[i] = off < 0 ? zero : w[off];
    }
#pragma unroll
    for (int i = 0; i < kPerThreadB; ++i) {
      const int64_t off = b_offset(s, blk, st, threadIdx.x + i * kThreads);
      rb[i] = off < 0 ? zero : xb[off];
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kPerThreadA; ++i) {
      const int e = threadIdx.x + i * kThreads;
      As[buf * S::A + (e / BK) * S::LDA + e % BK] = ra[i];
    }
#pragma unroll
    for (int i = 0; i < kPerThreadB; ++i) {
      const int e = threadIdx.x + i * kThreads;
      Bs[buf * S::B + (e / BN) * S::LDB + e % BN] = rb[i];
    }
  };

  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, MK, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
  if (nsteps > 0) {
    load(0);
    store(0);
  }
  __syncthreads();
  for (int64_t step = 0; step < nsteps; ++step) {
    const int buf = int(step & 1);
    if (step + 1 < nsteps) load(step + 1);  // in flight during this step's MMAs
#pragma unroll
    for (int kk = 0; kk < BK; kk += MK) {
      wmma::fragment<wmma::matrix_a, 16, 16, MK, frag_t, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, MK, frag_t, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(fa[i], As + buf * S::A + (wm * 32 + i * 16) * S::LDA + kk, S::LDA);
        wmma::load_matrix_sync(fb[i], Bs + buf * S::B + kk * S::LDB + wn * 32 + i * 16, S::LDB);
        if constexpr (std::is_same<T, float>::value) {
#pragma unroll
          for (int t = 0; t < fa[i].num_elements; ++t) fa[i].x[t] = wmma::__float_to_tf32(fa[i].x[t]);
#pragma unroll
          for (int t = 0; t < fb[i].num_elements; ++t) fb[i].x[t] = wmma::__float_to_tf32(fb[i].x[t]);
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    if (step + 1 < nsteps) store(buf ^ 1);
    __syncthreads();
  }

  // The epilogue reads the accumulators back from shared memory (the tiles' buffers, done with).
  float* Cs = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, acc[i][j], LDC, wmma::mem_row_major);
  __syncthreads();
  const int64_t item = blk.b * s.Cout * s.out_len;
  for (int e = threadIdx.x; e < BM * BN; e += kThreads) {
    const int64_t off = y_offset(s, blk, e);
    if (off < 0) continue;
    const float r = residual ? to_float(residual[item + off]) : 0.f;
    const float v = Cs[(e / BN) * LDC + e % BN];
    y[item + off] = from_float<T>(finish<float, float>(v, bias, blk.co0 + e / BN, act, slope, alpha, r));
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // built for an older arch only: applies() keeps launches away; never a silent no-op
#endif
}

template <typename T>
void launch(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias, const at::Tensor* alpha,
            const at::Tensor* residual, at::Tensor& y, const Shape& s, Activation act, double slope) {
  const int64_t grid_x = x.size(0) * s.phases * s.col_blocks, grid_y = (s.Cout + BM - 1) / BM;
  TORCH_CHECK(grid_x <= 0x7fffffff && grid_y <= 65535, "fastcodec: this conv needs a grid of ", grid_x, " x ",
              grid_y, " blocks, more than CUDA allows; split the batch");
  conv_tc_kernel<T><<<dim3(unsigned(grid_x), unsigned(grid_y)), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const T*>(x.data_ptr()), reinterpret_cast<const T*>(w.data_ptr()),
      bias ? bias->data_ptr<float>() : nullptr, alpha ? alpha->data_ptr<float>() : nullptr,
      residual ? reinterpret_cast<const T*>(residual->data_ptr()) : nullptr, reinterpret_cast<T*>(y.data_ptr()), s,
      act, float(slope));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

bool applies(const at::Tensor& x) {
  const auto dt = x.scalar_type();
  const bool tensor_core_type =
      dt == at::kHalf || dt == at::kBFloat16 || (dt == at::kFloat && at::globalContext().allowTF32CuDNN());
  static ArchCache known{};
  return tensor_core_type &&
         runs_sm80_body(x.device().index(), reinterpret_cast<const void*>(conv_tc_kernel<__half>), known);
}

void conv(const at::Tensor& x_in, const at::Tensor& w_in, const c10::optional<at::Tensor>& bias_in,
          const c10::optional<at::Tensor>& alpha_in, const c10::optional<at::Tensor>& residual_in, at::Tensor& y,
          int64_t stride, int64_t dilation, Activation act, double slope, bool transposed) {
  const at::Tensor x = x_in.contiguous();
  // The packed layout the tiles read: [K, Cout, Cin], Cin contiguous.
  const at::Tensor w = (transposed ? w_in.permute({2, 1, 0}) : w_in.permute({2, 0, 1})).contiguous();
  const c10::optional<at::Tensor> bias =
      bias_in.has_value() ? c10::optional<at::Tensor>(bias_in->to(at::kFloat).contiguous()) : c10::nullopt;
  const c10::optional<at::Tensor> alpha =
      alpha_in.has_value() ? c10::optional<at::Tensor>(alpha_in->to(at::kFloat).contiguous()) : c10::nullopt;
  const c10::optional<at::Tensor> residual =
      residual_in.has_value() ? c10::optional<at::Tensor>(residual_in->contiguous()) : c10::nullopt;
  const Shape s = shape_of(x, w_in, stride, dilation, transposed);
  const at::Tensor* b = bias ? &*bias : nullptr;
  const at::Tensor* a = alpha ? &*alpha : nullptr;
  const at::Tensor* r = residual ? &*residual : nullptr;
  switch (x.scalar_type()) {
    case at::kHalf:
      return launch<__half>(x, w, b, a, r, y, s, act, slope);
    case at::kBFloat16:
      return launch<__nv_bfloat16>(x, w, b, a, r, y, s, act, slope);
    case at::kFloat:
      return launch<float>(x, w, b, a, r, y, s, act, slope);
    default:
      TORCH_CHECK(false, "fastcodec: the tensor-core conv takes fp16, bf16 or fp32, got ", x.scalar_type());
  }
}

}  // namespace tc
}  // namespace fastcodec
