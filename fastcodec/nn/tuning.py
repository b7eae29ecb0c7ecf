"""Measured 'auto' for a model: tune_model() times every keyed op call a model makes (fastcodec.ops
.tuning keeps the choices), and what the trainer needs to share them across ranks.

- tune_model(model, batch_size, samples): measure a training step's, coding's and a stream's calls
- enabled(): whether 'auto' measures at all (FASTCODEC_TUNE)
- share(): hand rank 0's table to every rank (a collective: all ranks call it at the same point)
"""
from __future__ import annotations

import contextlib
import copy

import torch

from ..ops import tuning
from ..ops.tuning import enabled, share

__all__ = ["tune_model", "enabled", "share"]


def tune_model(model, batch_size: int, samples: int, inference: bool = True, stream: bool = True,
               context=contextlib.nullcontext) -> dict:
    """Measure every keyed op call of one training step of `model` (batch_size x samples, forward
    and backward) and, with `inference`, of coding batch 1 x 10 s and 4 x 1 s, and with `stream`,
    of a stream's frame. Runs on a copy; context() wraps the training step (the run's autocast).
    Returns the entries measured {key: entry}."""
    model = copy.deepcopy(model)
    device = model.quantizer.codebooks.device
    rate, hop = model.cfg.sample_rate, model.cfg.hop
    before = set(tuning.table())
    # Its own random inputs: the caller's random state (restored by a resume) does not move.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), tuning.measuring():
        torch.manual_seed(0)
        # The step's convs, forward and backward, and its search; without the quantizer's training
        # forward, whose codebook initialisation is a collective under torch.distributed.
        model.train()
        with context():
            out = model(0.1 * torch.randn(batch_size, 1, samples, device=device), quantize=False)
        out.audio.float().pow(2).mean().backward()
        z = out.quantizer.quantized.detach()
        model.quantizer.search(z.to(model.quantizer.codebooks.dtype).transpose(1, 2).reshape(-1, z.shape[1]))
        model.eval()
        with torch.no_grad():
            shapes = [(1, 10 * rate), (4, rate)] if inference else []
            for b, n in shapes:
                model.decode(model.encode(0.1 * torch.randn(b, 1, n, device=device)))
            if stream:  # what a stream's frame asks outside its native conv steps: the search and lookup
                z = model.encoder(0.1 * torch.randn(1, 1, hop, device=device))
                model.decode(model.encode(0.1 * torch.randn(1, 1, hop, device=device)))
                model.quantizer.encode(z)
    return {k: v for k, v in tuning.table().items() if k not in before}
