"""Audio files <-> .fcdc files in bounded memory, and atomic output.

Both directions stream: audio is read in blocks, resampled with soxr's streaming resampler, coded
by the streaming encoder and written chunk by chunk (decoding likewise). What is held at once is
one block of audio plus the layers' small states, whatever the file's length: memory is
O(block_seconds), not O(duration) (measured in tests/test_codec_files.py on a one-hour file).

Output is written atomically (fastcodec.atomic: a hidden `.NAME.partial` beside the target,
renamed over it only when everything succeeded), so a failure or Ctrl-C never leaves a
half-written file under the target's name and never touches a file already there.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_output, check_outputs
from ..integers import is_int
from . import format as fcdc
from .errors import AudioError, FormatError, TruncatedAudioWarning
from .streaming import StreamingDecoder, StreamingEncoder

AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
# The highest output rate each format is written at. libvorbis crashes the process (a segfault,
# libsndfile 1.2) above 200 kHz and libFLAC refuses rates above 655350 Hz; 768 kHz, the highest
# rate audio hardware uses, also bounds the resampler's buffers (a chunk's samples x rate).
MAX_OUTPUT_RATE = {"WAV": 768_000, "FLAC": 655_350, "OGG": 200_000}
# Frames x channels decoded per call: a second of stereo at 75 frames/s.
DECODE_FRAME_CHANNELS = 150


def soundfile():
    """The soundfile module, imported when first needed (it needs the libsndfile library)."""
    try:
        import soundfile as sf
    except Exception as exc:  # an OSError when libsndfile is missing
        raise AudioError(f"reading and writing audio files needs the soundfile package "
                         f"({type(exc).__name__}: {exc})") from None
    return sf


def _open_audio(sf, path):
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:
        raise AudioError(f"{path}: not a readable audio file ({str(exc)[:160]})") from None
    if f.frames == 0:
        f.close()
        raise AudioError(f"{path}: holds no audio (0 samples)")
    return f


def _read_block(f, frames, src, at_seconds):
    try:
        return f.read(frames, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile on a file damaged past its header
        raise AudioError(f"{src}: reading failed at {at_seconds:.3f} s ({type(exc).__name__}: "
                         f"{str(exc)[:160]})") from None


def _claimed_frames(f) -> int:
    """The frames the audio file's header claims. libsndfile clamps a WAV's data size to what the
    file holds and notes the claim in its log ("data : 48000 (should be 16000)"), so a header that
    lies is seen there; otherwise its frame count."""
    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", f.extra_info or "", re.MULTILINE)
    # A writer streaming to a pipe cannot know the length: it leaves 0xFFFFFFFF (or 0x7FFFFFFF).
    if m and int(m.group(2)) > 0 and int(m.group(1)) < 0x7FFFFFFF:
        return max(f.frames, round(f.frames * int(m.group(1)) / int(m.group(2))))
    return f.frames


def encode_file(codec, src, dst, n_q=None, *, block_seconds=1.0, chunk_seconds=1.0, npy=None):
    """Encode audio file `src` (any rate, any channel count) to the .fcdc file `dst`; returns its
    header. npy: also write the codes as a .npy array [C, n_q, F] (int16) at that path. An output
    that is the input, or both outputs one file, is refused before anything is written. Audio
    that ends before its header says gets a TruncatedAudioWarning saying how much was coded."""
    sf = soundfile()
    n_q = codec._n_q(n_q)
    check_outputs([src], [dst, npy])
    with _open_audio(sf, src) as f:
        rate, channels = int(f.samplerate), int(f.channels)
        claimed = _claimed_frames(f)
        enc = StreamingEncoder(codec, n_q, channels, rate)
        with atomic_output(dst) as out:
            writer = fcdc.Writer(out, sample_rate=codec.sample_rate, hop=codec.cfg.hop,
                                 codebook_size=codec.cfg.codebook_size, channels=channels, n_q=n_q,
                                 fingerprint=codec.fingerprint, source_rate=rate,
                                 chunk_frames=max(1, round(chunk_seconds * codec.cfg.frame_rate)))
            block = max(1, round(block_seconds * rate))
            while True:
                x = _read_block(f, block, src, enc.samples_in / rate)  # [T, C]
                if not len(x):
                    break
                if not np.isfinite(x).all():
                    t = (enc.samples_in + int(np.argmin(np.isfinite(x).all(1)))) / rate
                    raise AudioError(f"{src}: NaN or Inf samples (first at {t:.3f} s)")
                writer.write(enc(torch.from_numpy(x.T)).numpy())
            if enc.samples_in == 0:
                raise AudioError(f"{src}: holds no audio (0 samples)")
            writer.write(enc.flush().numpy())
            header = writer.finish(enc.samples, enc.samples_in)
            if enc.samples_in < claimed:
                warnings.warn(f"{src}: its header claims {claimed} samples ({claimed / rate:.3f} s) but the file holds "
                              f"{enc.samples_in} ({enc.samples_in / rate:.3f} s); coded what it holds",
                              TruncatedAudioWarning, stacklevel=3)
            if npy is not None:
                out.seek(0)
                codes = fcdc.Reader(out, dst).codes()
                dtype = np.int16 if codec.cfg.codebook_size <= 1 << 15 else np.int32
                with atomic_output(npy) as g:
                    np.save(g, codes.astype(dtype))
    return header


def check_model(codec, header: fcdc.Header, name):
    """FormatError unless `header` was written by this codec's model."""
    if header.fingerprint != codec.fingerprint:
        raise FormatError(f"{name}: made by model {header.fingerprint}, but this codec is model "
                          f"{codec.fingerprint}; decode it with the checkpoint that encoded it")
    cfg = codec.cfg
    if (header.sample_rate, header.hop, header.codebook_size) != (cfg.sample_rate, cfg.hop, cfg.codebook_size) \
            or header.n_q > cfg.n_q:
        raise FormatError(f"{name}: its header ({header.sample_rate} Hz, hop {header.hop}, {header.n_q} x "
                          f"{header.codebook_size} codes) does not fit this model")


def decode_file(codec, src, dst, *, start=0.0, duration=None, sample_rate=None, subtype=None):
    """Decode the .fcdc file `src` to the audio file `dst` (.wav, .flac or .ogg).

    sample_rate: of the output; by default the rate of the audio that was encoded (resampled back
    with soxr), `codec.sample_rate` skips resampling. start, duration: seconds to decode; decoding
    starts at the chunk holding `start`, `Decoder.history_frames()` frames early so the output is
    the one a decode from the beginning gives. Returns (samples written, output rate)."""
    sf = soundfile()
    check_outputs([src], [dst])
    fmt = AUDIO_FORMATS.get(Path(dst).suffix.lower())
    if fmt is None:
        raise ValueError(f"{dst}: cannot tell the audio format; use a name ending in {', '.join(AUDIO_FORMATS)}")
    if subtype is not None and not sf.check_format(fmt, subtype):
        raise ValueError(f"{dst}: a {fmt} file cannot hold subtype {subtype!r}; it takes "
                         f"{', '.join(sf.available_subtypes(fmt))}")
    with fcdc._open(src) as f:
        reader = fcdc.Reader(f, src)
        h = reader.header
        check_model(codec, h, src)
        rate = h.source_rate if sample_rate is None else sample_rate
        if not is_int(rate) or rate < 1:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        rate = int(rate)
        if rate > MAX_OUTPUT_RATE[fmt]:
            raise ValueError(f"{dst}: {fmt} files are written at up to {MAX_OUTPUT_RATE[fmt]} Hz, asked for {rate} Hz"
                             + (" (the encoded audio's rate; pass a lower sample_rate)" if sample_rate is None else ""))
        if not 0 <= start < h.duration:
            raise ValueError(f"start must be in [0, {h.duration:.3f}) seconds (the recording's length), got {start}")
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be positive, got {duration}")
        first = round(start * h.sample_rate)
        last = h.samples if duration is None else min(h.samples, first + round(duration * h.sample_rate))
        whole = first == 0 and last == h.samples
        want = h.source_samples if whole and rate == h.source_rate else round((last - first) * rate / h.sample_rate)
        chunk = reader.chunk_of_frame(first // h.hop - codec.model.decoder.history_frames() - 1)
        pos = chunk * h.chunk_frames * h.hop  # the codec-rate sample the next decoded chunk starts at
        dec = StreamingDecoder(codec, h.channels)
        resampler = None
        if rate != h.sample_rate:
            import soxr

            resampler = soxr.ResampleStream(h.sample_rate, rate, h.channels, dtype="float32")
        written = 0
        with atomic_output(dst) as out:
            try:
                w = sf.SoundFile(out, "w", samplerate=rate, channels=h.channels, format=fmt, subtype=subtype)
            except Exception as exc:  # libsndfile's refusal, e.g. of a rate or channel count the format lacks
                raise AudioError(f"{dst}: cannot write {fmt} at {rate} Hz, {h.channels} channels "
                                 f"({str(exc)[:160]})") from None
            with w:
                def emit(y, final=False):  # y [C, n] at the codec's rate -> the file, at most `want` samples
                    nonlocal written
                    y = y.T.numpy()
                    if resampler is not None:
                        y = resampler.resample_chunk(np.ascontiguousarray(y), last=final)
                    y = y[: want - written]
                    w.write(y)
                    written += len(y)

                # A chunk is decoded a piece at a time, so memory does not follow the file's own
                # chunk size (which a writer chooses, or a hostile file sets to millions of frames).
                piece = max(1, DECODE_FRAME_CHANNELS // h.channels)
                while pos < last and chunk < h.n_chunks:
                    codes = reader.chunk(chunk)
                    chunk += 1
                    for p0 in range(0, codes.shape[2], piece):
                        if pos >= last:
                            break
                        y = dec(codes[:, :, p0: p0 + piece])
                        lo, hi = max(first - pos, 0), min(last - pos, y.shape[1])
                        pos += y.shape[1]
                        if hi > lo:
                            emit(y[:, lo:hi])
                emit(torch.zeros(h.channels, 0), final=True)
                if written < want:  # the resampler's rounding can leave a sample or two short
                    w.write(np.zeros((want - written, h.channels), dtype=np.float32))
                    written = want
    return written, rate
