"""Training losses (the quality metrics they share with evaluation live in fastcodec.eval.metrics).

Adversarial terms take the critics' outputs: lists (one per sub-critic) of feature lists whose last
entry is the logits. Audio is [B, 1, T].
"""
from __future__ import annotations

import torch.nn.functional as F

from ..nn import full_precision


def _logits(outputs):
    return [feats[-1].float() for feats in outputs]


def critic_hinge_loss(real_outputs, fake_outputs):
    """Discriminator hinge loss: mean relu(1 - D(real)) + relu(1 + D(fake)), averaged over sub-critics."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(_logits(real_outputs), _logits(fake_outputs))]
    return sum(terms) / len(terms)


def generator_hinge_loss(fake_outputs):
    """The generator's adversarial loss: mean relu(1 - D(fake))."""
    terms = [F.relu(1 - f).mean() for f in _logits(fake_outputs)]
    return sum(terms) / len(terms)


def feature_matching_loss(real_outputs, fake_outputs):
    """L1 between the critics' features of real and reconstructed audio, each layer relative to the
    real features' mean magnitude (so wide and narrow layers weigh alike)."""
    terms = []
    for real_feats, fake_feats in zip(real_outputs, fake_outputs):
        for r, f in zip(real_feats[:-1], fake_feats[:-1]):
            r = r.detach().float()
            terms.append((r - f.float()).abs().mean() / (r.abs().mean() + 1e-6))
    return sum(terms) / len(terms)


def waveform_loss(estimate, reference, eps=1e-8):
    """L1 between waveforms relative to the reference's mean magnitude (scale-free, ~1 for silence
    out). The mel loss ignores phase; this term is what pulls the waveform, and SI-SDR, into line."""
    with full_precision():
        ref = reference.float()
        return (estimate.float() - ref).abs().mean() / (ref.abs().mean() + eps)


def stage_mean_loss(stages, audio, hop, eps=1e-8):
    """The original design's auxiliary loss: each decoder stage's channel mean should match the input
    average-pooled to that stage's rate (a coarse target that is learnable early in training).

    stages: decoder activations [B, C_i, F * r_i] (r_i = 1 after the input conv, hop after the last
    block); audio: [B, 1, T] with T <= F * hop (zero-padded to it). Mean over stages of the L1
    distance, relative to the input's mean magnitude (like waveform_loss, so its weight does not
    depend on how loud the data is).
    """
    frames = stages[0].shape[2]
    with full_precision():
        x = F.pad(audio.float(), (0, frames * hop - audio.shape[2]))
        scale = audio.float().abs().mean() + eps
        terms = []
        for h in stages:
            factor = frames * hop // h.shape[2]
            target = F.avg_pool1d(x, factor) if factor > 1 else x
            terms.append((h.float().mean(1, keepdim=True) - target).abs().mean() / scale)
    return sum(terms) / len(terms)
