"""The command line: `python -m fastcodec {encode,decode,encode-dir,tune,info}` (and the `fastcodec` script).

Errors a user can fix (a bad file, a wrong argument, another model's codes) print one line and
exit 1; argument mistakes exit 2; Ctrl-C exits 130. Nothing is written under an output's name
unless its whole operation succeeded.

Decoding needs the model that encoded: `--checkpoint`, or else the checkpoint this machine last
encoded with under the file's model fingerprint (kept in $FASTCODEC_CACHE_DIR/models.json, by
default ~/.cache/fastcodec), so `fastcodec decode x.fcdc x.wav` works after `fastcodec encode`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from ..atomic import check_outputs
from ..audio_files import AUDIO_SUFFIXES, audio_files
from .errors import AudioError, FormatError


class CLIError(Exception):
    """A one-line error for the user."""


# ---------------------------------------------------------------- the known-models registry
def _registry_path() -> Path:
    root = os.environ.get("FASTCODEC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastcodec")
    return Path(root) / "models.json"


def _warn(msg):
    print(f"fastcodec: warning: {msg}", file=sys.stderr)


def _read_registry(quiet=False) -> dict:
    """{fingerprint: checkpoint path} from the registry; a file that cannot be read or parsed, and
    each entry that is not a fingerprint naming a path, is skipped with a one-line warning."""
    path = _registry_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if not quiet:
            _warn(f"{path}: ignored, not a readable models list ({type(exc).__name__}: {str(exc)[:120]})")
        return {}
    if not isinstance(data, dict):
        if not quiet:
            _warn(f"{path}: ignored, not a models list (a JSON object of fingerprint: checkpoint path)")
        return {}
    good = {}
    for fp, ckpt in data.items():
        if re.fullmatch(r"[0-9a-f]{16}", fp) and isinstance(ckpt, str) and ckpt:
            good[fp] = ckpt
        elif not quiet:
            _warn(f"{path}: entry {fp!r}: {ckpt!r} skipped (expected 16 hex digits: a checkpoint path)")
    return good


def remember_model(fingerprint: str, checkpoint) -> None:
    """Note which checkpoint has this fingerprint; best effort (a read-only home, or a registry path
    that is not a writable file, is no error)."""
    from ..atomic import OutputBusy
    from ..checkpoint import atomic_write

    reg = _read_registry(quiet=True)
    path = str(Path(checkpoint).resolve())
    if reg.get(fingerprint) == path:
        return
    reg[fingerprint] = path
    try:
        _registry_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write(_registry_path(), lambda f: f.write(json.dumps(reg, indent=1).encode()))
    except OutputBusy:  # another fastcodec is updating it now; the next encode notes this model
        pass
    except (OSError, ValueError) as exc:
        _warn(f"could not note model {fingerprint} in {_registry_path()} ({str(exc)[:160]}); decoding its files "
              f"will need --checkpoint")


def _load_codec(checkpoint, backend, fingerprint=None, for_file=None):
    from ..nn import BackendUnavailable
    from ..checkpoint import CheckpointError
    from .api import Codec

    known = checkpoint is None
    if known:
        checkpoint = _read_registry().get(fingerprint)
        if checkpoint is None or not Path(checkpoint).is_file():
            raise CLIError(f"{for_file}: made by model {fingerprint}, whose checkpoint this machine does not know; "
                           f"pass --checkpoint")
    try:
        codec = Codec.load(checkpoint, backend=backend)
    except (CheckpointError, BackendUnavailable) as exc:
        raise CLIError(str(exc) + (f" (the checkpoint {_registry_path()} lists for model {fingerprint}; pass "
                                   f"--checkpoint)" if known else "")) from None
    if known and codec.fingerprint != fingerprint:
        raise CLIError(f"{for_file}: made by model {fingerprint}, but {checkpoint} (which {_registry_path()} lists "
                       f"for it) is now model {codec.fingerprint}; pass --checkpoint")
    remember_model(codec.fingerprint, checkpoint)
    return codec


def _n_q(codec, args):
    if args.bitrate is not None:
        return codec.n_q_for_bitrate(args.bitrate)
    return codec._n_q(args.n_q)


# ---------------------------------------------------------------- commands
def cmd_encode(args):
    check_outputs([args.input, args.checkpoint], [args.output, args.npy])
    codec = _load_codec(args.checkpoint, args.backend)
    n_q = _n_q(codec, args)
    h = codec.encode_file(args.input, args.output, n_q, npy=args.npy)
    size = Path(args.output).stat().st_size
    print(f"{args.output}: {h.duration:.2f} s, {h.channels} ch, {n_q} stages = {codec.bitrate(n_q) / 1000:g} kbps "
          f"per channel, {size} bytes (model {h.fingerprint})")
    return 0


def cmd_decode(args):
    from . import format as fcdc

    check_outputs([args.input, args.checkpoint], [args.output])
    header = fcdc.read_header(args.input)
    codec = _load_codec(args.checkpoint, args.backend, header.fingerprint, args.input)
    rate = codec.sample_rate if args.model_rate else args.sample_rate
    n, rate = codec.decode_file(args.input, args.output, start=args.start, duration=args.duration,
                                sample_rate=rate, subtype=args.subtype)
    print(f"{args.output}: {n / rate:.2f} s at {rate} Hz, {header.channels} ch")
    return 0


def _targets(src: Path, dst: Path):
    """[(audio file, .fcdc path)] for every audio file under src, mirrored under dst."""
    if not src.is_dir():
        raise CLIError(f"{src}: not a folder")
    files = audio_files(src)
    if not files:
        raise CLIError(f"{src}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in it or below it")
    out, seen = [], {}
    for p in files:
        q = dst / p.relative_to(src).with_suffix(".fcdc")
        if q in seen:
            raise CLIError(f"{p} and {seen[q]} would both be coded to {q}; rename one")
        seen[q] = p
        out.append((p, q))
    return out


def _done(codec, target: Path, n_q, npy: bool) -> bool:
    """Whether target is already a complete .fcdc of this model at n_q (and its .npy, if asked)."""
    from . import format as fcdc

    if not target.is_file() or (npy and not target.with_suffix(".npy").is_file()):
        return False
    try:
        h = fcdc.read_header(target)
    except FormatError:
        return False
    return h.fingerprint == codec.fingerprint and h.n_q == n_q


def _worker_init(checkpoint, backend, threads):
    """In each encode-dir worker (see workers.py): the codec, or why it could not be loaded (then
    each file the worker is handed fails with that reason)."""
    _one_line_warnings()
    import torch

    from .api import Codec

    torch.set_num_threads(threads)
    try:
        return Codec.load(checkpoint, backend=backend)
    except Exception as exc:  # reported per file, never a worker that dies and is restarted
        return f"the worker could not load {checkpoint} ({type(exc).__name__}: {exc})"


def _encode_one(src, dst, n_q, npy, codec):
    """(src, None) on success, (src, one-line reason) when the file cannot be coded."""
    if isinstance(codec, str):  # the worker's model did not load
        return str(src), f"{src}: {codec}"
    dst = Path(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        codec.encode_file(src, dst, n_q, npy=dst.with_suffix(".npy") if npy else None)
    except (AudioError, FormatError, ValueError, OSError) as exc:
        return str(src), str(exc)
    return str(src), None


def _encode_job(codec, job):
    return _encode_one(*job, codec)


def _progress(total, enabled):
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, unit="file", dynamic_ncols=True)
        except ImportError:
            pass
    return None


def cmd_encode_dir(args):
    import torch

    codec = _load_codec(args.checkpoint, args.backend)
    n_q = _n_q(codec, args)
    src, dst = Path(args.input), Path(args.output)
    jobs = _targets(src, dst)
    for _, d in jobs:  # (the outputs were checked against each other by _targets)
        check_outputs([args.checkpoint], [d, d.with_suffix(".npy") if args.npy else None])
    todo = [(s, d) for s, d in jobs if not _done(codec, d, n_q, args.npy)]
    print(f"{len(jobs)} audio files, {len(jobs) - len(todo)} already coded, {len(todo)} to code "
          f"({n_q} stages, {codec.bitrate(n_q) / 1000:g} kbps per channel)")
    if not todo:
        return 0
    workers = max(1, min(args.workers, len(todo)))
    bar = _progress(len(todo), not args.no_progress and sys.stderr.isatty())
    failed = []

    def finished(src_name, err):
        if err is not None:
            failed.append(src_name)
            (bar.write if bar else print)(f"fastcodec: skipped {err}")
        if bar:
            bar.update(1)

    try:
        if workers == 1:
            for s, d in todo:
                finished(*_encode_one(s, d, n_q, args.npy, codec))
        else:
            from . import workers as pool

            threads = max(1, torch.get_num_threads() // workers)
            pool.run([(str(s), str(d), n_q, args.npy) for s, d in todo], workers, _worker_init,
                     (str(args.checkpoint), args.backend, threads), _encode_job,
                     on_result=lambda job, result: finished(*result),
                     on_lost=lambda job, why: finished(job[0], f"{job[0]}: {why}"))
    finally:
        if bar:
            bar.close()
    done = len(todo) - len(failed)
    print(f"coded {done} of {len(todo)} files into {dst}" + (f"; {len(failed)} could not be coded" if failed else ""))
    return 1 if failed else 0


def cmd_info(args):
    if not args.paths:
        from ..info import main as info_main

        return info_main()
    from . import format as fcdc

    for path in args.paths:
        with fcdc._open(path) as f:
            magic = f.read(4)
        if magic == fcdc.MAGIC:
            h = fcdc.read_header(path)
            known = _read_registry().get(h.fingerprint)
            print(f"{path}: .fcdc v{fcdc.VERSION}, {h.duration:.3f} s, {h.channels} ch, {h.n_q} x {h.codebook_size} "
                  f"codes at {h.frame_rate:g} frames/s = {h.bitrate / 1000:g} kbps, {h.n_chunks} chunks of "
                  f"{h.chunk_frames} frames; source {h.source_rate} Hz, {h.source_samples} samples; model "
                  f"{h.fingerprint}" + (f" ({known})" if known else ""))
        else:
            try:
                codec = _load_codec(path, "auto")
            except CLIError as exc:
                raise CLIError(f"{path}: neither a .fcdc file nor a codec checkpoint ({exc})") from None
            c = codec.cfg
            params = sum(p.numel() for p in codec.model.parameters())
            rates = ", ".join(f"{codec.bitrate(i) / 1000:g}" for i in range(1, c.n_q + 1))
            print(f"{path}: codec model {codec.fingerprint}, {c.sample_rate} Hz, hop {c.hop} ({c.frame_rate:g} "
                  f"frames/s), {c.n_q} x {c.codebook_size} codes; bitrates {rates} kbps per channel; "
                  f"{params / 1e6:.2f} M parameters")
    return 0


# ---------------------------------------------------------------- parsing
def _parser():
    # No abbreviated flags (as in `python -m fastcodec.train`): a prefix that matches today may
    # mean another flag tomorrow.
    p = argparse.ArgumentParser(prog="fastcodec", description="fastcodec neural audio codec", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(q, required=True):
        q.add_argument("--checkpoint", required=required, help="the run's codec.pt or a checkpoint")
        q.add_argument("--backend", default="auto", choices=["auto", "torch", "cpp", "cuda", "triton"])

    def rate_args(q):
        g = q.add_mutually_exclusive_group()
        g.add_argument("--bitrate", type=float, metavar="KBPS",
                       help="the most stages within this many kbit/s per channel")
        g.add_argument("--n-q", type=int, metavar="N", help="residual quantizer stages (default: all)")

    e = sub.add_parser("encode", help="audio file -> .fcdc", allow_abbrev=False)
    e.add_argument("input")
    e.add_argument("output")
    model_args(e)
    rate_args(e)
    e.add_argument("--npy", metavar="PATH", help="also write the codes as a .npy array [C, n_q, frames]")
    d = sub.add_parser("decode", help=".fcdc -> audio file (.wav, .flac, .ogg)", allow_abbrev=False)
    d.add_argument("input")
    d.add_argument("output")
    model_args(d, required=False)
    d.add_argument("--start", type=float, default=0.0, metavar="SECONDS")
    d.add_argument("--duration", type=float, metavar="SECONDS")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--sample-rate", type=int, help="output rate (default: the encoded audio's)")
    g.add_argument("--model-rate", action="store_true", help="output at the codec's own rate (no resampling)")
    d.add_argument("--subtype", help="soundfile subtype, e.g. PCM_16 (default for WAV), PCM_24, FLOAT")
    r = sub.add_parser("encode-dir", help="every audio file under a folder -> .fcdc files (resumable)",
                       allow_abbrev=False)
    r.add_argument("input")
    r.add_argument("output")
    model_args(r)
    rate_args(r)
    r.add_argument("--npy", action="store_true", help="also write each file's codes as .npy beside its .fcdc")
    r.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    r.add_argument("--no-progress", action="store_true")
    t = sub.add_parser("tune", help="measure 'auto's fastest backends for a preset's shapes on this machine",
                       allow_abbrev=False)
    from ..tune import add_arguments

    add_arguments(t)
    x = sub.add_parser("export", help="a checkpoint -> ONNX encoder and decoder (needs the [onnx] extra)",
                       allow_abbrev=False)
    x.add_argument("checkpoint", help="the run's codec.pt or a checkpoint")
    x.add_argument("outdir", help="folder for encoder.onnx, decoder.onnx and codec.json")
    rate_args(x)
    x.add_argument("--opset", type=int, default=17, help="ONNX opset (13..20; default 17)")
    x.add_argument("--step-frames", type=int, default=1, metavar="S",
                   help="frames per call of the streaming step graphs (default 1: one hop of latency)")
    i = sub.add_parser("info", help="versions and backends; or describe .fcdc files and checkpoints",
                       allow_abbrev=False)
    i.add_argument("paths", nargs="*", metavar="FILE")
    return p


def cmd_export(args):
    from ..export import GRAPHS, ExportError, export

    codec = _load_codec(args.checkpoint, "torch")
    try:
        out = export(codec, args.outdir, _n_q(codec, args), opset=args.opset, step_frames=args.step_frames)
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    sizes = ", ".join(f"{name} {(out / name).stat().st_size / 1e6:.1f} MB" for name in GRAPHS)
    print(f"{out}: {sizes}, codec.json (model {codec.fingerprint})")
    return 0


def cmd_tune(args):
    from ..tune import main as tune_main

    return tune_main(args)


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "encode-dir": cmd_encode_dir, "tune": cmd_tune,
            "info": cmd_info, "export": cmd_export}


def _one_line_warnings():
    """Warnings (a truncated audio file, an unverified old checkpoint) as one line each from now
    on; returns the formatter it replaced."""
    import warnings

    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: f"fastcodec: warning: {message}\n"
    return previous


def parse_args(argv=None):
    """The command line's arguments; exits 2 with argparse's message on a mistake."""
    args = _parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        _parser().error("--workers must be at least 1")
    return args


def run(args) -> int:
    """Runs the parsed command -> exit status."""
    import warnings

    previous = _one_line_warnings()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("fastcodec: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except (CLIError, FormatError, AudioError, ValueError, OSError) as exc:  # OSError: disk full, no permission
        print(f"fastcodec: error: {exc}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous


def main(argv=None) -> int:
    return run(parse_args(argv))
