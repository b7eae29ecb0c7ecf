"""--time-budget: the schedules laid over the run's own clock, the end with a final evaluation and
checkpoint, and a resume that keeps the budget. The clock is a fake that the wrapped step,
evaluation and checkpoint advance, so every figure below is exact."""
import csv
import math
from pathlib import Path

import pytest

from fastcodec import checkpoint as ckpt
from fastcodec.train.budget import Clock
from fastcodec.train.config import TrainConfig, lr_factor
from fastcodec.train.loop import Trainer


@pytest.fixture
def fake_time(monkeypatch):
    t = [100.0]
    monkeypatch.setattr(Clock, "now", staticmethod(lambda: t[0]))
    return t


def test_clock_lays_the_schedules_over_the_budget(fake_time):
    c = Clock(steps=1000, budget_s=60.0, elapsed_s=15.0)  # a resumed run, a quarter done
    c.start()
    assert (c.position(3), c.progress(3)) == (250.0, 0.25)
    fake_time[0] += 15
    assert c.position(7) == 500.0
    c.took_step(2.0)
    c.took_step(4.0)  # recent steps weigh most: 2 * 0.7 + 4 * 0.3 = 2.6
    c.took_final_work("eval", 3.0)
    c.took_final_work("eval", 1.0)  # the slowest one counts
    c.took_final_work("checkpoint", 0.5)
    fake_time[0] += 23.8  # 53.8 s + 2.6 + 3.5 < 60: another step fits
    assert not c.done(7)
    fake_time[0] += 0.2
    assert c.done(7)
    fake_time[0] += 100
    assert (c.position(9), c.progress(9)) == (1000.0, 1.0)  # held at the end
    by_steps = Clock(steps=10)
    assert (by_steps.position(4), by_steps.progress(4), by_steps.done(9), by_steps.done(10)) == (4, 0.4, False, True)


def _timed(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), device="cpu", steps=20, time_budget=10 / 60, batch_size=2,
                segment_seconds=0.25, eval_every=4, checkpoint_every=4, log_every=1, eval_clips=2, eval_seconds=0.25,
                demo_clips=8, warmup_steps=2, vq_start=4, disc_start=10, wave_disc_width=4, stft_disc_width=4,
                stft_disc_windows=(256,))
    base.update(kw)
    return TrainConfig(**base)


def _trainer(cfg, fake_time, monkeypatch, resume=False, log=None):
    """A trainer whose step takes 1 s, evaluation 0.5 s and checkpoint 0.25 s on the fake clock."""
    trainer = Trainer(cfg, resume=resume, progress=False, log=log or (lambda *_: None))
    for name, seconds in (("train_step", 1.0), ("evaluate", 0.5), ("save_checkpoint", 0.25)):
        real = getattr(trainer, name)

        def timed(*args, _real=real, _s=seconds, **kw):
            fake_time[0] += _s
            return _real(*args, **kw)
        monkeypatch.setattr(trainer, name, timed)
    return trainer


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("budget_s", [10.0, 10.6])
def test_a_timed_run_ends_in_its_budget_with_a_final_evaluation(tmp_path, fake_time, monkeypatch, budget_s):
    cfg = _timed(tmp_path, time_budget=budget_s / 60)
    trainer = _trainer(cfg, fake_time, monkeypatch)
    trainer.run()
    trainer.close()
    # Steps end at 1, 2, 3, 4 (+0.75 s eval and checkpoint), 5.75, 6.75, 7.75, 8.75 s. After step 8
    # its periodic eval and checkpoint (0.75 s), another step (1 s) and the final ones (0.75 s)
    # would pass 10.6 s: so step 8 is the last, and its eval and checkpoint are the final ones.
    out = Path(cfg.out)
    rows = _rows(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    ends = [1, 2, 3, 4, 5.75, 6.75, 7.75, 8.75]
    assert [float(r["elapsed_s"]) for r in rows] == pytest.approx(ends)
    assert [float(r["progress"]) for r in rows] == pytest.approx([e / budget_s for e in ends], rel=1e-5)
    # Each step's schedules stand where a 20-step run stands at the fraction of the budget spent
    # before it: the quantizer from position 4 (its first step initialises the codebooks on its
    # batch: no commitment loss yet; step 3 at 10 s, step 4 at 10.6 s), the critics from position 10.
    positions = [s / budget_s * 20 for s in (0, 1, 2, 3, 4.75, 5.75, 6.75, 7.75)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [cfg.lr * lr_factor(p, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio) for p in positions], rel=1e-5)
    assert [r["disc"] != "" for r in rows] == [p >= 10 for p in positions] == [False] * 5 + [True] * 3
    first_vq = 3 if budget_s == 10 else 4
    assert [r["commit"] != "0" for r in rows] == [False] * first_vq + [True] * (8 - first_vq)
    assert [p >= 4 for p in positions].index(True) + 1 == first_vq
    evals = _rows(out / "eval.csv")
    assert [int(r["step"]) for r in evals] == [4, 8]
    state = ckpt.load(out / "checkpoints" / "step0000008.pt")
    assert state["step"] == 8 and state["clock"]["elapsed_s"] == pytest.approx(9.5) and state["clock"]["finished"]


def test_resume_keeps_the_budget_and_an_ended_run_stays_ended(tmp_path, fake_time, monkeypatch):
    cfg = _timed(tmp_path)
    first = _trainer(cfg, fake_time, monkeypatch)
    step_once = first.train_step

    def stop_after_five(x, position=None):  # as by Ctrl-C
        row = step_once(x, position)
        first._stop_requested = first.step >= 5
        return row
    monkeypatch.setattr(first, "train_step", stop_after_five)
    first.run()
    first.close()
    assert first.interrupted
    fake_time[0] += 1000  # time between the runs is not the run's
    said = []
    again = _trainer(cfg, fake_time, monkeypatch, resume=True, log=said.append)
    # The interrupted checkpoint: 5 steps, one eval and two checkpoints (0.25 s each) = 6 s.
    assert again.clock.elapsed_s == pytest.approx(6.0)
    again.run()
    again.close()
    assert any("for 0.166667 min (0.1 spent)" in m for m in said)
    rows = _rows(Path(cfg.out) / "metrics.csv")
    # From 6 s the steps end at 7, 8, 9 s, and after step 8 its due eval and checkpoint, a step and
    # the final ones (the estimates came back with the checkpoint) would pass 10 s: the end.
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert [float(r["elapsed_s"]) for r in rows][5:] == pytest.approx([7, 8, 9])
    assert [float(r["lr"]) for r in rows][5:] == pytest.approx(
        [cfg.lr * lr_factor(p, 2, 20, cfg.min_lr_ratio) for p in (12, 14, 16)], rel=1e-5)
    state = ckpt.load(Path(cfg.out) / "checkpoints" / "step0000008.pt")
    assert state["clock"]["elapsed_s"] == pytest.approx(9.75) and state["clock"]["finished"]
    ended = []  # 9.75 s of 10 spent, but the run ended: resuming it does nothing
    done = _trainer(cfg, fake_time, monkeypatch, resume=True, log=ended.append)
    assert done.run() == {} and any("used its 0.166667 min budget already" in m for m in ended)
    done.close()
    assert sorted(p.name for p in (Path(cfg.out) / "checkpoints").iterdir())[-1] == "step0000008.pt"


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "30"])
def test_a_bad_budget_is_refused(bad):
    with pytest.raises(ValueError, match="time_budget must be a positive number of minutes"):
        TrainConfig(time_budget=bad)
