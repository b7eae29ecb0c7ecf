"""What a residual-VQ layer needs to train, as functions the model calls: straight-through
estimation, commitment loss, codebook learning by EMA with dead-code replacement, and k-means
initialisation. Everything runs in fp32, also under autocast. When torch.distributed is
initialised the EMA statistics are all-reduced and the k-means init and replacements are broadcast
from rank 0, so every rank keeps identical codebooks.

Shapes: x / residuals [N, D], codebook [K, D], index [N] (int64), counts [K], sums [K, D].
"""
from __future__ import annotations

import torch

from ..ops import vq_nearest_ref
from .precision import full_precision


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def straight_through(x, quantized):
    """quantized in the forward pass, identity gradient to x in the backward (the VQ-VAE estimator)."""
    return x + (quantized - x).detach()


def commitment_loss(x, quantized):
    """mean ||x - sg(quantized)||^2 in fp32: pulls the encoder output toward its codes."""
    with full_precision():
        return (x.float() - quantized.detach().float()).pow(2).mean()


def ema_stats(x, index, num_codes):
    """Per-code assignment counts [K] and sums of the assigned vectors [K, D], in one pass each
    (index_add: no one-hot N x K matrix). fp32."""
    with full_precision():
        x = x.detach().float()
        counts = torch.zeros(num_codes, device=x.device, dtype=torch.float32)
        counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float32))
        sums = torch.zeros(num_codes, x.shape[1], device=x.device, dtype=torch.float32)
        sums.index_add_(0, index, x)
    return counts, sums


@torch.no_grad()
def ema_update(codebook, ema_counts, ema_sums, x, index, *, decay=0.99, eps=1e-5):
    """One EMA step of codebook learning, in place: ema_counts/ema_sums <- decay * old +
    (1 - decay) * this batch's statistics (all-reduced over ranks), then every code becomes its
    Laplace-smoothed mean ema_sums[k] / n_k. codebook [K, D] (any float dtype), ema_* fp32.
    Returns this batch's all-reduced assignment counts [K] (what a dead-code rule needs)."""
    K = codebook.shape[0]
    counts, sums = ema_stats(x, index, K)
    if _distributed():
        torch.distributed.all_reduce(counts)
        torch.distributed.all_reduce(sums)
    ema_counts.mul_(decay).add_(counts, alpha=1 - decay)
    ema_sums.mul_(decay).add_(sums, alpha=1 - decay)
    total = ema_counts.sum()
    smoothed = (ema_counts + eps) / (total + K * eps) * total
    codebook.copy_(ema_sums / smoothed.unsqueeze(1))
    return counts


@torch.no_grad()
def kmeans_init(x, num_codes, *, iters=10, generator=None):
    """A codebook [K, D] from k-means on x (Lloyd's algorithm, fp32), started from K random rows.
    Rows that end up with no points keep their last centroid. Broadcast from rank 0 when
    distributed, so every rank starts identical."""
    with full_precision():
        x = x.detach().float()
        if x.shape[0] == 0:
            raise ValueError("kmeans_init needs at least one vector")
        pick = torch.randint(0, x.shape[0], (num_codes,), generator=generator, device="cpu").to(x.device)
        centroids = x[pick].clone()
        for _ in range(iters):
            index, _ = vq_nearest_ref(x, centroids)
            counts, sums = ema_stats(x, index, num_codes)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
    if _distributed():
        torch.distributed.broadcast(centroids, src=0)
    return centroids


@torch.no_grad()
def replace_codes(codebook, ema_counts, ema_sums, x, dead, *, generator=None):
    """Re-seed the codes where dead [K] (bool) is set with random vectors of x, their EMA statistics
    reset to one assignment of that vector. Decided on rank 0 and broadcast. Returns how many."""
    n_dead = int(dead.sum())
    if n_dead and x.shape[0]:
        pick = torch.randint(0, x.shape[0], (n_dead,), generator=generator, device="cpu").to(x.device)
        fresh = x.detach().float()[pick]
        codebook[dead] = fresh.to(codebook.dtype)
        ema_sums[dead] = fresh.to(ema_sums.dtype)
        ema_counts[dead] = 1.0
    if _distributed():
        for t in (codebook, ema_counts, ema_sums):
            torch.distributed.broadcast(t, src=0)
    return n_dead


def replace_dead_codes(codebook, ema_counts, ema_sums, x, *, threshold=1.0, generator=None):
    """Codes whose EMA count fell below threshold are re-seeded with random vectors of x (see
    replace_codes). Returns the number of codes replaced."""
    return replace_codes(codebook, ema_counts, ema_sums, x, ema_counts < threshold, generator=generator)
