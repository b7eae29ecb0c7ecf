"""`python -m fastcodec` / the `fastcodec` script: encode, decode, encode-dir, info; one-line errors
with exit 1 (no traceback), Ctrl-C leaving nothing behind, resumable corpus coding."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_interrupted_in_import, save_codec

from fastcodec import Codec
from fastcodec.codec import cli
from fastcodec.codec import format as fcdc

sf = pytest.importorskip("soundfile")


def _wav(path, seconds=0.7, rate=11025, channels=1, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (0.3 * np.random.default_rng(seed).standard_normal((round(seconds * rate), channels))).astype(np.float32)
    sf.write(str(path), x, rate)
    return x


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err, *needles):
    assert rc == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastcodec: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_encode_then_decode_without_naming_the_checkpoint(codec_path, tmp_path, capsys):
    x = _wav(tmp_path / "in.wav", channels=2)
    rc, out, _ = _run(capsys, "encode", tmp_path / "in.wav", tmp_path / "in.fcdc", "--checkpoint", codec_path,
                      "--bitrate", "11")
    assert rc == 0 and "2 stages = 10.6667 kbps" in out
    h = fcdc.read_header(tmp_path / "in.fcdc")
    assert (h.n_q, h.channels, h.source_rate, h.source_samples) == (2, 2, 11025, len(x))
    # The checkpoint is found from the file's model fingerprint (this machine encoded with it).
    rc, out, _ = _run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "out.wav")
    assert rc == 0 and "at 11025 Hz, 2 ch" in out
    y, rate = sf.read(str(tmp_path / "out.wav"))
    assert rate == 11025 and y.shape == x.shape
    rc, out, _ = _run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "m.flac", "--model-rate", "--start", "0.25")
    assert rc == 0 and sf.info(str(tmp_path / "m.flac")).frames == h.samples - 2000
    rc, out, _ = _run(capsys, "info", tmp_path / "in.fcdc", codec_path)
    assert rc == 0 and f"model {h.fingerprint} ({codec_path})" in out
    assert "bitrates 5.33333, 10.6667, 16 kbps per channel" in out


def test_errors_are_one_line(codec_path, tmp_path, capsys, monkeypatch):
    _wav(tmp_path / "in.wav")
    _run(capsys, "encode", tmp_path / "in.wav", tmp_path / "in.fcdc", "--checkpoint", codec_path)
    good = (tmp_path / "in.fcdc").read_bytes()
    (tmp_path / "cut.fcdc").write_bytes(good[:-30])
    _one_line_error(*_run(capsys, "decode", tmp_path / "cut.fcdc", tmp_path / "o.wav")[::2], "cut.fcdc", "truncated")
    _one_line_error(*_run(capsys, "decode", tmp_path / "in.wav", tmp_path / "o.wav")[::2], "not a .fcdc file")
    _one_line_error(*_run(capsys, "decode", tmp_path / "nope.fcdc", tmp_path / "o.wav")[::2], "no such file")
    _one_line_error(*_run(capsys, "info", tmp_path / "in.wav")[::2], "neither a .fcdc file nor a codec checkpoint")
    _one_line_error(*_run(capsys, "encode", tmp_path / "in.fcdc", tmp_path / "x.fcdc", "--checkpoint",
                          codec_path)[::2], "in.fcdc: not a readable audio file")
    _one_line_error(*_run(capsys, "encode", tmp_path / "in.wav", tmp_path / "x.fcdc", "--checkpoint", codec_path,
                          "--bitrate", "2")[::2], "below this codec's lowest bitrate")
    _one_line_error(*_run(capsys, "encode", tmp_path / "in.wav", tmp_path / "x.fcdc", "--checkpoint",
                          tmp_path / "in.wav")[::2], "not a readable checkpoint")
    # The CLI codes on the CPU, where CUDA kernels cannot run: said when the model loads.
    _one_line_error(*_run(capsys, "encode", tmp_path / "in.wav", tmp_path / "x.fcdc", "--checkpoint", codec_path,
                          "--backend", "cuda")[::2], "backend='cuda' cannot run here")
    save_codec(tmp_path / "other.pt", seed=3)
    other = Codec.load(tmp_path / "other.pt")
    _one_line_error(*_run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "o.wav", "--checkpoint",
                          tmp_path / "other.pt")[::2], "made by model", other.fingerprint)
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(tmp_path / "empty-cache"))
    _one_line_error(*_run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "o.wav")[::2], "pass --checkpoint")
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "x.fcdc").exists()
    with pytest.raises(SystemExit) as e:
        cli.main(["encode", "a.wav", "b.fcdc", "--checkpoint", "c.pt", "--n-q", "2", "--bitrate", "3"])
    assert e.value.code == 2


def test_output_rates_and_subtypes_a_format_cannot_hold_are_refused(codec_path, tmp_path, capsys):
    """libvorbis crashed the process (segfault) above 200 kHz and libFLAC's refusal came up as a
    traceback: each format's ceiling is checked before anything is opened."""
    _wav(tmp_path / "in.wav", seconds=0.05)
    _run(capsys, "encode", tmp_path / "in.wav", tmp_path / "in.fcdc", "--checkpoint", codec_path)
    for name, rate, ceiling in (("o.flac", 655351, 655350), ("o.wav", 768001, 768000)):
        _one_line_error(*_run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / name, "--sample-rate", rate)[::2],
                        f"{name}: {name[2:].upper()} files are written at up to {ceiling} Hz, asked for {rate} Hz")
    _one_line_error(*_run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "o.flac", "--subtype", "FLOAT")[::2],
                    "o.flac: a FLAC file cannot hold subtype 'FLOAT'; it takes", "PCM_24")
    # In a child process: were the check gone, the crash would take the test run with it.
    p = _python_m("decode", tmp_path / "in.fcdc", tmp_path / "o.ogg", "--sample-rate", "200001")
    out, err = p.communicate(timeout=120)
    _one_line_error(p.returncode, err, "OGG files are written at up to 200000 Hz")
    assert not any(tmp_path.glob("o.*")) and not any(tmp_path.glob(".o.*"))
    rc, out, _ = _run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "o.ogg", "--sample-rate", 200000)
    assert rc == 0 and sf.info(str(tmp_path / "o.ogg")).samplerate == 200000


def test_encode_dir_is_resumable_and_skips_bad_files(codec_path, tmp_path, capsys):
    src, dst = tmp_path / "corpus", tmp_path / "tokens"
    for name in ("a.wav", "sub/b.flac", "sub/deeper/c.ogg"):
        _wav(src / name, seed=len(name))
    (src / "sub" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    (src / "notes.txt").write_text("not audio")
    rc, out, err = _run(capsys, "encode-dir", src, dst, "--checkpoint", codec_path, "--npy", "--workers", "1",
                        "--n-q", "2")
    assert rc == 1 and "coded 3 of 4 files" in out and "broken.wav" in out
    made = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert made == ["a.fcdc", "a.npy", "sub/b.fcdc", "sub/b.npy", "sub/deeper/c.fcdc", "sub/deeper/c.npy"]
    codes = np.load(dst / "sub" / "b.npy")
    with open(dst / "sub" / "b.fcdc", "rb") as f:
        assert codes.dtype == np.int16 and np.array_equal(codes, fcdc.Reader(f).codes())
    # Resuming codes only what is missing (or was made with other settings).
    (dst / "a.fcdc").unlink()
    rc, out, _ = _run(capsys, "encode-dir", src, dst, "--checkpoint", codec_path, "--npy", "--workers", "1",
                      "--n-q", "2")
    assert "4 audio files, 2 already coded, 2 to code" in out and "coded 1 of 2" in out
    (src / "sub" / "broken.wav").unlink()
    rc, out, _ = _run(capsys, "encode-dir", src, dst, "--checkpoint", codec_path, "--workers", "1", "--n-q", "2")
    assert rc == 0 and "3 already coded, 0 to code" in out
    rc, out, _ = _run(capsys, "encode-dir", src, dst, "--checkpoint", codec_path, "--workers", "1")
    assert rc == 0 and "0 already coded, 3 to code" in out and fcdc.read_header(dst / "a.fcdc").n_q == 3


def _python_m(*argv, env=None, **kwargs):
    env = env or dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "fastcodec", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def test_encode_dir_with_worker_processes(codec_path, tmp_path):
    src = tmp_path / "corpus"
    for i in range(4):
        _wav(src / f"{i}.wav", seed=i)
    p = _python_m("encode-dir", src, tmp_path / "out", "--checkpoint", codec_path, "--workers", "2")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    codec = Codec.load(codec_path)
    for i in range(4):  # the workers' codes are the API's
        x, rate = sf.read(str(src / f"{i}.wav"), dtype="float32")
        with open(tmp_path / "out" / f"{i}.fcdc", "rb") as f:
            assert np.array_equal(fcdc.Reader(f).codes(), codec.encode(x, rate).codes[0].numpy())


def test_ctrl_c_leaves_no_output(codec_path, tmp_path):
    rate = 8000
    save_codec(tmp_path / "c.pt", sample_rate=rate, channels=2, strides=(4, 5), code_dim=4, n_q=2)
    with sf.SoundFile(str(tmp_path / "long.wav"), "w", samplerate=rate, channels=1) as f:
        for _ in range(40):
            f.write((0.1 * np.random.default_rng(0).standard_normal(rate * 60)).astype(np.float32))
    p = _python_m("encode", tmp_path / "long.wav", tmp_path / "long.fcdc", "--checkpoint", tmp_path / "c.pt")
    partial = tmp_path / ".long.fcdc.partial"
    deadline = time.time() + 120
    while not partial.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert partial.exists(), "the encode never started writing"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "long.fcdc").exists() and not partial.exists()


def test_console_script_and_info():
    p = _python_m("info")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "fastcodec" in out
    try:
        from importlib.metadata import entry_points

        eps = [e for e in entry_points(group="console_scripts") if e.name == "fastcodec"]
    except Exception:
        eps = []
    if eps:  # installed (pip install -e .): the script is fastcodec.__main__:main
        assert eps[0].value == "fastcodec.__main__:main"


def test_an_output_that_is_an_input_is_refused_before_anything_is_written(codec_path, tmp_path, capsys):
    """`encode x.wav x.wav` replaced the audio with codes; so did an output reaching the input by a
    `..` path, a symlink or --npy; and --npy naming the .fcdc output left numpy data under its name."""
    (tmp_path / "in").mkdir()
    _wav(tmp_path / "in" / "x.wav")
    audio = (tmp_path / "in" / "x.wav").read_bytes()
    (tmp_path / "link.wav").symlink_to(tmp_path / "in" / "x.wav")
    src = tmp_path / "in" / "x.wav"
    for out, npy in ((src, None), (tmp_path / "in" / ".." / "in" / "x.wav", None), (tmp_path / "link.wav", None),
                     (tmp_path / "ok.fcdc", src), (tmp_path / "ok.fcdc", tmp_path / "link.wav")):
        extra = ["--npy", npy] if npy else []
        _one_line_error(*_run(capsys, "encode", src, out, "--checkpoint", codec_path, *extra)[::2],
                        "would destroy the input")
        assert src.read_bytes() == audio and not (tmp_path / "ok.fcdc").exists()
    # The model is an input too.
    model = codec_path.read_bytes()
    _one_line_error(*_run(capsys, "encode", src, codec_path, "--checkpoint", codec_path)[::2],
                    "would destroy the input")
    assert codec_path.read_bytes() == model
    (tmp_path / "out").mkdir()
    h = tmp_path / "out" / "h.fcdc"
    _one_line_error(*_run(capsys, "encode", src, h, "--checkpoint", codec_path, "--npy", h)[::2], "two outputs")
    _one_line_error(*_run(capsys, "encode", src, h, "--checkpoint", codec_path, "--npy",
                          tmp_path / "out" / "." / "h.fcdc")[::2], "two outputs")
    assert list((tmp_path / "out").iterdir()) == []
    codec = Codec.load(codec_path)
    with pytest.raises(ValueError, match="would destroy the input"):
        codec.encode_file(src, src)
    codec.encode_file(src, h)
    coded = h.read_bytes()
    (tmp_path / "back.wav").symlink_to(h)
    with pytest.raises(ValueError, match="would destroy the input"):
        codec.decode_file(h, tmp_path / "back.wav")
    assert src.read_bytes() == audio and h.read_bytes() == coded


def test_two_writers_never_share_a_partial_file(tmp_path):
    from fastcodec.atomic import atomic_output

    with atomic_output(tmp_path / "a.bin") as f:
        f.write(b"first")
        with pytest.raises(ValueError, match="is being written by another output now"):
            with atomic_output(tmp_path / "a.bin") as g:
                g.write(b"second")
        f.write(b" whole")
    assert (tmp_path / "a.bin").read_bytes() == b"first whole"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_filesystem_without_locks_still_gets_atomic_output(tmp_path, monkeypatch):
    """Lustre without -o flock (ENOSYS), some NFS and FUSE mounts (ENOLCK, EOPNOTSUPP): only a lock
    held by another writer means "busy"; any other refusal writes without the lock."""
    import errno
    import fcntl

    from fastcodec.atomic import atomic_output

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    with atomic_output(tmp_path / "a.bin") as f:
        f.write(b"data")
    assert (tmp_path / "a.bin").read_bytes() == b"data" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_audio_shorter_than_its_header_says_is_coded_with_a_warning(codec_path, tmp_path, capsys):
    import struct

    _wav(tmp_path / "x.wav", seconds=1.0, rate=8000)
    data = bytearray((tmp_path / "x.wav").read_bytes())
    at = data.index(b"data")
    size = struct.unpack_from("<I", data, at + 4)[0]
    struct.pack_into("<I", data, at + 4, 3 * size)  # claims 3 s
    struct.pack_into("<I", data, 4, len(data) - 8 + 2 * size)
    (tmp_path / "x.wav").write_bytes(bytes(data))
    p = _python_m("encode", tmp_path / "x.wav", tmp_path / "x.fcdc", "--checkpoint", codec_path)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and err.strip().splitlines() == [
        f"fastcodec: warning: {tmp_path / 'x.wav'}: its header claims 24000 samples (3.000 s) but the file holds "
        f"8000 (1.000 s); coded what it holds"], err
    assert fcdc.read_header(tmp_path / "x.fcdc").source_samples == 8000
    from fastcodec import TruncatedAudioWarning
    with pytest.warns(TruncatedAudioWarning, match="holds 8000"):
        Codec.load(codec_path).encode_file(tmp_path / "x.wav", tmp_path / "y.fcdc")
    # A WAV written to a pipe cannot know its length and says 0xFFFFFFFF: complete, no warning.
    struct.pack_into("<I", data, at + 4, 0xFFFFFFFF)
    (tmp_path / "x.wav").write_bytes(bytes(data))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Codec.load(codec_path).encode_file(tmp_path / "x.wav", tmp_path / "z.fcdc")


def test_a_damaged_models_list_never_stops_the_codec(codec_path, tmp_path, capsys, monkeypatch):
    """models.json under FASTCODEC_CACHE_DIR: bad entries are skipped with one-line warnings, a model
    that fails to load names the file and why, and a models list that cannot be written is no error."""
    import json

    from fastcodec import checkpoint as ckpt

    _wav(tmp_path / "in.wav")
    rc, *_ = _run(capsys, "encode", tmp_path / "in.wav", tmp_path / "in.fcdc", "--checkpoint", codec_path)
    fp = fcdc.read_header(tmp_path / "in.fcdc").fingerprint
    registry = tmp_path / "cache" / "models.json"
    registry.write_text(json.dumps({"0123456789abcdef": 123, "x": [1], fp: str(codec_path)}))
    rc, out, err = _run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "o.wav")
    assert rc == 0 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("fastcodec: warning:")] == err.strip().splitlines()
    assert "'0123456789abcdef': 123 skipped" in err and "'x': [1] skipped" in err
    for text in ("[1, 2]", "{not json"):
        registry.write_text(text)
        rc, _, err = _run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "o2.wav")
        warning, error = err.strip().splitlines()
        assert warning.startswith("fastcodec: warning: ") and "models.json: ignored" in warning
        _one_line_error(rc, error, "pass --checkpoint")
    # An entry whose checkpoint lacks weights: the reason and the file, in one line.
    state = ckpt.load(codec_path)
    state["model"] = {k: v for k, v in state["model"].items() if "decoder" not in k}
    ckpt.save(tmp_path / "partial.pt", state)
    registry.write_text(json.dumps({fp: str(tmp_path / "partial.pt")}))
    _one_line_error(*_run(capsys, "decode", tmp_path / "in.fcdc", tmp_path / "o2.wav")[::2], "partial.pt",
                    "its model does not load", "Missing key")
    # A models list that is a folder: encoding with --checkpoint works and says it could not note it.
    registry.unlink()
    registry.mkdir()
    rc, out, err = _run(capsys, "encode", tmp_path / "in.wav", tmp_path / "again.fcdc", "--checkpoint", codec_path)
    assert rc == 0 and (tmp_path / "again.fcdc").exists() and "Traceback" not in err
    assert "could not note model" in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "o2.wav").exists()


def test_ctrl_c_while_torch_is_imported_stops_even_if_the_import_swallows_it(tmp_path):
    p = run_interrupted_in_import("fastcodec", "torch", "info", tmp_path / "missing.fcdc")
    assert p.returncode == 130 and p.stderr == "fastcodec: interrupted\n", p.stderr


def test_ctrl_c_while_encode_dir_starts_prints_one_line(tmp_path):
    """Ctrl-C (to the whole process group, as a terminal sends it) while the command or its worker
    processes are still importing, or while they code: one line, exit 130, no partial file."""
    rate = 8000
    save_codec(tmp_path / "c.pt", sample_rate=rate, channels=2, strides=(4, 5), code_dim=4, n_q=2)
    for i in range(4):
        _wav(tmp_path / "corpus" / f"{i}.wav", seconds=600, rate=rate, seed=i)
    for delay in (0.2, 1.5, 4.0, "coding"):
        out_dir = tmp_path / f"out{delay}"
        p = _python_m("encode-dir", tmp_path / "corpus", out_dir, "--checkpoint", tmp_path / "c.pt",
                      "--workers", "2", "--no-progress", start_new_session=True,
                      env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path),
                               FASTCODEC_CACHE_DIR=str(tmp_path / "cache")))
        if delay == "coding":  # once a worker is writing its output
            deadline = time.time() + 120
            while not list(out_dir.glob(".*.partial")) and p.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            assert list(out_dir.glob(".*.partial")), "no worker started writing"
        else:
            time.sleep(delay)
        os.killpg(p.pid, signal.SIGINT)
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail("encode-dir did not stop after Ctrl-C")
        assert p.returncode in (0, 130) and "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
        assert p.returncode == 0 or "interrupted" in err
        assert not list(tmp_path.rglob("*.partial"))
