"""fastcodec.Codec: load, encode and decode tensors and arrays of any layout, batches of mixed
lengths, other sample rates, stereo, and clear errors for bad input or another model's codes."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import save_codec as _saved_model

from fastcodec import Codec, EncodedAudio
from fastcodec import checkpoint as ckpt
from fastcodec.checkpoint import CheckpointError


@pytest.fixture
def codec(codec_path):
    return Codec.load(codec_path)


def test_round_trip_matches_the_model(codec):
    x = 0.3 * torch.randn(1, 1, 101)
    enc = codec.encode(x, 8000)
    assert enc.codes.shape == (1, 1, 3, 17) and enc.codes.dtype == torch.int64
    assert enc.frames.tolist() == [17] and enc.lengths.tolist() == [101]
    y = codec.decode(enc)
    expect = codec.model.decode(codec.model.encode(x), length=101)
    assert y.shape == (1, 1, 101) and torch.equal(y, expect)
    assert torch.equal(codec.encode(x, 8000, n_q=2).codes, enc.codes[:, :, :2])


def test_layouts_numpy_and_stereo(codec):
    mono = 0.3 * np.random.default_rng(0).standard_normal(60).astype(np.float32)
    a = codec.encode(mono, 8000)
    b = codec.encode(torch.from_numpy(mono)[None], 8000)
    c = codec.encode(torch.from_numpy(mono)[None, None], 8000)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.codes, c.codes)
    stereo = 0.3 * torch.randn(2, 60)
    enc = codec.encode(stereo, 8000)
    assert enc.channels == 2 and enc.codes.shape[:2] == (1, 2)
    for ch in range(2):  # each channel is coded as its own mono stream
        assert torch.equal(enc.codes[0, ch], codec.encode(stereo[ch], 8000).codes[0, 0])
    assert codec.decode(enc).shape == (1, 2, 60)


def test_batches_of_different_lengths(codec):
    x = 0.3 * torch.randn(3, 1, 50)
    enc = codec.encode(x, 8000, lengths=[50, 7, 31])
    assert enc.frames.tolist() == [9, 2, 6]
    y = codec.decode(enc)
    for b, n in enumerate([50, 7, 31]):
        alone = codec.decode(codec.encode(x[b, :, :n], 8000))
        assert torch.equal(y[b, :, :n], alone[0])
        assert bool((y[b, :, n:] == 0).all())
    # At another rate too: each item is resampled on its own, so the padding after it cannot reach
    # its last samples through the resampler's filter.
    x = 0.3 * torch.randn(3, 2, 700)
    enc = codec.encode(x, 11025, lengths=[700, 333, 517])
    for b, n in enumerate([700, 333, 517]):
        alone = codec.encode(x[b, :, :n], 11025)
        assert torch.equal(enc.codes[b, :, :, : int(enc.frames[b])], alone.codes[0])


def test_other_sample_rates_are_resampled(codec):
    pytest.importorskip("soxr")  # installed with fastcodec, but absent from the GPU image
    t = np.arange(16000) / 16000
    tone = torch.from_numpy(0.5 * np.sin(2 * np.pi * 300 * t)).float()
    enc = codec.encode(tone, 16000)
    assert enc.lengths.tolist() == [8000]  # one second at the codec's 8 kHz
    assert codec.decode(enc).shape == (1, 1, 8000)


def test_bad_input_is_refused_clearly(codec, tmp_path):
    with pytest.raises(ValueError, match="NaN or Inf"):
        codec.encode(torch.tensor([0.1, float("nan"), 0.2]), 8000)
    with pytest.raises(ValueError, match="empty"):
        codec.encode(torch.zeros(1, 0), 8000)
    with pytest.raises(ValueError, match=r"\[T\], \[C, T\] or \[B, C, T\]"):
        codec.encode(torch.zeros(1, 1, 1, 5), 8000)
    with pytest.raises(TypeError, match="floating point"):
        codec.encode(torch.zeros(5, dtype=torch.int16), 8000)
    with pytest.raises(ValueError, match="n_q"):
        codec.encode(torch.randn(10), 8000, n_q=4)
    with pytest.raises(ValueError, match="sample_rate"):
        codec.encode(torch.randn(10), 0)
    with pytest.raises(ValueError, match="lengths"):
        codec.encode(torch.randn(2, 1, 10), 8000, lengths=[10, 11])
    with pytest.raises(TypeError, match="EncodedAudio"):
        codec.decode(torch.zeros(1, 1, 3, 2, dtype=torch.long))
    _saved_model(tmp_path / "other.pt", seed=1)
    other = Codec.load(tmp_path / "other.pt")
    enc = codec.encode(torch.randn(20), 8000)
    with pytest.raises(ValueError, match=f"made by model {codec.fingerprint}.*this codec is model {other.fingerprint}"):
        other.decode(enc)
    assert codec.fingerprint != other.fingerprint and len(codec.fingerprint) == 16
    K = codec.cfg.codebook_size
    for bad, err in ((K, ValueError), (-1, ValueError), (0.5, TypeError)):
        codes = enc.codes.clone().to(torch.float64 if err is TypeError else enc.codes.dtype)
        codes[0, 0, 0, -1] = bad
        with pytest.raises(err, match=f"codes must be in 0..{K - 1}" if err is ValueError else "integers"):
            codec.decode(dataclasses.replace(enc, codes=codes))


def test_numpy_integers_are_ints(codec):
    """Counts that come out of numpy (np.int64 from arrays or arithmetic) are as good as ints."""
    x = 0.3 * torch.randn(2, 1, 40)
    enc = codec.encode(x, np.int64(8000), n_q=np.int32(2), lengths=np.array([40, 9]))
    assert torch.equal(enc.codes, codec.encode(x, 8000, n_q=2, lengths=[40, 9]).codes)
    assert type(enc.n_q) is int and type(enc.source_rate) is int
    assert codec.n_q_for_bitrate(np.float32(11.0)) == 2  # 5.33 kbps per stage


def test_lengths_must_be_whole_samples_one_per_item(codec):
    x = 0.3 * torch.randn(2, 1, 40)
    assert codec.encode(x, 8000, lengths=[40.0, 9.0]).lengths.tolist() == [40, 9]
    for bad in ([40, 9.5], [[40, 9]], [40], [40, 0], [41, 9]):
        with pytest.raises(ValueError, match="lengths must be 2 whole numbers of samples in 1..40"):
            codec.encode(x, 8000, lengths=bad)


def test_decode_refuses_codes_frames_and_lengths_that_disagree(codec):
    """An EncodedAudio edited by hand (or assembled from parts) is checked before decoding: nothing
    reads past the codes, and a wrong count is an error rather than a torch traceback."""
    import dataclasses

    enc = codec.encode(0.3 * torch.randn(2, 1, 50), 8000, lengths=[50, 7])  # frames [9, 2], hop 6
    y = codec.decode(enc)
    assert y.shape == (2, 1, 50)
    as_lists = dataclasses.replace(enc, frames=enc.frames.tolist(), lengths=enc.lengths.tolist())
    assert torch.equal(codec.decode(as_lists), y)
    cases = {
        "frames must be in 1..9": dict(frames=enc.frames + 1),
        "frames must be in 1..9 ": dict(frames=torch.tensor([9, 0])),
        "lengths must be in 1..frames x 6": dict(lengths=torch.tensor([55, 7])),
        "lengths must be in 1..frames x 6 ": dict(lengths=torch.tensor([50, 0])),
        "frames and lengths must be 2 integers each": dict(lengths=enc.lengths[:1]),
        "frames and lengths must be 2 integers each ": dict(frames=enc.frames.float()),
        "but channels=2": dict(channels=2),
        "n_q=2$": dict(n_q=2),
        "codes must be a tensor": dict(codes=enc.codes[0]),
    }
    for message, change in cases.items():
        bad = dataclasses.replace(enc, **change)
        for call in (codec.decode, lambda e: codec.save(e, "/nonexistent/x.fcdc")):
            with pytest.raises(ValueError, match=message.strip()):
                call(bad)


def test_bitrate_must_be_a_finite_number(codec):
    for bad in (float("nan"), float("inf"), "6", None, True):
        with pytest.raises(ValueError, match="bitrate must be a finite number of kbps"):
            codec.n_q_for_bitrate(bad)
    with pytest.raises(ValueError, match="below this codec's lowest bitrate"):
        codec.n_q_for_bitrate(0.01)


def test_load_refuses_a_backend_that_cannot_run_on_the_device(codec_path):
    from fastcodec.ops import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="backend='cuda' cannot run here"):
        Codec.load(codec_path, device="cpu", backend="cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        Codec.load(codec_path, backend="fast")


def test_load_refuses_what_is_not_a_trained_codec(tmp_path):
    _saved_model(tmp_path / "fresh.pt", initialized=False)
    with pytest.raises(CheckpointError, match="never trained"):
        Codec.load(tmp_path / "fresh.pt")
    ckpt.save(tmp_path / "x.pt", {"step": 1})
    with pytest.raises(CheckpointError, match="holds no codec"):
        Codec.load(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no such"):
        Codec.load(tmp_path / "missing.pt")


def test_loads_a_training_run(tmp_path):
    from fastcodec.train import TrainConfig, train

    cfg = TrainConfig(out=str(tmp_path / "run"), steps=2, batch_size=2, segment_seconds=0.25, eval_every=2,
                      checkpoint_every=2, disc_start=10, vq_start=0, demo_clips=4, eval_clips=1, eval_seconds=0.25,
                      device="cpu")
    train(cfg, progress=False, log=lambda *_: None)
    for path in (tmp_path / "run" / "codec.pt", tmp_path / "run" / "checkpoints" / "step0000002.pt"):
        codec = Codec.load(path)
        enc = codec.encode(0.1 * torch.randn(3000), 16000)
        assert isinstance(enc, EncodedAudio) and codec.decode(enc).shape == (1, 1, 3000)


def test_save_and_load_codes(codec, tmp_path):
    x = 0.3 * torch.randn(2, 2, 700)
    enc = codec.encode(x, 11025, n_q=2, lengths=[700, 333])
    h = codec.save(enc, tmp_path / "b1.fcdc", item=1)
    assert (h.channels, h.n_q, h.source_rate, h.source_samples, h.samples) == (2, 2, 11025, 333, int(enc.lengths[1]))
    back = codec.load_codes(tmp_path / "b1.fcdc")
    F = int(enc.frames[1])
    assert torch.equal(back.codes[0], enc.codes[1, :, :, :F]) and back.source_lengths.tolist() == [333]
    alone = codec.encode(x[1, :, :333], 11025, n_q=2)
    assert torch.equal(codec.decode(back), codec.decode(alone))
    with pytest.raises(ValueError, match="item"):
        codec.save(enc, tmp_path / "x.fcdc", item=2)
    _saved_model(tmp_path / "other.pt", seed=2)
    other = Codec.load(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="made by model"):
        other.save(enc, tmp_path / "x.fcdc")
    from fastcodec import FormatError
    with pytest.raises(FormatError, match=f"made by model {codec.fingerprint}"):
        other.load_codes(tmp_path / "b1.fcdc")
    assert not (tmp_path / "x.fcdc").exists()
    # A hand-edited source length or rate that its frames cannot have come from is refused before
    # anything is written: the file's header would promise audio its codes do not hold.
    for field, value in (("source_lengths", torch.tensor([700, 30_000_000])), ("source_rate", 1),
                         ("source_lengths", torch.tensor([700.0, 333.0]))):
        bad = dataclasses.replace(enc, **{field: value})
        with pytest.raises(ValueError, match=field):
            codec.save(bad, tmp_path / "x.fcdc", item=1)
    assert not (tmp_path / "x.fcdc").exists()


def test_source_rates_outside_audio_are_refused(codec):
    # soxr crashed the process upsampling 100,000 samples from 1 Hz; rates run from 1 kHz to 768 kHz.
    for rate in (1, 999, 768_001, 10 ** 9):
        with pytest.raises(ValueError, match="sample_rate must be an int from 1000 to 768000 Hz"):
            codec.encode(torch.randn(100_000), rate)
        with pytest.raises(ValueError, match="sample_rate must be an int from 1000"):
            codec.streaming_encoder(sample_rate=rate)
    assert codec.encode(0.1 * torch.randn(3), 768_000).lengths.tolist() == [1]  # resampled to nothing: one sample
