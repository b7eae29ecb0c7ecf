"""`python -m fastcodec` / the `fastcodec` script: encode, decode, encode-dir, info; one-line errors
with exit 1 (no traceback), Ctrl-C leaving nothing behind, resumable corpus coding."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import save_codec

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


def _python_m(*argv, **kwargs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
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
