"""Streaming forms of the causal convs: feed a signal in chunks of any sizes (including 0 and sizes
that are not multiples of the stride) and the concatenated outputs equal the whole-signal op.

Each takes the `state` returned by the previous call (None at the start of a stream) and returns
(y, state). Both are built on the public ops, so they run on every backend.

- causal_conv1d_stream: the state is the tail of the input, [B, Cin, L]. With pad = (K-1)*dilation
  and P = max(pad, stride - 1), it starts P samples before the next output's last tap, so
  P + 1 - stride <= L <= P and its length also encodes where the stride grid falls. (P rather than pad:
  with stride > pad + 1 the next output can need a sample not yet seen, and the tail must still
  say how far ahead it is.) A call emits every output whose last input has arrived.
- causal_conv_transpose1d_stream: the state is the overlap tail, [B, Cout, max(K - stride, 0)]:
  pre-activation sums (without bias) that earlier input contributes to samples not yet emitted.
  A call with T input frames emits exactly T*stride samples.
"""
from __future__ import annotations

import functools

import torch

from . import _checks, _extension, causal_conv1d, causal_conv_transpose1d, dispatch, tuning
from .reference import DEFAULT_NEGATIVE_SLOPE, activation_ref


def _frame(fn):
    """A stream's call: 'auto' takes cached or static choices without timing anything (a frame
    must never stall; `python -m fastcodec tune` measures a stream's shapes ahead of time)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with tuning.no_measuring():
            return fn(*args, **kwargs)
    return call


def _wants_grad(tensors):
    """The C++ streaming kernels have no backward (streams are for inference): with a gradient
    wanted, a chunk takes the composed path, which autograd follows."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _stream_kernel_fits(backend, x, tensors, op):
    """Whether the native step of stream `op` (dispatch.TABLE) runs this chunk: the conv's backend
    is cpp by the static rule (a stream's frames are never timed: they must not stall), and every
    tensor is of a dtype the step takes. The gradient is asked separately (_window_kernel)."""
    if dispatch.choose(op.removesuffix("_stream"), backend, x.device, x.dtype) != "cpp":
        return False
    return all(dispatch.refusal(op, "cpp", t.device.type, t.dtype) is None for t in tensors if t is not None)


def _window_kernel(backend, x, weight, *others):
    tensors = (x, weight) + others
    return _stream_kernel_fits(backend, x, tensors, "causal_conv1d_stream") and not _wants_grad(tensors)


def _check_state(state, want_shape, x, what):
    if state is None:
        return
    _checks.tensor("state", state, dims=("B", "C", "L"))
    _checks.like("state", state, "x", x)
    if list(state.shape[:2]) != list(want_shape[:2]) or (want_shape[2] is not None and state.shape[2] != want_shape[2]):
        raise ValueError(f"state {list(state.shape)} does not fit this {what} (expected {list(want_shape)}; pass "
                         f"the state returned by the previous call, or None to start a stream)")


@_frame
def causal_conv1d_stream(x, weight, bias=None, *, state=None, stride=1, dilation=1, activation=None, residual=None,
                         backend="auto", negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
    """One chunk of a streamed causal_conv1d. x: [B, Cin, T] -> (y [B, Cout, n], state).

    n is the number of outputs that became computable: over a stream, the n's add up to
    ceil(total_T / stride). residual, if given, must be [B, Cout, n] (call once without it to learn
    n, or compute n = ceil((consumed + T) / stride) - ceil(consumed / stride)).
    """
    _checks.tensor("x", x, dims=("B", "Cin", "T"))
    _checks.tensor("weight", weight, dims=("Cout", "Cin", "K"))
    _checks.positive_int("stride", stride)
    _checks.positive_int("dilation", dilation)
    B, Cin, _ = x.shape
    P = max((weight.shape[2] - 1) * dilation, stride - 1)
    _check_state(state, [B, Cin, None], x, "conv's input")
    if state is not None and not max(0, P + 1 - stride) <= state.shape[2] <= P:
        raise ValueError(f"state holds {state.shape[2]} samples; a stream of this conv keeps "
                         f"{max(0, P + 1 - stride)} to {P}")
    if state is None:
        state = x.new_zeros(B, Cin, P)  # the causal zero padding before the first sample
    xx = torch.cat([state, x], dim=2)
    n = (xx.shape[2] - 1 - P) // stride + 1 if xx.shape[2] > P else 0
    if residual is not None and list(residual.shape) != [B, weight.shape[0], n]:
        raise ValueError(f"residual must be [{B}, {weight.shape[0]}, {n}] for this chunk, got {list(residual.shape)}")
    if _window_kernel(backend, xx, weight, bias, alpha, residual):
        # Only the n outputs this chunk completes: output j's last tap is xx[j*stride + P], its
        # first xx[j*stride + P - (K-1)*dilation], i.e. the window conv with that (<= 0) padding.
        pad = (weight.shape[2] - 1) * dilation - P
        y = torch.ops.fastcodec.conv1d_window(xx, weight, bias, stride, dilation, pad, n, activation or "none",
                                              float(negative_slope), alpha, residual)
        return y, xx[:, :, n * stride:]
    # Output j of this chunk has its last tap at xx[j*stride + P]. The causal op puts output m's
    # last tap at m*stride, so shift xx right by z = (-P) mod stride zeros and skip the first
    # (P + z) / stride outputs, which would read the op's own zero padding.
    z = (-P) % stride
    first = (P + z) // stride
    xz = torch.cat([xx.new_zeros(B, Cin, z), xx], dim=2) if z else xx
    y = causal_conv1d(xz[:, :, : z + (first + n - 1) * stride + 1] if n else xz[:, :, :0], weight, bias,
                      stride=stride, dilation=dilation, activation=activation, backend=backend,
                      negative_slope=negative_slope, alpha=alpha)[:, :, first:first + n]
    if residual is not None:
        y = y + residual
    return y, xx[:, :, n * stride:]


@_frame
def causal_conv_transpose1d_stream(x, weight, bias=None, *, state=None, stride, activation=None, backend="auto",
                                   negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
    """One chunk of a streamed causal_conv_transpose1d. x: [B, Cin, T] -> (y [B, Cout, T*stride], state)."""
    _checks.conv_transpose1d(x, weight, bias, stride, activation, negative_slope, alpha)
    B, _, T = x.shape
    Cout, K = weight.shape[1], weight.shape[2]
    tail = max(K - stride, 0)
    _check_state(state, [B, Cout, tail], x, "transposed conv's overlap tail")
    # Appending e zero frames makes the op's trimmed output cover the full conv of x, overlap included.
    e = -(-tail // stride)
    x_ext = torch.cat([x, x.new_zeros(B, x.shape[1], e)], dim=2) if e else x
    z = causal_conv_transpose1d(x_ext, weight, None, stride=stride, backend=backend)
    if state is not None and tail:
        z = torch.cat([z[:, :, :tail] + state, z[:, :, tail:]], dim=2)
    out = z[:, :, : T * stride]
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    y = activation_ref(out, activation, negative_slope=negative_slope, alpha=alpha)
    return y, z[:, :, T * stride: T * stride + tail]


class CausalConv1dStream:
    """A prepared causal_conv1d stream: the arguments checked and the kernel chosen once, the state
    kept inside. `s(x, residual=None)` gives what causal_conv1d_stream gives for that chunk, with a
    fraction of its Python per call - which matters when a chunk is one 13 ms frame and a codec
    makes ~40 such calls per frame. The weights are read at every call (in-place changes count)."""

    def __init__(self, weight, bias=None, *, stride=1, dilation=1, activation=None, backend="auto",
                 negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
        _checks.tensor("weight", weight, dims=("Cout", "Cin", "K"))
        _checks.positive_int("stride", stride)
        _checks.positive_int("dilation", dilation)
        self.weight, self.bias, self.alpha = weight, bias, alpha
        self.stride, self.dilation, self.activation = stride, dilation, activation
        self.negative_slope, self.backend = negative_slope, backend
        self.P = max((weight.shape[2] - 1) * dilation, stride - 1)
        self.pad = (weight.shape[2] - 1) * dilation - self.P
        self.state = None
        self._fits = None  # whether the C++ window kernel fits, decided at the first chunk

    @_frame
    def __call__(self, x, residual=None):
        params = (self.weight, self.bias, self.alpha)
        if self._fits is None:
            _checks.conv1d(x, self.weight, self.bias, self.stride, self.dilation, self.activation, None,
                           self.negative_slope, self.alpha)
            self._fits = _stream_kernel_fits(self.backend, x, (x,) + params, "causal_conv1d_stream")
        if not self._fits or _wants_grad((x, residual) + params):
            y, self.state = causal_conv1d_stream(
                x, self.weight, self.bias, state=self.state, stride=self.stride, dilation=self.dilation,
                activation=self.activation, residual=residual, backend=self.backend,
                negative_slope=self.negative_slope, alpha=self.alpha)
            return y
        if x.dim() != 3 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"x must be [B, {self.weight.shape[1]}, T], got {list(x.shape)}")
        if self.state is None:
            self.state = x.new_zeros(x.shape[0], x.shape[1], self.P)
        elif self.state.shape[0] != x.shape[0]:
            raise ValueError(f"this stream has batch {self.state.shape[0]}, the chunk {x.shape[0]}")
        xx = torch.cat([self.state, x], dim=2)
        n = (xx.shape[2] - 1 - self.P) // self.stride + 1 if xx.shape[2] > self.P else 0
        y = torch.ops.fastcodec.conv1d_window(xx, self.weight, self.bias, self.stride, self.dilation, self.pad, n,
                                              self.activation or "none", float(self.negative_slope), self.alpha,
                                              residual)
        self.state = xx[:, :, n * self.stride:]
        return y


class CausalConvTranspose1dStream:
    """A prepared causal_conv_transpose1d stream (see CausalConv1dStream): `s(x)` gives what
    causal_conv_transpose1d_stream gives for that chunk, the overlap tail kept inside."""

    def __init__(self, weight, bias=None, *, stride, activation=None, backend="auto",
                 negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
        _checks.tensor("weight", weight, dims=("Cin", "Cout", "K"))
        _checks.positive_int("stride", stride)
        self.weight, self.bias, self.alpha = weight, bias, alpha
        self.stride, self.activation, self.negative_slope, self.backend = stride, activation, negative_slope, backend
        self.state = None
        self._fits = None  # whether the C++ stream kernel fits, decided at the first chunk

    @_frame
    def __call__(self, x):
        params = (self.weight, self.bias, self.alpha)
        if self._fits is None:
            _checks.conv_transpose1d(x, self.weight, self.bias, self.stride, self.activation, self.negative_slope,
                                     self.alpha)
            self._fits = _stream_kernel_fits(self.backend, x, (x,) + params, "causal_conv_transpose1d_stream")
        if not self._fits or _wants_grad((x,) + params):
            y, self.state = causal_conv_transpose1d_stream(
                x, self.weight, self.bias, state=self.state, stride=self.stride, activation=self.activation,
                backend=self.backend, negative_slope=self.negative_slope, alpha=self.alpha)
            return y
        if x.dim() != 3 or x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"x must be [B, {self.weight.shape[0]}, T], got {list(x.shape)}")
        if self.state is not None and self.state.shape[0] != x.shape[0]:
            raise ValueError(f"this stream has batch {self.state.shape[0]}, the chunk {x.shape[0]}")
        y, self.state = torch.ops.fastcodec.conv_transpose1d_stream(
            x, self.weight, self.bias, self.state, self.stride, self.activation or "none", float(self.negative_slope),
            self.alpha)
        return y


class StreamChain:
    """Prepared streams run in order as one: each chunk goes through every stream, the output of
    one feeding the next. `skips[i]` makes stream i add the input of stream i - 1 to its output
    (a residual unit: conv, then a 1x1 conv plus the unit's input).

    Where every stream would take its C++ kernel (fp32 CPU tensors, the cpp backend, no gradient
    wanted) a chunk runs through all of them in one C++ call (torch.classes.fastcodec.StreamChain):
    a codec streamed a 13 ms frame at a time makes ~40 conv calls per frame, and from Python each
    costs ~25 us besides its arithmetic. Otherwise the streams run one by one from Python. The
    states follow the chunk to whichever side runs it, so a stream may switch at any chunk (a chunk
    with gradients wanted after some without, say) and still equal the whole-signal result.
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
        first = self.streams[0]
        self.in_channels = first.weight.shape[1 if isinstance(first, CausalConv1dStream) else 0]
        self.batch = None
        self._native = None      # the C++ chain, built at the first chunk it can take
        self._native_ok = None   # whether it can take this chain's chunks at all (decided once)
        self._states_native = False  # where the states are now

    def _params(self):
        return tuple(t for s in self.streams for t in (s.weight, s.bias, s.alpha) if t is not None)

    def _native_fits(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float32 or _wants_grad((x,) + self._params()):
            return False
        if self._native_ok is None:  # decided at the first fp32 CPU chunk: the backends and weights
            kernel_ok = all(_stream_kernel_fits(s.backend, x, (x, s.weight, s.bias, s.alpha),
                                                "causal_conv1d_stream" if isinstance(s, CausalConv1dStream)
                                                else "causal_conv_transpose1d_stream") for s in self.streams)
            self._native_ok = kernel_ok and _extension.native_class("StreamChain") is not None
        return self._native_ok

    def _build_native(self):
        chain = _extension.native_class("StreamChain")()
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

    @_frame
    def __call__(self, x):
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, T], got {list(x.shape)}")
        if self.batch is not None and x.shape[0] != self.batch:
            raise ValueError(f"this stream has batch {self.batch}, the chunk {x.shape[0]}")
        self.batch = x.shape[0]
        if self._native_fits(x):
            if self._native is None:
                self._native = self._build_native()
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
