"""The codec's modules: shapes on any length, causality, quantizer dropout and EMA, presets, and the
whole model computing the same output and gradients on every CPU backend as on the torch backend."""
import copy
import dataclasses
import math

import pytest
import torch
from conftest import assert_close_to_reference, require_backend

from fastcodec.nn import (
    PRESETS,
    CausalConv1d,
    CausalConvTranspose1d,
    CodecConfig,
    ResidualVQ,
    SoundStream,
    preset,
    set_backend,
)
from fastcodec.ops import _backend

SMALL = CodecConfig(sample_rate=8000, channels=4, strides=(2, 3), code_dim=8, n_q=3, codebook_size=16)


def test_presets_describe_the_documented_codecs():
    ss = preset("soundstream-24k")
    assert (ss.sample_rate, ss.hop, ss.frame_rate, ss.n_q, ss.codebook_size) == (24000, 320, 75.0, 8, 1024)
    assert ss.bitrate() == 6000 and ss.bitrate(2) == 1500
    seed = preset("seed-16k")
    assert (seed.sample_rate, seed.hop, seed.n_q, seed.codebook_size, seed.activation) == (16000, 320, 15, 256,
                                                                                             "leaky_relu")
    assert seed.negative_slope == 0.3
    lite = preset("soundstream-24k-lite")
    assert lite == dataclasses.replace(ss, residual_kernel=3, residual_bottleneck=2)
    for name in PRESETS:
        cfg = preset(name)
        assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")
    with pytest.raises(ValueError, match="quantizer_dropout"):
        CodecConfig(quantizer_dropout=2.0)
    with pytest.raises(ValueError, match="unknown CodecConfig fields"):
        CodecConfig.from_dict({**ss.to_dict(), "extra": 1})


def test_a_residual_bottleneck_narrows_the_inner_conv_and_old_configs_keep_their_form():
    cfg = dataclasses.replace(SMALL, residual_kernel=3, residual_bottleneck=2)
    unit = SoundStream(cfg).encoder.blocks[1].units[0]  # at 2C = 8 channels
    assert tuple(unit.conv.weight.shape) == (4, 8, 3) and tuple(unit.proj.weight.shape) == (8, 4, 1)
    assert cfg.to_dict()["residual_bottleneck"] == 2 and CodecConfig.from_dict(cfg.to_dict()) == cfg
    # A model without the field is written as before it existed (its fingerprint names it in .fcdc files).
    assert "residual_bottleneck" not in SMALL.to_dict() and CodecConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="residual_bottleneck must be a positive int"):
        dataclasses.replace(SMALL, residual_bottleneck=0)


def test_encoder_widths_follow_the_issue():
    m = SoundStream(preset("soundstream-24k"))
    downs = [b.down for b in m.encoder.blocks]
    assert [d.weight.shape[:3] for d in downs] == [(64, 32, 4), (128, 64, 8), (256, 128, 10), (512, 256, 16)]
    assert [d.stride for d in downs] == [2, 4, 5, 8]
    assert [u.conv.dilation for u in m.encoder.blocks[0].units] == [1, 3, 9]
    ups = [b.up for b in m.decoder.blocks]
    assert [tuple(u.weight.shape) for u in ups] == [(512, 256, 16), (256, 128, 10), (128, 64, 8), (64, 32, 4)]


@pytest.mark.parametrize("T", [1, 5, 6, 7, 37, 100])
def test_any_length(T):
    m = SoundStream(SMALL).eval()
    x = torch.randn(2, 1, T)
    out = m(x)
    frames = math.ceil(T / SMALL.hop)
    assert out.audio.shape == (2, 1, T)
    assert out.quantizer.codes.shape == (2, SMALL.n_q, frames)
    codes = m.encode(x, n_q=2)
    assert codes.shape == (2, 2, frames) and codes.dtype == torch.int64
    assert m.decode(codes).shape == (2, 1, frames * SMALL.hop)
    assert m.decode(codes, length=T).shape == (2, 1, T)


def test_output_never_depends_on_input_after_its_frame():
    """Frame k codes samples < (k+1)*hop: a change at t0 moves no output before t0's frame start,
    and does move output inside that frame (one hop of latency, no more)."""
    torch.manual_seed(0)
    m = SoundStream(SMALL).double().eval()
    x = torch.randn(1, 1, 61, dtype=torch.float64)
    base = m.decoder(m.encoder(x))
    for t0 in (0, 5, 6, 31, 60):
        x2 = x.clone()
        x2[..., t0] += 1.0
        changed = (m.decoder(m.encoder(x2)) - base).abs()[0, 0] > 0
        first = int(torch.nonzero(changed)[0])
        assert first == t0 // SMALL.hop * SMALL.hop


def test_bad_audio_is_refused():
    m = SoundStream(SMALL)
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        m(torch.randn(2, 2, 10))
    with pytest.raises(ValueError, match="empty"):
        m(torch.randn(2, 1, 0))
    with pytest.raises(ValueError, match="n_q"):
        m.encode(torch.randn(1, 1, 10), n_q=SMALL.n_q + 1)


def test_quantizer_dropout_codes_each_example_with_its_own_n_q():
    torch.manual_seed(1)
    q = ResidualVQ(SMALL).train()
    z = torch.randn(6, SMALL.code_dim, 5)
    out = q(z, generator=torch.Generator().manual_seed(3))
    assert out.n_q.min() >= 1 and out.n_q.max() <= SMALL.n_q
    assert len(set(out.n_q.tolist())) > 1  # the draw varies across the batch
    for b in range(6):
        n = int(out.n_q[b])
        expect = q.decode(out.codes[b:b + 1, :n])
        torch.testing.assert_close(out.quantized[b:b + 1].detach(), expect, rtol=0, atol=1e-6)
    # Truncated full-Q codes are exactly the codes of coding with fewer stages.
    q.eval()
    assert torch.equal(q.encode(z, 2), q.encode(z, SMALL.n_q)[:, :2])


def test_straight_through_and_commitment_gradients():
    q = ResidualVQ(SMALL).train()
    z = torch.randn(2, SMALL.code_dim, 40, requires_grad=True)  # more rows than codes: k-means cannot be exact
    out = q(z)
    out.quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity through the quantizer
    z.grad = None
    out = q(z)
    assert out.commitment_loss > 0
    out.commitment_loss.backward()
    assert z.grad.abs().sum() > 0


def test_ema_update_moves_codebooks_and_a_skipped_step_does_not():
    torch.manual_seed(2)
    q = ResidualVQ(SMALL).train()
    z = torch.randn(4, SMALL.code_dim, 8)
    q(z)  # first forward: k-means init
    assert bool(q.initialized)
    before = q.codebooks.clone()
    q(z + 0.5)
    q.discard_pending()
    assert q.update_codebooks() == 0 and torch.equal(q.codebooks, before)
    q(z + 0.5)
    q.update_codebooks()
    assert not torch.equal(q.codebooks, before)
    assert torch.isfinite(q.codebooks).all()


def test_autocast_bf16_runs_convs_low_and_vq_in_fp32():
    m = SoundStream(SMALL).train()
    x = torch.randn(2, 1, 30)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        assert out.audio.dtype == torch.bfloat16
    assert m.quantizer.codebooks.dtype == torch.float32
    assert out.quantizer.commitment_loss.dtype == torch.float32
    out.audio.float().pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_layers_validate_and_set_backend():
    with pytest.raises(ValueError, match="activation"):
        CausalConv1d(2, 2, 3, activation="relu")
    with pytest.raises(ValueError, match="activation"):
        CausalConvTranspose1d(2, 2, 4, stride=2, activation="tanh")
    m = SoundStream(SMALL)
    with pytest.raises(ValueError, match="unknown backend"):
        set_backend(m, "fortran")
    set_backend(m, "torch")
    assert {mod.backend for mod in m.modules() if hasattr(mod, "backend")} == {"torch"}


def _fast_backends():
    """Every backend that runs the model on CPU here besides the reference."""
    return [b for b in ("cpp", "triton") if _backend.status(b, "cpu")[0]] or ["cpp"]


def _run(model, x, backend, n_q_seed=5):
    set_backend(model, backend)
    model.zero_grad(set_to_none=True)
    out = model(x, generator=torch.Generator().manual_seed(n_q_seed), return_stages=True)
    loss = out.audio.pow(2).mean() + out.quantizer.commitment_loss + sum(s.mean() for s in out.stages)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out, grads


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_whole_model_matches_torch_backend(backend):
    """Speed never changes what is computed: output, codes and every parameter gradient of a
    training step agree with the torch backend (fp32, by the tolerance rule against fp64)."""
    require_backend(backend, "cpu")
    cfg = SMALL if backend == "cpp" else CodecConfig(sample_rate=8000, channels=2, strides=(2, 2), code_dim=4,
                                                      n_q=2, codebook_size=8)
    torch.manual_seed(11)
    model = SoundStream(cfg).train()
    x = torch.randn(2, 1, 23 if backend == "cpp" else 9)
    # Distinct random codewords at the latent's scale (k-means on a few rows would duplicate codewords,
    # whose exact ties fp32 and fp64 may break differently).
    with torch.no_grad():
        z = model.encoder(x)
        model.quantizer.codebooks.normal_().mul_(z.std())
        model.quantizer.initialized.fill_(True)
    m64 = copy.deepcopy(model).double()
    ref64, g64 = _run(m64, x.double(), "torch")
    ref32, g32 = _run(copy.deepcopy(model), x, "torch")
    out, g = _run(copy.deepcopy(model), x, backend)
    assert torch.equal(out.quantizer.codes, ref32.quantizer.codes)
    assert torch.equal(out.quantizer.codes, ref64.quantizer.codes)
    assert_close_to_reference(out.audio.detach(), ref32.audio.detach(), ref64.audio.detach(), name="audio")
    for name in g64:
        assert_close_to_reference(g[name], g32[name], g64[name], factor=4.0, atol_eps=64.0, name=f"grad {name}")


def _chunked(fn, x, generator, most):
    """fn applied to random-sized chunks of x along time (zero-length ones included), concatenated."""
    outs, pos = [], 0
    while pos < x.shape[2]:
        n = int(torch.randint(0, most, (1,), generator=generator))
        outs.append(fn(x[..., pos:pos + n]))
        pos += n
    return outs


@pytest.mark.parametrize("T, cfg", [(1, SMALL), (5, SMALL), (6, SMALL), (37, SMALL), (400, SMALL),
                                    (37, dataclasses.replace(SMALL, residual_kernel=3, residual_bottleneck=2))])
def test_streaming_encoder_and_decoder_equal_offline(T, cfg, monkeypatch):
    """Audio in chunks of any size gives exactly the offline codes (float64: the latent matches to
    the last bit, so no near-tie can flip a code) and, decoded in chunks, the offline audio. On
    the static rules: measured 'auto' may run a stream's shapes and the offline ones on different
    backends, which round differently."""
    monkeypatch.setenv("FASTCODEC_TUNE", "0")
    torch.manual_seed(5)
    m = SoundStream(cfg).double().eval()
    with torch.no_grad():
        m.quantizer.codebooks.normal_()
    x = torch.randn(2, 1, T, dtype=torch.float64)
    g = torch.Generator().manual_seed(T)
    for _ in range(3):  # three random chunkings
        enc = m.encoder.stream()
        z = torch.cat(_chunked(enc, x, g, 20) + [enc.flush()], dim=2)
        assert torch.equal(z, m.encoder(x))
        codes = m.quantizer.encode(z)
        assert torch.equal(codes, m.encode(x))
        dec = m.decoder.stream()
        q = m.quantizer.decode(codes)
        y = torch.cat(_chunked(dec, q, g, 4), dim=2)
        torch.testing.assert_close(y, m.decoder(q), rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="flushed"):
        enc(x)
    with pytest.raises(RuntimeError, match="before any audio"):
        m.encoder.stream().flush()


def test_streaming_in_fp32_stays_within_float_tolerance(monkeypatch):
    monkeypatch.setenv("FASTCODEC_TUNE", "0")  # one backend for the stream and the offline pass
    torch.manual_seed(6)
    m = SoundStream(preset("tiny")).eval()
    x = torch.randn(1, 1, 2000)
    enc = m.encoder.stream()
    z = torch.cat(_chunked(enc, x, torch.Generator().manual_seed(0), 700) + [enc.flush()], dim=2)
    torch.testing.assert_close(z, m.encoder(x), rtol=1e-4, atol=1e-5)
    dec = m.decoder.stream()
    y = torch.cat(_chunked(dec, z, torch.Generator().manual_seed(1), 3), dim=2)
    torch.testing.assert_close(y, m.decoder(z), rtol=1e-4, atol=1e-5)


def test_full_precision_turns_autocast_off_only_inside():
    from fastcodec.nn import full_precision

    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with full_precision():  # autocast off already: a no-op
        assert (a @ b).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with full_precision():
            assert (a @ b).dtype == torch.float32
        assert (a @ b).dtype == torch.bfloat16


def test_a_stream_frame_scope_nests_and_ends_even_on_errors():
    from fastcodec.nn import streams
    from fastcodec.ops import tuning

    assert not getattr(streams._scope, "inside", False)
    with pytest.raises(RuntimeError, match="boom"):
        with streams.frame():
            with streams.frame():
                assert streams._scope.inside and not tuning._may_measure()
            assert streams._scope.inside  # the inner scope leaves the outer one in place
            raise RuntimeError("boom")
    assert not getattr(streams._scope, "inside", False) and not getattr(tuning._scope, "frozen", False)
