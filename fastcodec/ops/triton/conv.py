"""Triton causal conv and causal transposed conv: implicit-GEMM tiles with the epilogue fused.

Each program computes a [BLOCK_CO, BLOCK_T] output tile of one batch item. It loops over taps k and
input-channel blocks, loading a weight tile [BLOCK_CO, BLOCK_CI] and the input tile
[BLOCK_CI, BLOCK_T] shifted by k*dilation - pad; the causal left padding is the load mask (src < 0
reads 0), never a padded copy. fp32 accumulation; bias, activation and residual are applied to the
accumulator before the single store. Inputs are read through their strides (no .contiguous());
weights in the packed [K, Cout, Cin] layout (_weights.py), so weight tiles load along Cin.

fp32 products follow torch.backends.cudnn.allow_tf32 as PyTorch's convs do: TF32 on tensor cores
where it allows (the default), exact fp32 otherwise. Offsets inside one batch item are int32 unless
they can pass 2^31 (INT64, decided per launch); the batch offset is always int64.

The transposed conv is split by output phase p = t' mod stride: output t' = q*stride + p receives
exactly the taps k = p + j*stride from input q - j, so every tile is a dense GEMM with no masked-out
multiplies (a direct scatter formulation wastes (stride-1)/stride of them).
"""
import torch
import triton
import triton.language as tl

from ._launch import conv_precision, device_guard, needs_int64
from ._weights import packed

ACT_CODES = {"none": 0, "elu": 1, "leaky_relu": 2, "silu": 3, "snake": 4}
SNAKE_EPS = 1e-9  # == reference.SNAKE_EPS


@triton.jit
def _sin_sq(v):
    """sin(v)^2 as csrc/epilogue.h:fc_sin_sq computes it: reduction by pi (Cody-Waite) and an odd
    polynomial, so no precise-sin slow path with its local-memory array."""
    k = tl.floor(v * 0.318309886183790671 + 0.5)
    r = v - k * 3.140625
    r = r - k * 9.677410125732422e-4
    r = r - k * -8.742277657347586e-8
    r = tl.minimum(tl.maximum(r, -1.57079632679), 1.57079632679)
    r2 = r * r
    p = r2 * 1.6059043836821613e-10 - 2.5052108385441720e-8
    p = p * r2 + 2.7557319223985893e-6
    p = p * r2 - 1.9841269841269841e-4
    p = p * r2 + 8.3333333333333333e-3
    p = p * r2 - 1.6666666666666667e-1
    s = r + r * r2 * p
    return s * s


@triton.jit
def _activate(z, ACT: tl.constexpr, slope, a_ptr, co, co_ok):
    """z: [BLOCK_CO, BLOCK_T] fp32 pre-activation of output channels co: [BLOCK_CO]."""
    if ACT == 1:
        z = tl.where(z > 0, z, tl.exp(z) - 1.0)
    elif ACT == 2:
        z = tl.where(z > 0, z, z * slope)
    elif ACT == 3:
        z = z / (1.0 + tl.exp(-z))
    elif ACT == 4:
        alpha = tl.load(a_ptr + co, mask=co_ok, other=1.0).to(tl.float32)[:, None]
        z = z + _sin_sq(alpha * z) / (alpha + 1e-9)
    return z


@triton.jit
def _wide(v, INT64: tl.constexpr):
    """Index vector v in int64 where offsets inside one batch item can pass int32 (needs_int64)."""
    if INT64:
        v = v.to(tl.int64)
    return v


@triton.jit
def causal_conv1d_kernel(
    x_ptr, w_ptr, b_ptr, a_ptr, r_ptr, y_ptr,
    Cin, Cout, Tout, K, stride, dilation, slope,
    sxb, sxc, sxt, swo, swi, swk, srb, src, srt,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, PRECISION: tl.constexpr,
    INT64: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    # Axis 0 runs over (batch item, time block), so any batch fits the grid (axis 2 stops at 65535).
    n_tb = tl.cdiv(Tout, BLOCK_T)
    pid_t = tl.program_id(0) % n_tb
    b = (tl.program_id(0) // n_tb).to(tl.int64)
    pid_co = tl.program_id(1)
    co = _wide(pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO), INT64)  # [BCO]
    t = _wide(pid_t * BLOCK_T + tl.arange(0, BLOCK_T), INT64)  # [BT]
    cis = _wide(tl.arange(0, BLOCK_CI), INT64)  # [BCI]
    co_ok = co < Cout
    t_ok = t < Tout
    pad = (K - 1) * dilation
    x_b = x_ptr + b * sxb
    acc = tl.zeros((BLOCK_CO, BLOCK_T), dtype=tl.float32)
    for k in range(0, K):
        src_t = t * stride + k * dilation - pad  # [BT]; < 0 is the causal zero padding
        src_ok = t_ok & (src_t >= 0)
        for c0 in range(0, Cin, BLOCK_CI):
            ci = c0 + cis
            ci_ok = ci < Cin
            w = tl.load(w_ptr + co[:, None] * swo + ci[None, :] * swi + k * swk,
                        mask=co_ok[:, None] & ci_ok[None, :], other=0.0)  # [BCO, BCI]
            xt = tl.load(x_b + ci[:, None] * sxc + src_t[None, :] * sxt,
                         mask=ci_ok[:, None] & src_ok[None, :], other=0.0)  # [BCI, BT]
            acc = tl.dot(w, xt, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)[:, None]
    acc = _activate(acc, ACT, slope, a_ptr, co, co_ok)
    out_ok = co_ok[:, None] & t_ok[None, :]
    if HAS_RES:
        acc += tl.load(r_ptr + b * srb + co[:, None] * src + t[None, :] * srt, mask=out_ok, other=0.0).to(tl.float32)
    y = y_ptr + b * Cout * Tout + co[:, None] * Tout + t[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def causal_conv_transpose1d_kernel(
    x_ptr, w_ptr, b_ptr, a_ptr, y_ptr,
    Cin, Cout, T, K, stride, slope,
    sxb, sxc, sxt, swi, swo, swk,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    INT64: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    # Axis 0 runs over (batch item, output phase, input block): any batch fits the grid.
    n_qb = tl.cdiv(T, BLOCK_Q)
    pid_q = tl.program_id(0) % n_qb
    pid_bp = tl.program_id(0) // n_qb
    pid_co = tl.program_id(1)
    b = (pid_bp // stride).to(tl.int64)
    p = pid_bp % stride  # output phase: this program writes t' = q*stride + p
    co = _wide(pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO), INT64)
    q = _wide(pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q), INT64)
    cis = _wide(tl.arange(0, BLOCK_CI), INT64)
    co_ok = co < Cout
    q_ok = q < T
    x_b = x_ptr + b * sxb
    acc = tl.zeros((BLOCK_CO, BLOCK_Q), dtype=tl.float32)
    n_taps = (K - p + stride - 1) // stride  # taps k = p + j*stride < K; >= 0 since p < stride
    for j in range(0, n_taps):
        k = p + j * stride
        src_t = q - j
        src_ok = q_ok & (src_t >= 0)
        for c0 in range(0, Cin, BLOCK_CI):
            ci = c0 + cis
            ci_ok = ci < Cin
            w = tl.load(w_ptr + ci[None, :] * swi + co[:, None] * swo + k * swk,
                        mask=co_ok[:, None] & ci_ok[None, :], other=0.0)  # [BCO, BCI]
            xt = tl.load(x_b + ci[:, None] * sxc + src_t[None, :] * sxt,
                         mask=ci_ok[:, None] & src_ok[None, :], other=0.0)  # [BCI, BQ]
            acc = tl.dot(w, xt, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)[:, None]
    acc = _activate(acc, ACT, slope, a_ptr, co, co_ok)
    Tout = _wide(T, INT64) * stride
    y = y_ptr + b * Cout * Tout + co[:, None] * Tout + (q * stride + p)[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=co_ok[:, None] & q_ok[None, :])


def _pow2_clamp(n, lo, hi):
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


def conv_config(cin: int, cout: int, tout: int, dtype: torch.dtype, precision: str = "tf32") -> dict:
    """Tile sizes the launcher uses (and the kernel report compiles): tl.dot needs every side >= 16.
    Exact-fp32 dots (precision 'ieee') run on FMA units with the whole tile in registers: 32 x 32 x
    16 is the largest tile that compiles without spills for sm_90 under Triton 3.6, 3.8 and 3.9
    alike (python -m fastcodec.dev.kernel_report checks the installed release); tensor-core dots
    (16-bit, or fp32 as TF32) take 64-wide tiles."""
    if dtype == torch.float32 and precision == "ieee":
        return dict(BLOCK_CO=_pow2_clamp(cout, 16, 32), BLOCK_T=_pow2_clamp(tout, 16, 32), BLOCK_CI=16, num_warps=4)
    ci_max = 16 if dtype == torch.float32 else 32  # fp32 operands take twice the shared memory
    return dict(BLOCK_CO=_pow2_clamp(cout, 16, 64), BLOCK_T=_pow2_clamp(tout, 16, 64),
                BLOCK_CI=_pow2_clamp(cin, 16, ci_max), num_warps=4)


def grid_for(batch_programs: int, co_blocks: int) -> tuple:
    """The launch grid: (batch x time blocks, channel blocks). CUDA takes up to 2^31 - 1 programs
    on axis 0 and 65535 on axis 1."""
    if batch_programs > 2 ** 31 - 1 or co_blocks > 65535:
        raise ValueError(f"this conv needs a grid of {batch_programs} x {co_blocks} programs, more than CUDA's "
                         f"limits (2^31 - 1 x 65535): split the batch")
    return batch_programs, co_blocks


def _vector(v):
    """Per-channel vectors are read with unit stride; they are tiny, so a copy costs nothing."""
    return None if v is None else v.contiguous()


def causal_conv1d(x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual):
    """x: [B, Cin, T], weight: [Cout, Cin, K] -> [B, Cout, ceil(T/stride)] (arguments as the op schema)."""
    B, Cin, T = x.shape
    Cout, _, K = weight.shape
    Tout = -(-T // stride)
    bias, alpha = _vector(bias), _vector(alpha)
    y = torch.empty(B, Cout, Tout, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    precision = conv_precision(x.dtype)
    cfg = conv_config(Cin, Cout, Tout, x.dtype, precision)
    grid = grid_for(B * triton.cdiv(Tout, cfg["BLOCK_T"]), triton.cdiv(Cout, cfg["BLOCK_CO"]))
    res_strides = residual.stride() if residual is not None else (0, 0, 0)
    int64 = needs_int64((Cin, x.stride(1)), (T, x.stride(2)), (Cout * Tout, 1),
                        *(zip(residual.shape[1:], res_strides[1:]) if residual is not None else ()))
    w = packed(weight, transposed=False)  # [K, Cout, Cin]
    with device_guard(x):
        causal_conv1d_kernel[grid](
            x, w, x if bias is None else bias, x if alpha is None else alpha,
            x if residual is None else residual, y,
            Cin, Cout, Tout, K, stride, dilation, float(negative_slope),
            *x.stride(), w.stride(1), w.stride(2), w.stride(0), *res_strides,
            ACT=ACT_CODES[activation], HAS_BIAS=bias is not None, HAS_RES=residual is not None,
            PRECISION=precision, INT64=int64, **cfg)
    return y


def causal_conv_transpose1d(x, weight, bias, stride, activation, negative_slope, alpha):
    """x: [B, Cin, T], weight: [Cin, Cout, K] -> [B, Cout, T*stride] (arguments as the op schema)."""
    B, Cin, T = x.shape
    _, Cout, K = weight.shape
    bias, alpha = _vector(bias), _vector(alpha)
    y = torch.empty(B, Cout, T * stride, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    precision = conv_precision(x.dtype)
    cfg = conv_config(Cin, Cout, T, x.dtype, precision)
    cfg["BLOCK_Q"] = cfg.pop("BLOCK_T")
    grid = grid_for(B * stride * triton.cdiv(T, cfg["BLOCK_Q"]), triton.cdiv(Cout, cfg["BLOCK_CO"]))
    int64 = needs_int64((Cin, x.stride(1)), (T, x.stride(2)), (Cout * T * stride, 1))
    w = packed(weight, transposed=True)  # [K, Cout, Cin]
    with device_guard(x):
        causal_conv_transpose1d_kernel[grid](
            x, w, x if bias is None else bias, x if alpha is None else alpha, y,
            Cin, Cout, T, K, stride, float(negative_slope),
            *x.stride(), w.stride(2), w.stride(1), w.stride(0),
            ACT=ACT_CODES[activation], HAS_BIAS=bias is not None,
            PRECISION=precision, INT64=int64, **cfg)
    return y
