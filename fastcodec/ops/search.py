"""The nearest-codeword searches (vq_nearest, rvq_encode, rvq_residuals) and rvq_decode, each
dispatching its backend through dispatch.choose. Shapes and semantics: the package docstring."""
from __future__ import annotations

import torch

from . import _checks, dispatch, tuning
from ._run import compiled, wants_grad
from .reference import rvq_decode_ref, rvq_encode_ref, rvq_residuals_ref, vq_nearest_ref

_B = tuning.size_bucket


def vq_nearest(x, codebook, *, backend="auto", mode="exact"):
    """Nearest codeword by squared L2: x [N, D], codebook [K, D] -> (index [N] int64, sqdist [N]).

    Ties go to the lowest index. mode: 'exact' | 'fast' (see the module's docstring). No gradient
    flows through the result.
    """
    _checks.vq(x, codebook)
    _checks.search_mode(mode)
    args = (x, codebook, mode)
    be = dispatch.choose("vq_nearest", backend, x.device, x.dtype, shape={"D": x.shape[1], "N": x.shape[0]},
                         key=lambda: (_B(x.shape[0]), codebook.shape[0], x.shape[1], mode), run=_vq_nearest_on,
                         args=args)
    return _vq_nearest_on(be, *args)


def _vq_nearest_on(be, x, codebook, mode):
    if be == "torch":
        with torch.no_grad():
            return vq_nearest_ref(x, codebook)
    return _searched("vq_nearest", be, mode, x, codebook)


def _searched(name, be, mode, *args):
    """The compiled search run on backend `be`: its fast variant where the backend has one for
    this dtype; "triton:split" (a variant the measured 'auto' chose, dispatch.VARIANTS) splits
    each stage over codes."""
    backend, _, variant = be.partition(":")
    if mode == "fast" and backend == "triton" and args[0].dtype == torch.float32:
        from .triton.vq import fast_available

        if fast_available():
            name += "_fast"
    if variant == "split":
        from .triton.vq import code_split

        with code_split():
            return compiled(name, backend)(*args)
    return compiled(name, backend)(*args)


def rvq_encode(x, codebooks, n_q=None, *, backend="auto", mode="exact"):
    """Residual VQ: x [N, D], codebooks [Q, K, D] -> (codes [N, n_q] int64, quantized [N, D]).

    Stage i quantizes what stages < i left; quantized is the stage-ordered sum of the chosen
    codewords (rvq_decode(codes) reproduces it exactly). n_q (default Q) sets the bitrate.
    mode: 'exact' | 'fast' (see the module's docstring). No gradient flows through the result.
    """
    return _rvq_search("rvq_encode", x, codebooks, n_q, backend, mode)


def rvq_residuals(x, codebooks, n_q=None, *, backend="auto", mode="exact"):
    """rvq_encode's search, returning the residual each stage searched and the one left after the
    last: x [N, D], codebooks [Q, K, D] -> (codes [N, n_q] int64, residuals [N, n_q + 1, D]).

    residuals[:, 0] is x and residuals[:, i + 1] the error after i + 1 stages, so a training step
    gets its commitment loss, EMA statistics and the quantized value at any n_q <= n_q
    (x - residuals[:, n]) from one search. Codes equal rvq_encode's in the same mode. No gradient
    flows through the result.
    """
    return _rvq_search("rvq_residuals", x, codebooks, n_q, backend, mode)


_RVQ_REFS = {"rvq_encode": rvq_encode_ref, "rvq_residuals": rvq_residuals_ref}


def _rvq_search(name, x, codebooks, n_q, backend, mode):
    """The checks and backend choice both RVQ searches share."""
    n_q = _checks.rvq(x, codebooks, n_q)
    _checks.search_mode(mode)
    args = (name, x, codebooks, n_q, mode)
    be = dispatch.choose(name, backend, x.device, x.dtype, shape={"D": x.shape[1], "N": x.shape[0]},
                         key=lambda: (_B(x.shape[0]), n_q, codebooks.shape[1], x.shape[1], mode), run=_rvq_search_on,
                         args=args)
    return _rvq_search_on(be, *args)


def _rvq_search_on(be, name, x, codebooks, n_q, mode):
    if be == "torch":
        with torch.no_grad():
            return _RVQ_REFS[name](x, codebooks, n_q)
    return _searched(name, be, mode, x, codebooks, n_q)


def rvq_decode(codes, codebooks, *, backend="auto", check=None):
    """Sum of the chosen codewords: codes [N, n_q] (any integer dtype, n_q <= Q), codebooks [Q, K, D] -> [N, D].

    Differentiable in the codebooks. Codes outside [0, K) raise ValueError where they are checked,
    and give NaN rows where not. check: None checks codes on the CPU only, since on a GPU reading
    them back would stall the device at every call; True checks everywhere, False nowhere.
    """
    if check is None:
        check = codes.device.type == "cpu" if isinstance(codes, torch.Tensor) else True
    _checks.rvq_decode(codes, codebooks, check_range=bool(check))
    codes = codes.long()
    be = dispatch.choose("rvq_decode", backend, codebooks.device, codebooks.dtype,
                         key=lambda: (_B(codes.shape[0]), codes.shape[1], codebooks.shape[2], wants_grad(codebooks)),
                         run=_rvq_decode_on, args=(codes, codebooks))
    return _rvq_decode_on(be, codes, codebooks)


def _rvq_decode_on(be, codes, codebooks):
    if be == "torch":
        return rvq_decode_ref(codes, codebooks)
    return compiled("rvq_decode", be)(codes, codebooks)
