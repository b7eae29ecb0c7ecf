"""`python -m fastcodec.eval CHECKPOINT AUDIO_DIR`: how good a trained codec is on real audio.

Every file is coded at full depth and decoded at each number of stages (--n-q; default all), then
scored against its input: SI-SDR, multi-scale mel distance, STOI, wide-band PESQ (speech
categories only) and codebook usage per stage. Writes to --out: files.csv (per file and bitrate),
summary.csv and summary.md (means per category and bitrate), usage.csv, quality.png.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fastcodec import interrupt

PROG = "python -m fastcodec.eval"


def _n_qs(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected stage counts like 1,3,6, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one stage count")
    return values


def _metrics(text: str):
    from .scoring import METRICS

    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in METRICS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown metrics {bad}; known: {','.join(METRICS)}")
    return values


def _seconds(text: str):
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return v


def parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("checkpoint", help="a training run's codec.pt or one of its checkpoints")
    p.add_argument("audio_dir", help="folder of audio files (searched recursively); categories from its "
                   "manifest.csv or else from the first folder name under it")
    p.add_argument("--n-q", type=_n_qs, default=None, help="stage counts to score, e.g. 1,3,6 (default: every one)")
    p.add_argument("--out", default=None, help="output folder (default: quality-AUDIO_DIR beside the checkpoint)")
    p.add_argument("--manifest", default=None, help="a CSV with path and category columns, paths relative to "
                   "its folder (default: AUDIO_DIR/manifest.csv when there is one)")
    p.add_argument("--speech", nargs="+", default=["speech*"], metavar="PATTERN",
                   help="categories that hold speech (shell patterns): PESQ is scored on them")
    p.add_argument("--metrics", type=_metrics, default=None,
                   help="of si_sdr,mel,stoi,pesq (default: all of them that are installed)")
    p.add_argument("--max-seconds", type=_seconds, default=30.0, help="score at most this much of each file, "
                   "from its start (0: whole files)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "cpp", "cuda", "triton"))
    return p


def main(argv=None) -> int:
    interrupt.install(PROG)
    import torch  # noqa: F401  (before the command, where Ctrl-C is handled)

    args = parser().parse_args(argv)
    interrupt.unwind_from_here()
    try:
        rc = run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        rc = interrupt.INTERRUPTED
    return interrupt.exit_status(rc)


def _fail(msg) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 1


def run(args) -> int:
    from ..checkpoint import CheckpointError
    from ..codec import Codec
    from ..codec.errors import AudioError
    from ..nn import BackendUnavailable
    from . import metrics as m
    from . import report
    from .scoring import METRICS, EvalError, Scorer, find_items, speech_categories, summarize

    try:
        items = find_items(args.audio_dir, args.manifest)
        codec = Codec.load(args.checkpoint, device=args.device, backend=args.backend)
    except (EvalError, CheckpointError, BackendUnavailable) as exc:
        return _fail(exc)
    except (RuntimeError, ValueError) as exc:  # e.g. an unknown --device
        return _fail(f"cannot load {args.checkpoint} on {args.device}: {exc}")
    metrics = list(args.metrics or METRICS)
    for k in ("stoi", "pesq"):
        if k not in metrics:
            continue
        try:
            m.require(k)
        except m.MetricUnavailable as exc:
            if args.metrics:  # asked for by name: an error, not a silent omission
                return _fail(exc)
            print(f"{PROG}: note: {k.upper()} not scored: {exc}", file=sys.stderr)
            metrics.remove(k)
    Q = codec.cfg.n_q
    n_qs = args.n_q or list(range(1, Q + 1))
    bad = [n for n in n_qs if not 1 <= n <= Q]
    if bad:
        return _fail(f"--n-q {bad}: this codec has {Q} stages (1..{Q})")
    speech = speech_categories({it.category for it in items}, args.speech)
    if "pesq" in metrics and not speech:
        print(f"{PROG}: note: no category matches --speech {' '.join(args.speech)}: PESQ not scored",
              file=sys.stderr)
    ckpt, audio_dir = Path(args.checkpoint), Path(args.audio_dir)
    out = Path(args.out) if args.out else ckpt.parent / f"quality-{audio_dir.resolve().name}"
    try:  # before minutes of scoring, not after
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"--out {out}: cannot create the folder ({exc.strerror or exc})")
    if not os.access(out, os.W_OK):
        return _fail(f"--out {out}: not writable")

    scorer = Scorer(codec, n_qs, metrics, args.max_seconds or None)
    rows, counts, skipped = [], {}, []
    tic = time.perf_counter()
    for i, it in enumerate(items, start=1):
        try:
            file_rows, c = scorer.score(audio_dir / it.path, it, it.category in speech)
        except AudioError as exc:
            print(f"{PROG}: warning: skipping {exc}", file=sys.stderr)
            skipped.append(it.path)
            continue
        rows += file_rows
        counts[it.category] = counts[it.category] + c if it.category in counts else c
        top = file_rows[-1]
        print(f"[{i}/{len(items)}] {it.path}: n_q={top['n_q']} " + ", ".join(
            f"{k} {top[k]:.3f}" for k in metrics if k in top), flush=True)
    if not rows:
        return _fail(f"none of the {len(items)} files in {audio_dir} could be scored (each is named above)")
    summary, usage = summarize(rows, counts)
    header = [f"# Codec quality: {ckpt} on {audio_dir}", "",
              f"Model: {codec.cfg.sample_rate} Hz, {Q} stages of {codec.cfg.codebook_size} codes, "
              f"{codec.bitrate(1) / 1000:.2f} kbps per stage; model {codec.fingerprint}. "
              f"{len(items) - len(skipped)} files scored"
              + (f", {len(skipped)} skipped (unreadable or too short; each named when scored)" if skipped else "")
              + (f"; at most the first {args.max_seconds:g} s of each" if args.max_seconds else "")
              + (f"; PESQ-wb on {', '.join(sorted(speech)) or 'no category'}" if "pesq" in metrics else "")
              + f". Scored in {time.perf_counter() - tic:.0f} s."]
    try:
        why_not = _write(out, rows, summary, usage, metrics, header, f"{ckpt.parent.name}/{ckpt.name} on "
                         f"{audio_dir.resolve().name}")
    except OSError as exc:
        return _fail(f"writing to {out} failed ({exc})")
    print(report.markdown(summary, usage, metrics, header))
    print(f"wrote {out}/: files.csv, summary.csv, summary.md, usage.csv" + ("" if why_not else ", quality.png"))
    return 0


def _write(out, rows, summary, usage, metrics, header, title):
    """The report files; returns why quality.png was not written, or None."""
    from . import report
    from .scoring import FILE_COLUMNS, METRICS

    report.write_csv(out / "files.csv", rows, FILE_COLUMNS)
    summary_cols = ["category", "n_q", "kbps", "files", "seconds"] + [c for k in METRICS for c in (k, f"{k}_files")]
    report.write_csv(out / "summary.csv", summary, summary_cols)
    report.write_csv(out / "usage.csv", usage, ["category", "stage", "perplexity", "dead_pct"])
    report.write_text(out / "summary.md", report.markdown(summary, usage, metrics, header))
    why_not = report.plot_png(out / "quality.png", summary, metrics, title)
    if why_not:
        print(f"{PROG}: note: no quality.png: {why_not}", file=sys.stderr)
    return why_not


if __name__ == "__main__":
    sys.exit(main())
