"""Codec.encode_file / decode_file: the API's codes and audio through .fcdc files, seeking, other
models' files refused, bad audio named, atomic output, and memory that does not grow with a
file's length."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import save_codec

from fastcodec import AudioError, Codec, FormatError
from fastcodec.codec import format as fcdc

sf = pytest.importorskip("soundfile")


@pytest.fixture
def codec(codec_path):
    return Codec.load(codec_path)


def _wav(path, seconds=1.3, rate=11025, channels=2, seed=0):
    x = (0.3 * np.random.default_rng(seed).standard_normal((round(seconds * rate), channels))).astype(np.float32)
    sf.write(str(path), x, rate, subtype="FLOAT")
    return x


def test_file_round_trip_matches_the_api(codec, tmp_path):
    x = _wav(tmp_path / "a.wav")
    h = codec.encode_file(tmp_path / "a.wav", tmp_path / "a.fcdc", n_q=2, chunk_seconds=0.05)
    enc = codec.encode(torch.from_numpy(x.T.copy()), 11025, n_q=2)
    with open(tmp_path / "a.fcdc", "rb") as f:
        assert np.array_equal(fcdc.Reader(f).codes(), enc.codes[0].numpy())
    assert (h.channels, h.n_q, h.source_rate, h.source_samples) == (2, 2, 11025, len(x))
    assert h.samples == int(enc.lengths[0]) and h.fingerprint == codec.fingerprint and h.n_chunks > 10
    # At the codec's rate the file decodes to what the API decodes.
    n, rate = codec.decode_file(tmp_path / "a.fcdc", tmp_path / "m.wav", sample_rate=8000, subtype="FLOAT")
    y, r = sf.read(str(tmp_path / "m.wav"), dtype="float32")
    expect = codec.decode(enc)[0].numpy().T
    assert (n, rate, r) == (h.samples, 8000, 8000) and y.shape == expect.shape
    assert np.abs(y - expect).max() <= 1e-5 * np.abs(expect).max()
    # By default it goes back to the source's rate and exact length.
    n, rate = codec.decode_file(tmp_path / "a.fcdc", tmp_path / "b.wav")
    y, r = sf.read(str(tmp_path / "b.wav"))
    assert (n, rate, r, y.shape) == (len(x), 11025, 11025, x.shape)


def test_one_large_chunk_decodes_in_pieces_to_the_same_audio(codec, tmp_path, monkeypatch):
    """A writer may put the whole recording in one chunk; decoding takes it a few frames at a time
    (so memory does not follow the chunk), and gets the audio a decode of small chunks gives."""
    from fastcodec.codec import files

    _wav(tmp_path / "a.wav", seconds=2.0, rate=8000)
    codec.encode_file(tmp_path / "a.wav", tmp_path / "one.fcdc", chunk_seconds=100)
    codec.encode_file(tmp_path / "a.wav", tmp_path / "many.fcdc", chunk_seconds=0.1)
    assert fcdc.read_header(tmp_path / "one.fcdc").n_chunks == 1
    monkeypatch.setattr(files, "DECODE_FRAME_CHANNELS", 2 * 7)  # 7 frames per call for 2 channels
    for name in ("one", "many"):
        codec.decode_file(tmp_path / f"{name}.fcdc", tmp_path / f"{name}.wav", subtype="FLOAT", start=0.3)
    one, _ = sf.read(str(tmp_path / "one.wav"), dtype="float32")
    many, _ = sf.read(str(tmp_path / "many.wav"), dtype="float32")
    assert one.shape == many.shape == (round(1.7 * 8000), 2)
    assert np.abs(one - many).max() <= 1e-5 * np.abs(many).max()


@pytest.mark.parametrize("start,duration", [(0.0, 0.2), (0.61, None), (1.0, 0.05), (0.3, 100.0)])
def test_decoding_from_a_time_matches_the_whole_decode(codec, tmp_path, start, duration):
    _wav(tmp_path / "a.wav", rate=8000)
    codec.encode_file(tmp_path / "a.wav", tmp_path / "a.fcdc", chunk_seconds=0.1)
    codec.decode_file(tmp_path / "a.fcdc", tmp_path / "full.wav", subtype="FLOAT")
    codec.decode_file(tmp_path / "a.fcdc", tmp_path / "part.wav", start=start, duration=duration, subtype="FLOAT")
    full, _ = sf.read(str(tmp_path / "full.wav"), dtype="float32")
    part, _ = sf.read(str(tmp_path / "part.wav"), dtype="float32")
    a = round(start * 8000)
    b = len(full) if duration is None else min(len(full), a + round(duration * 8000))
    assert part.shape == full[a:b].shape
    assert np.abs(part - full[a:b]).max() <= 1e-5 * np.abs(full).max()


def test_another_models_file_is_refused_naming_both(codec, tmp_path):
    _wav(tmp_path / "a.wav")
    codec.encode_file(tmp_path / "a.wav", tmp_path / "a.fcdc")
    save_codec(tmp_path / "other.pt", seed=1)
    other = Codec.load(tmp_path / "other.pt")
    with pytest.raises(FormatError, match=f"a.fcdc: made by model {codec.fingerprint}.*codec is model "
                                          f"{other.fingerprint}"):
        other.decode_file(tmp_path / "a.fcdc", tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


def test_bad_audio_gets_errors_naming_the_file(codec, tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioError, match="junk.wav: not a readable audio file"):
        codec.encode_file(tmp_path / "junk.wav", tmp_path / "o.fcdc")
    with pytest.raises(AudioError, match="missing.wav: no such audio file"):
        codec.encode_file(tmp_path / "missing.wav", tmp_path / "o.fcdc")
    sf.write(str(tmp_path / "empty.wav"), np.zeros((0, 1), dtype=np.float32), 8000)
    with pytest.raises(AudioError, match="empty.wav: holds no audio"):
        codec.encode_file(tmp_path / "empty.wav", tmp_path / "o.fcdc")
    x = np.full((20000, 1), 0.1, dtype=np.float32)
    x[12345] = np.nan
    sf.write(str(tmp_path / "nan.wav"), x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan.wav: NaN or Inf samples \(first at 1.543 s\)"):
        codec.encode_file(tmp_path / "nan.wav", tmp_path / "o.fcdc")
    # A FLAC damaged after its header opens fine and fails mid-stream: named, with the time.
    sf.write(str(tmp_path / "ok.flac"), (0.3 * np.random.default_rng(0).standard_normal(80000)).astype(np.float32),
             16000)
    data = (tmp_path / "ok.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut.flac: reading failed at \d+\.\d+ s"):
        codec.encode_file(tmp_path / "cut.flac", tmp_path / "o.fcdc", block_seconds=0.25)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".fcdc" or "partial" in p.name) == []


def test_output_is_written_whole_or_not_at_all(codec, tmp_path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "o.fcdc").write_bytes(b"precious")
    x = np.full((9000, 1), 0.1, dtype=np.float32)
    x[-1] = np.inf  # fails at the very end, after most chunks were written
    sf.write(str(tmp_path / "late.wav"), x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError):
        codec.encode_file(tmp_path / "late.wav", tmp_path / "o.fcdc", block_seconds=0.1)
    assert (tmp_path / "o.fcdc").read_bytes() == b"precious"
    codec.encode_file(tmp_path / "a.wav", tmp_path / "o.fcdc")
    (tmp_path / "o.wav").write_bytes(b"precious")
    with pytest.raises(ValueError, match="start"):
        codec.decode_file(tmp_path / "o.fcdc", tmp_path / "o.wav", start=99.0)
    with pytest.raises(ValueError, match="audio format"):
        codec.decode_file(tmp_path / "o.fcdc", tmp_path / "o.mp9")
    assert (tmp_path / "o.wav").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


_LONG = textwrap.dedent("""
    import json, sys, torch
    from fastcodec import Codec
    def mb(key):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
    codec = Codec.load(sys.argv[1])
    codec.decode(codec.encode(torch.randn(8000), 8000))   # first-call allocations, outside the measure
    step, src, dst, warm_src, warm_dst = sys.argv[2:7]
    # A warm-up on a 10 s file through the same call, then the peak is reset: what is measured is
    # the call's own peak, and what the long file's length adds to the short one's.
    call = codec.encode_file if step == "encode" else codec.decode_file
    call(warm_src, warm_dst)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = mb("VmRSS")
    call(src, dst)
    print(json.dumps({"base": base, "peak": mb("VmHWM")}))
""")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="peak RSS is read and reset through /proc")
def test_memory_does_not_grow_with_file_length(tmp_path):
    """Encoding and decoding 6 minutes and 60 minutes of audio peak at the same memory (within
    8 MB). Holding the audio of the file would grow by 104 MB between the two (float32 at 8 kHz),
    its codes by 21 MB as int64, the model's activations for it by several GB."""
    rate = 8000
    save_codec(tmp_path / "c.pt", sample_rate=rate, channels=2, strides=(4, 5), code_dim=4, n_q=2)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    peaks = {}
    sf.write(str(tmp_path / "warm.wav"), (0.1 * np.random.default_rng(1).standard_normal(rate * 10)).astype(np.float32),
             rate)
    warm = {"encode": ("warm.wav", "warm.fcdc"), "decode": ("warm.fcdc", "warm_back.wav")}
    for minutes in (6, 60):
        with sf.SoundFile(str(tmp_path / "long.wav"), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
            rng = np.random.default_rng(0)
            for _ in range(minutes):
                f.write((0.1 * rng.standard_normal(rate * 60)).astype(np.float32))
        for step, src, dst in (("encode", "long.wav", "long.fcdc"), ("decode", "long.fcdc", "back.wav")):
            paths = [str(tmp_path / p) for p in (src, dst) + warm[step]]
            out = subprocess.run([sys.executable, "-c", _LONG, str(tmp_path / "c.pt"), step, *paths],
                                 capture_output=True, text=True, env=env, timeout=600)
            assert out.returncode == 0, out.stderr[-2000:]
            m = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[step, minutes] = m["peak"] - m["base"]
        assert fcdc.read_header(tmp_path / "long.fcdc").source_samples == rate * 60 * minutes
        assert sf.info(str(tmp_path / "back.wav")).frames == rate * 60 * minutes
    print(f"peak RSS above the call's start, MB: {peaks}")
    for step in ("encode", "decode"):
        assert peaks[step, 60] - peaks[step, 6] < 8, peaks
        assert peaks[step, 60] < 64, peaks
