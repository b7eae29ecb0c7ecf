"""Residual vector quantizer with quantizer dropout and EMA codebooks.

Codes come from `fastcodec.ops.rvq_encode` (all stages in one fused search; in training
`ops.rvq_residuals`, which also returns each stage's residual) and decoding from `ops.rvq_decode`,
in the codebooks' dtype (fp32; also under autocast). Training adds:
- quantizer dropout: each example is coded with its own n_q in 1..Q (a fraction `quantizer_dropout`
  of them; the rest use all Q), so one model serves every bitrate. RVQ stage i never looks at later
  stages, so truncating the full-Q codes per example is exactly coding with fewer stages;
- straight-through gradients to the encoder and a commitment loss on every active stage;
- codebooks learned by EMA of their assigned residuals (not by gradients), initialised by k-means
  on the first training batch. A code no rank has chosen for `dead_code_patience` updates is dead
  and re-seeded with a residual from the batch: early in training the encoder's output moves faster
  than an EMA count decays, and codes it left behind would otherwise never be used again. The EMA step is applied
  by `update_codebooks()` after the optimizer step, so a step skipped for a non-finite loss leaves
  the codebooks untouched.

Shapes: z [B, D, F] (F frames), codes [B, n_q, F] int64.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import ops
from ..integers import is_int
from . import codebooks as vqt
from .config import CodecConfig
from .precision import full_precision


@dataclasses.dataclass
class QuantizerOutput:
    quantized: torch.Tensor           # [B, D, F], straight-through in training
    codes: torch.Tensor               # [B, n_q, F] int64 (all Q stages in training)
    n_q: torch.Tensor                 # [B] stages used per example
    commitment_loss: torch.Tensor     # scalar fp32 (0 outside training)
    code_counts: torch.Tensor | None  # [Q, K] assignments in this batch (active stages only)


class ResidualVQ(nn.Module):
    def __init__(self, cfg: CodecConfig, backend: str = "auto"):
        super().__init__()
        Q, K, D = cfg.n_q, cfg.codebook_size, cfg.code_dim
        self.cfg, self.backend = cfg, backend
        self.register_buffer("codebooks", torch.randn(Q, K, D))
        self.register_buffer("ema_counts", torch.ones(Q, K))
        self.register_buffer("ema_sums", self.codebooks.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_used", torch.zeros(Q, K, dtype=torch.long))  # update count when last chosen
        self._pending = None  # (residuals [N, Q, D], codes [N, Q], active [N, Q]) of the last training forward

    def check_n_q(self, n_q):
        """n_q, or all Q when None; a clear error unless 1 <= n_q <= Q."""
        if n_q is None:
            return self.cfg.n_q
        if not is_int(n_q) or not 1 <= n_q <= self.cfg.n_q:
            raise ValueError(f"n_q must be an int in 1..{self.cfg.n_q}, got {n_q!r}")
        return int(n_q)

    def _rows(self, z):
        """z [B, D, F] -> rows [B*F, D] in the codebooks' dtype (fp32 unless the model was made fp64)."""
        B, D, F = z.shape
        return z.detach().to(self.codebooks.dtype).transpose(1, 2).reshape(B * F, D)

    def encode(self, z, n_q=None):
        """z [B, D, F] -> codes [B, n_q, F] int64."""
        return self._encode(z, n_q)[0]

    def search(self, rows):
        """The training forward's search over every stage: rows [N, D] (detached, the codebooks'
        dtype) -> (codes [N, Q] int64, residuals [N, Q + 1, D]); see ops.rvq_residuals."""
        with full_precision():
            return ops.rvq_residuals(rows, self.codebooks, self.cfg.n_q, backend=self.backend)

    def _encode(self, z, n_q):
        """(codes [B, n_q, F], quantized [B, D, F] in the codebooks' dtype) from one fused search."""
        n_q = self.check_n_q(n_q)
        B, D, F = z.shape
        with full_precision():
            codes, q = ops.rvq_encode(self._rows(z), self.codebooks, n_q, backend=self.backend)
        return codes.view(B, F, n_q).transpose(1, 2), q.view(B, F, D).transpose(1, 2)

    def decode(self, codes):
        """codes [B, n_q, F] -> z [B, D, F] fp32."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, n_q, F], got shape {list(codes.shape)}")
        B, n_q, F = codes.shape
        self.check_n_q(n_q)
        with full_precision():
            rows = ops.rvq_decode(codes.transpose(1, 2).reshape(B * F, n_q), self.codebooks, backend=self.backend)
        return rows.view(B, F, -1).transpose(1, 2)

    def forward(self, z, n_q=None, generator=None):
        """Quantize z [B, D, F]. In training: quantizer dropout, straight-through, commitment loss, and
        the statistics `update_codebooks()` will apply. In eval: every example with n_q stages."""
        if not self.training:
            codes, q = self._encode(z, n_q)  # rvq_encode's quantized is rvq_decode(codes), bit for bit
            q = q.to(z.dtype)
            n = torch.full((z.shape[0],), codes.shape[1], dtype=torch.long, device=z.device)
            return QuantizerOutput(q, codes, n, z.new_zeros((), dtype=torch.float32), None)
        return self._train_forward(z, generator)

    def _train_forward(self, z, generator):
        cfg = self.cfg
        B, D, F = z.shape
        Q, K = cfg.n_q, cfg.codebook_size
        with full_precision():
            x = z.to(self.codebooks.dtype).transpose(1, 2).reshape(B * F, D)      # [N, D], keeps z's graph
            if not bool(self.initialized):
                self._kmeans_init(x.detach(), generator)
            # One search gives the codes and the residual each stage saw (res[:, i]) and left
            # (res[:, i + 1]): everything below, without gathering the codewords again.
            codes, res = self.search(x.detach())                                  # [N, Q], [N, Q+1, D]
            n_q = self._draw_n_q(B, z.device, generator)                          # [B]
            active = torch.arange(Q, device=z.device).view(1, Q) < n_q.view(B, 1)  # [B, Q]
            active = active.unsqueeze(1).expand(B, F, Q).reshape(B * F, Q)
            # Each example's quantized value: x less what its last active stage left.
            rows_n_q = n_q.view(B, 1).expand(B, F).reshape(B * F)
            q = x.detach() - res[torch.arange(B * F, device=x.device), rows_n_q]  # [N, D]
            # Commitment: every active stage's input (x less constant codewords) pulled toward its
            # codeword; the error it leaves is res[:, i + 1], given x's gradient here.
            after = res[:, 1:] + (x - x.detach()).unsqueeze(1)                   # [N, Q, D]
            err = after.pow(2).mean(2)                                            # [N, Q]
            commit = (err * active).sum() / active.sum().clamp(min=1)
            before = res[:, :Q]
            counts = torch.zeros(Q, K, device=x.device, dtype=x.dtype)
            counts.scatter_add_(1, codes.t(), active.t().to(x.dtype))
        self._pending = (before.detach(), codes, active)
        q = q.view(B, F, D).transpose(1, 2).to(z.dtype)
        codes = codes.view(B, F, Q).transpose(1, 2)
        return QuantizerOutput(vqt.straight_through(z, q), codes, n_q, commit, counts)

    def _draw_n_q(self, B, device, generator):
        Q = self.cfg.n_q
        n_q = torch.full((B,), Q, dtype=torch.long)
        drop = torch.rand(B, generator=generator) < self.cfg.quantizer_dropout
        n_q[drop] = torch.randint(1, Q + 1, (int(drop.sum()),), generator=generator)
        return n_q.to(device)

    @torch.no_grad()
    def _kmeans_init(self, x, generator):
        residual = x
        for i in range(self.cfg.n_q):
            cb = vqt.kmeans_init(residual, self.cfg.codebook_size, generator=generator)
            self.codebooks[i].copy_(cb)
            self.ema_sums[i].copy_(cb)
            self.ema_counts[i].fill_(1.0)
            idx, _ = ops.vq_nearest(residual, self.codebooks[i], backend=self.backend)
            residual = residual - self.codebooks[i][idx]
        self.initialized.fill_(True)

    def discard_pending(self):
        """Forget the last training forward's statistics (its step was skipped)."""
        self._pending = None

    @torch.no_grad()
    def update_codebooks(self, generator=None):
        """Apply the EMA step for the last training forward (all-reduced over ranks when distributed)
        and re-seed dead codes. Returns the number of codes re-seeded."""
        if self._pending is None:
            return 0
        before, codes, active = self._pending
        self._pending = None
        cfg = self.cfg
        replaced = 0
        self.updates += 1
        for i in range(cfg.n_q):
            rows = active[:, i]
            counts = vqt.ema_update(self.codebooks[i], self.ema_counts[i], self.ema_sums[i], before[rows, i],
                                    codes[rows, i], decay=cfg.ema_decay)
            self.last_used[i][counts > 0] = self.updates
            dead = self.updates - self.last_used[i] >= cfg.dead_code_patience
            if bool(dead.any()):
                replaced += vqt.replace_codes(self.codebooks[i], self.ema_counts[i], self.ema_sums[i],
                                              before[:, i], dead, generator=generator)
                self.last_used[i][dead] = self.updates  # a fresh code gets the same patience
        return replaced
