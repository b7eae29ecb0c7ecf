"""Streaming convs: any chunking of a signal gives the whole-signal output, through the per-op
stream steps (fastcodec.ops) and the prepared streams and chains (fastcodec.nn.streams)."""
import math

import pytest
import torch

from conftest import require_backend
from fastcodec import nn as fnn
from fastcodec import ops

BACKENDS = [("torch", "cpu"), ("cpp", "cpu"), ("triton", "cpu"), ("cuda", "cuda"), ("triton", "cuda")]


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{d}" for b, d in BACKENDS])
def stream_target(request):
    require_backend(*request.param)
    return request.param


def _chunks(total, gen):
    """Random chunk sizes adding up to total, with zeros and ones among them."""
    sizes, left = [], total
    while left > 0:
        n = int(torch.randint(0, 4, (1,), generator=gen)) if torch.rand(1, generator=gen) < 0.4 else \
            int(torch.randint(1, 40, (1,), generator=gen))
        n = min(n, left)
        sizes.append(n)
        left -= n
    return sizes


# Includes stride > pad + 1 ((1, 2), (2, 5)): the next output can need a sample not yet seen.
@pytest.mark.parametrize("K,stride,dilation", [(1, 1, 1), (7, 1, 1), (7, 1, 9), (4, 2, 1), (10, 5, 1), (16, 8, 1),
                                               (3, 3, 2), (1, 2, 1), (2, 5, 1)])
@pytest.mark.parametrize("activation", ["elu", "snake"])
def test_conv1d_stream_matches_offline(stream_target, K, stride, dilation, activation):
    backend, device = stream_target
    gen = torch.Generator().manual_seed(K * 100 + stride * 10 + dilation)
    B, Cin, Cout, T = 2, 3, 5, 157
    x = torch.randn(B, Cin, T, device=device)
    w = torch.randn(Cout, Cin, K, device=device) / math.sqrt(Cin * K)
    b = torch.randn(Cout, device=device)
    alpha = torch.rand(Cout, device=device) + 0.5 if activation == "snake" else None
    kw = dict(stride=stride, dilation=dilation, activation=activation, alpha=alpha, backend=backend)
    offline = ops.causal_conv1d(x, w, b, **kw)
    for _ in range(3):
        state, outs, pos = None, [], 0
        for n in _chunks(T, gen):
            y, state = ops.causal_conv1d_stream(x[:, :, pos:pos + n], w, b, state=state, **kw)
            outs.append(y)
            pos += n
        torch.testing.assert_close(torch.cat(outs, dim=2), offline, rtol=1e-5, atol=1e-5)


def test_conv1d_stream_residual(stream_target):
    backend, device = stream_target
    x = torch.randn(1, 4, 50, device=device)
    w = torch.randn(6, 4, 4, device=device) / 4
    res = torch.randn(1, 6, 25, device=device)
    offline = ops.causal_conv1d(x, w, stride=2, activation="silu", residual=res, backend=backend)
    state, outs, pos, done = None, [], 0, 0
    for n in (3, 0, 1, 10, 7, 29):
        n_out = -(-(pos + n) // 2) - done
        y, state = ops.causal_conv1d_stream(x[:, :, pos:pos + n], w, state=state, stride=2, activation="silu",
                                            residual=res[:, :, done:done + n_out], backend=backend)
        outs.append(y)
        pos, done = pos + n, done + n_out
    torch.testing.assert_close(torch.cat(outs, dim=2), offline, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("K,stride", [(1, 1), (5, 1), (4, 2), (8, 4), (10, 5), (16, 8), (3, 5), (7, 3)])
@pytest.mark.parametrize("activation", [None, "elu", "snake"])
def test_conv_transpose1d_stream_matches_offline(stream_target, K, stride, activation):
    backend, device = stream_target
    gen = torch.Generator().manual_seed(K * 10 + stride)
    B, Cin, Cout, T = 2, 4, 3, 61
    x = torch.randn(B, Cin, T, device=device)
    w = torch.randn(Cin, Cout, K, device=device) / math.sqrt(Cin * K)
    b = torch.randn(Cout, device=device)
    alpha = torch.rand(Cout, device=device) + 0.5 if activation == "snake" else None
    kw = dict(stride=stride, activation=activation, alpha=alpha, backend=backend)
    offline = ops.causal_conv_transpose1d(x, w, b, **kw)
    for _ in range(3):
        state, outs, pos = None, [], 0
        for n in _chunks(T, gen):
            y, state = ops.causal_conv_transpose1d_stream(x[:, :, pos:pos + n], w, b, state=state, **kw)
            assert y.shape[2] == n * stride
            outs.append(y)
            pos += n
        torch.testing.assert_close(torch.cat(outs, dim=2), offline, rtol=1e-5, atol=1e-5)


def test_stream_rejects_a_foreign_state():
    w = torch.randn(5, 3, 7)
    _, state = ops.causal_conv1d_stream(torch.randn(1, 3, 10), w)
    with pytest.raises(ValueError, match="state"):
        ops.causal_conv1d_stream(torch.randn(1, 3, 10), torch.randn(5, 3, 3), state=state)
    with pytest.raises(ValueError, match="state"):
        ops.causal_conv1d_stream(torch.randn(2, 3, 10), w, state=state)
    wt = torch.randn(3, 5, 8)
    _, tail = ops.causal_conv_transpose1d_stream(torch.randn(1, 3, 4), wt, stride=4)
    assert tail.shape == (1, 5, 4)
    with pytest.raises(ValueError, match="state"):
        ops.causal_conv_transpose1d_stream(torch.randn(1, 3, 4), wt, stride=2, state=tail)


@pytest.mark.parametrize("K,stride,dilation", [(7, 1, 9), (16, 8, 1), (2, 5, 1), (4, 2, 1), (1, 1, 1)])
def test_prepared_conv1d_stream_matches_offline(stream_target, K, stride, dilation):
    # The prepared form (the C++ window kernel on cpp, the functional stream elsewhere), with the
    # residual fused as ResidualUnit uses it, on chunks of every size from 0 up.
    backend, device = stream_target
    gen = torch.Generator().manual_seed(K + 100 * stride + dilation)
    B, Cin, Cout, T = 2, 6, 5, 143
    x = torch.randn(B, Cin, T, device=device)
    w = torch.randn(Cout, Cin, K, device=device) / math.sqrt(Cin * K)
    b = torch.randn(Cout, device=device)
    res = torch.randn(B, Cout, -(-T // stride), device=device)
    kw = dict(stride=stride, dilation=dilation, activation="elu", backend=backend)
    offline = ops.causal_conv1d(x, w, b, residual=res, **kw)
    s = fnn.CausalConv1dStream(w, b, **kw)
    outs, pos, done = [], 0, 0
    for n in _chunks(T, gen):
        n_out = -(-(pos + n) // stride) - done
        outs.append(s(x[:, :, pos:pos + n], residual=res[:, :, done:done + n_out]))
        pos, done = pos + n, done + n_out
    torch.testing.assert_close(torch.cat(outs, dim=2), offline, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batch|state"):  # a chunk of another batch size
        s(torch.randn(1, Cin, 3, device=device))


@pytest.mark.parametrize("K,stride", [(16, 8), (3, 5), (5, 1)])
def test_prepared_conv_transpose1d_stream_matches_offline(stream_target, K, stride):
    backend, device = stream_target
    gen = torch.Generator().manual_seed(K * 7 + stride)
    x = torch.randn(2, 4, 37, device=device)
    w = torch.randn(4, 3, K, device=device) / math.sqrt(4 * K)
    b = torch.randn(3, device=device)
    kw = dict(stride=stride, activation="elu", backend=backend)
    offline = ops.causal_conv_transpose1d(x, w, b, **kw)
    s = fnn.CausalConvTranspose1dStream(w, b, **kw)
    outs, pos = [], 0
    for n in _chunks(37, gen):
        outs.append(s(x[:, :, pos:pos + n]))
        pos += n
    torch.testing.assert_close(torch.cat(outs, dim=2), offline, rtol=1e-5, atol=1e-5)


def test_prepared_streams_keep_gradients(stream_target):
    # The C++ stream kernels have no backward: with a gradient wanted, chunks take the composed
    # path, so training through a stream gets the offline gradients rather than none.
    backend, device = stream_target
    x = torch.randn(1, 3, 40, device=device)
    w = (torch.randn(4, 3, 5, device=device) / 4).requires_grad_()
    wt = (torch.randn(4, 2, 6, device=device) / 4).requires_grad_()
    s, st = fnn.CausalConv1dStream(w, stride=2, backend=backend), fnn.CausalConvTranspose1dStream(wt, stride=3,
                                                                                                 backend=backend)
    with torch.no_grad():
        s(x[:, :, :7])  # a first chunk without gradients must not pin the stream to the kernel path
        st(torch.zeros(1, 4, 0, device=device))
    s.state = None
    streamed = torch.cat([st(s(x[:, :, a:a + 9])) for a in range(0, 40, 9)], dim=2)
    offline = ops.causal_conv_transpose1d(ops.causal_conv1d(x, w, stride=2, backend=backend), wt, stride=3,
                                          backend=backend)
    g_stream = torch.autograd.grad(streamed.pow(2).sum(), (w, wt))
    g_off = torch.autograd.grad(offline.pow(2).sum(), (w, wt))
    for a, b in zip(g_stream, g_off):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _chain_layers(device, requires_grad=False):
    """A strided conv, a residual unit (k3 dilated conv, then a 1x1 conv adding the unit's input)
    and a transposed conv: (params, offline function, prepared streams, skip flags)."""
    g = torch.Generator().manual_seed(5)
    p = {"w0": torch.randn(6, 3, 4, generator=g) / 4, "b0": torch.randn(6, generator=g),
         "w1": torch.randn(6, 6, 3, generator=g) / 4, "w2": torch.randn(6, 6, 1, generator=g) / 3,
         "b2": torch.randn(6, generator=g), "wt": torch.randn(6, 5, 7, generator=g) / 4,
         "bt": torch.randn(5, generator=g), "at": torch.rand(5, generator=g) + 0.5}
    p = {k: v.to(device).requires_grad_(requires_grad) for k, v in p.items()}

    def offline(x, backend):
        h = ops.causal_conv1d(x, p["w0"], p["b0"], stride=2, activation="elu", backend=backend)
        u = ops.causal_conv1d(h, p["w1"], dilation=2, activation="leaky_relu", backend=backend)
        h = ops.causal_conv1d(u, p["w2"], p["b2"], residual=h, backend=backend)
        return ops.causal_conv_transpose1d(h, p["wt"], p["bt"], stride=3, activation="snake", alpha=p["at"],
                                           backend=backend)

    def streams(backend):
        return [fnn.CausalConv1dStream(p["w0"], p["b0"], stride=2, activation="elu", backend=backend),
                fnn.CausalConv1dStream(p["w1"], dilation=2, activation="leaky_relu", backend=backend),
                fnn.CausalConv1dStream(p["w2"], p["b2"], backend=backend),
                fnn.CausalConvTranspose1dStream(p["wt"], p["bt"], stride=3, activation="snake", alpha=p["at"],
                                                backend=backend)]
    return p, offline, streams, [False, False, True, False]


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_stream_chain_matches_offline(backend):
    """On cpp every chunk runs in one C++ call (torch.classes.fastcodec.StreamChain); on torch from
    Python. Random chunkings, 0 and odd sizes included, give the whole-signal output."""
    require_backend(backend, "cpu")
    _, offline, streams, skips = _chain_layers("cpu")
    x = torch.randn(2, 3, 151)
    with torch.no_grad():
        want = offline(x, backend)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            chain, outs, pos = fnn.StreamChain(streams(backend), skips), [], 0
            for n in _chunks(151, gen):
                outs.append(chain(x[:, :, pos:pos + n]))
                pos += n
            torch.testing.assert_close(torch.cat(outs, dim=2), want, rtol=1e-5, atol=1e-5)
        assert (chain._native is not None) == (backend == "cpp")


def test_stream_chain_moves_states_between_native_and_python():
    """Chunks that want gradients run from Python, the others natively; the states follow, so
    alternating still gives the offline output, and gradients reach the weights."""
    require_backend("cpp", "cpu")
    p, offline, streams, skips = _chain_layers("cpu", requires_grad=True)
    x = torch.randn(1, 3, 90)
    want = offline(x, "cpp")
    chain, outs = fnn.StreamChain(streams("cpp"), skips), []
    for i, a in enumerate(range(0, 90, 7)):
        with torch.set_grad_enabled(i % 3 == 1):
            outs.append(chain(x[:, :, a:a + 7]))
    assert chain._native is not None
    y = torch.cat(outs, dim=2)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert y.requires_grad  # the grad chunks kept their graph
    (g,) = torch.autograd.grad(y.pow(2).sum(), p["w1"])
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_stream_chain_refuses_bad_chunks_and_layers(backend):
    require_backend(backend, "cpu")
    _, _, streams, skips = _chain_layers("cpu")
    chain = fnn.StreamChain(streams(backend), skips)
    with torch.no_grad():
        chain(torch.randn(2, 3, 5))
        with pytest.raises(ValueError, match="batch"):
            chain(torch.randn(1, 3, 5))
        with pytest.raises(ValueError, match=r"\[B, 3, T\]"):
            chain(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="skip"):
        fnn.StreamChain(streams(backend), [True, False, False, False])
    with pytest.raises(ValueError, match="skip"):
        fnn.StreamChain(streams(backend), [False, False, False, True])
    with pytest.raises(TypeError, match="prepared streams"):
        fnn.StreamChain([lambda x: x])
    s = streams(backend)
    with pytest.raises(ValueError, match="stream 1 takes 6 channels but stream 0 gives 5"):
        fnn.StreamChain([s[3], s[1]])  # the transposed conv's 5 channels into a 6-channel conv
    with pytest.raises(ValueError, match="adds the input of stream 0"):
        fnn.StreamChain([s[0], s[1]], [False, True])  # 3 input channels added to 6 outputs
    with pytest.raises(ValueError, match=r"weight must be a tensor \[Cout, Cin, K\]"):
        fnn.CausalConv1dStream(torch.randn(4, 3))
    with pytest.raises(ValueError, match="stride must be a positive int"):
        fnn.CausalConvTranspose1dStream(torch.randn(4, 3, 2), stride=0)


def test_native_stream_chain_checks_its_layers():
    """The C++ class refuses what would compute garbage, whoever builds it."""
    require_backend("cpp", "cpu")
    chain = ops.native_stream_chain()
    with pytest.raises(RuntimeError, match="no layers"):
        chain.step(torch.randn(1, 3, 4))
    chain.add_conv(torch.randn(4, 3, 3), None, None, 1, 1, "elu", 0.3, False)
    with pytest.raises(RuntimeError, match="takes 5 channels"):
        chain.add_conv(torch.randn(2, 5, 1), None, None, 1, 1, "none", 0.3, False)
    with pytest.raises(RuntimeError, match="skip"):
        chain.add_conv(torch.randn(4, 4, 1), None, None, 1, 1, "none", 0.3, True)  # 3 channels in, 4 out
    with pytest.raises(RuntimeError, match="fp32"):
        chain.add_conv(torch.randn(4, 4, 1, dtype=torch.float64), None, None, 1, 1, "none", 0.3, False)
    with pytest.raises(RuntimeError, match="keeps"):
        chain.set_state(0, torch.randn(1, 3, 9))  # a k3 conv keeps 2 samples
    with pytest.raises(RuntimeError, match="out of range"):
        chain.get_state(3)


def test_a_prepared_stream_carries_the_graph_through_its_state():
    """A chunk whose own input wants no gradient still depends on the state an earlier chunk left,
    which may: the native step (no backward) must not take it."""
    require_backend("cpp", "cpu")
    w = torch.randn(4, 3, 5) / 4
    x = torch.randn(1, 3, 30, requires_grad=True)
    s = fnn.CausalConv1dStream(w, backend="cpp")
    with torch.no_grad():
        s(torch.randn(1, 3, 4))  # the first chunk: the native step fits this stream
    s.state = None
    y = torch.cat([s(x[:, :, :12]), s(x[:, :, 12:].detach())], dim=2)
    (g,) = torch.autograd.grad(y.pow(2).sum(), x)
    want = ops.causal_conv1d(torch.cat([x[:, :, :12], x[:, :, 12:].detach()], dim=2), w, backend="cpp")
    (g_want,) = torch.autograd.grad(want.pow(2).sum(), x)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, g_want, rtol=1e-4, atol=1e-5)  # (without the state's graph: too small at 8-11)
