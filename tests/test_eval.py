"""Codec quality evaluation: the metrics training shares with `python -m fastcodec.eval`, the
command's scoring (checked against the codec's public API), its summaries, and its files."""
import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import save_codec

from fastcodec import Codec
from fastcodec.eval import metrics as m
from fastcodec.eval.__main__ import parser, run
from fastcodec.eval.scoring import EvalError, Item, Scorer, find_items, speech_categories, summarize
from fastcodec.eval.spectral import MultiScaleMel, mel_distance, mel_filterbank

sf = pytest.importorskip("soundfile")


def speechlike(seconds, rate, seed):
    """A voiced sound with syllable-rate loudness changes and pauses, plus a little noise: [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 40 * rng.random()
    voiced = sum(np.sin(2 * np.pi * k * f0 * t + rng.random() * 6) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.3 * t + rng.random()), 0, None) ** 2
    return (0.2 * voiced * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def test_mel_filterbank_and_distance():
    fb = mel_filterbank(512, 40, 16000)
    assert fb.shape == (40, 257) and (fb >= 0).all()
    assert (fb.sum(1) > 0).all()  # no empty band
    peaks = fb.argmax(1)
    assert (peaks[1:] >= peaks[:-1]).all()  # bands ascend in frequency
    mel = MultiScaleMel(16000)
    x = torch.randn(2, 1, 3000)
    assert len(mel(x)) == 6
    assert float(mel_distance(mel(x), mel(x))) == 0.0
    assert float(mel_distance(mel(x), mel(0.5 * x))) > 0.1
    short = torch.randn(1, 1, 40)  # shorter than the largest window: still defined
    assert torch.isfinite(mel_distance(mel(short), mel(short * 2))).all()


def test_si_sdr_and_codebook_usage():
    ref = torch.randn(3, 1, 1000)
    assert (m.si_sdr(ref * 0.3, ref) > 60).all()  # scale-invariant
    noisy = ref + 0.1 * torch.randn_like(ref)
    assert m.si_sdr(noisy, ref).mean().item() == pytest.approx(20.0, abs=1.0)
    counts = torch.tensor([[5.0, 5.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    perplexity, dead = m.codebook_usage(counts)
    assert perplexity.tolist() == pytest.approx([2.0, 4.0])
    assert dead.tolist() == [0.5, 0.0]


def test_code_counts_per_stage():
    codes = torch.randint(0, 16, (2, 3, 7))  # [B, Q, F]
    counts = m.code_counts(codes, 16)
    for q in range(3):
        assert counts[q].tolist() == torch.bincount(codes[:, q].reshape(-1), minlength=16).double().tolist()
    assert torch.equal(m.code_counts(codes[1], 16), m.code_counts(codes[1:], 16))  # [Q, F] alike
    assert torch.equal(m.code_counts(codes[:, None], 16), counts)  # [B, C, Q, F] alike


def test_stoi_and_pesq_known_answers():
    x = speechlike(3.0, 16000, 0).astype(np.float64)
    noise = np.random.default_rng(1).standard_normal(x.size) * 0.05
    assert m.stoi(x, x, 16000) == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < m.stoi(x, x + noise, 16000) < 0.99
    assert m.pesq_wb(x, x, 16000) > 4.5  # the scale's top, 4.64
    assert 1.0 < m.pesq_wb(x, x + noise, 16000) < 3.0
    import soxr

    up = [soxr.resample(a, 16000, 24000) for a in (x, x + noise)]  # other rates are resampled to 16 kHz
    assert m.pesq_wb(*up, 24000) == pytest.approx(m.pesq_wb(x, x + noise, 16000), abs=0.1)
    # Too little to score: NaN, never pystoi's 1e-5 stand-in or a crash.
    assert math.isnan(m.stoi(x[:3000], x[:3000], 16000))
    assert math.isnan(m.pesq_wb(np.zeros(32000), x[:32000], 16000))
    assert math.isnan(m.pesq_wb(x[:1000], x[:1000], 16000))
    with pytest.raises(ValueError, match="one mono signal"):
        m.stoi(np.stack([x, x]), np.stack([x, x]), 16000)


def test_a_missing_metric_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pystoi", None)  # import pystoi -> ImportError
    assert not m.available("stoi") and m.available("pesq")
    with pytest.raises(m.MetricUnavailable, match=r"STOI needs the pystoi package.*\[eval\]"):
        m.stoi(np.ones(100), np.ones(100), 16000)


def _corpus(root, rate=16000):
    files = {"speech/a.wav": speechlike(2.5, rate, 1), "speech/deep/b.flac": speechlike(2.0, rate, 2),
             "music/c.wav": speechlike(2.0, rate, 3) * 0.5, "d.wav": speechlike(1.0, rate, 4)}
    for rel, x in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), x, rate)
    return files


def test_items_come_from_folder_names_or_a_manifest(tmp_path):
    _corpus(tmp_path / "set")
    assert find_items(tmp_path / "set") == [Item("d.wav", "(top level)"), Item("music/c.wav", "music"),
                                            Item("speech/a.wav", "speech"), Item("speech/deep/b.flac", "speech")]
    # A manifest's paths are relative to its own folder; only the files inside the scored folder count.
    (tmp_path / "manifest.csv").write_text("path,category,split\nset/speech/a.wav,speech-en,validation\n"
                                           "set/music/c.wav,band,validation\nother/x.wav,speech,train\n")
    assert find_items(tmp_path / "set", tmp_path / "manifest.csv") == [Item("music/c.wav", "band"),
                                                                       Item("speech/a.wav", "speech-en")]
    assert speech_categories({"speech-en", "band", "speechless"}, ["speech-*"]) == {"speech-en"}
    (tmp_path / "bad.csv").write_text("file,kind\na.wav,speech\n")
    with pytest.raises(EvalError, match="needs `path` and `category` columns"):
        find_items(tmp_path / "set", tmp_path / "bad.csv")
    (tmp_path / "elsewhere.csv").write_text("path,category\nother/x.wav,speech\n")
    with pytest.raises(EvalError, match="none of its files lies in"):
        find_items(tmp_path / "set", tmp_path / "elsewhere.csv")
    with pytest.raises(EvalError, match="no such manifest"):
        find_items(tmp_path / "set", tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="no audio files"):
        find_items(tmp_path / "empty")


def test_scores_match_the_codec_coding_at_each_depth(tmp_path):
    save_codec(tmp_path / "codec.pt")
    codec = Codec.load(tmp_path / "codec.pt")
    x = speechlike(2.0, 16000, 5)
    sf.write(str(tmp_path / "a.wav"), x, 16000)
    rows, counts = Scorer(codec, [3, 1], max_seconds=1.5).score(tmp_path / "a.wav", Item("a.wav", "speech"), True)
    import soxr

    x = sf.read(str(tmp_path / "a.wav"), dtype="float64")[0]  # as 16-bit PCM holds it
    ref = torch.from_numpy(soxr.resample(x[:24000], 16000, codec.sample_rate)).float()
    mel = MultiScaleMel(codec.sample_rate)
    assert [r["n_q"] for r in rows] == [1, 3]
    for row in rows:
        y = codec.decode(codec.encode(ref, codec.sample_rate, n_q=row["n_q"]))[0, 0]
        assert row["seconds"] == pytest.approx(1.5)
        assert row["kbps"] == pytest.approx(codec.bitrate(row["n_q"]) / 1000)
        assert row["si_sdr"] == pytest.approx(float(m.si_sdr(y[None, None], ref[None, None])[0]), abs=1e-4)
        assert row["mel"] == pytest.approx(float(mel_distance(mel(y[None, None]), mel(ref[None, None]))), rel=1e-5)
        assert row["stoi"] == pytest.approx(m.stoi(ref.double().numpy(), y.double().numpy(), codec.sample_rate),
                                            abs=1e-4)
        assert math.isfinite(row["pesq"])
    frames = math.ceil(len(ref) / codec.cfg.hop)
    assert counts.shape == (3, 16) and counts.sum(1).tolist() == [frames] * 3
    music, _ = Scorer(codec, [2]).score(tmp_path / "a.wav", Item("a.wav", "music"), False)
    assert "pesq" not in music[0] and music[0]["seconds"] == pytest.approx(2.0)


def test_summaries_average_per_category_and_over_all():
    rows = [{"file": f, "category": c, "seconds": 2.0, "n_q": 1, "kbps": 1.5, "si_sdr": s, "mel": 1.0, "stoi": st}
            for f, c, s, st in (("a", "speech", 2.0, 0.5), ("b", "speech", 4.0, math.nan), ("c", "music", -3.0, 0.2))]
    counts = {"speech": torch.tensor([[3.0, 1.0], [4.0, 0.0]]), "music": torch.tensor([[0.0, 2.0], [1.0, 1.0]])}
    summary, usage = summarize(rows, counts)
    by = {s["category"]: s for s in summary}
    assert [s["category"] for s in summary] == ["music", "speech", "all"]
    assert (by["speech"]["si_sdr"], by["speech"]["files"], by["speech"]["seconds"]) == (3.0, 2, 4.0)
    assert (by["speech"]["stoi"], by["speech"]["stoi_files"]) == (0.5, 1)  # a NaN is left out, and counted
    assert by["all"]["si_sdr"] == pytest.approx(1.0) and math.isnan(by["all"]["pesq"])
    stage1 = {u["category"]: u for u in usage if u["stage"] == 1}
    assert stage1["music"]["dead_pct"] == 50.0 and stage1["all"]["perplexity"] == pytest.approx(
        float(m.codebook_usage(torch.tensor([[3.0, 3.0]]))[0][0]))


def test_the_command_writes_its_tables_and_plot(tmp_path, capsys):
    save_codec(tmp_path / "codec.pt")
    _corpus(tmp_path / "set")
    (tmp_path / "set" / "music" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    sf.write(str(tmp_path / "set" / "music" / "blip.wav"), np.full(2, 0.5, np.float32), 48000)  # 0 samples at 8 kHz
    out = tmp_path / "q"
    assert run(parser().parse_args([str(tmp_path / "codec.pt"), str(tmp_path / "set"), "--out", str(out),
                                    "--n-q", "1,3"])) == 0
    err = capsys.readouterr().err
    assert "broken.wav: not a readable audio file" in err and "blip.wav: too short to resample" in err
    with open(out / "files.csv", newline="") as f:
        files = list(csv.DictReader(f))
    assert len(files) == 4 * 2 and {r["n_q"] for r in files} == {"1", "3"}
    assert all(r["pesq"] for r in files if r["category"] == "speech")
    assert not any(r["pesq"] for r in files if r["category"] != "speech")
    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["category"], r["n_q"]) for r in summary] == [(c, n) for c in ("(top level)", "music", "speech", "all")
                                                             for n in ("1", "3")]
    text = (out / "summary.md").read_text()
    assert "| speech | 3 |" in text and "PESQ-wb (higher is better)" in text
    assert "2 skipped (unreadable or too short" in text
    assert (out / "quality.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "usage.csv").read_text().splitlines()) == 1 + 3 * 4
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_the_command_refuses_bad_requests_in_one_line(tmp_path, capsys, monkeypatch):
    save_codec(tmp_path / "codec.pt")
    _corpus(tmp_path / "set")
    ck, audio = str(tmp_path / "codec.pt"), str(tmp_path / "set")
    for argv, message in (([ck, audio, "--n-q", "4"], "--n-q [4]: this codec has 3 stages (1..3)"),
                          ([ck, str(tmp_path / "none")], "no such folder"),
                          ([str(tmp_path / "set" / "d.wav"), audio], "d.wav"),
                          ([ck, audio, "--out", str(tmp_path / "set" / "d.wav")], "cannot create the folder"),
                          ([ck, audio, "--out", str(tmp_path / "set" / "d.wav" / "q")], "cannot create the folder")):
        assert run(parser().parse_args(argv)) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setitem(sys.modules, "pesq", None)
    assert run(parser().parse_args([ck, audio, "--metrics", "si_sdr,pesq"])) == 1  # asked for: an error
    assert "PESQ needs the pesq package" in capsys.readouterr().err
    assert run(parser().parse_args([ck, audio, "--out", str(tmp_path / "q"), "--n-q", "2"])) == 0  # default: a note
    assert "note: PESQ not scored" in capsys.readouterr().err
    with open(tmp_path / "q" / "files.csv", newline="") as f:
        assert {r["pesq"] for r in csv.DictReader(f)} == {""}
    assert "PESQ" not in (tmp_path / "q" / "summary.md").read_text()
    with pytest.raises(SystemExit):
        parser().parse_args([ck, audio, "--metrics", "pesq,loudness"])
    with pytest.raises(SystemExit):
        parser().parse_args([ck, audio, "--max-seconds", "nan"])


def test_python_m_fastcodec_eval_runs(tmp_path):
    save_codec(tmp_path / "codec.pt")
    _corpus(tmp_path / "set")
    r = subprocess.run([sys.executable, "-m", "fastcodec.eval", str(tmp_path / "codec.pt"), str(tmp_path / "set"),
                        "--n-q", "2", "--metrics", "si_sdr,mel"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "quality-set" / "summary.md").exists() and "| all | 2 |" in r.stdout
