"""fastcodec.lite: audio to .fcdc and back through an ONNX export, without torch. Its files are the
package's (same header, the same codes up to ties within rounding), its decoding the package's
within float and PCM rounding, also from a --start; it runs in a process where importing torch
fails, with or without soundfile; bad exports, files and arguments get one-line errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastcodec
from conftest import run_interrupted_in_import, save_codec
from fastcodec import Codec
from fastcodec.codec import FormatError
from fastcodec.codec import format as fcdc
from fastcodec.export import export
from fastcodec.lite import WINDOW_FRAMES, LiteCodec
from fastcodec.lite import main as lite_main

ort = pytest.importorskip("onnxruntime")  # in the [test] extra: installed wherever the suite runs
sf = pytest.importorskip("soundfile")  # a dependency of the package


@pytest.fixture
def setup(codec_path, tmp_path):
    codec = Codec.load(codec_path)
    return codec, export(codec, tmp_path / "export")


def _audio(tmp_path, name, seconds, rate, channels=2, seed=0):
    g = np.random.default_rng(seed)
    x = (g.random((int(seconds * rate), channels), dtype=np.float32) - 0.5) * 0.6
    path = tmp_path / name
    sf.write(path, x, rate, subtype="FLOAT")
    return path


def _read(path):
    y, rate = sf.read(path, dtype="float32", always_2d=True)
    return y, rate


def test_lite_encodes_files_as_the_package(setup, tmp_path):
    codec, model = setup
    lite = LiteCodec(model)
    src = _audio(tmp_path, "a.wav", 3.7, codec.sample_rate)
    h_pkg = codec.encode_file(src, tmp_path / "pkg.fcdc")
    h_lite = lite.encode_file(src, tmp_path / "lite.fcdc")
    for field in ("sample_rate", "hop", "codebook_size", "channels", "n_q", "source_rate", "samples",
                  "source_samples", "frames", "fingerprint"):
        assert getattr(h_lite, field) == getattr(h_pkg, field), field
    with open(tmp_path / "pkg.fcdc", "rb") as f:
        want = fcdc.Reader(f).codes()
    with open(tmp_path / "lite.fcdc", "rb") as f:
        got = fcdc.Reader(f).codes()
    differ = int((got != want).any(1).sum())
    assert differ <= want.shape[0] * want.shape[2] // 1000, f"{differ} frames differ"


@pytest.mark.parametrize("rate_factor", [1, 1.378125])  # the codec's rate, and 11025 Hz for 8000
def test_lite_decodes_files_as_the_package(setup, tmp_path, rate_factor):
    codec, model = setup
    lite = LiteCodec(model)
    rate = round(codec.sample_rate * rate_factor)
    src = _audio(tmp_path, "a.wav", 4.3, rate)
    codec.encode_file(src, tmp_path / "a.fcdc")
    for start, duration in ((0.0, None), (1.3, 0.9), (2.0, None)):
        n_lite, r_lite = lite.decode_file(tmp_path / "a.fcdc", tmp_path / "lite.wav", start, duration)
        n_pkg, r_pkg = codec.decode_file(tmp_path / "a.fcdc", tmp_path / "pkg.wav", start=start, duration=duration)
        assert (n_lite, r_lite) == (n_pkg, r_pkg) == (n_pkg, rate)
        (y, _), (want, _) = _read(tmp_path / "lite.wav"), _read(tmp_path / "pkg.wav")
        # Both written as 16-bit PCM: one step apart at most, and a few more where resampled
        # (soxr's stream, which the package uses, against one call over the whole piece).
        tol = (1.5 if rate_factor == 1 else 60) / 32768
        assert y.shape == want.shape and float(np.abs(y - want).max()) <= tol, (start, duration)
        os.unlink(tmp_path / "lite.wav")
        os.unlink(tmp_path / "pkg.wav")


def test_decoding_in_windows_equals_one_pass_and_takes_fewer_stages(setup):
    codec, model = setup
    lite = LiteCodec(model)
    g = np.random.default_rng(1)
    F = 3 * WINDOW_FRAMES + 5
    codes = g.integers(0, codec.cfg.codebook_size, (2, codec.cfg.n_q, F))
    whole = ort.InferenceSession(str(model / "decoder.onnx")).run(None, {"codes": codes})[0][:, 0]
    np.testing.assert_allclose(lite.decode(codes), whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    part = lite.decode(codes, first=WINDOW_FRAMES - 3, last=2 * WINDOW_FRAMES + 7)
    np.testing.assert_allclose(part, whole[:, (WINDOW_FRAMES - 3) * codec.cfg.hop: (2 * WINDOW_FRAMES + 7) *
                                                 codec.cfg.hop], rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    with torch.no_grad():  # two of three stages: the package's decoding of those
        want = codec.model.decode(torch.from_numpy(codes[:, :2]))[:, 0].numpy()
    np.testing.assert_allclose(lite.decode(codes[:, :2]), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    x = g.random((2, 5 * WINDOW_FRAMES * codec.cfg.hop + 3), dtype=np.float32) - 0.5
    enc = ort.InferenceSession(str(model / "encoder.onnx")).run(None, {"audio": x[:, None]})[0]
    got = lite.encode(x)
    assert got.shape == enc.shape and int((got != enc).any(1).sum()) <= 1


def _without(tmp_path, modules, *args):
    """python -m fastcodec.lite ARGS in a process where importing each of `modules` fails."""
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    code = (f"import sys; {blocked}; import runpy; sys.argv = ['fastcodec.lite', *{list(map(str, args))!r}]; "
            f"runpy.run_module('fastcodec.lite', run_name='__main__')")
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("blocked", [["torch"], ["torch", "soundfile"]], ids=["no torch", "no torch, no soundfile"])
def test_lite_runs_where_torch_cannot_be_imported(setup, tmp_path, blocked):
    codec, model = setup
    src = _audio(tmp_path, "a.wav", 2.1, codec.sample_rate, channels=1)
    if "soundfile" in blocked:  # the standard library's wave reads 16-bit PCM
        x, _ = _read(src)
        sf.write(src, x, codec.sample_rate, subtype="PCM_16")
    r = _without(tmp_path, blocked, "encode", src, tmp_path / "a.fcdc", "--model", model)
    assert r.returncode == 0, r.stderr
    r = _without(tmp_path, blocked, "decode", tmp_path / "a.fcdc", tmp_path / "b.wav", "--model", model,
                 "--start", "0.5")
    assert r.returncode == 0, r.stderr
    y, rate = _read(tmp_path / "b.wav")
    assert rate == codec.sample_rate and len(y) == round(1.6 * codec.sample_rate)
    codec.decode_file(tmp_path / "a.fcdc", tmp_path / "c.wav", start=0.5)
    # 16-bit PCM either way (without soundfile, `wave` and this module's rounding): 2 steps at most
    assert float(np.abs(y - _read(tmp_path / "c.wav")[0]).max()) <= 2.5 / 32768
    r = _without(tmp_path, blocked, "decode", tmp_path / "a.fcdc", tmp_path / "b.flac", "--model", model)
    if "soundfile" in blocked:
        assert r.returncode == 1 and "only .wav" in r.stderr
    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import fastcodec, "
                        "fastcodec.lite; print(fastcodec.__version__)"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(Path(fastcodec.__file__).resolve().parent.parent)))
    assert r.returncode == 0 and r.stdout.strip() == fastcodec.__version__, r.stderr


def test_lite_refuses_bad_exports_files_and_arguments(setup, tmp_path, capsys):
    codec, model = setup
    with pytest.raises(ValueError, match="no codec.json"):
        LiteCodec(tmp_path / "nowhere")
    meta = json.loads((model / "codec.json").read_text())
    for change, says in (({"format": "other"}, "not a fastcodec ONNX export"), ({"format_version": 2}, "version 2"),
                         ({"hop": "6"}, "invalid hop"), ({"fingerprint": None}, "invalid fingerprint")):
        bad = tmp_path / f"bad{len(says)}"
        bad.mkdir()
        (bad / "codec.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(ValueError, match=says):
            LiteCodec(bad)
    other_rate = tmp_path / "other_rate"  # an export that claims another rate than the files it is given
    other_rate.mkdir()
    (other_rate / "codec.json").write_text(json.dumps({**meta, "sample_rate": meta["sample_rate"] * 2}))
    src = _audio(tmp_path, "r.wav", 0.5, codec.sample_rate)
    codec.encode_file(src, tmp_path / "r.fcdc")
    with pytest.raises(FormatError, match="does not fit this export"):
        LiteCodec(other_rate).decode_file(tmp_path / "r.fcdc", tmp_path / "r_out.wav")
    assert not (tmp_path / "r_out.wav").exists()
    lite = LiteCodec(model)
    with pytest.raises(ValueError, match="float"):
        lite.encode(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        lite.encode(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="must be in 0.."):
        lite.decode(np.full((1, 1, 4), codec.cfg.codebook_size))
    with pytest.raises(ValueError, match="stages"):
        lite.decode(np.zeros((1, codec.cfg.n_q + 1, 4), np.int64))
    other = Codec(save_codec(tmp_path / "other.pt", seed=1))  # another model's file
    src = _audio(tmp_path, "a.wav", 1.0, codec.sample_rate)
    other.encode_file(src, tmp_path / "other.fcdc")
    assert lite_main(["decode", str(tmp_path / "other.fcdc"), str(tmp_path / "o.wav"), "--model", str(model)]) == 1
    assert "made by model" in capsys.readouterr().err and not (tmp_path / "o.wav").exists()
    (tmp_path / "junk.fcdc").write_bytes(b"FCDC" + b"\0" * 40)
    assert lite_main(["decode", str(tmp_path / "junk.fcdc"), str(tmp_path / "j.wav"), "--model", str(model)]) == 1
    assert "junk.fcdc" in capsys.readouterr().err
    assert lite_main(["encode", str(tmp_path / "missing.wav"), str(tmp_path / "m.fcdc"), "--model", str(model)]) == 1
    assert "no such audio file" in capsys.readouterr().err
    assert lite_main(["encode", str(src), str(src), "--model", str(model)]) == 1  # an output that is its input
    assert sf.info(str(src)).frames == codec.sample_rate


@pytest.mark.parametrize("module", ["numpy", "onnxruntime"])
def test_ctrl_c_while_a_library_is_imported_stops_even_if_the_import_swallows_it(setup, tmp_path, module):
    codec, model = setup
    src = _audio(tmp_path, "a.wav", 0.5, codec.sample_rate)
    p = run_interrupted_in_import("fastcodec.lite", module, "encode", src, tmp_path / "a.fcdc", "--model", model)
    assert p.returncode == 130 and p.stderr == "fastcodec.lite: interrupted\n", p.stderr
    assert not list(tmp_path.glob("*.fcdc")) and not list(tmp_path.glob(".*.partial"))
