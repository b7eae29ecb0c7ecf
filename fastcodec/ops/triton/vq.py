"""Triton nearest-codeword search and residual VQ, all stages in one launch.

A program owns BLOCK_N rows of x. Their residual [BLOCK_N, BLOCK_D] stays in registers for every
stage; codebook tiles [BLOCK_K, BLOCK_D] stream past. ||x||^2 is the same for every code, so tiles
rank ||c||^2 - 2 x.c (the cross term on tl.dot) and a running min/argmin keeps the best; there is
no N x K buffer. The winner's distance is then computed directly from the differences. Strict '<'
across tiles and tl.argmin's first-index rule within one keep ties at the lowest index.

The residual and the running sum of chosen codewords are rounded to the input dtype after each
stage, as the reference's stage-by-stage tensors are, so rvq_decode(codes) reproduces quantized
exactly and fp16/bf16 follow the reference step for step.

Fast mode (fp32 inputs only) ranks codes by TF32 products on tensor cores, then rechecks in
exact fp32 the few that rounding could have put out of order. Each tf32 distance lies within a
proven bound of the exact one (fast_error_terms), so the exact nearest is among the codes whose
lower bound is below every code's upper bound; each row keeps the best M of those, and a row
whose list could have lost one is searched again exactly. Codes therefore follow exact mode's rule.
16-bit inputs already run exact products on tensor cores, so for them fast mode is exact mode;
so is it under Triton 3.0/3.1 (see FAST_MIN_TRITON).

Calls with too few rows to fill the GPU can split each stage over codes instead (code_split,
rvq_split_kernel): one launch per stage, each program merging the previous stage's partial bests,
with the same codes as the one-launch search.
"""
import contextlib
import contextvars

import torch
import triton
import triton.language as tl

from .._backend import triton_interpreted
from ._launch import device_guard, precision_for, triton_version


@triton.jit
def _cross(r, c, PRECISION: tl.constexpr, CODES_MAJOR: tl.constexpr):
    """r [BN, BD] . c [BK, BD]^T, as [BK, BN] when CODES_MAJOR, else [BN, BK]."""
    if CODES_MAJOR:
        return tl.dot(c, tl.trans(r), input_precision=PRECISION)
    else:
        return tl.dot(r, tl.trans(c), input_precision=PRECISION)


@triton.jit
def _exact_nearest(r_in, cb, k_lo, k_hi, sck, scd, d, d_ok, PRECISION: tl.constexpr, CODES_MAJOR: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INTERPRETED: tl.constexpr):
    """Index [BLOCK_N] of the nearest among codes [k_lo, k_hi) of one codebook, and its ||c||^2 -
    2 r.c [BLOCK_N] (+inf where none compares: a NaN row), by exact tiles; ties to the lowest index.
    CODES_MAJOR: the dot's M axis runs over codes ([BLOCK_K, BLOCK_N] tiles): sm_90's wgmma needs
    M >= 64, which a few rows cannot fill but a codebook tile can."""
    kk = tl.arange(0, BLOCK_K)
    best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
    best_k = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + kk
        k_ok = k < k_hi
        c = tl.load(cb + k[:, None] * sck + d[None, :] * scd, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        cf = c.to(tl.float32)
        c_sq = tl.sum(cf * cf, axis=1)  # [BK]
        if INTERPRETED and c.dtype == tl.bfloat16:
            # Triton's interpreter (3.6, 3.8) gets bf16 dots wrong; fp32 products of bf16 values are
            # exact, as on the tensor cores.
            cross = _cross(r_in.to(tl.float32), cf, "ieee", CODES_MAJOR)
        else:
            cross = _cross(r_in, c, PRECISION, CODES_MAJOR)
        if CODES_MAJOR:  # [BK, BN]
            dist = tl.where(k_ok[:, None], c_sq[:, None] - 2.0 * cross, float("inf"))
            tile_min = tl.min(dist, axis=0)
            tile_arg = tl.argmin(dist, axis=0).to(tl.int32) + k0
        else:  # [BN, BK]
            dist = tl.where(k_ok[None, :], c_sq[None, :] - 2.0 * cross, float("inf"))
            tile_min = tl.min(dist, axis=1)
            tile_arg = tl.argmin(dist, axis=1).to(tl.int32) + k0
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        best_k = tl.where(better, tile_arg, best_k)
    return best_k, best


@triton.jit
def _take(r, q, cb, best_k, sck, scd, d, row_ok, dist_ptr, n64, n_ok, WRITE_DIST: tl.constexpr):
    """A stage's choice applied: the chosen code's squared distance to r (WRITE_DIST), then the
    residual r - c and the running sum q + c, each rounded to the input dtype as the reference's tensors are."""
    dtype = cb.dtype.element_ty
    chosen = tl.load(cb + best_k[:, None] * sck + d[None, :] * scd, mask=row_ok, other=0.0).to(tl.float32)
    if WRITE_DIST:
        diff = r - chosen
        tl.store(dist_ptr + n64, tl.sum(diff * diff, axis=1).to(dist_ptr.dtype.element_ty), mask=n_ok)
    return (r - chosen).to(dtype).to(tl.float32), (q + chosen).to(dtype).to(tl.float32)


@triton.jit
def _tf32(v, INTERPRETED: tl.constexpr):
    """v as a tf32 dot sees it. On a GPU the dot itself drops the low mantissa bits; Triton's
    interpreter multiplies in full fp32, so there the bits are cut here (truncation: the worse of
    the two roundings the hardware may use) and tests exercise the real error."""
    if INTERPRETED:
        v = (v.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return v


@triton.jit
def _fast_candidates(r, r_norm, cb, sck, scd, csq, cnorm, err_rc, err_cc, K, d, d_ok, n_ok,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, M: tl.constexpr, INTERPRETED: tl.constexpr):
    """Fast mode's first pass over one codebook: tf32 distances a(c) = ||c||^2 - 2 r.c on tensor
    cores, each within e(c) = err_rc ||r|| ||c|| + err_cc ||c||^2 of the exact one. The exact
    nearest has a(c) - e(c) <= upper = min over codes of a(c) + e(c); those are the candidates.

    Returns per row the M candidates of lowest bound a - e seen ([BLOCK_N, M] bounds and indices,
    +inf where unused) and upper [BLOCK_N]. Every code left out has a bound above upper or at
    least the list's largest bound, which is what lets the caller decide whether the list was
    enough (see rvq_encode_kernel).
    """
    kk = tl.arange(0, BLOCK_K)
    slot = tl.arange(0, M)
    r_tc = _tf32(r, INTERPRETED)
    vals = tl.full((BLOCK_N, M), float("inf"), dtype=tl.float32)
    idx = tl.zeros((BLOCK_N, M), dtype=tl.int32)
    upper = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + kk
        k_ok = k < K
        c = tl.load(cb + k[:, None] * sck + d[None, :] * scd, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        c_sq = tl.load(csq + k, mask=k_ok, other=0.0)
        c_norm = tl.load(cnorm + k, mask=k_ok, other=0.0)
        cross = tl.dot(r_tc, tl.trans(_tf32(c, INTERPRETED)), input_precision="tf32")
        approx = c_sq[None, :] - 2.0 * cross
        err = err_rc * r_norm[:, None] * c_norm[None, :] + err_cc * c_sq[None, :]
        lower = tl.where(k_ok[None, :], approx - err, float("inf"))
        upper = tl.minimum(upper, tl.min(tl.where(k_ok[None, :], approx + err, float("inf")), axis=1))
        near = (lower <= upper[:, None]) & n_ok[:, None]
        # Past the first tiles few codes are near any row's best: this loop mostly runs 0-2 times.
        n_take = tl.minimum(tl.max(tl.sum(near.to(tl.int32), axis=1), axis=0), M)
        for _ in range(n_take):
            v = tl.min(lower, axis=1)
            a = tl.argmin(lower, axis=1).to(tl.int32)
            put = (v <= upper) & (v < tl.max(vals, axis=1))
            hit = (slot[None, :] == tl.argmax(vals, axis=1)[:, None]) & put[:, None]
            vals = tl.where(hit, v[:, None], vals)
            idx = tl.where(hit, (a + k0)[:, None], idx)
            lower = tl.where(kk[None, :] == a[:, None], float("inf"), lower)
    return vals, idx, upper


@triton.jit
def _recheck(r, cb, sck, scd, vals, idx, upper, d, d_ok, BLOCK_N: tl.constexpr, M: tl.constexpr):
    """The exact fp32 nearest among each row's listed candidates (bound <= upper): (index, ||r - c||^2).
    Equal distances go to the lower index; a row with no candidate (NaN input) gets index 0, as in
    exact mode."""
    slot = tl.arange(0, M)
    best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
    best_k = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for j in range(M):  # not unrolled: unrolled, the M gathers were hoisted together and spilled
        pick = slot[None, :] == j
        v = tl.max(tl.where(pick, vals, float("-inf")), axis=1)
        k = tl.max(tl.where(pick, idx, -1), axis=1)
        ok = v <= upper
        c = tl.load(cb + k[:, None] * sck + d[None, :] * scd, mask=ok[:, None] & d_ok[None, :], other=0.0)
        diff = r - c.to(tl.float32)
        dist = tl.sum(diff * diff, axis=1)
        better = ok & ((dist < best) | ((dist == best) & (k < best_k)))
        best = tl.where(better, dist, best)
        best_k = tl.where(better, k, best_k)
    return best_k, best


@triton.jit
def _exact_scan(r, cb, K, sck, scd, d, d_ok, BLOCK_N: tl.constexpr):
    """Fast mode's fallback: every code's exact fp32 distance, one code at a time (few registers;
    only blocks with a row whose candidate list overflowed come here)."""
    best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
    best_k = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for k in range(0, K):
        c = tl.load(cb + k * sck + d * scd, mask=d_ok, other=0.0).to(tl.float32)
        diff = r - c[None, :]
        dist = tl.sum(diff * diff, axis=1)
        better = dist < best
        best = tl.where(better, dist, best)
        best_k = tl.where(better, k, best_k)
    return best_k


@triton.jit
def _rows(x_ptr, N, D, sxn, sxd, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's rows of x: (row indices as int64, their mask, d, its mask, both masks
    [BLOCK_N, BLOCK_D], the rows in fp32 [BLOCK_N, BLOCK_D])."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    n_ok = n < N
    d_ok = d < D
    row_ok = n_ok[:, None] & d_ok[None, :]
    n64 = n.to(tl.int64)
    r = tl.load(x_ptr + n64[:, None] * sxn + d[None, :] * sxd, mask=row_ok, other=0.0).to(tl.float32)
    return n64, n_ok, d, d_ok, row_ok, r


@triton.jit
def rvq_encode_kernel(
    x_ptr, cb_ptr, codes_ptr, q_ptr, dist_ptr, res_ptr, csq_ptr, cnorm_ptr,
    N, K, D, n_q,
    sxn, sxd, scq, sck, scd,
    err_rc, err_cc,
    WRITE_Q: tl.constexpr, WRITE_DIST: tl.constexpr, WRITE_RES: tl.constexpr, PRECISION: tl.constexpr,
    CODES_MAJOR: tl.constexpr,
    FAST: tl.constexpr, M: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    dtype = x_ptr.dtype.element_ty
    n64, n_ok, d, d_ok, row_ok, r = _rows(x_ptr, N, D, sxn, sxd, BLOCK_N, BLOCK_D)
    q = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    res_rows = res_ptr + (n64[:, None] * (n_q + 1)) * D + d[None, :]  # [N, n_q + 1, D] contiguous
    for i in range(0, n_q):
        cb = cb_ptr + i * scq
        r_in = r.to(dtype)
        if WRITE_RES:
            tl.store(res_rows + i * D, r_in, mask=row_ok)
        if FAST:
            r_sq = tl.sum(r * r, axis=1)
            vals, idx, upper = _fast_candidates(r, tl.sqrt(r_sq), cb, sck, scd, csq_ptr + i * K, cnorm_ptr + i * K,
                                                err_rc, err_cc, K, d, d_ok, n_ok, BLOCK_N, BLOCK_K, M, INTERPRETED)
            best_k, best = _recheck(r, cb, sck, scd, vals, idx, upper, d, d_ok, BLOCK_N, M)
            # A code off a full list has an exact distance >= its bound >= the list's largest bound;
            # if that is below the best found (in ||r - c||^2 units: + ||r||^2), it could be nearer.
            overflow = (tl.max(vals, axis=1) + r_sq < best) & n_ok
            if tl.max(overflow.to(tl.int32), axis=0) > 0:
                best_k = tl.where(overflow, _exact_scan(r, cb, K, sck, scd, d, d_ok, BLOCK_N), best_k)
        else:
            best_k, _ = _exact_nearest(r_in, cb, 0, K, sck, scd, d, d_ok, PRECISION, CODES_MAJOR, BLOCK_N, BLOCK_K,
                                       INTERPRETED)
        tl.store(codes_ptr + n64 * n_q + i, best_k.to(tl.int64), mask=n_ok)
        r, q = _take(r, q, cb, best_k, sck, scd, d, row_ok, dist_ptr, n64, n_ok, WRITE_DIST)
    if WRITE_Q:
        tl.store(q_ptr + n64[:, None] * D + d[None, :], q.to(dtype), mask=row_ok)
    if WRITE_RES:
        tl.store(res_rows + n_q * D, r.to(dtype), mask=row_ok)


@triton.jit
def _merged_code(part_ptr, idx_ptr, n64, n_ok, N, n_splits, SPLITS: tl.constexpr):
    """The winner [BLOCK_N] among a stage's n_splits partial results (part, idx: [n_splits, N]):
    the least distance, and among equals the first split, which holds the lower codes."""
    s = tl.arange(0, SPLITS)
    at = s.to(tl.int64)[:, None] * N + n64[None, :]
    ok = (s < n_splits)[:, None] & n_ok[None, :]
    part = tl.load(part_ptr + at, mask=ok, other=float("inf"))
    idx = tl.load(idx_ptr + at, mask=ok, other=0)
    first = tl.argmin(part, axis=0)
    return tl.sum(tl.where(s[:, None] == first[None, :], idx, 0), axis=0)


@triton.jit(do_not_specialize=["stage", "n_q", "stage_parts"])  # one kernel for any of them (1 is a constant)
def rvq_split_kernel(
    x_ptr, cb_ptr, codes_ptr, part_ptr, idx_ptr, q_ptr, dist_ptr, res_ptr,
    N, K, D, n_q, stage, n_splits, k_split, stage_parts,
    sxn, sxd, scq, sck, scd,
    SEARCH: tl.constexpr, WRITE_Q: tl.constexpr, WRITE_DIST: tl.constexpr, WRITE_RES: tl.constexpr,
    PRECISION: tl.constexpr, CODES_MAJOR: tl.constexpr, INTERPRETED: tl.constexpr, SPLITS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One launch of the search split over codes, for calls with too few rows to fill the GPU.
    Program (i, j) owns rows tile i and first replays the stages before `stage` from their codes
    (stage - 1's merged from its partial results; split 0 stores them), rounding as
    rvq_encode_kernel does. SEARCH: then it searches codes [j k_split, (j + 1) k_split) of stage
    `stage` and stores its best (distance, index) in part/idx [n_q, n_splits, N] (stages
    stage_parts = n_splits N apart). Otherwise (stage = n_q, one split) it stores the outputs the
    WRITE_* flags ask for."""
    dtype = x_ptr.dtype.element_ty
    split = tl.program_id(1)
    n64, n_ok, d, d_ok, row_ok, r = _rows(x_ptr, N, D, sxn, sxd, BLOCK_N, BLOCK_D)
    q = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    res_rows = res_ptr + (n64[:, None] * (n_q + 1)) * D + d[None, :]  # [N, n_q + 1, D] contiguous
    stage_parts = stage_parts.to(tl.int64)  # n_q n_splits N can pass 2^31 under code_split() at large N
    for i in range(0, stage):
        if WRITE_RES:
            tl.store(res_rows + i * D, r.to(dtype), mask=row_ok)
        if i == stage - 1:
            k = _merged_code(part_ptr + i * stage_parts, idx_ptr + i * stage_parts, n64, n_ok, N, n_splits, SPLITS)
            if split == 0:  # (a scalar test: a mask of n_ok & split == 0 is refused by Triton 3.9's interpreter)
                tl.store(codes_ptr + n64 * n_q + i, k.to(tl.int64), mask=n_ok)
        else:
            k = tl.load(codes_ptr + n64 * n_q + i, mask=n_ok, other=0).to(tl.int32)
        r, q = _take(r, q, cb_ptr + i * scq, k, sck, scd, d, row_ok, dist_ptr, n64, n_ok, WRITE_DIST)
    if SEARCH:
        k_lo = split * k_split
        best_k, best = _exact_nearest(r.to(dtype), cb_ptr + stage * scq, k_lo, tl.minimum(k_lo + k_split, K), sck,
                                      scd, d, d_ok, PRECISION, CODES_MAJOR, BLOCK_N, BLOCK_K, INTERPRETED)
        at = stage * stage_parts + split.to(tl.int64) * N + n64
        tl.store(part_ptr + at, best, mask=n_ok)
        tl.store(idx_ptr + at, best_k, mask=n_ok)
    else:
        if WRITE_Q:
            tl.store(q_ptr + n64[:, None] * D + d[None, :], q.to(dtype), mask=row_ok)
        if WRITE_RES:
            tl.store(res_rows + n_q * D, r.to(dtype), mask=row_ok)


@triton.jit
def rvq_decode_kernel(
    codes_ptr, cb_ptr, out_ptr,
    N, K, D, n_q,
    scn, scs, sbq, sbk, sbd,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    dtype = cb_ptr.dtype.element_ty
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    n_ok = n < N
    d_ok = d < D
    n64 = n.to(tl.int64)
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    bad = n < 0  # all false (tl.zeros of int1: not under Triton 3.0's interpreter)
    for i in range(0, n_q):
        k = tl.load(codes_ptr + n64 * scn + i * scs, mask=n_ok, other=0)
        k_ok = (k >= 0) & (k < K)
        bad = bad | (k < 0) | (k >= K)  # not ~k_ok: Triton 3.0's interpreter cannot invert a mask
        c = tl.load(cb_ptr + i * sbq + k[:, None] * sbk + d[None, :] * sbd,
                    mask=(n_ok & k_ok)[:, None] & d_ok[None, :], other=0.0)
        acc = (acc + c.to(tl.float32)).to(dtype).to(tl.float32)
    # Unchecked codes (the public op checks CPU codes only) give NaN rows, never a wild read.
    acc = tl.where(bad[:, None], float("nan"), acc)
    tl.store(out_ptr + n64[:, None] * D + d[None, :], acc.to(dtype), mask=n_ok[:, None] & d_ok[None, :])


# Tiles per BLOCK_D = next_pow2(max(D, 16)), (BLOCK_N, BLOCK_K, num_warps): the choices that
# compile for sm_90 without spills under Triton 3.6, 3.8 and 3.9 alike, specialized as the JIT does for
# the codec's shapes (register allocation differs between releases and specializations: python -m
# fastcodec.dev.kernel_report, run under each, found them). Exact-fp32 dots
# keep their tiles in registers on FMA units, hence the smaller fp32 tiles. 16-bit tiles put 64
# codes on the dot's M axis (CODES_MAJOR), the least that sm_90's wgmma takes (the report checks
# for HGMMA). Nothing wider than 256 is spill-free everywhere (fp16 at 512 spills under 3.6), so
# that is the limit.
_TILES_FP32 = {16: (16, 32, 8), 32: (16, 32, 8), 64: (16, 64, 8), 128: (16, 16, 8), 256: (16, 16, 8)}
_TILES_16BIT = {16: (32, 64, 4), 32: (32, 64, 8), 64: (32, 64, 4), 128: (32, 64, 8), 256: (16, 64, 8)}
MAX_D = max(_TILES_FP32)


def max_dim(dtype: torch.dtype) -> int:
    """Largest code dimension D the register-resident search takes (see the tile tables)."""
    return MAX_D


def rvq_config(D: int, dtype: torch.dtype) -> dict:
    """Tile sizes for code dimension D <= MAX_D (see _TILES_*)."""
    block_d = max(16, triton.next_power_of_2(D))
    fp32 = dtype == torch.float32
    n, k, warps = (_TILES_FP32 if fp32 else _TILES_16BIT)[block_d]
    return dict(BLOCK_N=n, BLOCK_K=k, BLOCK_D=block_d, num_warps=warps, CODES_MAJOR=not fp32)


def decode_config(D: int) -> dict:
    return dict(BLOCK_N=32, BLOCK_D=min(128, max(16, triton.next_power_of_2(D))), num_warps=4)


def unsupported_reason(D: int, dtype: torch.dtype):
    """Why this kernel cannot take code dimension D (None if it can)."""
    if D <= max_dim(dtype):
        return None
    return f"the triton rvq kernels keep a row's residual in registers and handle D <= {max_dim(dtype)}; got D = {D}"


# Fast mode: each row's candidate list, and tiles per BLOCK_D (BLOCK_N, BLOCK_K, num_warps). The fp32
# residual, its TF32 operand and the running quantized sum all stay in registers, so these are the
# largest tiles that compile for sm_90 without spills (kernel report). Not yet timed on a GPU.
FAST_LIST = 8
# Triton 3.0 and 3.1 crash (a segfault in make_ttgir, sm_90) compiling the fast kernels; 3.2 to 3.9
# compile them (found with the kernel report's AOT compile under each release).
FAST_MIN_TRITON = (3, 2)


def fast_available() -> bool:
    """Whether this Triton can build fast mode's kernels; where it cannot, fast mode runs the exact search."""
    return triton_version() >= FAST_MIN_TRITON


_TILES_FAST = {16: (64, 64, 4), 32: (32, 64, 8), 64: (32, 32, 8), 128: (16, 64, 8), 256: (16, 32, 8)}


def fast_config(D: int) -> dict:
    """Tile sizes of fast mode (fp32 inputs) for code dimension D <= MAX_D."""
    block_d = max(16, triton.next_power_of_2(D))
    n, k, warps = _TILES_FAST[block_d]
    return dict(BLOCK_N=n, BLOCK_K=k, BLOCK_D=block_d, num_warps=warps, M=FAST_LIST)


def fast_error_terms(D: int) -> tuple[float, float]:
    """(a, b) such that |tf32 distance - exact distance| <= a ||r|| ||c|| + b ||c||^2 for every
    residual r and code c of dimension D.

    The tf32 distance is fl(||c||^2) - 2 fl(r~.c~): r~ and c~ keep 10 mantissa bits (unit
    u = 2^-10, covering truncation as well as rounding) and products are summed in fp32. By the
    standard bounds |r~.c~ - r.c| <= (2u + u^2 + g (1+u)^2) sum|r_i c_i| with g = gamma_D of the
    accumulator, and sum|r_i c_i| <= ||r|| ||c||; ||c||^2 (summed in fp32) and the final
    subtraction add g ||c||^2 and g (||c||^2 + 2 ||r|| ||c||). The accumulator's unit is taken as
    2^-22, four times fp32's, because tensor cores may truncate while aligning products, and the
    whole bound is doubled as a margin.
    """
    u, ua = 2.0 ** -10, 2.0 ** -22
    g = D * ua / (1.0 - D * ua)
    margin = 2.0
    a = 2.0 * (2.0 * u + u * u + g * (1.0 + u) ** 2) + 2.0 * g
    b = 2.0 * g
    return margin * a, margin * b


def _fast_inputs(codebooks, n_q):
    """Per-code ||c||^2 and ||c|| [n_q, K] in fp32, for fast mode's distances and error bounds."""
    c_sq = codebooks[:n_q].float().pow(2).sum(2).contiguous()
    return c_sq, c_sq.sqrt()


def _outputs(x, n_q, write_q, write_dist, write_res):
    """codes [N, n_q] int64, and what the flags ask for: quantized [N, D], the last stage's
    distance [N], residuals [N, n_q + 1, D] (None where not asked)."""
    N, D = x.shape
    codes = torch.empty(N, n_q, dtype=torch.int64, device=x.device)
    q = torch.empty_like(x, memory_format=torch.contiguous_format) if write_q else None
    dist = torch.empty(N, dtype=x.dtype, device=x.device) if write_dist else None
    res = torch.empty(N, n_q + 1, D, dtype=x.dtype, device=x.device) if write_res else None
    return codes, q, dist, res


def _encode(x, codebooks, n_q, write_q, write_dist, write_res=False, fast=False):
    N, D = x.shape
    _, K, _ = codebooks.shape
    if D > max_dim(x.dtype):
        raise ValueError(unsupported_reason(D, x.dtype))
    if _split.get():
        return _encode_split(x, codebooks, n_q, write_q, write_dist, write_res)
    codes, q, dist, res = _outputs(x, n_q, write_q, write_dist, write_res)
    if N == 0:
        return codes, q, dist, res
    fast = fast and x.dtype == torch.float32
    if fast:
        cfg = dict(fast_config(D), CODES_MAJOR=False)
        c_sq, c_norm = _fast_inputs(codebooks, n_q)
        err_rc, err_cc = fast_error_terms(D)
    else:
        cfg = dict(rvq_config(D, x.dtype), M=1)
        c_sq, c_norm, err_rc, err_cc = x, x, 0.0, 0.0
    with device_guard(x):
        rvq_encode_kernel[(triton.cdiv(N, cfg["BLOCK_N"]),)](
            x, codebooks, codes, x if q is None else q, x if dist is None else dist, x if res is None else res,
            c_sq, c_norm,
            N, K, D, n_q, *x.stride(), *codebooks.stride(), err_rc, err_cc,
            WRITE_Q=write_q, WRITE_DIST=write_dist, WRITE_RES=write_res, PRECISION=precision_for(x.dtype),
            FAST=fast, INTERPRETED=triton_interpreted(), **cfg)
    return codes, q, dist, res


# The split search (rvq_split_kernel) is for calls whose row tiles leave most SMs idle: at most this
# many rows, as a variant the measured 'auto' times (dispatch.VARIANTS); no static rule takes it.
SPLIT_MAX_ROWS = 2048  # (an H100's 132 SMs are full at 132 programs of 16 or 32 rows)
SPLIT_MAX = 32  # splits per stage: each program merges this many partial bests per row
_split = contextvars.ContextVar("fastcodec_triton_vq_split", default=False)


@contextlib.contextmanager
def code_split():
    """The searches called in this block split each stage over codes (rvq_split_kernel): n_q + 1
    launches with no host round trip, the same codes as the one-launch search in exact mode."""
    token = _split.set(True)
    try:
        yield
    finally:
        _split.reset(token)


def split_count(N: int, K: int, block_n: int, block_k: int, device: torch.device) -> int:
    """Code splits per stage: enough programs to give each SM one, at least a tile of codes each
    (off a GPU, as on an H100: what the interpreter runs and the kernel report compiles)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132
    return max(1, min(sms // triton.cdiv(N, block_n), triton.cdiv(K, block_k), SPLIT_MAX))


def _encode_split(x, codebooks, n_q, write_q, write_dist, write_res, splits=None):
    """_encode's outputs by the code-split search: exact mode, whatever `fast` asked, since the
    codes are exact mode's either way."""
    N, D = x.shape
    _, K, _ = codebooks.shape
    codes, q, dist, res = _outputs(x, n_q, write_q, write_dist, write_res)
    if N == 0:
        return codes, q, dist, res
    cfg = rvq_config(D, x.dtype)
    splits = splits or split_count(N, K, cfg["BLOCK_N"], cfg["BLOCK_K"], x.device)
    k_split = triton.cdiv(triton.cdiv(K, splits), cfg["BLOCK_K"]) * cfg["BLOCK_K"]  # whole tiles
    n_splits = triton.cdiv(K, k_split)
    part = torch.empty(n_q, n_splits, N, dtype=torch.float32, device=x.device)
    idx = torch.empty(n_q, n_splits, N, dtype=torch.int32, device=x.device)
    tiles = triton.cdiv(N, cfg["BLOCK_N"])
    with device_guard(x):
        for stage in range(n_q + 1):
            search = stage < n_q
            # The last launch only replays the stages (no dot): 4 warps, as 8 spilled (kernel report).
            warps = cfg["num_warps"] if search else 4
            rvq_split_kernel[(tiles, n_splits if search else 1)](
                x, codebooks, codes, part, idx, x if q is None else q, x if dist is None else dist,
                x if res is None else res, N, K, D, n_q, stage, n_splits, k_split, n_splits * N, *x.stride(),
                *codebooks.stride(),
                SEARCH=search, WRITE_Q=write_q and not search, WRITE_DIST=write_dist and not search,
                WRITE_RES=write_res and not search, PRECISION=precision_for(x.dtype), INTERPRETED=triton_interpreted(),
                SPLITS=triton.next_power_of_2(n_splits), **dict(cfg, num_warps=warps))
    return codes, q, dist, res


def vq_nearest(x, codebook, fast=False):
    """x: [N, D], codebook: [K, D] -> (index [N] int64, sqdist [N])."""
    codes, _, dist, _ = _encode(x, codebook.unsqueeze(0), 1, write_q=False, write_dist=True, fast=fast)
    return codes.view(-1), dist


def rvq_encode(x, codebooks, n_q, fast=False):
    """x: [N, D], codebooks: [Q, K, D] -> (codes [N, n_q] int64, quantized [N, D])."""
    codes, q, _, _ = _encode(x, codebooks, n_q, write_q=True, write_dist=False, fast=fast)
    return codes, q


def rvq_residuals(x, codebooks, n_q, fast=False):
    """x: [N, D], codebooks: [Q, K, D] -> (codes [N, n_q] int64, residuals [N, n_q + 1, D])."""
    codes, _, _, res = _encode(x, codebooks, n_q, write_q=False, write_dist=False, write_res=True, fast=fast)
    return codes, res


def rvq_decode(codes, codebooks):
    """codes: [N, n_q] int64, codebooks: [Q, K, D] -> [N, D]."""
    N, n_q = codes.shape
    _, K, D = codebooks.shape
    out = torch.empty(N, D, dtype=codebooks.dtype, device=codebooks.device)
    if out.numel() == 0:
        return out
    cfg = decode_config(D)
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(D, cfg["BLOCK_D"]))
    with device_guard(codebooks):
        rvq_decode_kernel[grid](codes, codebooks, out, N, K, D, n_q, *codes.stride(), *codebooks.stride(), **cfg)
    return out
