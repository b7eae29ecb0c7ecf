"""Per-op stream steps of the causal convs: feed a signal in chunks of any sizes (including 0 and
sizes that are not multiples of the stride) and the concatenated outputs equal the whole-signal op.

Each takes the `state` returned by the previous call (None at the start of a stream) and returns
(y, state). Both are built on the public ops, so they run on every backend; on the cpp backend
(fp32, no gradient wanted) a chunk runs one native kernel that computes only what it completes.

- causal_conv1d_stream: the state is the tail of the input, [B, Cin, L]. With pad = (K-1)*dilation
  and P = max(pad, stride - 1), it starts P samples before the next output's last tap, so
  P + 1 - stride <= L <= P and its length also encodes where the stride grid falls. (P rather than pad:
  with stride > pad + 1 the next output can need a sample not yet seen, and the tail must still
  say how far ahead it is.) A call emits every output whose last input has arrived.
- causal_conv_transpose1d_stream: the state is the overlap tail, [B, Cout, max(K - stride, 0)]:
  pre-activation sums (without bias) that earlier input contributes to samples not yet emitted.
  A call with T input frames emits exactly T*stride samples.

For prepared streams (fastcodec.nn.streams), which check a layer once and then run many small
chunks: stream_kernel_fits() says whether the native step takes a chunk, conv1d_window() and
conv_transpose1d_step() run it without the per-call checks, and native_stream_chain() runs a whole
chain of them in one C++ call.
"""
from __future__ import annotations

import functools

import torch

from . import _checks, _extension, dispatch, tuning
from ._run import wants_grad
from .conv import causal_conv1d, causal_conv_transpose1d
from .reference import DEFAULT_NEGATIVE_SLOPE, activation_ref


def _frame(fn):
    """A stream's call: 'auto' takes cached or static choices without timing anything (a frame
    must never stall; `python -m fastcodec tune` measures a stream's shapes ahead of time)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with tuning.no_measuring():
            return fn(*args, **kwargs)
    return call


def stream_kernel_fits(op, backend, x, tensors) -> bool:
    """Whether the native step of stream `op` ('causal_conv1d_stream' or
    'causal_conv_transpose1d_stream') can run a chunk x with these tensors: the conv's backend is
    cpp by the static rule (a stream's frames are never timed: they must not stall), and every
    tensor is of a dtype the step takes. The kernels have no backward: ask wants_grad() per chunk."""
    if dispatch.choose(op.removesuffix("_stream"), backend, x.device, x.dtype) != "cpp":
        return False
    return all(dispatch.refusal(op, "cpp", t.device.type, t.dtype) is None for t in tensors if t is not None)


def _window_kernel(backend, x, weight, *others):
    tensors = (x, weight) + others
    return stream_kernel_fits("causal_conv1d_stream", backend, x, tensors) and not wants_grad(*tensors)


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
    _checks.conv1d(x, weight, bias, stride, dilation, activation, None, negative_slope, alpha)
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
        y = conv1d_window(xx, weight, bias, stride, dilation, (weight.shape[2] - 1) * dilation - P, n, activation,
                          negative_slope, alpha, residual)
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
    tensors = (x, weight, bias, alpha, state)
    if stream_kernel_fits("causal_conv_transpose1d_stream", backend, x, tensors) and not wants_grad(*tensors):
        return conv_transpose1d_step(x, weight, bias, state, stride, activation, negative_slope, alpha)
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


def conv1d_window(xx, weight, bias, stride, dilation, pad, n, activation, negative_slope, alpha, residual):
    """The native conv step: the n outputs of a causal conv whose first tap is xx[j*stride - pad]
    (pad <= 0 in a stream: the state supplies the history). xx: [B, Cin, L] -> [B, Cout, n].
    For callers that checked the layer once and asked stream_kernel_fits (fp32 CPU, no gradient)."""
    return torch.ops.fastcodec.conv1d_window(xx, weight, bias, stride, dilation, pad, n, activation or "none",
                                             float(negative_slope), alpha, residual)


def conv_transpose1d_step(x, weight, bias, state, stride, activation, negative_slope, alpha):
    """The native transposed-conv step: causal_conv_transpose1d_stream's result for a chunk, as
    (y [B, Cout, T*stride], state), for callers that checked the layer once and asked
    stream_kernel_fits (fp32 CPU, no gradient)."""
    return torch.ops.fastcodec.conv_transpose1d_stream(x, weight, bias, state, stride, activation or "none",
                                                      float(negative_slope), alpha)


def native_stream_chain():
    """An empty C++ chain of conv steps (torch.classes.fastcodec.StreamChain: add_conv,
    add_transposed, step, get/set/clear/has_state), or None where the extension has none. A chunk
    runs through every step in one call: a codec streamed a frame at a time makes ~40 conv calls
    per frame, and from Python each costs interpreter and dispatcher work besides its arithmetic."""
    cls = _extension.native_class("StreamChain")
    return None if cls is None else cls()
