"""ONNX export (fastcodec/export.py, `python -m fastcodec export`): standard-operator graphs that
onnx's checker accepts, whose codes under onnxruntime are the package's (up to ties within
rounding, stated below) on fresh audio of odd lengths from one sample to minutes, and whose
decoded audio is the package's within float tolerance; refusals leave nothing behind."""
import json

import numpy as np
import pytest
import torch

from fastcodec import Codec
from fastcodec.codec.cli import main as cli
from fastcodec.export import EncoderGraph, ExportError, export, run_steps
from fastcodec.lite import ort_session

onnx = pytest.importorskip("onnx")  # in the [test] extra: installed wherever the suite runs
ort = pytest.importorskip("onnxruntime")

TIE_RTOL = 1e-5  # two codes whose fp64 distances to a residual are this close (relative) tie


def _session(path):
    return ort_session(path, threads=2)


@pytest.fixture
def exported(codec_path, tmp_path):
    codec = Codec.load(codec_path, backend="torch")
    return codec, export(codec, tmp_path / "onnx")


def test_export_writes_checked_standard_graphs_and_their_description(exported):
    codec, out = exported
    for name in ("encoder.onnx", "decoder.onnx", "encoder_step.onnx", "decoder_step.onnx"):
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model, full_check=True)
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # no custom op leaked in
    meta = json.loads((out / "codec.json").read_text())
    cfg = codec.cfg
    assert (meta["sample_rate"], meta["hop"], meta["codebook_size"], meta["n_q"]) == \
        (cfg.sample_rate, cfg.hop, cfg.codebook_size, cfg.n_q)
    assert meta["fingerprint"] == codec.fingerprint
    assert meta["graphs"]["encoder"]["outputs"] == {"codes": ["batch", cfg.n_q, "frames"]}
    assert sorted(p.name for p in out.iterdir()) == ["codec.json", "decoder.onnx", "decoder_step.onnx",
                                                     "encoder.onnx", "encoder_step.onnx"]
    for graph in ("encoder_step", "decoder_step"):  # the states codec.json lists are the graph's
        states = meta["graphs"][graph]["states"]
        session = _session(out / f"{graph}.onnx")
        ins, outs = session.get_inputs()[1:], session.get_outputs()[1:]
        assert [i.name for i in ins] == [st["name"] for st in states]
        assert [o.name for o in outs] == [st["name"] + "_next" for st in states]
        assert [list(i.shape[1:]) for i in ins] == [st["shape"][1:] for st in states]
        assert all(st["layer"].startswith(graph.split("_")[0]) for st in states)


def _first_stage_ties(model, audio, codes_a, codes_b):
    """Rows (b, frame) whose codes differ, each checked to differ first at a stage where both codes
    are nearest to that stage's residual within TIE_RTOL; returns how many rows differ."""
    with torch.no_grad():
        r = model.encoder(audio).transpose(1, 2).double()  # [B, F, D]
    cbs = model.quantizer.codebooks.double()
    differ = 0
    for b in range(codes_a.shape[0]):
        for f in range(codes_a.shape[2]):
            a, c = codes_a[b, :, f], codes_b[b, :, f]
            if torch.equal(a, c):
                continue
            differ += 1
            s = int((a != c).nonzero()[0])
            res = r[b, f] - sum(cbs[i][a[i]] for i in range(s)) if s else r[b, f]
            d = ((cbs[s] - res) ** 2).sum(1)
            near = float(d.min()) * (1 + TIE_RTOL) + 1e-12
            assert float(d[a[s]]) <= near and float(d[c[s]]) <= near, \
                f"item {b} frame {f} stage {s}: codes {int(a[s])} and {int(c[s])} do not tie"
    return differ


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_onnxruntime_codes_are_the_packages(exported, codec_path, backend):
    _, out = exported
    codec = Codec.load(codec_path, backend=backend)
    enc = _session(out / "encoder.onnx")
    rate, hop = codec.sample_rate, codec.cfg.hop
    g = torch.Generator().manual_seed(7)
    differ = total = 0
    for B, T in [(1, 1), (2, 5), (3, 7 * hop + 3), (1, 3 * 60 * rate + 11)]:  # the last: three minutes
        audio = (torch.rand(B, 1, T, generator=g) - 0.5) * 0.6
        got = torch.from_numpy(enc.run(None, {"audio": audio.numpy()})[0])
        want = codec.encode(audio, rate).codes[:, 0]
        assert got.dtype == torch.int64 and got.shape == want.shape == (B, codec.cfg.n_q, -(-T // hop))
        differ += _first_stage_ties(codec.model, audio, want, got)
        total += B * want.shape[2]
    assert differ <= total // 1000, f"{differ} of {total} frames differ (each a tie)"


def test_onnxruntime_decodes_as_the_package(exported, codec_path):
    _, out = exported
    codec = Codec.load(codec_path)
    dec = _session(out / "decoder.onnx")
    g = torch.Generator().manual_seed(3)
    for B, F in [(1, 1), (2, 13), (1, 4001)]:
        codes = torch.randint(0, codec.cfg.codebook_size, (B, codec.cfg.n_q, F), generator=g)
        got = torch.from_numpy(dec.run(None, {"codes": codes.numpy()})[0])
        with torch.no_grad():
            want = codec.model.decode(codes)
        assert got.shape == want.shape == (B, 1, F * codec.cfg.hop)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max() + 1e-3))


def test_fewer_stages_than_the_model(codec_path, tmp_path):
    codec = Codec.load(codec_path, backend="torch")
    out = export(codec, tmp_path / "x", n_q=2)
    assert json.loads((out / "codec.json").read_text())["n_q"] == 2
    audio = torch.randn(2, 1, 101) * 0.3
    got = _session(out / "encoder.onnx").run(None, {"audio": audio.numpy()})[0]
    assert got.shape == (2, 2, -(-101 // codec.cfg.hop))
    y = _session(out / "decoder.onnx").run(None, {"codes": got})[0]
    assert y.shape == (2, 1, got.shape[2] * codec.cfg.hop) and np.isfinite(y).all()


def test_an_export_that_does_not_reproduce_the_model_leaves_nothing(codec_path, tmp_path, monkeypatch):
    codec = Codec.load(codec_path, backend="torch")
    real = EncoderGraph.forward
    monkeypatch.setattr(EncoderGraph, "forward", lambda self, audio: (real(self, audio) + 1) % codec.cfg.codebook_size)
    with pytest.raises(ExportError, match="stage 0's codes"):
        export(codec, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # the folder it made, removed
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError):
        export(codec, tmp_path / "kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["notes.txt"]  # a folder it did not make, as it was


def test_the_command_line(codec_path, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["export", str(codec_path), str(out), "--n-q", "2"]) == 0
    assert "encoder.onnx" in capsys.readouterr().out
    assert json.loads((out / "codec.json").read_text())["n_q"] == 2
    assert cli(["export", str(codec_path), str(out)]) == 1
    assert "already holds an export" in capsys.readouterr().err
    for bad, says in ((["--opset", "21"], "opset must be"), (["--n-q", "9"], "n_q must be"),
                      (["--step-frames", "0"], "step_frames must be")):
        assert cli(["export", str(codec_path), str(tmp_path / "other"), *bad]) == 1
        assert says in capsys.readouterr().err
    assert cli(["export", str(tmp_path / "missing.pt"), str(tmp_path / "m")]) == 1
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize("frames", [1, 4])
def test_step_graphs_fed_in_steps_give_the_offline_codes_and_audio(codec_path, tmp_path, frames):
    """The streaming graphs from zero states, a signal of odd length fed step by step (the last step
    zero-padded): the package's codes (up to ties, as above) and its decoding of them."""
    codec = Codec.load(codec_path)
    out = export(codec, tmp_path / "steps", step_frames=frames)
    hop, rate = codec.cfg.hop, codec.sample_rate
    g = torch.Generator().manual_seed(frames)
    for B, T in [(1, 1), (2, 13 * hop + 5), (1, 20 * rate + 3)]:
        audio = (torch.rand(B, 1, T, generator=g) - 0.5) * 0.6
        want = codec.encode(audio, rate).codes[:, 0]
        got = run_steps(_session(out / "encoder_step.onnx"), "audio", audio, frames * hop)[..., : want.shape[2]]
        assert got.shape == want.shape
        assert _first_stage_ties(codec.model, audio, want, got) <= want.shape[0] * want.shape[2] // 1000
        y = run_steps(_session(out / "decoder_step.onnx"), "codes", want, frames)[..., : want.shape[2] * hop]
        with torch.no_grad():
            y_want = codec.model.decode(want)
        torch.testing.assert_close(y, y_want, rtol=1e-4, atol=1e-5 * float(y_want.abs().max() + 1e-3))


def test_a_model_with_bottleneck_residual_units_exports(tmp_path):
    """soundstream-24k-lite's residual unit (kernel 3, inner conv at half the channels) in the graphs."""
    from conftest import save_codec

    save_codec(tmp_path / "lite.pt", channels=6, residual_kernel=3, residual_bottleneck=2)
    codec = Codec.load(tmp_path / "lite.pt", backend="torch")
    out = export(codec, tmp_path / "onnx")
    g = torch.Generator().manual_seed(5)
    audio = (torch.rand(2, 1, 9 * codec.cfg.hop + 4, generator=g) - 0.5) * 0.6
    got = torch.from_numpy(_session(out / "encoder.onnx").run(None, {"audio": audio.numpy()})[0])
    want = codec.encode(audio, codec.sample_rate).codes[:, 0]
    assert got.shape == want.shape and _first_stage_ties(codec.model, audio, want, got) <= 1
    y = torch.from_numpy(_session(out / "decoder.onnx").run(None, {"codes": want.numpy()})[0])
    with torch.no_grad():
        ref = codec.model.decode(want)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max() + 1e-3))
