"""`python -m fastcodec.train`: train a codec. With no arguments, the tiny preset on the built-in
demo set. `torchrun --nproc_per_node N -m fastcodec.train ...` trains data-parallel on N processes."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from ..nn import PRESETS, CodecConfig
from ..checkpoint import CheckpointError
from .config import TrainConfig
from .data import DataError
from .loop import Trainer, TrainingError


def _lost_peers(exc: RuntimeError) -> bool:
    """Whether exc is a collective that failed because another rank died or stalled past
    --dist-timeout. DDP's backward raises those as plain RuntimeErrors from gloo or NCCL, so the
    message is what tells them from a bug (which keeps its traceback)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    dist_error = getattr(torch.distributed, "DistError", ())
    return isinstance(exc, dist_error) or any(s in str(exc) for s in ("gloo", "NCCL", "Timed out", "timed out"))


# Flags whose value may differ from the saved run when resuming (they change how, not what, is trained).
_RESUMABLE = {"steps", "num_workers", "backend", "compile", "out", "device", "dist_timeout"}


def parser():
    # No abbreviations: --resume compares the flags given with the saved run's, and `--batch 4` must
    # be an error rather than a flag that slips past that comparison.
    p = argparse.ArgumentParser(prog="python -m fastcodec.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    d = TrainConfig()
    p.add_argument("--data", default=None, help="folder of audio files (.wav .flac .ogg .oga .mp3 .aif .aiff, "
                   "searched recursively); default: the built-in procedural demo set")
    p.add_argument("--preset", choices=sorted(PRESETS), default=d.preset)
    p.add_argument("--codec", nargs="+", type=_setting, default=None, metavar="FIELD=VALUE",
                   help="model settings replacing the preset's (fastcodec.nn.CodecConfig fields; values as JSON, "
                        "bare words as text), e.g. --codec channels=12 quantizer_dropout=0.5")
    p.add_argument("--steps", type=int, default=d.steps, help="the run's length; with --time-budget, the unit of "
                   "the step-based schedules (--warmup-steps, --vq-start, --disc-start), laid over the budget")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="train for this long (fractions allowed), the schedules laid over the time as measured by "
                        "the run's own clock; it ends with a decayed LR, an evaluation and a checkpoint")
    p.add_argument("--batch-size", type=int, default=None, help="per process (default: the preset's, 4 for tiny, "
                   "8 otherwise)")
    p.add_argument("--segment-seconds", type=float, default=d.segment_seconds, help="training crop length")
    p.add_argument("--lr", type=float, default=None, help="generator peak learning rate (default: the preset's, "
                   "2e-3 for tiny, 3e-4 otherwise)")
    p.add_argument("--disc-lr", type=float, default=d.disc_lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--disc-start", type=int, default=None, help="steps before the critics join; --steps or more: "
                   "never (default: the preset's, never for tiny, 500 otherwise)")
    p.add_argument("--vq-start", type=int, default=None, help="autoencoder steps before quantizing (default: "
                   "the preset's, 100 for tiny, 0 otherwise)")
    p.add_argument("--weights", type=json.loads, default=None,
                   help='loss weights as JSON, each a number or a curriculum [[progress, weight], ...], e.g. '
                        '\'{"aux": [[0, 1], [0.3, 0.1]], "feat": 2}\'')
    p.add_argument("--out", default=d.out, help="run folder (config, checkpoints, metrics, eval)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--backend", default=d.backend, choices=("auto", "torch", "cpp", "cuda", "triton"))
    p.add_argument("--compile", action="store_true", help="torch.compile the codec")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default=d.device,
                   help="auto: CUDA when a GPU is visible (under torchrun, the rank's LOCAL_RANK GPU)")
    p.add_argument("--amp", choices=("none", "bf16"), default=d.amp)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-workers", type=int, default=d.num_workers, help="data loading processes")
    p.add_argument("--dist-timeout", type=float, default=d.dist_timeout,
                   help="under torchrun: seconds a rank waits for the others (in a collective) before the run "
                        "fails with an error instead of hanging; rank 0's evaluation must fit in it")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _setting(text: str):
    """'field=value' -> (field, value), the value read as JSON when it parses (12, 0.5, [1, 3, 9])."""
    field, eq, raw = text.partition("=")
    if not eq or not field.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return field.strip(), value


def given_flags(argv) -> set:
    """The settings argv gives explicitly (as argparse parsed them, so `--lr=0.1` counts)."""
    p = parser()
    for action in p._actions:  # a parser that records only what argv sets
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def config_from_args(args, argv) -> TrainConfig:
    fields = {k: v for k, v in vars(args).items() if k not in ("resume", "no_progress")}
    if fields["weights"] is None:
        fields.pop("weights")
    if fields["codec"] is None:
        fields.pop("codec")
    else:
        fields["codec"] = dict(fields["codec"])
    if not args.resume:
        return TrainConfig(**fields)
    saved = Path(args.out) / "config.json"
    if not saved.exists():
        raise TrainingError(f"--resume: {saved} not found; is {args.out} a fastcodec run folder?")
    run = json.loads(saved.read_text())
    base = run["train"]
    if "codec" in run and base.get("preset") in PRESETS:
        # The saved model as overrides of its preset as this version defines it, so a run made
        # before a preset's defaults changed resumes with the model it was training.
        model, ours = CodecConfig.from_dict(run["codec"]), PRESETS[base["preset"]]
        base["codec"] = json.loads(json.dumps({f.name: getattr(model, f.name) for f in dataclasses.fields(model)
                                               if getattr(model, f.name) != getattr(ours, f.name)}))
    given = given_flags(argv)
    # Compared as the saved run holds them (a JSON round trip: tuples are lists there).
    changed = sorted(k for k in given & set(fields)
                     if k not in _RESUMABLE and json.loads(json.dumps(fields[k])) != base.get(k))
    if changed:
        raise TrainingError(f"--resume continues the saved run exactly; these flags differ from it: "
                            f"{', '.join('--' + c.replace('_', '-') for c in changed)} (see {saved})")
    base.update({k: fields[k] for k in given & _RESUMABLE})
    return TrainConfig.from_dict(base)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    trainer = None
    try:
        cfg = config_from_args(args, argv)
        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
        trainer.run()
    except (TrainingError, DataError, CheckpointError, ValueError) as exc:
        print(f"fastcodec.train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastcodec.train: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        if not _lost_peers(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        print(f"fastcodec.train: error: rank {os.environ.get('RANK', '0')}: the other ranks stopped answering "
              f"({first}); checkpoints already written are intact; --dist-timeout sets how long a rank waits",
              file=sys.stderr)
        return 1
    finally:
        # Under torchrun: tear the group down before exit, DDP wrappers first (left to interpreter
        # shutdown, torch 2.4's gloo aborted a rank now and then; dropped in the wrong order, a rank
        # hung). A Trainer that failed to build has torn its group down already.
        if trainer is not None:
            _close(trainer, sys.exc_info()[1])
    return 130 if trainer.interrupted else 0


def _close(trainer, exc):
    """trainer.close(exc); a failure here is reported, not allowed to replace the run's own outcome."""
    try:
        trainer.close(exc)
    except Exception as err:
        print(f"fastcodec.train: warning: tearing down the process group failed: {err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
