"""fastcodec without torch: audio to .fcdc files and back through an ONNX export
(`python -m fastcodec export`), with numpy, onnxruntime and soxr; soundfile where present (any
format it reads and writes), else WAV through the standard library.

    python -m fastcodec.lite encode IN.wav OUT.fcdc --model EXPORT_DIR
    python -m fastcodec.lite decode IN.fcdc OUT.wav --model EXPORT_DIR [--start S] [--duration S]

    codec = LiteCodec("export/")
    codes = codec.encode(audio)                  # float32 [C, T] at codec.sample_rate -> int64 [C, n_q, F]
    audio = codec.decode(codes)                  # -> float32 [C, F * hop]

The .fcdc reader and writer are the package's own (fastcodec.codec.format), which import no torch,
and neither does this module. Both directions run their graph over windows of a few seconds, each
starting early enough (codec.json: encoder_history_samples, decoder_history_frames) that its
frames come out as from one pass over the whole signal, so memory does not grow with the length
of a decode, and a decode can start anywhere (--start) from the file's index.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import interrupt

if __name__ == "__main__":  # before numpy loads: a Ctrl-C meanwhile is one line and exit 130 too
    interrupt.install("fastcodec.lite")

import numpy as np  # noqa: E402

from .atomic import atomic_output, check_outputs  # noqa: E402
from .codec import format as fcdc  # noqa: E402
from .codec.errors import AudioError, FormatError  # noqa: E402

WINDOW_FRAMES = 256  # frames coded per graph call (plus each window's history)
_SIZES = ("sample_rate", "hop", "codebook_size", "n_q")  # positive ints in codec.json
_HISTORIES = ("encoder_history_samples", "decoder_history_frames")  # ints >= 0


def ort_session(path, threads: int | None = None):
    """An onnxruntime session on the CPU for the graph at path, logging errors only; threads:
    its intra-op threads (None: onnxruntime's choice)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("fastcodec.lite needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class LiteCodec:
    """An exported codec (the folder `python -m fastcodec export` wrote) run by onnxruntime."""

    def __init__(self, model_dir, threads: int | None = None):
        self.dir = Path(model_dir)
        meta_path = self.dir / "codec.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{self.dir}: no codec.json; pass the folder `python -m fastcodec export` wrote") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{meta_path}: unreadable ({type(exc).__name__}: {str(exc)[:160]})") from None
        if not isinstance(meta, dict) or meta.get("format") != "fastcodec-onnx":
            raise ValueError(f"{meta_path}: not a fastcodec ONNX export")
        if not isinstance(meta.get("format_version"), int) or meta["format_version"] > 1:
            raise ValueError(f"{meta_path}: export format version {meta.get('format_version')!r}; this fastcodec "
                             f"reads version 1")
        bad = [k for k in _SIZES if not isinstance(meta.get(k), int) or meta[k] < 1] \
            + [k for k in _HISTORIES if not isinstance(meta.get(k), int) or meta[k] < 0] \
            + ([] if isinstance(meta.get("fingerprint"), str) else ["fingerprint"])
        if bad:
            raise ValueError(f"{meta_path}: missing or invalid {', '.join(bad)}")
        self.meta = meta
        self.sample_rate, self.hop, self.n_q = meta["sample_rate"], meta["hop"], meta["n_q"]
        self.codebook_size, self.fingerprint = meta["codebook_size"], meta["fingerprint"]
        self.threads = threads
        self._sessions = {}

    def _session(self, name):
        if name not in self._sessions:
            path = self.dir / name
            if not path.is_file():
                raise ValueError(f"{path}: missing from the export")
            self._sessions[name] = ort_session(path, self.threads)
        return self._sessions[name]

    def encode(self, audio) -> np.ndarray:
        """audio: float [C, T] (or [T]) at sample_rate, T >= 1, finite -> codes int64 [C, n_q, ceil(T / hop)]."""
        x = np.asarray(audio)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"audio must be float [C, T] or [T], got {x.dtype} of shape {list(x.shape)}")
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"audio is empty (shape {list(x.shape)})")
        if not np.isfinite(x).all():
            raise ValueError("audio contains NaN or Inf samples")
        x = x.astype(np.float32)
        hop, T = self.hop, x.shape[1]
        frames = -(-T // hop)
        ctx = -(-self.meta["encoder_history_samples"] // hop)  # frames of context before a window
        enc = self._session("encoder.onnx")
        out = np.empty((x.shape[0], self.n_q, frames), dtype=np.int64)
        for f0 in range(0, frames, WINDOW_FRAMES):
            f1 = min(frames, f0 + WINDOW_FRAMES)
            s0 = max(0, f0 - ctx)  # the window's first frame: its codes before f0 are discarded
            codes = enc.run(None, {"audio": x[:, None, s0 * hop: f1 * hop]})[0]
            out[:, :, f0:f1] = codes[:, :, f0 - s0: f1 - s0]
        return out

    def decode(self, codes, first: int = 0, last: int | None = None) -> np.ndarray:
        """codes: int [C, n, F] with n <= n_q stages, each in [0, codebook_size) -> audio float32
        [C, (last - first) * hop] of frames first..last (default: all), as a decode of all of them
        gives it."""
        c = np.asarray(codes)
        if c.ndim != 3 or not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"codes must be integers [C, n_q, frames], got {c.dtype} of shape {list(c.shape)}")
        if not 1 <= c.shape[1] <= self.n_q:
            raise ValueError(f"codes have {c.shape[1]} stages; this export decodes 1 to {self.n_q}")
        if c.size and (c.min() < 0 or c.max() >= self.codebook_size):
            raise ValueError(f"codes must be in 0..{self.codebook_size - 1}")
        F = c.shape[2]
        last = F if last is None else last
        if not 0 <= first <= last <= F:
            raise ValueError(f"frames {first}..{last} are not within the {F} given")
        c = np.concatenate([c.astype(np.int64), np.full((c.shape[0], self.n_q - c.shape[1], F), -1, np.int64)], 1)
        dec = self._session("decoder.onnx")
        hist = self.meta["decoder_history_frames"] + 1
        out = np.empty((c.shape[0], (last - first) * self.hop), dtype=np.float32)
        for f0 in range(first, last, WINDOW_FRAMES):
            f1 = min(last, f0 + WINDOW_FRAMES)
            s0 = max(0, f0 - hist)  # decoded from a fresh start this early, frames f0.. come out exact
            y = dec.run(None, {"codes": c[:, :, s0:f1]})[0][:, 0]
            out[:, (f0 - first) * self.hop: (f1 - first) * self.hop] = y[:, (f0 - s0) * self.hop:]
        return out

    # ---- files
    def encode_file(self, src, dst, chunk_seconds: float = 1.0) -> fcdc.Header:
        """Audio file src (any rate and channel count) -> the .fcdc file dst, as `fastcodec encode` writes it."""
        check_outputs([src], [dst])
        audio, rate = read_audio(src)  # [C, T]
        x = _resample(audio, rate, self.sample_rate)
        if x.shape[1] == 0:
            x = np.zeros((audio.shape[0], 1), np.float32)
        codes = self.encode(x)
        with atomic_output(dst) as out:
            w = fcdc.Writer(out, sample_rate=self.sample_rate, hop=self.hop, codebook_size=self.codebook_size,
                            channels=audio.shape[0], n_q=self.n_q, fingerprint=self.fingerprint, source_rate=rate,
                            chunk_frames=max(1, round(chunk_seconds * self.sample_rate / self.hop)))
            w.write(codes)
            return w.finish(x.shape[1], audio.shape[1])

    def decode_file(self, src, dst, start: float = 0.0, duration: float | None = None):
        """The .fcdc file src -> audio file dst at the encoded audio's rate; start, duration in
        seconds (decoding begins at the chunk that holds `start`). Returns (samples, rate)."""
        check_outputs([src], [dst])
        with fcdc._open(src) as f:
            reader = fcdc.Reader(f, src)
            h = reader.header
            if h.fingerprint != self.fingerprint:
                raise FormatError(f"{src}: made by model {h.fingerprint}, but this export is model {self.fingerprint}")
            if (h.sample_rate, h.hop, h.codebook_size) != (self.sample_rate, self.hop, self.codebook_size) \
                    or h.n_q > self.n_q:
                raise FormatError(f"{src}: its header ({h.sample_rate} Hz, hop {h.hop}, {h.n_q} x {h.codebook_size} "
                                  f"codes) does not fit this export ({self.n_q} stages)")
            if not 0 <= start < h.duration:
                raise ValueError(f"start must be in [0, {h.duration:.3f}) seconds (the recording's length), "
                                 f"got {start}")
            if duration is not None and not duration > 0:
                raise ValueError(f"duration must be positive, got {duration}")
            first = round(start * h.sample_rate)
            last = h.samples if duration is None else min(h.samples, first + round(duration * h.sample_rate))
            hist = self.meta["decoder_history_frames"] + 1
            f_first, f_last = first // h.hop, -(-last // h.hop)
            c0 = reader.chunk_of_frame(f_first - hist)
            c1 = reader.chunk_of_frame(f_last - 1)
            codes = np.concatenate([reader.chunk(i) for i in range(c0, c1 + 1)], axis=2)
        base = c0 * h.chunk_frames  # frame index of codes[..., 0]
        y = self.decode(codes, f_first - base, f_last - base)[:, first - f_first * h.hop: last - f_first * h.hop]
        whole = first == 0 and last == h.samples
        want = h.source_samples if whole else round((last - first) * h.source_rate / h.sample_rate)
        y = _resample(y, h.sample_rate, h.source_rate)
        y = np.concatenate([y, np.zeros((y.shape[0], max(0, want - y.shape[1])), np.float32)], 1)[:, :want]
        write_audio(dst, y, h.source_rate)
        return y.shape[1], h.source_rate


def _resample(x, rate_in, rate_out):
    """x [C, T] float32 -> [C, ~T * rate_out / rate_in] with soxr (as the package resamples)."""
    if rate_in == rate_out:
        return x.astype(np.float32)
    import soxr

    return np.ascontiguousarray(soxr.resample(np.ascontiguousarray(x.T), rate_in, rate_out).T, dtype=np.float32)


def _soundfile():
    try:
        import soundfile
    except Exception:  # missing, or its libsndfile is
        return None
    return soundfile


def read_audio(path):
    """An audio file -> (float32 [C, T], rate): soundfile where present, else a PCM WAV by `wave`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    sf = _soundfile()
    try:
        if sf is not None:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            audio = data.T
        else:
            import wave

            with wave.open(str(path), "rb") as w:
                width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
                raw = w.readframes(w.getnframes())
            if width == 1:
                pcm = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
            elif width in (2, 4):
                pcm = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(1 << (8 * width - 1))
            elif width == 3:
                b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
                v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
                pcm = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
            else:
                raise ValueError(f"{8 * width}-bit samples")
            audio = pcm.reshape(-1, channels).T
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: not a readable audio file ({type(exc).__name__}: {str(exc)[:160]}"
                         + ("; without soundfile only PCM WAV is read" if sf is None else "") + ")") from None
    if audio.shape[1] == 0:
        raise AudioError(f"{path}: holds no audio (0 samples)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: NaN or Inf samples")
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def write_audio(path, audio, rate):
    """float32 [C, T] -> an audio file: soundfile where present (the format from the name), else a
    16-bit PCM WAV by `wave`. Written to a partial file and renamed, as the package writes."""
    sf = _soundfile()
    path = Path(path)
    with atomic_output(path) as out:
        if sf is not None:
            fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
            if fmt is None:
                raise ValueError(f"{path}: cannot tell the audio format; use a name ending in .wav, .flac or .ogg")
            sf.write(out, audio.T, rate, format=fmt)
        else:
            if path.suffix.lower() != ".wav":
                raise ValueError(f"{path}: without soundfile only .wav is written")
            import wave

            pcm = np.clip(np.round(audio.T * 32768), -32768, 32767).astype("<i2")
            with wave.open(out, "wb") as w:
                w.setnchannels(audio.shape[0])
                w.setsampwidth(2)
                w.setframerate(rate)
                w.writeframes(pcm.tobytes())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastcodec.lite", allow_abbrev=False,
                                description="fastcodec through an ONNX export, without torch")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="audio file -> .fcdc", allow_abbrev=False)
    d = sub.add_parser("decode", help=".fcdc -> audio file", allow_abbrev=False)
    for q in (e, d):
        q.add_argument("input")
        q.add_argument("output")
        q.add_argument("--model", required=True, metavar="EXPORT_DIR", help="the folder `fastcodec export` wrote")
        q.add_argument("--threads", type=int, help="onnxruntime's threads (default: its own choice)")
    d.add_argument("--start", type=float, default=0.0, metavar="SECONDS")
    d.add_argument("--duration", type=float, metavar="SECONDS")
    args = p.parse_args(argv)
    try:
        codec = LiteCodec(args.model, threads=args.threads)
        codec._session("encoder.onnx" if args.command == "encode" else "decoder.onnx")  # imports onnxruntime
        interrupt.unwind_from_here()  # (only where __main__ installed it)
        if args.command == "encode":
            h = codec.encode_file(args.input, args.output)
            print(f"{args.output}: {h.duration:.2f} s, {h.channels} ch, {h.n_q} stages (model {h.fingerprint})")
        else:
            n, rate = codec.decode_file(args.input, args.output, args.start, args.duration)
            print(f"{args.output}: {n / rate:.2f} s at {rate} Hz")
    except KeyboardInterrupt:
        print("fastcodec.lite: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:  # FormatError and AudioError are ValueErrors
        print(f"fastcodec.lite: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.exit_status(main()))
