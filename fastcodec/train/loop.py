"""The training loop behind `python -m fastcodec.train`.

One step: the codec reconstructs a batch of crops (quantizer dropout draws each example's bitrate);
the generator loss is the weighted sum of multi-scale mel distance, commitment, the stage-mean
auxiliary loss and, once `disc_start` steps have passed, the critics' hinge and feature-matching
terms; then the critics take their hinge step on the same batch. Codebooks follow by EMA after the
generator's optimizer step. A step whose loss or gradient (the generator's or the critics') is not
finite changes nothing (weights, codebooks, EMA statistics, either optimizer) and is counted;
`max_bad_steps` in a row stop training.

Everything random in a step is seeded from (seed, rank, step), so `--resume` repeats exactly the
steps an uninterrupted run would take. Under torchrun every rank trains on its own data shard with
DDP; only rank 0 writes files. Output folder:
    config.json               codec and training settings (a run is rebuilt from it)
    checkpoints/stepNNNNNNN.pt  full training state (the newest `keep_checkpoints` are kept; each carries a
                              digest verified on every load, and --resume moves one that fails aside to
                              NAME.corrupt and falls back to the newest that verifies)
    codec.pt                  the newest model alone (codec config + weights), for inference
    metrics.csv, eval.csv     training and evaluation metrics (and tensorboard/ when installed)
    eval/                     spectrogram PNGs and decoded wav files of the held-out clips
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import hashlib
import inspect
import json
import os
import signal
import time
import traceback
from pathlib import Path

import torch

from ..nn import BackendUnavailable, SoundStream, resolve_backend, set_backend
from ..nn import tuning
from .. import checkpoint as ckpt
from .budget import Clock
from .config import TrainConfig, lr_factor
from .data import CropDataset, StepBatches, build_sources, eval_batch
from .discriminators import Critics
from ..eval.metrics import code_counts, codebook_usage, si_sdr
from ..eval.spectral import MultiScaleMel, mel_distance
from .losses import critic_hinge_loss, feature_matching_loss, generator_hinge_loss, stage_mean_loss, waveform_loss
from .report import CSVLog, spectrogram_png, tensorboard_writer, write_wav

TRAIN_COLUMNS = ["step", "elapsed_s", "progress", "lr", "loss", "mel", "wave", "commit", "aux", "adv", "feat", "disc",
                 "grad_norm", "audio_seconds_per_s", "bad_steps"]


class TrainingError(RuntimeError):
    """Training cannot start or had to stop; the message says why and what was kept."""


def _seed_for(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


class _Dist:
    """Rank, world size and device from torchrun's environment (a single process without it)."""

    def __init__(self, device="auto", timeout_s=1800.0):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("--device cuda: no GPU visible")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        self.active = self.world > 1
        self.owns_group = self.active and not torch.distributed.is_initialized()
        if self.owns_group:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            # An explicit timeout: a rank that died or hangs ends the others with an error naming the
            # collective, instead of a wait of gloo's default 30 min (or NCCL's 10).
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                                 timeout=datetime.timedelta(seconds=timeout_s))

    @property
    def main(self):
        return self.rank == 0

    def close(self):
        """Destroy the process group this object created (one a caller made stays theirs)."""
        if self.owns_group and torch.distributed.is_initialized():
            destroy_group()
        self.owns_group = False

    def same_on_all(self, value: int) -> bool:
        """Whether every rank holds the same integer."""
        if not self.active:
            return True
        t = torch.tensor([value, -value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t[0]) == value and int(-t[1]) == value

    def from_main(self, *values: float) -> tuple:
        """Rank 0's values, on every rank."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(t, 0)
        return tuple(t.tolist())

    def all_true(self, flag: bool) -> bool:
        """Whether flag holds on every rank (so all ranks take the same branch)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return bool(t.item())


def destroy_group(group=None):
    """torch.distributed.destroy_process_group(group) (default: the world group) such that the group's
    last reference is a binding that releases the GIL while it joins the gloo worker threads: its
    backend's (older torch's ProcessGroup binding keeps the GIL). Freed last by a DDP reducer, which
    keeps the GIL, the join can wait on a worker that needs the GIL to free a finished collective's
    tensors: a rank hung at exit. Drop DDP wrappers over the group first; for a group other than the
    world, the caller holds no other reference to it."""
    if group is None:
        group = torch.distributed.group.WORLD
    backends = []
    for device in ("cpu", "cuda"):
        with contextlib.suppress(RuntimeError, AttributeError):
            backends.append(group._get_backend(torch.device(device)))
    torch.distributed.destroy_process_group(group)
    del group
    backends.clear()  # the last references: each joins its workers with the GIL released


def _checkpoints(out: Path):
    return sorted((out / "checkpoints").glob("step*.pt"))


def prepare_out_dir(out: Path, resume: bool):
    """The run folder: a new run refuses one that already holds a run (nothing is overwritten);
    --resume needs one with a checkpoint, and gets them newest first."""
    existing = _checkpoints(out) if out.exists() else []
    if resume:
        if not existing:
            raise TrainingError(f"--resume: {out} holds no checkpoint (checkpoints/step*.pt) to resume from")
        return existing[::-1]
    if out.exists() and any((out / n).exists() for n in ("config.json", "checkpoints", "metrics.csv")):
        raise TrainingError(f"{out} already holds a training run; pass --resume to continue it or choose "
                            f"another --out")
    return None


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, log=print, progress: bool = True):
        self.cfg, self.log, self.progress = cfg, log, progress
        self.dist = _Dist(cfg.device, cfg.dist_timeout)
        try:
            self._build(cfg, resume)
        except BaseException as exc:  # a half-built trainer still tears down the group it made
            self.close(exc)
            raise

    def _build(self, cfg: TrainConfig, resume: bool):
        self.out = Path(cfg.out)
        resume_from = prepare_out_dir(self.out, resume)
        self.codec_cfg = cfg.codec_config()
        dev = self.dist.device
        try:  # a backend that cannot run here fails before any work
            resolve_backend(cfg.backend, torch.empty(0, device=dev))
        except BackendUnavailable as exc:
            raise TrainingError(f"--backend {cfg.backend}: {exc}") from None

        # Data first: a missing or empty folder is reported before a model is built. Rank 0 scans
        # (and caches the scan); the others wait for its verdict, so a bad folder ends every rank
        # instead of leaving them at a barrier.
        failure = None
        if self.dist.main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                self.train_src, self.held_src = build_sources(cfg, self.codec_cfg.sample_rate, self.out, self._say)
            except Exception as exc:
                failure = exc
        if not self.dist.all_true(failure is None):
            if failure is not None:
                raise failure
            raise TrainingError("rank 0 could not load the training data (its message says why)")
        if not self.dist.main:  # the scan is cached by now
            self.train_src, self.held_src = build_sources(cfg, self.codec_cfg.sample_rate, self.out, lambda *_: None)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = SoundStream(self.codec_cfg).to(dev)
        set_backend(self.model, cfg.backend)
        self.critics = Critics(cfg.wave_disc_width, cfg.stft_disc_width, cfg.stft_disc_windows).to(dev)
        self.critics.set_backend(cfg.backend)
        self.mel = MultiScaleMel(self.codec_cfg.sample_rate).to(dev)
        self.opt_g = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                       weight_decay=cfg.weight_decay)
        self.opt_d = torch.optim.AdamW(self.critics.parameters(), lr=cfg.disc_lr, betas=cfg.betas,
                                       weight_decay=cfg.weight_decay)
        self.step, self.bad_streak = 0, 0
        self.clock = Clock(cfg.steps, None if cfg.time_budget is None else 60.0 * cfg.time_budget)
        if resume_from is not None:
            self._resume(resume_from)
        self.segment = int(round(cfg.segment_seconds * self.codec_cfg.sample_rate))
        if self.dist.active and tuning.enabled():
            # Ranks do not time calls on their own (it would need a collective at every call site):
            # rank 0 measures a training step's shapes on a copy of the model, and every rank takes its table.
            if self.dist.main:
                try:  # a failure here must not leave the other ranks waiting in share()
                    tuning.tune_model(self.model, cfg.batch_size, self.segment, inference=False, stream=False,
                                      context=self._autocast)
                except Exception as exc:
                    self._say(f"warning: tuning the training step's shapes failed ({type(exc).__name__}: {exc}); "
                              f"the ranks use the static rules for the shapes it did not reach")
            tuning.share()

        if cfg.compile:
            # The convs compile into one graph each; the quantizer (k-means on its first batch, EMA
            # statistics, autocast switched off) stays eager. In place, so state_dict keys do not change.
            self.model.encoder.compile()
            self.model.decoder.compile()
        self.gen, self.crit = self.model, self.critics
        if self.dist.active:
            ddp = torch.nn.parallel.DistributedDataParallel
            ids = [dev.index] if dev.type == "cuda" else None
            # Codebooks are buffers kept identical by the quantizer's own all-reduce, not broadcast
            # at every forward. (torch 2.14 renamed the switch; at init all ranks are identical anyway.)
            no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                       else {"broadcast_buffers": False})
            self.gen = ddp(self.model, device_ids=ids, **no_sync)
            self.crit = ddp(self.critics, device_ids=ids, **no_sync)
        self._stop_requested = False
        self.interrupted = False  # set when a Ctrl-C ended the run early (after its checkpoint)

    def _model_name(self) -> str:
        """The preset and its --codec overrides, as the command line gives them (one word each)."""
        extra = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in self.cfg.codec.items())
        return f"--preset {self.cfg.preset}" + (f" --codec {extra}" if extra else "")

    def close(self, exc: BaseException | None = None):
        """Drop the DDP wrappers (their reducers hold the process group), then destroy the group
        if this trainer created it. The trainer can still be read but not run after this.
        exc: an exception escaping the run; the locals of the frames it passed through (a DDP
        forward's `self` among them) are cleared first, so none keeps a reducer alive."""
        if exc is not None:
            traceback.clear_frames(exc.__traceback__)
        self.gen, self.crit = getattr(self, "model", None), getattr(self, "critics", None)
        gc.collect()  # a wrapper in a reference cycle would otherwise free its reducer later, anywhere
        self.dist.close()

    # ---- output -------------------------------------------------------------------------------
    def _say(self, msg):
        if self.dist.main:
            self.log(msg)

    def _state(self):
        return {
            "step": self.step,
            "bad_streak": self.bad_streak,
            "codec_config": self.codec_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "critics": self.critics.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "clock": self.clock.state(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def save_checkpoint(self):
        if self.dist.active:
            self._check_replicas()
        if not self.dist.main:
            return
        folder = self.out / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step{self.step:07d}.pt"
        ckpt.save(path, self._state())
        ckpt.save(self.out / "codec.pt", {"step": self.step, "codec_config": self.codec_cfg.to_dict(),
                                          "model": self.model.state_dict()})
        # Older checkpoints go only once the new one reads back and verifies, so the newest
        # checkpoint that verifies is never the one deleted.
        try:
            ckpt.load(path)
        except ckpt.CheckpointError as exc:
            self._say(f"warning: the checkpoint just written does not verify ({exc}); older checkpoints are kept")
            return path
        for old in _checkpoints(self.out)[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def newest_verified_checkpoint(self):
        """(path, step) of the newest checkpoint in the run folder that loads and verifies, else None."""
        for path in _checkpoints(self.out)[::-1]:
            try:
                return path, int(ckpt.load(path)["step"])
            except (ckpt.CheckpointError, KeyError, TypeError, ValueError):
                continue
        return None

    def _check_replicas(self):
        fp = ckpt.state_sha256(self.model, self.critics)
        prints = [None] * self.dist.world
        torch.distributed.all_gather_object(prints, fp)
        if self.dist.main:
            record = {"step": self.step, "fingerprints": prints, "identical": len(set(prints)) == 1}
            (self.out / "replicas.json").write_text(json.dumps(record, indent=1))
        if len(set(prints)) != 1:
            raise TrainingError(f"replicas diverged at step {self.step}: parameter fingerprints {prints}")

    def _resume(self, candidates):
        """Load the newest of `candidates` (newest first) that verifies; each newer one that does not
        is named, and moved aside (to NAME.corrupt) so that neither rotation nor the next --resume
        takes it for a checkpoint."""
        failed, state = [], None
        for path in candidates:
            try:
                state = ckpt.load(path)
                ckpt.check_finite(path, state, "model", "critics", "opt_g", "opt_d")
                break
            except ckpt.CheckpointError as exc:
                if not exc.damaged:  # unreadable now, foreign or too new: not ours to move aside
                    raise TrainingError(f"--resume: {exc}; nothing was changed") from None
                failed.append(path)
                self._say(f"warning: {exc}")
                state = None
        if state is None:
            raise TrainingError(f"--resume: none of the {len(candidates)} checkpoints in {self.out / 'checkpoints'} "
                                f"verifies (each is named above); nothing was changed")
        path = candidates[len(failed)]
        if not self.dist.same_on_all(int(state["step"])):
            raise TrainingError(f"--resume: the ranks found different newest intact checkpoints in "
                                f"{self.out / 'checkpoints'}; is the folder shared by every rank?")
        if state["codec_config"] != self.codec_cfg.to_dict():
            raise TrainingError(f"{path} was trained with another model configuration than {self._model_name()}")
        if self.dist.main:
            for bad in failed:
                aside = bad.with_name(bad.name + ".corrupt")
                bad.rename(aside)
                self._say(f"warning: {bad.name} is damaged (said above): moved aside to {aside.name}; resuming from "
                          f"{path.name}, the newest checkpoint that verifies (training repeats the steps after it)")
        self.model.load_state_dict(state["model"])
        self.critics.load_state_dict(state["critics"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["rng_cpu"])
        if torch.cuda.is_available() and len(state["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.step, self.bad_streak = int(state["step"]), int(state["bad_streak"])
        self.clock = Clock.from_state(self.cfg.steps, self.clock.budget_s, state.get("clock"))
        self._say(f"resumed from {path} at step {self.step} ({ckpt.verified(state)})")

    # ---- one step ---------------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.amp == "bf16":
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, x, position: float | None = None):
        """One generator (and critic) step on x [B, 1, T]; returns the metrics row. position: the
        step the schedules read (budget.Clock.position; default: this step)."""
        cfg, step = self.cfg, self.step
        pos = step if position is None else position
        gen_rng = torch.Generator().manual_seed(_seed_for(cfg.seed, self.dist.rank, step, "quantizer"))
        w = {name: cfg.weight(name, pos) for name in cfg.weights}
        critics_on = pos >= cfg.disc_start and (w["adv"] > 0 or w["feat"] > 0)
        # The learning rate is a function of the step (warmup, then cosine), so resuming needs no scheduler state.
        factor = lr_factor(pos, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        row = {"step": step + 1, "lr": cfg.lr * factor}

        quantize = pos >= cfg.vq_start
        q = self.model.quantizer
        before_init = ({k: v.clone() for k, v in q.state_dict().items()} if quantize and not bool(q.initialized)
                       else None)
        self.critics.requires_grad_(False)  # the generator step needs no critic weight gradients
        with self._autocast():
            out = self.gen(x, return_stages=w["aux"] > 0, generator=gen_rng, quantize=quantize)
            y = out.audio
            terms = {"mel": mel_distance(self.mel(y), self.mel(x)), "wave": waveform_loss(y, x),
                     "commit": out.quantizer.commitment_loss}
            if w["aux"] > 0:
                terms["aux"] = stage_mean_loss(out.stages, x, self.codec_cfg.hop)
            if critics_on:
                # The critics see the real batch once per step: these features are the feature-matching
                # targets now (detached there) and, with their graph kept, the critics' real half below,
                # since the critics' weights do not change in between.
                self.critics.requires_grad_(True)
                real = self.critics(x)
                self.critics.requires_grad_(False)
                fake = self.critics(y)
                terms["adv"] = generator_hinge_loss(fake)
                terms["feat"] = feature_matching_loss(real, fake)
        loss = sum(w[k] * v.float() for k, v in terms.items())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        row.update({k: float(v.detach()) for k, v in terms.items()}, loss=float(loss.detach()), grad_norm=float(gnorm))
        checked = [loss, gnorm]
        if critics_on:
            self.critics.requires_grad_(True)
            with self._autocast():
                # Through the DDP wrapper, so the critics' gradients are all-reduced; the real half's graph
                # was built outside it, which is fine: DDP's hooks sit on the weights, fired once per backward.
                d_loss = critic_hinge_loss(real, self.crit(y.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            dnorm = torch.nn.utils.clip_grad_norm_(self.critics.parameters(), cfg.grad_clip)
            checked += [d_loss, dnorm]
            row["disc"] = float(d_loss.detach())
        # A step is taken whole or not at all, on every rank alike: nothing (weights, codebooks,
        # EMA statistics, either optimizer) moves unless every loss and gradient norm is finite.
        ok = self.dist.all_true(all(bool(torch.isfinite(v)) for v in checked))
        if ok:
            for opt, base in ((self.opt_g, cfg.lr), (self.opt_d, cfg.disc_lr)):
                for group in opt.param_groups:
                    group["lr"] = base * factor
            self.opt_g.step()
            if quantize:
                self.model.quantizer.update_codebooks(generator=gen_rng)
            if critics_on:
                self.opt_d.step()
        else:
            self.model.quantizer.discard_pending()
            if before_init is not None:  # this step's forward ran the k-means initialisation
                self.model.quantizer.load_state_dict(before_init)
        self.step += 1
        if ok:
            self.bad_streak = 0
        else:
            self.bad_streak += 1
            self._say(f"step {self.step}: non-finite loss or gradient (loss {row['loss']:.4g}, grad norm "
                      f"{row['grad_norm']:.4g}" + (f", critic loss {row['disc']:.4g}" if "disc" in row else "")
                      + f"); step skipped, weights, codebooks and optimizer states unchanged "
                        f"({self.bad_streak} in a row)")
        row["bad_steps"] = self.bad_streak
        return row

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x, eval_log, tb):
        """Held-out metrics at several bitrates, codebook usage per stage, a spectrogram PNG and
        decoded wav files. x: [N, 1, T] fixed held-out crops."""
        model, Q = self.model, self.codec_cfg.n_q
        was_training = model.training
        model.eval()
        row = {"step": self.step, "elapsed_s": self.clock.elapsed_s}
        folder = self.out / "eval"
        folder.mkdir(exist_ok=True)
        try:
            for n in sorted({1, max(1, Q // 2), Q}):
                out = model(x, n_q=n)
                row[f"si_sdr_nq{n}"] = float(si_sdr(out.audio, x).mean())
                row[f"mel_nq{n}"] = float(mel_distance(self.mel(out.audio), self.mel(x)))
            perplexity, dead = codebook_usage(code_counts(out.quantizer.codes, self.codec_cfg.codebook_size))
            for i in range(Q):
                row[f"perplexity_q{i + 1}"] = float(perplexity[i])
                row[f"dead_pct_q{i + 1}"] = 100.0 * float(dead[i])
            sr = self.codec_cfg.sample_rate
            window = torch.hann_window(512, device=x.device)
            panels = [torch.stft(a[0, 0].float(), 512, 128, window=window, return_complex=True).abs().cpu().numpy()
                      for a in (x, out.audio)]
            spectrogram_png(folder / f"step{self.step:07d}.png", panels)
            for i in range(min(3, x.shape[0])):
                ref = folder / f"clip{i}_input.wav"
                if not ref.exists():
                    write_wav(ref, x[i, 0].cpu().numpy(), sr)
                write_wav(folder / f"step{self.step:07d}_clip{i}.wav", out.audio[i, 0].float().cpu().numpy(), sr)
        finally:
            model.train(was_training)
        eval_log.write(row)
        if tb is not None:
            for k, v in row.items():
                if k != "step":
                    tb.add_scalar(f"eval/{k}", v, self.step)
        return row

    def eval_columns(self):
        Q = self.codec_cfg.n_q
        cols = ["step", "elapsed_s"]
        for n in sorted({1, max(1, Q // 2), Q}):
            cols += [f"si_sdr_nq{n}", f"mel_nq{n}"]
        cols += [f"perplexity_q{i + 1}" for i in range(Q)] + [f"dead_pct_q{i + 1}" for i in range(Q)]
        return cols

    # ---- the loop ---------------------------------------------------------------------------
    def _on_sigint(self, signum, frame):
        # First Ctrl-C: finish the step, checkpoint, stop. A second one interrupts at once.
        self._stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def run(self):
        cfg, dist, clock = self.cfg, self.dist, self.clock
        timed = clock.budget_s is not None
        if timed and dist.from_main(float(clock.spent()))[0]:
            self._say(f"this run has used its {cfg.time_budget:g} min budget already (step {self.step}): nothing to do")
            return {}
        resume_step = self.step if self.step else None
        if dist.main:
            (self.out / "config.json").write_text(json.dumps(
                {"codec": self.codec_cfg.to_dict(), "train": cfg.to_dict()}, indent=1))
            train_log = CSVLog(self.out / "metrics.csv", TRAIN_COLUMNS, resume_step)
            eval_log = CSVLog(self.out / "eval.csv", self.eval_columns(), resume_step)
            tb = tensorboard_writer(self.out / "tensorboard")
            x_eval = eval_batch(self.held_src, cfg.eval_clips,
                                int(round(cfg.eval_seconds * self.codec_cfg.sample_rate)), cfg.seed).to(dist.device)
        batches = StepBatches(len(self.train_src), cfg.batch_size, cfg.seed, start_step=self.step, rank=dist.rank,
                              world=dist.world, steps=None if timed else cfg.steps)
        loader = torch.utils.data.DataLoader(CropDataset(self.train_src, self.segment), batch_sampler=batches,
                                             num_workers=cfg.num_workers, pin_memory=dist.device.type == "cuda",
                                             persistent_workers=cfg.num_workers > 0,
                                             # its own generator: the loader's worker seeds must not
                                             # draw from the global RNG that checkpoints carry
                                             generator=torch.Generator().manual_seed(cfg.seed))
        name = self._model_name()[len("--preset "):]
        self._say(f"training {name} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters, "
                  f"{self.codec_cfg.bitrate() / 1000:.2f} kbps at n_q={self.codec_cfg.n_q}) on {dist.device} "
                  f"x{dist.world}, data: {self.train_src.describe()}"
                  + (f", for {cfg.time_budget:g} min" + (f" ({clock.elapsed_s / 60:.3g} spent)" if self.step else "")
                     if timed else "") + f"; writing to {self.out}")
        last_row, audio_done, last, stopped = {}, 0.0, False, False
        bar = _progress(None if timed else cfg.steps, self.step, enabled=dist.main, live=self.progress)
        previous = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        clock.start()
        tic, step_tic = time.perf_counter(), clock.now()
        # With a budget, rank 0's clock decides for every rank where the schedules stand and when
        # the run ends (the ranks must agree on both).
        try:
            for x in loader:
                if not dist.all_true(not self._stop_requested):  # Ctrl-C on any rank stops every rank
                    stopped = True
                    break
                x = x.to(dist.device, non_blocking=True)
                position = dist.from_main(clock.position(self.step))[0] if timed else None
                row = self.train_step(x, position)
                clock.took_step(clock.now() - step_tic)
                if self.bad_streak >= cfg.max_bad_steps:
                    newest = self.newest_verified_checkpoint() if dist.main else None
                    kept = (f"the newest checkpoint that verifies is {newest[0]} (step {newest[1]})" if newest else
                            f"no checkpoint in {self.out / 'checkpoints'} verifies")
                    raise TrainingError(
                        f"training stopped at step {self.step}: {self.bad_streak} steps in a row had a non-finite "
                        f"loss or gradient. They changed no weight; {kept}. Try a lower --lr, --amp none, or "
                        f"check the data.")
                audio_done += x.shape[0] * x.shape[2] * dist.world / self.codec_cfg.sample_rate
                eval_due = dist.main and self.step % cfg.eval_every == 0
                ckpt_due = self.step % cfg.checkpoint_every == 0
                if timed:
                    due = ("eval",) * eval_due + ("checkpoint",) * ckpt_due
                    last = bool(dist.from_main(float(clock.done(self.step, due)))[0])
                    clock.finished = last  # rank 0's verdict, which other ranks' checkpoints carry too
                else:
                    last = clock.done(self.step)
                row.update(elapsed_s=clock.elapsed_s, progress=clock.progress(self.step))
                if self.step % cfg.log_every == 0 or last:
                    now = time.perf_counter()
                    row["audio_seconds_per_s"] = audio_done / max(now - tic, 1e-9)
                    tic, audio_done = now, 0.0
                    if dist.main:
                        train_log.write(row)
                        if tb is not None:
                            for k, v in row.items():
                                if k != "step" and isinstance(v, float):
                                    tb.add_scalar(f"train/{k}", v, self.step)
                    last_row = row
                bar.update(row)
                if dist.main and (eval_due or last):
                    t = clock.now()
                    ev = self.evaluate(x_eval, eval_log, tb)
                    bar.write(_eval_line(ev, self.codec_cfg.n_q))
                    clock.took_final_work("eval", clock.now() - t)
                if ckpt_due or last:
                    t = clock.now()
                    self.save_checkpoint()
                    clock.took_final_work("checkpoint", clock.now() - t)
                step_tic = clock.now()  # a step's time: its data and its step, not evaluations or checkpoints
                if last:
                    break
            if stopped:
                self.interrupted = True
                self.save_checkpoint()
                self._say(f"interrupted: checkpoint saved at step {self.step}; continue with --resume")
        finally:
            bar.close()
            if dist.main and tb is not None:
                tb.close()  # its writer thread flushes only every 2 min: events must not wait for GC
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return last_row


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


def _eval_line(row, Q):
    return (f"eval step {row['step']}: SI-SDR {row[f'si_sdr_nq{Q}']:.2f} dB, mel {row[f'mel_nq{Q}']:.3f} "
            f"(n_q={Q}); perplexity " + "/".join(f"{row[f'perplexity_q{i + 1}']:.0f}" for i in range(Q)))


class _progress:
    """tqdm when installed and `live` (a bar with losses and throughput), else a line per log interval."""

    def __init__(self, total, initial, enabled, live=True):
        self.enabled, self.bar = enabled, None
        if enabled and live:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, unit="step")
            except ImportError:
                pass

    def update(self, row):
        if not self.enabled:
            return
        keys = ("loss", "mel", "adv", "disc", "audio_seconds_per_s")
        post = {("x_realtime" if k == "audio_seconds_per_s" else k): f"{row[k]:.3g}" for k in keys if k in row}
        if self.bar is not None:
            self.bar.update(1)
            if "audio_seconds_per_s" in row:
                self.bar.set_postfix(post, refresh=False)
        elif "audio_seconds_per_s" in row:
            print(f"step {row['step']}: " + ", ".join(f"{k} {v}" for k, v in post.items()), flush=True)

    def write(self, msg):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(cfg: TrainConfig, resume: bool = False, log=print, progress: bool = True) -> dict:
    """Train (or continue) a run; returns the last logged metrics row."""
    trainer = Trainer(cfg, resume=resume, log=log, progress=progress)
    try:
        result = trainer.run()
    except BaseException as exc:
        trainer.close(exc)
        raise
    trainer.close()
    return result

