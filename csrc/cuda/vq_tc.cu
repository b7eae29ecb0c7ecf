// Residual VQ search on tensor cores (sm_80+, fp16/bf16): the block loop of vq_tiles.h with WMMA
// fragments for the cross terms r.c. Each warp stages its code tile in shared memory (zero-padded
// to the MMA depth), multiplies the block's 16 residual rows by it, and scans the 16 x 16 scores
// for a running min per row; the warps' bests merge under the tie rule and the residual moves on,
// all stages in one launch. With few rows, clusters of blocks (sm_90) split each stage's codes.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include <ATen/ATen.h>

#include "arch.h"
#include "cast.cuh"
#include "launch.h"
#include "vq_tc.h"
#include "vq_tiles.h"

namespace fastcodec {
namespace vqtc {

// The kernel's rounding to its 16-bit type (vq_tiles.h's next_residual, next_quantized).
template <>
struct Cast<__half> {
  static __device__ __forceinline__ __half to(float v) { return from_float<__half>(v); }
  static __device__ __forceinline__ float from(__half v) { return to_float(v); }
};
template <>
struct Cast<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 to(float v) { return from_float<__nv_bfloat16>(v); }
  static __device__ __forceinline__ float from(__nv_bfloat16 v) { return to_float(v); }
};

namespace {

// The CUDA type of a c10 16-bit type (same bits): the kernel converts through its intrinsics
// (c10::Half's device conversions take the value's address, which put it in local memory).
template <typename T>
struct Native;
template <>
struct Native<c10::Half> {
  using type = __half;
};
template <>
struct Native<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// The cluster's parts (sm_90; elsewhere s.cluster is 1 and a block is its own cluster).
__device__ __forceinline__ int cluster_rank() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return int(cooperative_groups::this_cluster().block_rank());
#else
  return 0;
#endif
}
__device__ __forceinline__ void cluster_barrier() {  // also orders the blocks' shared-memory writes and reads
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().sync();
#else
  __trap();
#endif
}
template <typename P>
__device__ __forceinline__ const P* peer(const P* p, int rank) {  // block `rank`'s copy of shared array p
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster().map_shared_rank(p, rank);
#else
  return p;
#endif
}

// x: [N, D], cbs: [Q, K, D] (contiguous), c_sq: fp32 ||c||^2 [Q, K]; codes [N, n_q]; optional outputs as csrc/cuda/vq.cu's
// kernel: quantized [N, D], sqdist [N] (the last stage's ||r - c||^2), residuals [N, n_q + 1, D].
// Launched in clusters of s.cluster blocks, which share each row block; the rank-0 block writes.
template <typename T>  // __half or __nv_bfloat16
__global__ void __launch_bounds__(kThreads)
    rvq_tc_kernel(const T* __restrict__ x, const T* __restrict__ cbs, const float* __restrict__ c_sq,
                  int64_t* __restrict__ codes,
                  T* __restrict__ quantized, T* __restrict__ sqdist, T* __restrict__ residuals, Shape s, Smem m) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  extern __shared__ __align__(128) unsigned char smem[];
  float* R = reinterpret_cast<float*>(smem + m.r);
  T* Ra = reinterpret_cast<T*>(smem + m.ra);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  T* Cb = reinterpret_cast<T*>(smem + m.cb) + warp * RK * int(s.ld);
  float* Sc = reinterpret_cast<float*>(smem + m.scores) + warp * RM * LDS;
  float* best_d = reinterpret_cast<float*>(smem + m.best_d);
  int64_t* best_k = reinterpret_cast<int64_t*>(smem + m.best_k);
  int64_t* chosen = reinterpret_cast<int64_t*>(smem + m.chosen);
  float* block_d = reinterpret_cast<float*>(smem + m.block_d);
  int64_t* block_k = reinterpret_cast<int64_t*>(smem + m.block_k);
  const T zero = Cast<T>::to(0.f);
  // Tile indices in 32 bits: a 64-bit division is a call on the GPU, with spills around it.
  const int D = int(s.D), Dp = int(s.Dp), ld = int(s.ld), C = int(s.cluster);
  const int rank = C > 1 ? cluster_rank() : 0;
  const bool writes = rank == 0;
  int parity = 0;  // which half of block_d/block_k this stage uses

  for (int64_t rb = blockIdx.x / C; rb < s.row_blocks; rb += gridDim.x / C) {
    const int64_t n0 = rb * RM;
    auto write_residual = [&](int64_t slot) {  // residuals[:, slot] of the block's rows
      if (!residuals || !writes) return;
      for (int e = threadIdx.x; e < RM * D; e += kThreads) {
        const int row = e / D, d = e % D;
        const int64_t n = n0 + row;
        if (n < s.N) residuals[(n * (s.n_q + 1) + slot) * s.D + d] = Cast<T>::to(R[row * Dp + d]);
      }
    };
    for (int e = threadIdx.x; e < RM * Dp; e += kThreads) {
      const int row = e / Dp, d = e % Dp;
      const int64_t n = n0 + row;
      const bool in = n < s.N && d < D;
      const T v = in ? x[n * s.D + d] : zero;
      R[e] = Cast<T>::from(v);
      Ra[row * ld + d] = v;
      if (in && quantized && writes) quantized[n * s.D + d] = zero;
    }
    __syncthreads();
    for (int64_t i = 0; i < s.n_q; ++i) {
      write_residual(i);
      float mine = INFINITY;  // lanes < RM: row `lane`'s best among this warp's tiles
      int64_t mine_k = s.K;
      for (int64_t t = first_tile(rank, warp); t < s.code_tiles; t += tile_stride(s)) {
        for (int e = lane; e < RK * Dp; e += 32) {
          const int64_t off = code_offset(s, i, t, e);
          Cb[(e / Dp) * ld + e % Dp] = off < 0 ? zero : cbs[off];
        }
        __syncwarp();
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.f);
        for (int kk = 0; kk < Dp; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
          wmma::load_matrix_sync(fa, Ra + kk, unsigned(ld));
          wmma::load_matrix_sync(fb, Cb + kk, unsigned(ld));
          wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(Sc, acc, LDS, wmma::mem_row_major);
        __syncwarp();
        if (lane < RM) scan_tile(s, t, Sc + lane * LDS, c_sq + i * s.K, mine, mine_k);
        __syncwarp();  // the next tile overwrites Cb and Sc
      }
      if (lane < RM) {
        best_d[warp * RM + lane] = mine;
        best_k[warp * RM + lane] = mine_k;
      }
      __syncthreads();
      float* my_d = block_d + parity * RM;
      int64_t* my_k = block_k + parity * RM;
      if (threadIdx.x < RM) {
        my_d[threadIdx.x] = INFINITY;
        my_k[threadIdx.x] = s.K;
        merge_bests(best_d, best_k, kWarps, RM, threadIdx.x, my_d[threadIdx.x], my_k[threadIdx.x]);
      }
      // The cluster's bests visible to every block; the next write to this half comes two stages
      // on, after the next barrier, which every block reaches only once done reading this one.
      if (C > 1) cluster_barrier();
      else __syncthreads();
      if (threadIdx.x < RM) {
        float d = INFINITY;
        int64_t best = s.K;
        for (int c = 0; c < C; ++c)  // (a block reads its own bests directly: unclustered, it has no cluster)
          merge_bests(c == rank ? my_d : peer(my_d, c), c == rank ? my_k : peer(my_k, c), 1, RM, threadIdx.x, d, best);
        const int64_t k = code_of(s, best), n = n0 + threadIdx.x;
        chosen[threadIdx.x] = k;
        if (n < s.N && writes) codes[n * s.n_q + i] = k;
        if (sqdist && writes && i + 1 == s.n_q && n < s.N) {
          // Recomputed directly (not from the score), so a NaN input reports NaN, not +inf.
          const T* c = cbs + (i * s.K + k) * s.D;
          float acc = 0.f;
          for (int d = 0; d < D; ++d) {
            const float diff = R[threadIdx.x * Dp + d] - Cast<T>::from(c[d]);
            acc += diff * diff;
          }
          sqdist[n] = Cast<T>::to(acc);
        }
      }
      __syncthreads();
      for (int e = threadIdx.x; e < RM * D; e += kThreads) {
        const int row = e / D, d = e % D;
        const int64_t n = n0 + row;
        const float c = Cast<T>::from(cbs[(i * s.K + chosen[row]) * s.D + d]);
        const float r = next_residual<T>(R[row * Dp + d], c);
        R[row * Dp + d] = r;
        Ra[row * ld + d] = Cast<T>::to(r);
        if (quantized && writes && n < s.N)
          quantized[n * s.D + d] = Cast<T>::to(next_quantized<T>(Cast<T>::from(quantized[n * s.D + d]), c));
      }
      parity ^= 1;
      __syncthreads();
    }
    write_residual(s.n_q);
    __syncthreads();
  }
  if (C > 1) cluster_barrier();  // no block leaves while another may still read its shared memory
#else
  __trap();  // built for an older arch only: applies() keeps launches away; never a silent no-op
#endif
}

// Blocks per row block: a cluster where the sm_90 body runs and the row blocks alone leave SMs
// idle. What it asks the driver is fixed per device and is asked once: the per-call path is for
// small calls, whose launch such queries would outweigh.
int64_t blocks_per_row_block(const at::Tensor& x, const Shape& s, const void* kernel) {
  static ArchCache known{};
  static std::array<std::atomic<int>, 64> sm_count{};
  const int device = x.device().index();
  if (!runs_body(device, kernel, 90, known)) return 1;
  int sms = device >= 0 && device < 64 ? sm_count[device].load(std::memory_order_relaxed) : 0;
  if (sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    if (device >= 0 && device < 64) sm_count[device].store(sms, std::memory_order_relaxed);
  }
  return cluster_for(s.N, s.K, sms);
}

// Whether the device can hold a cluster of cfg's size at once (a launch of one it cannot would
// fail), asked once per (device, kernel, cluster size, shared memory).
bool cluster_fits(int device, const void* kernel, const cudaLaunchConfig_t& cfg, unsigned cluster) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, unsigned, size_t>, bool> known;
  const auto key = std::make_tuple(device, kernel, cluster, cfg.dynamicSmemBytes);
  const std::lock_guard<std::mutex> lock(mu);
  auto it = known.find(key);
  if (it != known.end()) return it->second;
  int n = 0;
  const bool fits = cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) == cudaSuccess && n >= 1;
  (void)cudaGetLastError();  // a refusal is an answer here, not an error for the next call to find
  known.emplace(key, fits);
  return fits;
}

template <typename T>
void launch(const at::Tensor& x, const at::Tensor& cbs, const at::Tensor& codes, const at::Tensor* quantized,
            const at::Tensor* sqdist, const at::Tensor* residuals, Shape s) {
  using N = typename Native<T>::type;
  auto ptr = [](const at::Tensor* t) { return t ? reinterpret_cast<N*>(t->data_ptr<T>()) : nullptr; };
  const at::Tensor c_sq = code_norms(cbs, s.n_q);
  const Smem m = smem_layout(s);  // <= 48 KiB for D <= kMaxD: no opt-in needed
  auto kernel = rvq_tc_kernel<N>;
  const void* key = reinterpret_cast<const void*>(kernel);
  s.cluster = blocks_per_row_block(x, s, key);
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(m.bytes);
  cfg.stream = c10::cuda::getCurrentCUDAStream();
  if (s.cluster > 1) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = unsigned(s.cluster);
    attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cfg.gridDim = dim3(unsigned(grid_for(s.row_blocks, 1) * s.cluster));
    if (!cluster_fits(x.device().index(), key, cfg, unsigned(s.cluster))) {
      s.cluster = 1;
      cfg.attrs = nullptr;
      cfg.numAttrs = 0;
    }
  }
  cfg.gridDim = dim3(unsigned(grid_for(s.row_blocks, 1) * s.cluster));
  C10_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, ptr(&x), ptr(&cbs), c_sq.data_ptr<float>(), codes.data_ptr<int64_t>(),
                                    ptr(quantized), ptr(sqdist), ptr(residuals), s, m));
}

}  // namespace

bool applies(const at::Tensor& x, int64_t D) {
  static ArchCache known{};
  const auto dt = x.scalar_type();
  return (dt == at::kHalf || dt == at::kBFloat16) && D >= 1 && D <= kMaxD &&
         runs_sm80_body(x.device().index(), reinterpret_cast<const void*>(rvq_tc_kernel<__half>), known);
}

void rvq(const at::Tensor& x, const at::Tensor& cbs, const at::Tensor& codes, const at::Tensor* quantized,
         const at::Tensor* sqdist, int64_t n_q, const at::Tensor* residuals) {
  const Shape s = make_shape(x.size(0), cbs.size(1), x.size(1), n_q);
  if (s.N == 0) return;
  switch (x.scalar_type()) {
    case at::kHalf:
      return launch<c10::Half>(x, cbs, codes, quantized, sqdist, residuals, s);
    case at::kBFloat16:
      return launch<c10::BFloat16>(x, cbs, codes, quantized, sqdist, residuals, s);
    default:
      TORCH_CHECK(false, "fastcodec: the tensor-core RVQ search takes fp16 or bf16, got ", x.scalar_type());
  }
}

}  // namespace vqtc
}  // namespace fastcodec
