"""Triton nearest-codeword search and residual VQ, all stages in one launch.

A program owns BLOCK_N rows of x. Their residual [BLOCK_N, BLOCK_D] stays in registers for every
stage; codebook tiles [BLOCK_K, BLOCK_D] stream past. ||x||^2 is the same for every code, so tiles
rank ||c||^2 - 2 x.c (the cross term on tl.dot) and a running min/argmin keeps the best; there is
no N x K buffer. The winner's distance is then computed directly from the differences. Strict '<'
across tiles and tl.argmin's first-index rule within one keep ties at the lowest index.

The residual and the running sum of chosen codewords are rounded to the input dtype after each
stage, as the reference's stage-by-stage tensors are, so rvq_decode(codes) reproduces quantized
exactly and fp16/bf16 follow the reference step for step.
"""
import torch
import triton
import triton.language as tl

from ._launch import device_guard, precision_for


@triton.jit
def rvq_encode_kernel(
    x_ptr, cb_ptr, codes_ptr, q_ptr, dist_ptr, res_ptr,
    N, K, D, n_q,
    sxn, sxd, scq, sck, scd,
    WRITE_Q: tl.constexpr, WRITE_DIST: tl.constexpr, WRITE_RES: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    dtype = x_ptr.dtype.element_ty
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    kk = tl.arange(0, BLOCK_K)
    n_ok = n < N
    d_ok = d < D
    row_ok = n_ok[:, None] & d_ok[None, :]
    n64 = n.to(tl.int64)
    r = tl.load(x_ptr + n64[:, None] * sxn + d[None, :] * sxd, mask=row_ok, other=0.0).to(tl.float32)
    q = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    res_rows = res_ptr + (n64[:, None] * (n_q + 1)) * D + d[None, :]  # [N, n_q + 1, D] contiguous
    for i in range(0, n_q):
        cb = cb_ptr + i * scq
        r_in = r.to(dtype)
        if WRITE_RES:
            tl.store(res_rows + i * D, r_in, mask=row_ok)
        best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
        best_k = tl.zeros((BLOCK_N,), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + kk
            k_ok = k < K
            c = tl.load(cb + k[:, None] * sck + d[None, :] * scd, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
            cf = c.to(tl.float32)
            c_sq = tl.sum(cf * cf, axis=1)  # [BK]
            cross = tl.dot(r_in, tl.trans(c), input_precision=PRECISION)  # [BN, BK]
            dist = tl.where(k_ok[None, :], c_sq[None, :] - 2.0 * cross, float("inf"))
            tile_min = tl.min(dist, axis=1)
            tile_arg = tl.argmin(dist, axis=1).to(tl.int32) + k0
            better = tile_min < best
            best = tl.where(better, tile_min, best)
            best_k = tl.where(better, tile_arg, best_k)
        tl.store(codes_ptr + n64 * n_q + i, best_k.to(tl.int64), mask=n_ok)
        chosen = tl.load(cb + best_k[:, None] * sck + d[None, :] * scd, mask=row_ok, other=0.0).to(tl.float32)
        if WRITE_DIST:
            diff = r - chosen
            tl.store(dist_ptr + n64, tl.sum(diff * diff, axis=1).to(dist_ptr.dtype.element_ty), mask=n_ok)
        r = (r - chosen).to(dtype).to(tl.float32)
        q = (q + chosen).to(dtype).to(tl.float32)
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
    bad = tl.zeros((BLOCK_N,), dtype=tl.int1)
    for i in range(0, n_q):
        k = tl.load(codes_ptr + n64 * scn + i * scs, mask=n_ok, other=0)
        k_ok = (k >= 0) & (k < K)
        bad = bad | ~k_ok
        c = tl.load(cb_ptr + i * sbq + k[:, None] * sbk + d[None, :] * sbd,
                    mask=(n_ok & k_ok)[:, None] & d_ok[None, :], other=0.0)
        acc = (acc + c.to(tl.float32)).to(dtype).to(tl.float32)
    # The public op rejects out-of-range codes first; a direct call gets NaN rows, never a wild read.
    acc = tl.where(bad[:, None], float("nan"), acc)
    tl.store(out_ptr + n64[:, None] * D + d[None, :], acc.to(dtype), mask=n_ok[:, None] & d_ok[None, :])


# Tiles per BLOCK_D = next_pow2(max(D, 16)), (BLOCK_N, BLOCK_K, num_warps): the choices that
# compile for sm_90 without spills under Triton 3.6, 3.8 and 3.9 alike (register allocation differs
# between releases: python -m fastcodec.kernel_report, run for each, found them). Exact-fp32 dots
# keep their tiles in registers on FMA units, hence the smaller fp32 tiles. Nothing wider than 256
# is spill-free everywhere (fp16 at 512 spills under 3.6), so that is the limit.
_TILES_FP32 = {16: (16, 32, 4), 32: (16, 16, 4), 64: (16, 32, 8), 128: (16, 32, 8), 256: (16, 16, 8)}
_TILES_16BIT = {16: (32, 64, 4), 32: (32, 64, 8), 64: (32, 64, 4), 128: (32, 64, 8), 256: (16, 32, 8)}
# rvq_residuals' stores of every stage's residual cost registers: under Triton 3.6 these two
# tiles spilled 24-40 B with them (kernel report), so that mode takes half the codes per tile.
_TILES_RES = {(True, 128): (16, 16, 8), (False, 256): (16, 16, 8)}  # (fp32?, BLOCK_D) -> tile
MAX_D = max(_TILES_FP32)


def max_dim(dtype: torch.dtype) -> int:
    """Largest code dimension D the register-resident search takes (see the tile tables)."""
    return MAX_D


def rvq_config(D: int, dtype: torch.dtype, residuals: bool = False) -> dict:
    """Tile sizes for code dimension D <= MAX_D (see _TILES_*); residuals: for rvq_residuals."""
    block_d = max(16, triton.next_power_of_2(D))
    fp32 = dtype == torch.float32
    n, k, warps = (_TILES_FP32 if fp32 else _TILES_16BIT)[block_d]
    if residuals:
        n, k, warps = _TILES_RES.get((fp32, block_d), (n, k, warps))
    return dict(BLOCK_N=n, BLOCK_K=k, BLOCK_D=block_d, num_warps=warps)


def decode_config(D: int) -> dict:
    return dict(BLOCK_N=32, BLOCK_D=min(128, max(16, triton.next_power_of_2(D))), num_warps=4)


def unsupported_reason(D: int, dtype: torch.dtype):
    """Why this kernel cannot take code dimension D (None if it can)."""
    if D <= max_dim(dtype):
        return None
    return f"the triton rvq kernels keep a row's residual in registers and handle D <= {max_dim(dtype)}; got D = {D}"


def _encode(x, codebooks, n_q, write_q, write_dist, write_res=False):
    N, D = x.shape
    _, K, _ = codebooks.shape
    if D > max_dim(x.dtype):
        raise ValueError(unsupported_reason(D, x.dtype))
    codes = torch.empty(N, n_q, dtype=torch.int64, device=x.device)
    q = torch.empty_like(x, memory_format=torch.contiguous_format) if write_q else None
    dist = torch.empty(N, dtype=x.dtype, device=x.device) if write_dist else None
    res = torch.empty(N, n_q + 1, D, dtype=x.dtype, device=x.device) if write_res else None
    if N == 0:
        return codes, q, dist, res
    cfg = rvq_config(D, x.dtype, residuals=write_res)
    with device_guard(x):
        rvq_encode_kernel[(triton.cdiv(N, cfg["BLOCK_N"]),)](
            x, codebooks, codes, x if q is None else q, x if dist is None else dist, x if res is None else res,
            N, K, D, n_q, *x.stride(), *codebooks.stride(),
            WRITE_Q=write_q, WRITE_DIST=write_dist, WRITE_RES=write_res, PRECISION=precision_for(x.dtype), **cfg)
    return codes, q, dist, res


def vq_nearest(x, codebook):
    """x: [N, D], codebook: [K, D] -> (index [N] int64, sqdist [N])."""
    codes, _, dist, _ = _encode(x, codebook.unsqueeze(0), 1, write_q=False, write_dist=True)
    return codes.view(-1), dist


def rvq_encode(x, codebooks, n_q):
    """x: [N, D], codebooks: [Q, K, D] -> (codes [N, n_q] int64, quantized [N, D])."""
    codes, q, _, _ = _encode(x, codebooks, n_q, write_q=True, write_dist=False)
    return codes, q


def rvq_residuals(x, codebooks, n_q):
    """x: [N, D], codebooks: [Q, K, D] -> (codes [N, n_q] int64, residuals [N, n_q + 1, D])."""
    codes, _, _, res = _encode(x, codebooks, n_q, write_q=False, write_dist=False, write_res=True)
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
