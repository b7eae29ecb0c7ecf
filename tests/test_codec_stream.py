"""Codec.streaming_encoder / streaming_decoder: random chunkings give exactly the offline codes and,
decoded frame by frame, the offline audio; resampled streams; clear errors."""
import numpy as np
import pytest
import torch
from conftest import require_backend, save_codec

from fastcodec import Codec


@pytest.fixture(params=["auto", "torch"])
def codec(codec_path, request):
    return Codec.load(codec_path, backend=request.param)


def _chunks(rng, total, largest):
    """Random chunk bounds covering 0..total, zero-length chunks included."""
    cuts, i = [], 0
    while i < total:
        n = int(rng.integers(0, largest))
        cuts.append((i, min(i + n, total)))
        i += n
    return cuts


@pytest.mark.parametrize("trial", range(4))
def test_random_chunkings_give_the_offline_codes(codec, trial):
    rng = np.random.default_rng(trial)
    channels = 1 + trial % 2
    T = int(rng.integers(1, 3000))
    x = 0.3 * torch.randn(channels, T)
    offline = codec.encode(x, 8000, n_q=2 + trial % 2).codes[0]
    enc = codec.streaming_encoder(n_q=offline.shape[1], channels=channels)
    parts = [enc(x[:, a:b]) for a, b in _chunks(rng, T, [7, 50, 700, 4000][trial])]
    parts.append(enc.flush())
    assert all(p.shape[:2] == offline.shape[:2] and p.dtype == torch.int64 for p in parts)
    assert torch.equal(torch.cat(parts, 2), offline)
    assert enc.samples == T


def test_frames_come_out_as_soon_as_their_samples_are_in(codec):
    enc = codec.streaming_encoder()
    hop = codec.cfg.hop
    x = 0.3 * torch.randn(10 * hop)
    frames = []
    for k in range(10):  # one hop in -> exactly one frame out: the codec's latency is one hop
        frames.append(enc(x[k * hop:(k + 1) * hop]))
        assert frames[-1].shape[2] == 1
    assert enc.flush().shape[2] == 0  # the signal ended on a frame boundary: nothing left open
    assert torch.equal(torch.cat(frames, 2), codec.encode(x, 8000).codes[0])


@pytest.mark.parametrize("per_call", [1, 3, 50])
def test_decoding_frame_by_frame_matches_offline(codec, per_call):
    x = 0.3 * torch.randn(2, 1001)
    encoded = codec.encode(x, 8000)
    offline = codec.decode(encoded)[0]
    codes = encoded.codes[0]
    dec = codec.streaming_decoder(channels=2)
    out = torch.cat([dec(codes[:, :, i:i + per_call]) for i in range(0, codes.shape[2], per_call)], 1)
    assert out.shape == (2, codes.shape[2] * codec.cfg.hop)
    scale = float(offline.abs().max())
    assert float((out[:, :1001] - offline).abs().max()) <= 1e-5 * scale


def test_stream_at_another_rate(codec):
    pytest.importorskip("soxr")  # installed with fastcodec, but absent from the GPU image
    # soxr's streaming resampler, chunk by chunk, reproduces its one-shot resampling: same codes.
    x = 0.3 * torch.randn(1, 5513)
    offline = codec.encode(x, 11025).codes[0]
    enc = codec.streaming_encoder(sample_rate=11025)
    parts = [enc(x[:, a:b]) for a, b in _chunks(np.random.default_rng(5), 5513, 900)] + [enc.flush()]
    assert torch.equal(torch.cat(parts, 2), offline)
    assert enc.samples == round(5513 * 8000 / 11025) and enc.samples_in == 5513


def test_stream_errors(codec):
    enc = codec.streaming_encoder(channels=2)
    with pytest.raises(ValueError, match=r"\[2, T\]"):
        enc(torch.zeros(3, 10))
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):  # numpy's check and torch's
        for bad in (float("inf"), float("-inf"), float("nan")):
            with pytest.raises(ValueError, match="NaN or Inf"):
                enc(torch.tensor([[0.0, 0.5], [bad, 0.0]], dtype=dtype))
    with pytest.raises(ValueError, match="NaN or Inf"):
        enc(torch.tensor([[0.0, float("nan")], [0.5, 0.0]]).t())  # a non-contiguous view
    with pytest.raises(TypeError, match="floating point"):
        enc(torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty stream"):
        enc.flush()
    enc(torch.zeros(2, 5))
    enc.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        enc(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="n_q"):
        codec.streaming_encoder(n_q=9)
    with pytest.raises(ValueError, match="channels"):
        codec.streaming_encoder(channels=0)
    dec = codec.streaming_decoder()
    with pytest.raises(ValueError, match="0..15"):
        dec(torch.full((1, 2, 3), 16))
    with pytest.raises(TypeError, match="integers"):
        dec(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"\[1, n_q, n\]"):
        dec(torch.zeros(2, 2, 3, dtype=torch.long))
    assert dec(torch.zeros(1, 2, 0, dtype=torch.long)).shape == (1, 0)


def test_seek_history_bound(tmp_path):
    # Decoding from history_frames() before a frame with a fresh state reproduces that frame's audio.
    m = save_codec(tmp_path / "c.pt", strides=(2, 4, 5), channels=2)
    codec = Codec.load(tmp_path / "c.pt")
    H = m.decoder.history_frames()
    assert H >= 1
    codes = codec.encode(0.3 * torch.randn(40 * codec.cfg.hop), 8000).codes[0]
    full = codec.streaming_decoder()(codes)
    hop, f = codec.cfg.hop, 30
    late = codec.streaming_decoder()(codes[:, :, f - H:])
    tail = full[:, f * hop:]
    assert float((late[:, H * hop:] - tail).abs().max()) <= 1e-5 * float(tail.abs().max())
    # ...and H is not loose by much (it costs decoding time at every seek): half of it is too little.
    h = H // 2
    later = codec.streaming_decoder()(codes[:, :, f - h:])
    assert float((later[:, h * hop:] - tail).abs().max()) > 1e-3 * float(tail.abs().max())


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_a_real_preset_streams_its_offline_codes(backend):
    """The tiny preset (random weights, codebooks k-means-initialised on its latent), streamed in
    random chunkings. On the C++ kernels the streamed latent is the offline one bit for bit, so are
    the codes. PyTorch's convs pick their algorithm by length, so there the latent differs by ~1e-6
    relative and a code may differ where that difference can flip the choice: where the streamed
    code b, on the offline residual r, is no farther than the offline code a by more than
    2 |e| |c_a - c_b| (e: the frame's latent difference) plus the search's fp32 rounding (1e-5
    relative). Decoded frame by frame, the audio is the offline audio within float rounding."""
    from fastcodec.nn import SoundStream, preset, set_backend

    if backend == "cpp":
        require_backend("cpp", "cpu")
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = SoundStream(cfg)
    set_backend(model, backend)
    x = 0.3 * torch.randn(1, 1, 2 * cfg.sample_rate + 123)
    with torch.no_grad():
        z = model.encoder(x)
        model.quantizer.train()
        model.quantizer(z)  # k-means initialisation on this latent
    codec = Codec(model)
    offline = codec.encode(x[0], cfg.sample_rate).codes[0]
    rows = z[0].T.double()  # [F, D]
    cbs = model.quantizer.codebooks.double()
    rng = np.random.default_rng(1)
    for largest in (cfg.hop // 3, 5 * cfg.hop):
        cuts = _chunks(rng, x.shape[2], largest)
        enc, lat = codec.streaming_encoder(), model.encoder.stream()
        with torch.no_grad():
            streamed = torch.cat([enc(x[0, :, a:b]) for a, b in cuts] + [enc.flush()], 2)
            z_stream = torch.cat([lat(x[:, :, a:b]) for a, b in cuts] + [lat.flush()], 2)[0].T.double()
        assert streamed.shape == offline.shape
        if backend == "cpp":
            assert torch.equal(z_stream, rows) and torch.equal(streamed, offline)
            continue
        for f in (streamed != offline).any(1)[0].nonzero().flatten().tolist():
            s = int((streamed[0, :, f] != offline[0, :, f]).nonzero()[0])  # first stage that differs
            r = rows[f] - sum(cbs[i][offline[0, i, f]] for i in range(s))
            ca, cb = cbs[s][offline[0, s, f]], cbs[s][streamed[0, s, f]]
            da, db = float((r - ca).pow(2).sum()), float((r - cb).pow(2).sum())
            slack = 2 * float((z_stream[f] - rows[f]).norm() * (ca - cb).norm()) + 1e-5 * da
            assert db - da <= slack, f"frame {f} stage {s}: {db} vs {da} (allowed {slack})"
    audio = codec.decode(codec.encode(x[0], cfg.sample_rate))[0]
    dec = codec.streaming_decoder()
    out = torch.cat([dec(offline[:, :, i:i + 1]) for i in range(offline.shape[2])], 1)[:, : audio.shape[1]]
    assert float((out - audio).abs().max()) <= 1e-5 * float(audio.abs().max())
