"""The codec in use: load a trained model, encode audio to codes, decode codes to audio.

    codec = fastcodec.Codec.load("runs/speech/codec.pt")
    enc = codec.encode(audio, sample_rate=44100, n_q=4)     # audio: [T], [C, T] or [B, C, T]
    audio = codec.decode(enc)                               # [B, C, T'] at codec.sample_rate

Audio at another rate is resampled to the model's with soxr (a polyphase resampler) and coded
mono per channel (stereo = two streams). Batches of different lengths pass `lengths`; each item is
coded to its own frame count and decoded back to its own length.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import torch

from ..atomic import atomic_output
from ..nn import CodecConfig, SoundStream, resolve_backend, set_backend
from ..integers import is_int
from . import files
from . import format as fcdc
from .streaming import StreamingDecoder, StreamingEncoder, check_codes, check_source_rate


@dataclasses.dataclass
class EncodedAudio:
    codes: torch.Tensor      # [B, C, n_q, F] int64; frames past an item's own count are padding
    frames: torch.Tensor     # [B] frames that belong to each item
    lengths: torch.Tensor    # [B] samples of each item at the codec's rate (what decode returns)
    channels: int
    n_q: int
    fingerprint: str         # of the model that made them; decoding with another model is refused
    source_rate: int | None = None             # the rate the audio came in at (kept in .fcdc files)
    source_lengths: torch.Tensor | None = None  # [B] samples of each item at source_rate


def model_fingerprint(model: SoundStream) -> str:
    """16 hex digits of a sha256 over the codec's config and every weight and codebook: names a model."""
    from ..checkpoint import state_sha256

    return state_sha256(model, extra=repr(sorted(model.cfg.to_dict().items())).encode())[:16]


def _resample(x: torch.Tensor, rate_in: int, rate_out: int) -> torch.Tensor:
    """x [N, T] -> [N, ~T * rate_out / rate_in] with soxr (its length rounding), per row."""
    if rate_in == rate_out:
        return x
    import soxr

    rows = [soxr.resample(r.double().cpu().numpy(), rate_in, rate_out) for r in x]
    return torch.from_numpy(np.stack(rows)).to(x.dtype).to(x.device)


def _lengths(lengths, B: int, T: int) -> torch.Tensor:
    """encode()'s lengths -> int64 [B], each a whole number of samples in 1..T."""
    t = torch.as_tensor(lengths)
    whole = not (t.is_complex() or t.dtype == torch.bool) and (
        not t.is_floating_point() or bool((t == t.round()).all()))
    if t.shape != (B,) or not whole or bool((t < 1).any() | (t > T).any()):
        raise ValueError(f"lengths must be {B} whole numbers of samples in 1..{T} (one per item), got "
                         f"{t.tolist()}")
    return t.long()


class Codec:
    """A trained SoundStream ready for inference (eval mode, no gradients)."""

    def __init__(self, model: SoundStream):
        self.model = model.eval()
        self.cfg: CodecConfig = model.cfg
        self.fingerprint = model_fingerprint(model)

    @classmethod
    def load(cls, path, *, device="cpu", backend="auto") -> "Codec":
        """From a training run's `codec.pt` or any of its checkpoints (read without unpickling, its
        sha256 digest verified). CheckpointError naming the file and the reason when it is not an
        intact codec; BackendUnavailable (fastcodec.nn) when `backend` cannot run on `device`."""
        from ..checkpoint import CheckpointError, check_finite, load

        state = load(path)
        if not isinstance(state.get("codec_config"), dict) or not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{path}: holds no codec (expected codec_config and model)")
        try:
            model = SoundStream(CodecConfig.from_dict(state["codec_config"]))
            model.load_state_dict(state["model"])
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: its model does not load ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]})") from None
        check_finite(path, state, "model")
        if not bool(model.quantizer.initialized):
            raise CheckpointError(f"{path}: its codebooks were never trained (saved before quantization began)")
        set_backend(model, backend)
        model = model.to(device)
        # A backend that cannot run on this device fails here, not at the first encode.
        resolve_backend(backend, model.quantizer.codebooks)
        return cls(model)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def _n_q(self, n_q):
        return self.model.quantizer.check_n_q(n_q)

    @torch.no_grad()
    def encode(self, audio, sample_rate: int, n_q: int | None = None, lengths=None) -> EncodedAudio:
        """audio: tensor or numpy array [T], [C, T] or [B, C, T] (float); lengths: [B] valid samples
        per item when a batch is padded to a common T. Returns EncodedAudio."""
        n_q = self._n_q(n_q)
        x = torch.as_tensor(audio) if not isinstance(audio, torch.Tensor) else audio
        if not x.is_floating_point():
            raise TypeError(f"audio must be floating point, got {x.dtype}")
        if x.dim() not in (1, 2, 3):
            raise ValueError(f"audio must be [T], [C, T] or [B, C, T], got shape {list(x.shape)}")
        x = x.reshape((1,) * (3 - x.dim()) + tuple(x.shape))
        B, C, T = x.shape
        sample_rate = check_source_rate(sample_rate)
        if T == 0 or C == 0 or B == 0:
            raise ValueError(f"audio is empty (shape {list(x.shape)})")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("audio contains NaN or Inf samples")
        if lengths is None:
            lengths_in = torch.full((B,), T, dtype=torch.long)
        else:
            lengths_in = _lengths(lengths, B, T)
        dev = self.model.quantizer.codebooks.device
        items = []
        for b in range(B):  # each item resampled and coded alone, so its padding never leaks in
            xb = _resample(x[b, :, : int(lengths_in[b])].float(), sample_rate, self.sample_rate)
            items.append((xb if xb.shape[1] else xb.new_zeros(C, 1)).to(dev))  # never less than a sample
        out_len = torch.tensor([xb.shape[1] for xb in items])
        frames = (out_len + self.cfg.hop - 1) // self.cfg.hop
        codes = torch.zeros(B, C, n_q, int(frames.max()), dtype=torch.long, device=dev)
        for b, xb in enumerate(items):
            codes[b, :, :, : int(frames[b])] = self.model.encode(xb[:, None, :], n_q)
        return EncodedAudio(codes, frames, out_len, C, n_q, self.fingerprint, sample_rate, lengths_in.clone())

    def _check_encoded(self, encoded):
        """What decode() and save() rely on: the model, and codes, frames and lengths that agree."""
        if not isinstance(encoded, EncodedAudio):
            raise TypeError(f"expected what encode returned (EncodedAudio), got {type(encoded).__name__}")
        if encoded.fingerprint != self.fingerprint:
            raise ValueError(f"these codes were made by model {encoded.fingerprint}; this codec is model "
                             f"{self.fingerprint}")
        codes = encoded.codes
        if not isinstance(codes, torch.Tensor) or codes.dim() != 4:
            raise ValueError(f"codes must be a tensor [B, C, n_q, F], got "
                             f"{list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        B, C, n_q, F = codes.shape
        if (encoded.channels, encoded.n_q) != (C, n_q):
            raise ValueError(f"codes are [B, C={C}, n_q={n_q}, F] but channels={encoded.channels!r}, "
                             f"n_q={encoded.n_q!r}")
        self._n_q(n_q)
        check_codes(codes, self.cfg.codebook_size)
        frames, lengths = torch.as_tensor(encoded.frames), torch.as_tensor(encoded.lengths)
        if frames.shape != (B,) or lengths.shape != (B,) or frames.is_floating_point() or lengths.is_floating_point():
            raise ValueError(f"frames and lengths must be {B} integers each (one per item), got shapes "
                             f"{list(frames.shape)} and {list(lengths.shape)}")
        if B == 0 or bool((frames < 1).any() | (frames > F).any()):
            raise ValueError(f"frames must be in 1..{F} (the codes' frame count), got {frames.tolist()}")
        if bool((lengths < 1).any() | (lengths > frames * self.cfg.hop).any()):
            raise ValueError(f"lengths must be in 1..frames x {self.cfg.hop} (the hop), got {lengths.tolist()} for "
                             f"frames {frames.tolist()}")
        return frames, lengths

    @torch.no_grad()
    def decode(self, encoded: EncodedAudio) -> torch.Tensor:
        """-> audio [B, C, max length] at the codec's rate; item b is exact up to lengths[b], zeros after."""
        frames, lengths = self._check_encoded(encoded)
        codes = encoded.codes
        B, C = codes.shape[:2]
        dev = self.model.quantizer.codebooks.device
        out = torch.zeros(B, C, int(lengths.max()), device=dev)
        for b in range(B):
            f, L = int(frames[b]), int(lengths[b])
            out[b, :, :L] = self.model.decode(codes[b, :, :, :f].to(dev), length=L)[:, 0]
        return out

    def save(self, encoded: EncodedAudio, path, item: int = 0):
        """Write item `item` of what encode() returned to the .fcdc file `path` (atomically);
        returns its header. load_codes() reads it back."""
        frames, lengths = self._check_encoded(encoded)
        B = encoded.codes.shape[0]
        if not is_int(item) or not 0 <= item < B:
            raise ValueError(f"item must be an int in 0..{B - 1}, got {item!r}")
        F, L = int(frames[item]), int(lengths[item])
        rate = (self.sample_rate if encoded.source_rate is None
                else check_source_rate(encoded.source_rate, name="source_rate"))
        source = L
        if encoded.source_lengths is not None:
            src = torch.as_tensor(encoded.source_lengths)
            if src.shape != (B,) or src.is_floating_point() or src.is_complex():
                raise ValueError(f"source_lengths must be {B} integers (one per item), got {src.tolist()}")
            source = int(src[item])
        if not fcdc.source_length_fits(L, self.sample_rate, source, rate):
            raise ValueError(f"source_lengths[{item}] is {source}, but {L} samples at {self.sample_rate} Hz come "
                             f"from ~{L * rate / self.sample_rate:.0f} at source_rate {rate} Hz")
        with atomic_output(path) as f:
            w = fcdc.Writer(f, sample_rate=self.sample_rate, hop=self.cfg.hop, codebook_size=self.cfg.codebook_size,
                            channels=encoded.channels, n_q=encoded.n_q, fingerprint=self.fingerprint,
                            source_rate=rate, chunk_frames=max(1, round(self.cfg.frame_rate)))
            w.write(encoded.codes[item, :, :, :F].cpu().numpy())
            return w.finish(L, source)

    def load_codes(self, path) -> EncodedAudio:
        """The codes of a .fcdc file as an EncodedAudio of one item, ready for decode(); FormatError
        for a bad file or one made by another model."""
        with fcdc._open(path) as f:
            reader = fcdc.Reader(f, path)
            h = reader.header
            files.check_model(self, h, path)
            codes = torch.from_numpy(reader.codes())[None]
        return EncodedAudio(codes, torch.tensor([h.frames]), torch.tensor([h.samples]), h.channels, h.n_q,
                            h.fingerprint, h.source_rate, torch.tensor([h.source_samples]))

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second per channel at n_q stages."""
        return self.cfg.bitrate(self._n_q(n_q))

    def n_q_for_bitrate(self, kbps: float) -> int:
        """The most stages whose bitrate (per channel) is at most `kbps` kbit/s."""
        per_stage = self.cfg.bitrate(1) / 1000
        if isinstance(kbps, bool) or not isinstance(kbps, numbers.Real) or not math.isfinite(kbps):
            raise ValueError(f"the bitrate must be a finite number of kbps, got {kbps!r}")
        n = int(kbps / per_stage + 1e-9)
        if n < 1:
            raise ValueError(f"{kbps} kbps is below this codec's lowest bitrate, {per_stage:g} kbps (one stage); "
                             f"it offers {', '.join(f'{per_stage * i:g}' for i in range(1, self.cfg.n_q + 1))} kbps")
        return min(n, self.cfg.n_q)

    def streaming_encoder(self, n_q: int | None = None, channels: int = 1, sample_rate: int | None = None):
        """A StreamingEncoder: audio chunks [C, T] in, codes [C, n_q, n] out (see codec.streaming)."""
        return StreamingEncoder(self, n_q, channels, sample_rate)

    def streaming_decoder(self, channels: int = 1):
        """A StreamingDecoder: codes [C, n_q, n] in, audio [C, n * hop] out."""
        return StreamingDecoder(self, channels)

    def encode_file(self, src, dst, n_q: int | None = None, **kwargs):
        """Audio file -> .fcdc file, in bounded memory; returns the written header (codec.files)."""
        return files.encode_file(self, src, dst, n_q, **kwargs)

    def decode_file(self, src, dst, **kwargs):
        """.fcdc file -> audio file (start=, duration=, sample_rate=); returns (samples, rate)."""
        return files.decode_file(self, src, dst, **kwargs)
