// Nearest-codeword search on the CPU without an N x K buffer: the codebook is packed transposed in
// tiles of W codes ([tile][D][W], W = 48 with AVX-512, else 24: three vectors), and a block of
// kRows rows scans it with a register-blocked cross-term kernel (AVX-512, AVX2/FMA, portable
// fallback) that ranks ||c||^2 - 2 x.c and keeps a running min/argmin per lane. ||x||^2 is the
// same for every code, so it never enters the search.
#pragma once

#include <cstdint>
#include <vector>

namespace fastcodec {
namespace cpu {

constexpr int64_t kRows = 4;       // rows of x per search block
constexpr int64_t kMaxCodes = 48;  // the widest tile

struct PackedCodebook {
  int64_t K = 0, D = 0, tiles = 0;
  int64_t width = 0;       // W: codes per tile, fixed per process by the SIMD level (simd.h)
  std::vector<float> ct;   // [tiles][D][W], zero past K
  std::vector<float> csq;  // [tiles * W] squared norms; +inf past K, so padding never wins
};

// cb: [K, D] contiguous.
void pack_codebook(const float* cb, int64_t K, int64_t D, PackedCodebook& out);

// xp: kRows rows interleaved as xp[d * kRows + i], of which the first `rows` (1 to kRows) are
// searched. Writes the nearest code of each row to out[0, rows) (lowest index on ties; 0 when no
// distance is finite, as torch.argmin does for all-inf rows); out must hold kRows entries. A row's
// code does not depend on `rows` or on the other rows of the block.
void nearest_rows(const PackedCodebook& pc, const float* xp, int64_t rows, int64_t* out);

}  // namespace cpu
}  // namespace fastcodec
