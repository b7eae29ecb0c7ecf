"""Training's building blocks: schedules, losses, data scanning and batching, checkpoints, and the
files training writes (the metrics they share with evaluation: test_eval.py)."""
import argparse
import math
import warnings

import numpy as np
import pytest
import torch

from fastcodec import checkpoint as ckpt
from fastcodec.nn import preset
from fastcodec.train.config import TrainConfig, lr_factor, schedule_value
from fastcodec.train.data import (
    ArraySource,
    CropDataset,
    DataError,
    FolderSource,
    StepBatches,
    scan_folder,
    split_files,
)
from fastcodec.train import demo_data
from fastcodec.train.demo_data import demo_clip
from fastcodec.train.losses import critic_hinge_loss, feature_matching_loss, generator_hinge_loss, stage_mean_loss
from fastcodec.train.report import CSVLog, spectrogram_png, write_wav


def test_schedules():
    assert schedule_value(2.5, 0.7) == 2.5
    spec = [[0.0, 1.0], [0.5, 0.0], [1.0, 0.5]]
    assert schedule_value(spec, 0.0) == 1.0
    assert schedule_value(spec, 0.25) == pytest.approx(0.5)
    assert schedule_value(spec, 0.75) == pytest.approx(0.25)
    assert schedule_value(spec, 2.0) == 0.5
    with pytest.raises(ValueError, match="ascending"):
        schedule_value([[0.5, 1.0], [0.1, 0.0]], 0.2)
    with pytest.raises(ValueError, match="weights"):
        TrainConfig(weights={"mel": "loud"})
    with pytest.raises(ValueError, match="unknown loss weights"):
        TrainConfig(weights={"perceptual": 1.0})
    # A negative weight would train the model to increase that loss; NaN/inf anywhere poisons it.
    for bad in (-1.0, float("inf"), [[0, 1], [0.3, -0.1]], [[0, 1], [float("nan"), 0.1]]):
        with pytest.raises(ValueError, match=r"weights\['aux'\]: weights must be finite and non-negative"):
            TrainConfig(weights={"aux": bad})
    with pytest.raises(ValueError, match="weights must map loss names to weights"):
        TrainConfig(weights=[1, 2])
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    assert TrainConfig(weights={"aux": 0.0}).weight("aux", 10) == 0.0
    # Warmup climbs linearly, cosine ends at min_ratio.
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    cfg = TrainConfig(weights={"aux": [[0, 1], [0.5, 0]]}, steps=100)
    assert TrainConfig.from_dict(cfg.to_dict()).weights == cfg.weights


def test_adversarial_losses():
    real = [[torch.ones(2, 3, 5), torch.full((2, 1, 5), 2.0)]]
    fake = [[torch.zeros(2, 3, 5), torch.full((2, 1, 5), -2.0)]]
    assert float(critic_hinge_loss(real, fake)) == 0.0  # both beyond the margins
    assert float(critic_hinge_loss(fake, real)) == pytest.approx(6.0)
    assert float(generator_hinge_loss(fake)) == pytest.approx(3.0)
    assert float(feature_matching_loss(real, real)) == 0.0
    assert float(feature_matching_loss(real, fake)) == pytest.approx(1.0)


def test_stage_mean_loss_is_zero_when_means_track_the_pooled_input():
    hop = 6
    x = torch.randn(2, 1, 24)
    pooled = [torch.nn.functional.avg_pool1d(x, f) for f in (6, 2, 1)]
    stages = [p.expand(2, 3, p.shape[2]).clone() for p in pooled]
    assert float(stage_mean_loss(stages, x, hop)) == pytest.approx(0.0, abs=1e-7)
    assert float(stage_mean_loss([s + 1 for s in stages], x, hop)) == pytest.approx(1.0 / float(x.abs().mean()))
    # Relative to the input's level: the same mismatch on a 10x louder signal scores the same.
    assert float(stage_mean_loss([10 * s + 1 for s in stages], 10 * x, hop)) == pytest.approx(
        float(stage_mean_loss([s + 0.1 for s in stages], x, hop)), rel=1e-5)


def test_demo_clips_are_deterministic_and_audible():
    a, b = demo_clip(0, 3, 16000, 0.5), demo_clip(0, 3, 16000, 0.5)
    assert np.array_equal(a, b) and a.dtype == np.float32 and a.shape == (8000,)
    assert not np.array_equal(a, demo_clip(0, 4, 16000, 0.5))
    assert 0.2 < np.abs(a).max() <= 0.25 + 1e-6 and np.isfinite(a).all()


def _speech_direct(rng, n, sr):
    """The speech event synthesised sample by sample: every harmonic, its formant gain and np.sin at
    every sample (the demo set's fast path interpolates gains and rotates phasors)."""
    t = np.arange(n) / sr
    f0 = np.clip(rng.uniform(90, 260) * np.exp(np.cumsum(rng.normal(0, 0.6, n)) / sr * 2), 60, 400)
    a, b = demo_data._VOWELS[rng.integers(len(demo_data._VOWELS), size=2)]
    mix = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / max(t[-1], 1e-9), 0, 1))
    formants = a[None] * (1 - mix[:, None]) + b[None] * mix[:, None]
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(n)
    for k in range(1, int(sr / 2 / f0.min()) + 1):
        fk = k * f0
        gain = sum(np.exp(-0.5 * ((fk - formants[:, j]) / (60 + 40 * j)) ** 2) / (j + 1) for j in range(3))
        out += gain * (fk < sr / 2) / np.sqrt(k) * np.sin(k * phase)
    return out * (0.5 - 0.5 * np.cos(2 * np.pi * t * rng.uniform(2, 5)))


@pytest.mark.parametrize("n, sr", [(1, 16000), (37, 16000), (2000, 16000), (48000, 24000)])
def test_demo_speech_matches_direct_synthesis(n, sr):
    for seed in range(3):
        fast = demo_data._speech(np.random.default_rng(seed), n, sr)
        direct = _speech_direct(np.random.default_rng(seed), n, sr)
        # Gains interpolated over <= 32 samples: within -46 dB of the event's peak (0.4% measured).
        assert np.abs(fast - direct).max() <= 5e-3 * np.abs(direct).max() + 1e-12, (seed, n)


def _write(path, data, sr):
    sf = pytest.importorskip("soundfile")  # absent on the GPU image; CI has it

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr)


def test_scan_folder_skips_bad_files_and_counts_them(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    _write(root / "a.wav", 0.3 * rng.standard_normal(8000).astype(np.float32), 16000)
    _write(root / "sub" / "b.flac", 0.3 * rng.standard_normal((4410, 2)).astype(np.float32), 44100)
    _write(root / "c.AIFF", 0.3 * rng.standard_normal(3000).astype(np.float32), 22050)
    (root / "folder.wav").mkdir()
    _write(root / "quiet.wav", np.zeros(4000, np.float32), 16000)
    _write(root / "empty.wav", np.zeros(0, np.float32), 16000)
    (root / "broken.wav").write_bytes(b"RIFF not really a wav")
    (root / "notes.txt").write_text("not audio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files, skipped = scan_folder(root, tmp_path / "index.json", log=lambda *_: None)
    assert [f[0] for f in files] == ["a.wav", "c.AIFF", "sub/b.flac"]
    assert files[2][1:] == (4410, 44100)
    assert skipped == {"silent": 1, "empty": 1, "unreadable": 1}
    assert sum("skipping" in str(w.message) for w in caught) == 3
    # The cached scan gives the same answer without opening the files.
    files2, skipped2 = scan_folder(root, tmp_path / "index.json", log=lambda *_: None)
    assert files2 == files and skipped2 == skipped


def test_scan_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        scan_folder(tmp_path / "empty")
    _write(tmp_path / "bad" / "z.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(DataError, match="none of the 1 audio files is usable"):
        scan_folder(tmp_path / "bad", log=lambda *_: None)


def test_split_is_stable_and_disjoint():
    files = [(f"f{i}.wav", 100, 16000) for i in range(200)]
    train, held = split_files(files, 0.05)
    assert held and train and not {f[0] for f in train} & {f[0] for f in held}
    assert 2 <= len(held) <= 25
    train2, held2 = split_files(files + [("new.wav", 100, 16000)], 0.05)
    assert {f[0] for f in held} <= {f[0] for f in held2}  # adding a file moves no old one
    assert split_files(files[:1], 0.05) == (files[:1], files[:1])


def test_folder_crops_are_mono_resampled_and_padded(tmp_path):
    t = np.arange(44100) / 44100
    tone = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32) * 0.5
    _write(tmp_path / "d" / "tone.wav", tone, 44100)
    _write(tmp_path / "d" / "short.wav", np.full(100, 0.5, np.float32), 16000)
    files, _ = scan_folder(tmp_path / "d", log=lambda *_: None)
    src = FolderSource(tmp_path / "d", files, 16000)
    crop = src.crop([f[0] for f in files].index("tone.wav"), np.random.default_rng(0), 4000)
    assert crop.shape == (4000,) and crop.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(crop))
    assert abs(np.argmax(spectrum) * 16000 / 4000 - 440) <= 4  # still 440 Hz at the model's rate
    short = src.crop([f[0] for f in files].index("short.wav"), np.random.default_rng(0), 300)
    assert short.shape == (300,) and np.all(short[:100] == 0.5) and np.all(short[100:] == 0)


def test_step_batches_are_deterministic_and_sharded():
    a = StepBatches(20, 3, seed=7, rank=0, world=2)
    b = StepBatches(20, 3, seed=7, rank=1, world=2)
    assert a.batch_for(5) == StepBatches(20, 3, seed=7, rank=0, world=2).batch_for(5)
    assert list(StepBatches(20, 3, 7, start_step=2, steps=4)) == [StepBatches(20, 3, 7).batch_for(s) for s in (2, 3)]
    # Within an epoch (10 items per rank) the two ranks read disjoint items, each item once.
    items_a = [i for s in range(4) for i, _ in a.batch_for(s)][:10]
    items_b = [i for s in range(4) for i, _ in b.batch_for(s)][:10]
    assert len(set(items_a)) == 10 and not set(items_a) & set(items_b)
    ds = CropDataset(ArraySource(np.random.default_rng(0).standard_normal((20, 500)).astype(np.float32)), 100)
    key = a.batch_for(0)[0]
    assert torch.equal(ds[key], ds[key]) and ds[key].shape == (1, 100)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    state = {"step": 3, "w": torch.randn(4), "nested": {"a": [1, 2.5, "x"]}}
    ckpt.save(tmp_path / "c.pt", state)
    back = ckpt.load(tmp_path / "c.pt")
    assert back["step"] == 3 and torch.equal(back["w"], state["w"]) and back["nested"] == state["nested"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ckpt.CheckpointError, match="not a readable checkpoint"):
        ckpt.load(tmp_path / "junk.pt")
    with pytest.raises(ckpt.CheckpointError, match="no such"):
        ckpt.load(tmp_path / "none.pt")
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(ckpt.CheckpointError, match="newer"):
        ckpt.load(tmp_path / "new.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"format": ckpt.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load(tmp_path / "evil.pt")  # weights_only refuses arbitrary objects
    # One line naming what was refused, without torch's paragraph (and its advice to load unsafely).
    msg = str(e.value)
    assert msg == (f"{tmp_path / 'evil.pt'}: refused: it holds a pickled object that is not plain data "
                   f"(print); fastcodec never unpickles objects from files")
    with pytest.raises(ckpt.CheckpointError, match=r"junk.pt: not a readable checkpoint \(UnpicklingError: [^\n]*\)$"):
        ckpt.load(tmp_path / "junk.pt")


def test_a_failed_write_keeps_the_old_file(tmp_path):
    ckpt.save(tmp_path / "c.pt", {"step": 1})

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.atomic_write(tmp_path / "c.pt", boom)
    assert ckpt.load(tmp_path / "c.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_csv_log_resume_drops_rows_after_the_checkpoint(tmp_path):
    log = CSVLog(tmp_path / "m.csv", ["step", "loss"])
    for s in range(1, 6):
        log.write({"step": s, "loss": 1.0 / s})
    CSVLog(tmp_path / "m.csv", ["step", "loss"], resume_step=3)
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "step,loss" and [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]


def test_csv_log_resume_keeps_an_older_layouts_rows(tmp_path):
    """A run logged before columns were added keeps its rows (new columns blank); a log of
    another layout is moved aside, never over an earlier one moved aside."""
    log = CSVLog(tmp_path / "m.csv", ["step", "loss"])
    for s in range(1, 4):
        log.write({"step": s, "loss": 0.5})
    CSVLog(tmp_path / "m.csv", ["step", "elapsed_s", "loss"], resume_step=2)
    assert (tmp_path / "m.csv").read_text().splitlines() == ["step,elapsed_s,loss", "1,,0.5", "2,,0.5"]
    for k in range(2):
        (tmp_path / "m.csv").write_text(f"when,what\n{k},x\n")
        CSVLog(tmp_path / "m.csv", ["step", "loss"], resume_step=2)
    assert (tmp_path / "m.old.csv").read_text() == "when,what\n0,x\n"
    assert (tmp_path / "m.old.1.csv").read_text() == "when,what\n1,x\n"
    assert (tmp_path / "m.csv").read_text() == "step,loss\n"


def test_png_and_wav_writers(tmp_path):
    spectrogram_png(tmp_path / "s.png", [np.random.rand(20, 30), np.random.rand(20, 30)])
    data = (tmp_path / "s.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"IHDR" in data and b"IEND" in data
    import struct
    assert struct.unpack(">II", data[16:24]) == (30, 42)  # width, two panels + separator
    sf = pytest.importorskip("soundfile")
    audio = np.sin(np.linspace(0, 100, 1600)).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", audio, 16000)
    back, sr = sf.read(str(tmp_path / "a.wav"), dtype="float32")
    assert sr == 16000 and np.abs(back - audio).max() < 1e-4
    assert math.isclose(float(np.abs(back).max()), 0.5, abs_tol=1e-3)


def test_codec_overrides_replace_the_presets_settings():
    from fastcodec.train.__main__ import _setting

    cfg = TrainConfig(preset="tiny", codec={"channels": 12, "quantizer_dropout": 0.5, "activation": "snake"})
    model = cfg.codec_config()
    assert (model.channels, model.quantizer_dropout, model.activation, model.n_q) == (12, 0.5, "snake", 6)
    assert TrainConfig.from_dict(cfg.to_dict()).codec_config() == model
    assert TrainConfig().codec_config() == preset("tiny")
    with pytest.raises(ValueError, match=r"codec: unknown model settings \['width'\]"):
        TrainConfig(codec={"width": 3})
    with pytest.raises(ValueError, match="codec: invalid CodecConfig: channels must be a positive int"):
        TrainConfig(codec={"channels": 0})
    with pytest.raises(ValueError, match="quantizer_dropout must be in"):
        TrainConfig(codec={"quantizer_dropout": 2})
    with pytest.raises(ValueError, match="invalid training config: unknown preset 'huge'"):
        TrainConfig(preset="huge")
    assert _setting("dilations=[1, 3]") == ("dilations", [1, 3])
    assert _setting("activation=snake") == ("activation", "snake")
    assert _setting(" ema_decay =0.9") == ("ema_decay", 0.9)
    for bad in ("channels", "=3", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected FIELD=VALUE"):
            _setting(bad)


def test_presets_bring_their_own_recipe_defaults():
    tiny = TrainConfig()
    assert (tiny.lr, tiny.batch_size, tiny.vq_start, tiny.disc_start) == (2e-3, 4, 100, tiny.steps)
    assert TrainConfig(steps=700).disc_start == 700  # tiny trains without critics at any length
    assert preset("tiny").quantizer_dropout == 0.5
    big = TrainConfig(preset="soundstream-24k")
    assert (big.lr, big.batch_size, big.vq_start, big.disc_start) == (3e-4, 8, 0, 500)
    assert tiny.weights["wave"] == [[0.0, 5.0], [0.3, 0.5]] and big.weights["wave"] == 5.0
    assert tiny.weight("wave", 0.3 * tiny.steps) == 0.5 and tiny.weights["mel"] == big.weights["mel"] == 1.0
    given = TrainConfig(batch_size=2, disc_start=10, lr=1e-4, weights={"wave": 1.0})
    assert (given.lr, given.batch_size, given.disc_start, given.weights["wave"]) == (1e-4, 2, 10, 1.0)
