"""Prepared streams of the codec's layers: each checks its layer once and keeps its state, so a
chunk (often one frame) costs little besides its arithmetic; a chain runs layers in order as one.
Built on the per-op stream steps of `fastcodec.ops` (ops/streaming.py): a stream's concatenated
outputs equal the whole-signal layers.

- CausalConv1dStream, CausalConvTranspose1dStream: one conv, from its tensors (layer_stream(layer)
  makes one for a CausalConv1d or CausalConvTranspose1d)
- StreamChain: streams in order, on the cpp backend in one C++ call per chunk
- EncoderStream, DecoderStream: the codec's encoder and decoder chunk by chunk (Encoder.stream(),
  Decoder.stream())
- frame(): the scope every stream call runs in: nothing timed by 'auto' (a frame must never
  stall), packed weights kept between calls
"""
from __future__ import annotations

import contextlib
import functools
import threading

import torch
import torch.nn.functional as F

from .. import ops
from ..integers import is_int
from .blocks import Decoder, Encoder, ResidualUnit, flatten
from .layers import CausalConv1d, CausalConvTranspose1d


_scope = threading.local()  # .inside: a stream call is running on this thread (frame() entered)


@contextlib.contextmanager
def frame():
    """A stream's call: 'auto' takes cached or static choices without timing anything
    (`python -m fastcodec tune` measures a stream's shapes ahead of time), and packed weights are
    kept between calls (ops.weight_cache), as a frame's work is too small to repack them."""
    outer = getattr(_scope, "inside", False)
    _scope.inside = True
    try:
        with ops.tuning.no_measuring(), ops.weight_cache():
            yield
    finally:
        _scope.inside = outer


def _in_frame(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        if getattr(_scope, "inside", False):  # a chain's streams, or the codec's call: entered once
            return method(*args, **kwargs)
        with frame():
            return method(*args, **kwargs)
    return call


def _check_layer(weight, dims, **ints):
    """What a stream's constructor reads of its layer; the rest is checked at the first chunk."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        raise ValueError(f"weight must be a tensor [{', '.join(dims)}], got "
                         f"{list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    for name, v in ints.items():
        if not is_int(v) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


class CausalConv1dStream:
    """A prepared ops.causal_conv1d_stream: `s(x, residual=None)` gives what that step gives for
    the chunk x [B, Cin, T], the state kept inside. The first chunk runs the checked step; later
    ones go straight to the native kernel where it fits (cpp, fp32, no gradient wanted). The
    tensors are read at every call, so in-place changes count."""

    def __init__(self, weight, bias=None, *, stride=1, dilation=1, activation=None, backend="auto",
                 negative_slope=ops.DEFAULT_NEGATIVE_SLOPE, alpha=None):
        _check_layer(weight, ("Cout", "Cin", "K"), stride=stride, dilation=dilation)
        self.weight, self.bias, self.alpha = weight, bias, alpha
        self.stride, self.dilation, self.activation = stride, dilation, activation
        self.negative_slope, self.backend = negative_slope, backend
        self.P = max((weight.shape[2] - 1) * dilation, stride - 1)
        self.pad = (weight.shape[2] - 1) * dilation - self.P
        self.state = None
        self._fits = None  # whether the native step takes this stream's chunks, decided at the first

    def _checked(self, x, residual):
        y, self.state = ops.causal_conv1d_stream(
            x, self.weight, self.bias, state=self.state, stride=self.stride, dilation=self.dilation,
            activation=self.activation, residual=residual, backend=self.backend, negative_slope=self.negative_slope,
            alpha=self.alpha)
        return y

    @_in_frame
    def __call__(self, x, residual=None):
        w = self.weight
        if self._fits is None:
            y = self._checked(x, residual)
            self._fits = ops.stream_kernel_fits("causal_conv1d_stream", self.backend, x, (x, w, self.bias, self.alpha))
            return y
        if not self._fits or x.dim() != 3 or x.shape[1] != w.shape[1] or x.dtype != w.dtype \
                or x.device != w.device or ops.wants_grad(x, residual, w, self.bias, self.alpha, self.state):
            return self._checked(x, residual)
        if self.state is None:
            self.state = x.new_zeros(x.shape[0], x.shape[1], self.P)
        elif self.state.shape[0] != x.shape[0]:
            raise ValueError(f"this stream has batch {self.state.shape[0]}, the chunk {x.shape[0]}")
        xx = torch.cat([self.state, x], dim=2)
        n = (xx.shape[2] - 1 - self.P) // self.stride + 1 if xx.shape[2] > self.P else 0
        if residual is not None and list(residual.shape) != [x.shape[0], w.shape[0], n]:
            raise ValueError(f"residual must be [{x.shape[0]}, {w.shape[0]}, {n}] for this chunk, got "
                             f"{list(residual.shape)}")
        y = ops.conv1d_window(xx, w, self.bias, self.stride, self.dilation, self.pad, n, self.activation,
                              self.negative_slope, self.alpha, residual)
        self.state = xx[:, :, n * self.stride:]
        return y


class CausalConvTranspose1dStream:
    """A prepared ops.causal_conv_transpose1d_stream (see CausalConv1dStream): `s(x)` gives what
    that step gives for the chunk, the overlap tail kept inside."""

    def __init__(self, weight, bias=None, *, stride, activation=None, backend="auto",
                 negative_slope=ops.DEFAULT_NEGATIVE_SLOPE, alpha=None):
        _check_layer(weight, ("Cin", "Cout", "K"), stride=stride)
        self.weight, self.bias, self.alpha = weight, bias, alpha
        self.stride, self.activation, self.negative_slope, self.backend = stride, activation, negative_slope, backend
        self.state = None
        self._fits = None

    def _checked(self, x):
        y, self.state = ops.causal_conv_transpose1d_stream(
            x, self.weight, self.bias, state=self.state, stride=self.stride, activation=self.activation,
            backend=self.backend, negative_slope=self.negative_slope, alpha=self.alpha)
        return y

    @_in_frame
    def __call__(self, x):
        w = self.weight
        if self._fits is None:
            y = self._checked(x)
            self._fits = ops.stream_kernel_fits("causal_conv_transpose1d_stream", self.backend, x,
                                                (x, w, self.bias, self.alpha))
            return y
        if not self._fits or x.dim() != 3 or x.shape[1] != w.shape[0] or x.dtype != w.dtype \
                or x.device != w.device or ops.wants_grad(x, w, self.bias, self.alpha, self.state):
            return self._checked(x)
        if self.state is not None and self.state.shape[0] != x.shape[0]:
            raise ValueError(f"this stream has batch {self.state.shape[0]}, the chunk {x.shape[0]}")
        y, self.state = ops.conv_transpose1d_step(x, w, self.bias, self.state, self.stride, self.activation,
                                                  self.negative_slope, self.alpha)
        return y


def _step_op(stream) -> str:
    return "causal_conv1d_stream" if isinstance(stream, CausalConv1dStream) else "causal_conv_transpose1d_stream"


def layer_stream(layer):
    """A prepared stream of a CausalConv1d or CausalConvTranspose1d (its parameters, its backend)."""
    if isinstance(layer, CausalConv1d):
        return CausalConv1dStream(layer.weight, layer.bias, stride=layer.stride, dilation=layer.dilation,
                                  activation=layer.activation, backend=layer.backend,
                                  negative_slope=layer.negative_slope, alpha=layer.alpha)
    if isinstance(layer, CausalConvTranspose1d):
        return CausalConvTranspose1dStream(layer.weight, layer.bias, stride=layer.stride,
                                           activation=layer.activation, backend=layer.backend,
                                           negative_slope=layer.negative_slope, alpha=layer.alpha)
    raise TypeError(f"no stream for {type(layer).__name__}")


class StreamChain:
    """Prepared streams run in order as one: each chunk goes through every stream, the output of
    one feeding the next. `skips[i]` makes stream i add the input of stream i - 1 to its output
    (a residual unit: conv, then a 1x1 conv plus the unit's input).

    Where every stream takes its native step (fp32 CPU tensors, the cpp backend, no gradient
    wanted) a chunk runs through all of them in one C++ call (ops.native_stream_chain). Otherwise
    the streams run one by one. The states follow the chunk to whichever side runs it, so a chain
    may switch at any chunk (a chunk with gradients wanted after some without, say) and still
    equal the whole-signal result.
    """

    def __init__(self, streams, skips=None):
        self.streams = list(streams)
        self.skips = [False] * len(self.streams) if skips is None else [bool(s) for s in skips]
        if len(self.skips) != len(self.streams) or not self.streams or self.skips[0]:
            raise ValueError("StreamChain needs one skip flag per stream, and the first stream cannot skip")
        for s, skip in zip(self.streams, self.skips):
            if not isinstance(s, (CausalConv1dStream, CausalConvTranspose1dStream)):
                raise TypeError(f"StreamChain takes prepared streams, got {type(s).__name__}")
            if skip and not isinstance(s, CausalConv1dStream):
                raise ValueError("only a causal conv stream can add its predecessor's input (skip)")
        ins = [s.weight.shape[1 if isinstance(s, CausalConv1dStream) else 0] for s in self.streams]
        outs = [s.weight.shape[0 if isinstance(s, CausalConv1dStream) else 1] for s in self.streams]
        for i in range(1, len(self.streams)):
            if ins[i] != outs[i - 1]:
                raise ValueError(f"stream {i} takes {ins[i]} channels but stream {i - 1} gives {outs[i - 1]}")
            if self.skips[i] and outs[i] != ins[i - 1]:
                raise ValueError(f"stream {i} adds the input of stream {i - 1} ({ins[i - 1]} channels) to its "
                                 f"{outs[i]}")
        self.in_channels = ins[0]
        self.batch = None
        self._native = None      # the C++ chain, built at the first chunk it can take
        self._native_ok = None   # whether it can take this chain's chunks at all (decided once)
        self._states_native = False  # where the states are now
        self._params = tuple(t for s in self.streams for t in (s.weight, s.bias, s.alpha) if t is not None)

    def _native_fits(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float32 \
                or (torch.is_grad_enabled() and ops.wants_grad(x, *self._params)):
            return False
        if self._native_ok is None:  # decided at the first fp32 CPU chunk: the backends and weights
            fits = all(ops.stream_kernel_fits(_step_op(s), s.backend, x, (x, s.weight, s.bias, s.alpha))
                       for s in self.streams)
            native = self._build_native() if fits else None  # (raises on layers that do not chain: asked again)
            self._native, self._native_ok = native, native is not None
        if not self._states_native and torch.is_grad_enabled() \
                and any(s.state is not None and s.state.requires_grad for s in self.streams):
            return False  # a state from a chunk that wanted gradients: the checked steps carry its graph
        return self._native_ok

    def _build_native(self):
        chain = ops.native_stream_chain()
        if chain is None:
            return None
        for s, skip in zip(self.streams, self.skips):
            act, slope = s.activation or "none", float(s.negative_slope)
            if isinstance(s, CausalConv1dStream):
                chain.add_conv(s.weight, s.bias, s.alpha, s.stride, s.dilation, act, slope, skip)
            else:
                chain.add_transposed(s.weight, s.bias, s.alpha, s.stride, act, slope)
        return chain

    def _move_states(self, to_native):
        if to_native == self._states_native:
            return
        for i, s in enumerate(self.streams):
            if to_native:
                if s.state is None:
                    self._native.clear_state(i)
                else:
                    self._native.set_state(i, s.state)
            else:
                s.state = self._native.get_state(i) if self._native.has_state(i) else None
        self._states_native = to_native

    @_in_frame
    def __call__(self, x):
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, T], got {list(x.shape)}")
        if self.batch is not None and x.shape[0] != self.batch:
            raise ValueError(f"this stream has batch {self.batch}, the chunk {x.shape[0]}")
        self.batch = x.shape[0]
        if self._native_fits(x):
            self._move_states(True)
            return self._native.step(x)
        if self._native is not None:
            self._move_states(False)
        prev = None
        for s, skip in zip(self.streams, self.skips):
            inp = x
            x = s(x, residual=prev) if skip else s(x)
            prev = inp
        return x


def chain(layers) -> StreamChain:
    """One prepared stream through CausalConv1d / CausalConvTranspose1d layers and residual units
    (a unit as its dilated conv, then its 1x1 conv adding the unit's input)."""
    streams, skips = [], []
    for layer in layers:
        if isinstance(layer, ResidualUnit):
            streams += [layer_stream(layer.conv), layer_stream(layer.proj)]
            skips += [False, True]
        else:
            streams.append(layer_stream(layer))
            skips.append(False)
    return StreamChain(streams, skips)


class EncoderStream:
    """Chunked encoding: feed audio [B, 1, T] in chunks of any size (0 included) and get the code
    frames [B, D, n] that became complete; `flush()` ends the stream and returns the last, partial
    frame. The concatenated frames equal `Encoder(x)` for the whole signal."""

    def __init__(self, encoder: Encoder):
        self.layers, self.hop = flatten(encoder), encoder.hop
        self.chain = chain(self.layers)
        self.batch = None
        self.samples = 0  # real samples fed so far
        self.padded = self.dropped = self.finished = False

    def __call__(self, x):
        if self.finished:
            raise RuntimeError("this stream was flushed; start a new one")
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"audio chunks must be [B, 1, T], got {list(x.shape)}")
        if self.batch is not None and x.shape[0] != self.batch:
            raise ValueError(f"this stream has batch {self.batch}, the chunk {x.shape[0]}")
        self.batch = x.shape[0]
        self.samples += x.shape[2]
        if not self.padded:  # the encoder's one leading zero; its frame is dropped (Encoder.forward)
            x = F.pad(x, (1, 0))
            self.padded = True
        y = self.chain(x)
        if not self.dropped and y.shape[2]:
            self.dropped = True
            y = y[..., 1:]
        return y

    def flush(self):
        """The frame still open at the end of the signal (zero-padded, as offline), then no more."""
        if not self.samples:
            raise RuntimeError("flush() before any audio: an empty signal has no frames")
        ref = self.layers[0].weight
        y = self(torch.zeros(self.batch, 1, self.hop - 1, dtype=ref.dtype, device=ref.device))
        self.samples -= self.hop - 1
        self.finished = True
        return y


class DecoderStream:
    """Chunked decoding: latent frames [B, D, n] in, audio [B, 1, n * hop] out, equal to
    `Decoder(z)` for the whole latent."""

    def __init__(self, decoder: Decoder):
        self.layers = flatten(decoder)
        self.chain = chain(self.layers)

    def __call__(self, z):
        return self.chain(z)
