// The tiling, shared-memory layout, tie rule and residual update of the tensor-core RVQ search
// (vq_tc.cu), as host/device functions: the CPU emulator (csrc/cpu/vq_tile_emulator.cpp) runs the
// same block loop through them, so all of the kernel but its fragment loads and MMAs is tested
// where no GPU is.
//
// A block owns RM rows and runs every stage of a call for them: stage i scores each code k of
// codebook i as ||c_k||^2 - 2 r.c_k (the cross terms as 16 x 16 tiles on tensor cores: 16-bit
// products are exact, sums fp32), the block's warps take code tiles round-robin with a running
// min per row, their bests merge, and the residual moves on to r - c_best rounded to the input
// type, as the reference does. No N x K buffer; no host round trip between stages.
//
// When rows are few (a second of 24 kHz audio is 75 rows: 5 blocks), a cluster of `cluster` blocks
// (sm_90) shares a row block: warp w of block rank c takes the tiles w + c kWarps, w + (c + C)
// kWarps, ...; each block merges its warps, the blocks read each other's bests through distributed
// shared memory and all reach the same code, so each keeps its own copy of the residual.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "../epilogue.h"

namespace fastcodec {
namespace vqtc {

// RM rows per block (one fragment's height), RK codes per tile (its width), kWarps warps per
// block; D up to kMaxD (the codec's code_dim is 32 to 128), padded to a multiple of 16 (MMA depth).
constexpr int RM = 16, RK = 16, kWarps = 4, kThreads = 32 * kWarps, kMaxD = 128;
constexpr int kMaxCluster = 8;  // the portable cluster size
constexpr int kPad = 8;  // 16-bit elements appended to each row: a multiple of 8 (WMMA's ldm), off one bank
constexpr int LDS = RK + 4;  // floats per row of a warp's score tile

struct Shape {
  int64_t N, K, D, n_q;
  int64_t Dp, ld;  // D padded to the MMA depth; elements per row of the 16-bit tiles (Dp + kPad)
  int64_t row_blocks, code_tiles;
  int64_t cluster;  // blocks sharing a row block, 1 to kMaxCluster
};

FC_HOST_DEVICE Shape make_shape(int64_t N, int64_t K, int64_t D, int64_t n_q, int64_t cluster = 1) {
  const int64_t Dp = (D + 15) / 16 * 16;
  return {N, K, D, n_q, Dp, Dp + kPad, (N + RM - 1) / RM, (K + RK - 1) / RK, cluster};
}

// Blocks per row block for a device of `sms` multiprocessors: enough to give each one a block
// while every warp still has a code tile to take; 1 where the row blocks fill the device.
FC_HOST_DEVICE int64_t cluster_for(int64_t N, int64_t K, int64_t sms) {
  const Shape s = make_shape(N, K, 1, 1);
  const int64_t by_sms = sms / s.row_blocks, by_tiles = (s.code_tiles + kWarps - 1) / kWarps;
  const int64_t c = by_sms < by_tiles ? by_sms : by_tiles;
  return c < 1 ? 1 : (c > kMaxCluster ? kMaxCluster : c);
}

// The first code tile of warp `warp` in block rank `rank`, and the stride to its next.
FC_HOST_DEVICE int64_t first_tile(int rank, int warp) { return int64_t(rank) * kWarps + warp; }
FC_HOST_DEVICE int64_t tile_stride(const Shape& s) { return s.cluster * kWarps; }

// Byte offsets of a block's dynamic shared memory, each 128-byte aligned: the residual in fp32
// [RM][Dp], its 16-bit copy (the A operand) [RM][ld], each warp's code tile (B) [RK][ld], each
// warp's scores [RM][LDS], the warps' bests per row, the rows' chosen codes, and the block's bests
// that the cluster's blocks read ([2][RM] each: stage parity, so one cluster barrier per stage).
struct Smem {
  int64_t r, ra, cb, scores, best_d, best_k, chosen, block_d, block_k, bytes;
};

FC_HOST_DEVICE int64_t align128(int64_t b) { return (b + 127) / 128 * 128; }

FC_HOST_DEVICE Smem smem_layout(const Shape& s) {
  Smem m{};
  m.r = 0;
  m.ra = align128(m.r + int64_t(RM) * s.Dp * 4);
  m.cb = align128(m.ra + int64_t(RM) * s.ld * 2);
  m.scores = align128(m.cb + int64_t(kWarps) * RK * s.ld * 2);
  m.best_d = align128(m.scores + int64_t(kWarps) * RM * LDS * 4);
  m.best_k = align128(m.best_d + int64_t(kWarps) * RM * 4);
  m.chosen = align128(m.best_k + int64_t(kWarps) * RM * 8);
  m.block_d = align128(m.chosen + int64_t(RM) * 8);
  m.block_k = align128(m.block_d + int64_t(2) * RM * 4);
  m.bytes = align128(m.block_k + int64_t(2) * RM * 8);
  return m;
}

// Element e (0 <= e < RK*Dp, at most 2048) of code tile t of stage i: row e / Dp is code t*RK + e / Dp, column
// e % Dp its dimension. Its offset in codebooks [Q, K, D], or -1 where the tile holds zero (a code
// past K, a dimension past D).
FC_HOST_DEVICE int64_t code_offset(const Shape& s, int64_t stage, int64_t tile, int e) {
  const int Dp = int(s.Dp);  // 32-bit: a 64-bit division is a call on the GPU (and spills around it)
  const int64_t k = tile * RK + e / Dp, d = e % Dp;
  if (k >= s.K || d >= s.D) return -1;
  return (stage * s.K + k) * s.D + d;
}

// Whether (d1, k1) ranks before (d2, k2): the smaller score, then the lower index (torch.argmin's
// rule). A NaN score never ranks before anything (torch.argmin would pick a NaN; as the CUDA-core
// kernel, a row whose every score is NaN gets code 0, as torch.argmin gives it).
FC_HOST_DEVICE bool better(float d1, int64_t k1, float d2, int64_t k2) {
  return d1 < d2 || (d1 == d2 && k1 < k2);
}

// The score the search ranks: ||x - c||^2 - ||x||^2.
FC_HOST_DEVICE float score(float c_sq, float dot) { return c_sq - 2.f * dot; }

// A row's running best over one scored tile (codes t*RK + j in ascending order, so a strict <
// keeps the lowest index of equal scores). scores: the row's RK cross terms; c_sq: the stage's
// ||c||^2 [K] in fp32 (computed once per call by the launcher, not per block).
FC_HOST_DEVICE void scan_tile(const Shape& s, int64_t tile, const float* scores, const float* c_sq, float& best_d,
                              int64_t& best_k) {
  for (int j = 0; j < RK; ++j) {
    const int64_t k = tile * RK + j;
    if (k >= s.K) break;
    const float v = score(c_sq[k], scores[j]);
    if (v < best_d) {
      best_d = v;
      best_k = k;
    }
  }
}

// A row's best (score d, index k) among `count` candidates d[j * stride + row], k[...]: the
// warps' bests of one block (stride RM), or the cluster's blocks' (gathered as such). better() is
// a strict total order on them (a NaN score is never stored: it never ranks before +inf), so the
// order of the candidates does not matter.
FC_HOST_DEVICE void merge_bests(const float* d, const int64_t* k, int count, int stride, int row, float& best_d,
                                int64_t& best_k) {
  for (int j = 0; j < count; ++j)
    if (better(d[j * stride + row], k[j * stride + row], best_d, best_k)) {
      best_d = d[j * stride + row];
      best_k = k[j * stride + row];
    }
}

// The code of a merged best: K (no finite score: a NaN or infinite residual) maps to 0, which
// torch.argmin returns for such a row.
FC_HOST_DEVICE int64_t code_of(const Shape& s, int64_t best_k) { return best_k == s.K ? 0 : best_k; }

// Rounding to the input type T and back, specialized where T is known: CUDA's 16-bit types in
// cast.cuh (the kernel), c10's in the emulator. Cast<T>::to(float) -> T, Cast<T>::from(T) -> float.
template <typename T>
struct Cast;

// One element's move to the next stage: the residual r - c rounded to the input type T (the
// reference's `residual - chosen` in T), and quantized + c accumulated in T in stage order.
template <typename T>
FC_HOST_DEVICE float next_residual(float r, float c) {
  return Cast<T>::from(Cast<T>::to(r - c));
}
template <typename T>
FC_HOST_DEVICE float next_quantized(float q, float c) {
  return Cast<T>::from(Cast<T>::to(q + c));
}

// ||c||^2 [n_q, K] in fp32 of the first n_q codebooks of [Q, K, D] (16-bit), as the launcher and
// the emulator both compute it: once per call, ahead of the search (host code).
inline at::Tensor code_norms(const at::Tensor& cbs, int64_t n_q) {
  return cbs.narrow(0, 0, n_q).to(at::kFloat).square().sum(-1);
}

}  // namespace vqtc
}  // namespace fastcodec
