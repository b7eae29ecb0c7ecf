"""Quality metrics, shared by `python -m fastcodec.eval` and training's periodic evaluation.

SI-SDR, the multi-scale mel distance (spectral.py) and codebook usage are torch. STOI and wide-band
PESQ come from pystoi and pesq (the `[eval]` extra), imported when first asked for: a missing one
raises MetricUnavailable naming the extra.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..nn import full_precision

PESQ_RATE = 16000  # wide-band PESQ is defined at 16 kHz


class MetricUnavailable(ImportError):
    """A metric's package is not installed."""


def si_sdr(estimate, reference, eps=1e-8):
    """Scale-invariant SDR in dB per example: estimate, reference [B, 1, T] -> [B]."""
    with full_precision():
        est = estimate.float().flatten(1)
        ref = reference.float().flatten(1)
        est = est - est.mean(1, keepdim=True)
        ref = ref - ref.mean(1, keepdim=True)
        scale = (est * ref).sum(1, keepdim=True) / (ref.pow(2).sum(1, keepdim=True) + eps)
        target = scale * ref
        noise = est - target
        return 10 * torch.log10((target.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps))


def code_counts(codes, codebook_size: int):
    """codes [..., Q, F] (int) -> how often each code was chosen, per stage: [Q, K] float64."""
    Q = codes.shape[-2]
    flat = codes.transpose(0, -2).reshape(Q, -1) if codes.dim() > 2 else codes
    counts = torch.zeros(Q, codebook_size, dtype=torch.float64, device=codes.device)
    return counts.scatter_add_(1, flat.long(), torch.ones_like(flat, dtype=torch.float64))


def codebook_usage(counts):
    """counts [Q, K] of code assignments -> (perplexity [Q], dead fraction [Q]) per stage.

    Perplexity exp(H) is the effective number of codes in use (K at best); dead = never chosen."""
    counts = counts.double()
    p = counts / counts.sum(1, keepdim=True).clamp(min=1)
    entropy = -(p * p.clamp(min=1e-30).log()).sum(1)
    return entropy.exp().float(), (counts == 0).float().mean(1)


def _import(module: str, metric: str):
    try:
        return __import__(module)
    except Exception as exc:  # ImportError, or a broken native library under it
        raise MetricUnavailable(f"{metric} needs the {module} package ({type(exc).__name__}: {exc}); install "
                                f"fastcodec's [eval] extra: pip install -e \".[eval]\"") from None


_PACKAGES = {"stoi": ("pystoi", "STOI"), "pesq": ("pesq", "PESQ")}


def require(metric: str):
    """The package behind metric 'stoi' or 'pesq'; MetricUnavailable when it is not installed."""
    return _import(*_PACKAGES[metric])


def available(metric: str) -> bool:
    """Whether 'stoi' / 'pesq' can be computed here."""
    try:
        require(metric)
    except MetricUnavailable:
        return False
    return True


def _mono(x) -> np.ndarray:
    a = x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 1 and a.size != a.shape[-1]:
        raise ValueError(f"expected one mono signal, got shape {list(a.shape)}")
    return a.reshape(-1)


def stoi(reference, estimate, sample_rate: int) -> float:
    """Short-time objective intelligibility (0..1, Taal et al. 2011) of estimate against reference,
    each mono [T]. NaN when the reference holds too little non-silent speech for it (under ~0.4 s)."""
    pystoi = require("stoi")
    ref, est = _mono(reference), _mono(estimate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(ref, est, sample_rate, extended=False))
    # pystoi answers 1e-5 (with a warning) when too few frames are left after removing silence.
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return value


def pesq_wb(reference, estimate, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04..4.64) of estimate against reference, each mono
    [T] of speech, resampled to 16 kHz. NaN when PESQ finds no utterance in the reference or it is
    too short for PESQ (under ~0.25 s)."""
    pesq = require("pesq")
    ref, est = _mono(reference), _mono(estimate)
    if sample_rate != PESQ_RATE:
        import soxr

        ref, est = (soxr.resample(a, sample_rate, PESQ_RATE) for a in (ref, est))
    if not ref.any():
        return math.nan
    try:
        return float(pesq.pesq(PESQ_RATE, ref, est, "wb"))
    except (pesq.NoUtterancesError, pesq.BufferTooShortError):
        return math.nan
