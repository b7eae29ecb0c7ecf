"""Streaming encoding and decoding with a `Codec`: audio in chunks of any size, codes out as frames
complete, and back. Built on the model's stateful causal layers (`Encoder.stream`,
`Decoder.stream`), so a stream gives the offline codes and, decoded, the offline audio.

    enc = codec.streaming_encoder(n_q=4, channels=2)         # at codec.sample_rate unless told
    for chunk in chunks:                                     # [C, T] (or [T] for mono), any T
        send(enc(chunk))                                     # codes [C, n_q, n], n >= 0
    send(enc.flush())                                        # the last, zero-padded frame

    dec = codec.streaming_decoder(channels=2)
    for codes in received:                                   # [C, n_q, n]
        play(dec(codes))                                     # audio [C, n * hop]

Latency: a frame's codes are out as soon as its hop samples are in (the codec's algorithmic
latency is one hop, 13.3 ms for the 24 kHz preset); its audio is out when its codes are in.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..integers import is_int
from ..nn import frame
from .format import MAX_SOURCE_RATE, MIN_SOURCE_RATE


def check_source_rate(rate, given=None, name="sample_rate") -> int:
    """rate as an int, or a ValueError unless it is a whole number of Hz in the range the format
    takes (the resampler's buffers grow with the ratio: soxr crashed the process upsampling
    100,000 samples from 1 Hz). given: what the caller passed, for the message."""
    if not is_int(rate) or not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise ValueError(f"{name} must be an int from {MIN_SOURCE_RATE} to {MAX_SOURCE_RATE} Hz, got "
                         f"{rate if given is None else given!r}")
    return int(rate)


def check_codes(codes: torch.Tensor, codebook_size: int) -> None:
    """A TypeError unless codes are integers, a ValueError unless each is in 0..codebook_size - 1
    (checked here on any device, in one read-back: the model's decode checks CPU codes only)."""
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must be integers, got {codes.dtype}")
    if codes.numel() and bool((codes.min() < 0) | (codes.max() >= codebook_size)):
        raise ValueError(f"codes must be in 0..{codebook_size - 1}")


def _live(method):
    """A stream's call: no gradients, in a stream's frame scope (fastcodec.nn.frame: nothing timed,
    packed weights kept)."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        with torch.no_grad(), frame():
            return method(*args, **kwargs)
    return call


def _all_finite(x) -> bool:
    # numpy's check costs a third of torch's on a frame-sized CPU array (a stream checks each chunk)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad:
        return bool(np.isfinite(x.numpy()).all())
    return bool(torch.isfinite(x).all())


def _as_channels(audio, channels, what="audio"):
    """audio [C, T] or [T] (tensor or array) -> float32 tensor [C, T]."""
    x = audio if isinstance(audio, torch.Tensor) else torch.as_tensor(np.asarray(audio))
    if x.dim() == 1 and channels == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[0] != channels:
        raise ValueError(f"{what} chunks must be [{channels}, T]" + (" or [T]" if channels == 1 else "") +
                         f", got {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be floating point, got {x.dtype}")
    if x.numel() and not _all_finite(x):
        raise ValueError(f"{what} contains NaN or Inf samples")
    return x.float()


class StreamingEncoder:
    """Audio chunks -> codes of the frames they complete. See the module docstring.

    sample_rate: the rate of the audio fed in; other than the codec's, it is resampled on the fly
    with soxr's streaming resampler (which holds back a few ms of audio until flush()).
    """

    def __init__(self, codec, n_q=None, channels=1, sample_rate=None):
        if not is_int(channels) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.codec, self.n_q, self.channels = codec, codec._n_q(n_q), int(channels)
        self.sample_rate = check_source_rate(codec.sample_rate if sample_rate is None else sample_rate, sample_rate)
        self._resampler = None
        if self.sample_rate != codec.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, codec.sample_rate, channels, dtype="float32")
        self._stream = codec.model.encoder.stream()
        self.samples_in = 0   # fed so far, at sample_rate
        self.samples = 0      # at the codec's rate (what decoding gives back)
        self.finished = False

    def _codes(self, z):
        q = self.codec.model.quantizer
        if z.shape[2] == 0:
            return torch.zeros(self.channels, self.n_q, 0, dtype=torch.long)
        return q.encode(z, self.n_q).cpu()  # (frame(): the codebooks stay packed between frames)

    def _resample(self, x, last):
        y = self._resampler.resample_chunk(np.ascontiguousarray(x.T.numpy()), last=last)
        return torch.from_numpy(np.ascontiguousarray(y.T)).float()

    @_live
    def __call__(self, audio) -> torch.Tensor:
        """audio [C, T] (or [T]) -> codes int64 [C, n_q, n] of the frames now complete."""
        if self.finished:
            raise RuntimeError("this stream was flushed; start a new one")
        x = _as_channels(audio, self.channels)
        self.samples_in += x.shape[1]
        if self._resampler is not None:
            x = self._resample(x, last=False)
        self.samples += x.shape[1]
        dev = self.codec.model.quantizer.codebooks.device
        return self._codes(self._stream(x[:, None, :].to(dev)))

    @_live
    def flush(self) -> torch.Tensor:
        """End the stream: codes [C, n_q, n] of what is left, the last frame zero-padded as offline."""
        if self.finished:
            raise RuntimeError("this stream was flushed already")
        if self.samples_in == 0:
            raise ValueError("nothing was encoded: an empty stream has no frames")
        parts = []
        if self._resampler is not None:
            tail = self._resample(torch.zeros(self.channels, 0), last=True)
            self.samples += tail.shape[1]
            dev = self.codec.model.quantizer.codebooks.device
            parts.append(self._codes(self._stream(tail[:, None, :].to(dev))))
        self.finished = True
        if self._stream.samples == 0:  # resampled to nothing (a few input samples): one silent sample
            self._stream(torch.zeros(self.channels, 1, 1, device=self.codec.model.quantizer.codebooks.device))
            self.samples = 1
        parts.append(self._codes(self._stream.flush()))
        return torch.cat(parts, dim=2)


class StreamingDecoder:
    """Codes [C, n_q, n] -> audio [C, n * hop] at the codec's rate, equal (within float rounding)
    to decoding all the codes at once."""

    def __init__(self, codec, channels=1):
        if not is_int(channels) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.codec, self.channels = codec, int(channels)
        self._stream = codec.model.decoder.stream()
        self.frames = 0

    @_live
    def __call__(self, codes) -> torch.Tensor:
        c = codes if isinstance(codes, torch.Tensor) else torch.as_tensor(np.asarray(codes))
        if c.dim() != 3 or c.shape[0] != self.channels:
            raise ValueError(f"codes must be [{self.channels}, n_q, n], got {list(c.shape)}")
        check_codes(c, self.codec.cfg.codebook_size)
        q = self.codec.model.quantizer
        dev = q.codebooks.device
        if c.shape[2] == 0:
            q.check_n_q(c.shape[1])
            return torch.zeros(self.channels, 0)
        self.frames += c.shape[2]
        z = q.decode(c.long().to(dev))
        return self._stream(z)[:, 0].cpu()
