"""The training loop end to end on the tiny preset: what it writes, exact resume, bad data and
non-finite losses, Ctrl-C, the command line, and two-process DDP on CPU."""
import contextlib
import csv
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcodec.train import TrainConfig, TrainingError, train
from fastcodec import checkpoint as ckpt
from fastcodec.train import loop as loop_mod

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path, name="run", **kw):
    """A tiny run on the CPU (bit-exact resume is a CPU promise: CUDA's atomics reorder sums): 2 x 0.25 s
    crops, critics from step 2, evaluation and checkpoints every 2 steps."""
    base = dict(out=str(tmp_path / name), device="cpu", steps=4, batch_size=2, segment_seconds=0.25, eval_every=2,
                checkpoint_every=2, log_every=1, disc_start=2, vq_start=1, demo_clips=6, eval_clips=2, eval_seconds=0.5,
                warmup_steps=2, wave_disc_width=4, stft_disc_width=4, stft_disc_windows=(256,))
    base.update(kw)
    return TrainConfig(**base)


def _states_equal(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _states_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _states_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_a_run_writes_everything_it_promises(tmp_path):
    cfg = small(tmp_path)
    row = train(cfg, progress=False, log=lambda *_: None)
    out = Path(cfg.out)
    assert row["step"] == 4 and np.isfinite(row["loss"]) and row["disc"] > 0  # the critics ran
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["steps"] == 4 and saved["codec"]["n_q"] == 6
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step0000002.pt", "step0000004.pt"]
    state = ckpt.load(out / "checkpoints" / "step0000004.pt")
    assert state["step"] == 4 and "opt_g" in state and "critics" in state
    codec = ckpt.load(out / "codec.pt")
    assert codec["codec_config"] == saved["codec"] and "quantizer.codebooks" in codec["model"]
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("step,elapsed_s,progress,lr,loss,mel") and len(metrics) == 5
    assert [float(r.split(",")[2]) for r in metrics[1:]] == [0.25, 0.5, 0.75, 1.0]  # progress by steps
    evals = (out / "eval.csv").read_text().splitlines()
    assert len(evals) == 3 and "si_sdr_nq6" in evals[0] and "dead_pct_q6" in evals[0]
    assert (out / "eval" / "step0000004.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "eval" / "step0000004_clip0.wav").stat().st_size > 1000
    assert not list(out.rglob(".*tmp*"))


def test_tensorboard_gets_every_metric_csv_gets(tmp_path):
    """With tensorboard installed (it is in the test extras), the run's scalars reach its event file
    by the time train() returns, under the same names as the CSV columns."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small(tmp_path)
    train(cfg, progress=False, log=lambda *_: None)
    events = EventAccumulator(str(Path(cfg.out) / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    lines = (Path(cfg.out) / "metrics.csv").read_text().splitlines()
    rows = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    for name in ("loss", "mel", "disc"):  # disc: only the steps the critics trained
        logged = [(e.step, e.value) for e in events.Scalars(f"train/{name}")]
        in_csv = [(int(r["step"]), float(r[name])) for r in rows if r[name]]
        assert [s for s, _ in logged] == [s for s, _ in in_csv] and len(logged) >= 2, name
        assert [v for _, v in logged] == pytest.approx([v for _, v in in_csv], rel=1e-5), name
    evals = (Path(cfg.out) / "eval.csv").read_text().splitlines()[0].split(",")[1:]
    assert {f"eval/{c}" for c in evals} <= tags


def test_bf16_autocast_trains_with_the_quantizer_in_fp32(tmp_path):
    cfg = small(tmp_path, amp="bf16", steps=3, eval_every=3, checkpoint_every=3)
    trainer = loop_mod.Trainer(cfg, progress=False, log=lambda *_: None)
    row = trainer.run()
    assert row["step"] == 3 and np.isfinite(row["loss"]) and np.isfinite(row["disc"])
    assert trainer.model.quantizer.codebooks.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast keeps fp32 masters


def test_resume_continues_exactly(tmp_path, monkeypatch):
    """A run stopped after step 2 (as by Ctrl-C) and resumed ends bit-identical to one that never stopped."""
    straight = small(tmp_path, "straight")
    train(straight, progress=False, log=lambda *_: None)
    halves = small(tmp_path, "halves")
    trainer = loop_mod.Trainer(halves, progress=False, log=lambda *_: None)
    step_once = trainer.train_step

    def stop_after_two(x, position=None):
        row = step_once(x, position)
        trainer._stop_requested = trainer.step >= 2
        return row
    monkeypatch.setattr(trainer, "train_step", stop_after_two)
    trainer.run()
    assert trainer.interrupted and ckpt.load(Path(halves.out) / "checkpoints" / "step0000002.pt")["step"] == 2
    train(halves, resume=True, progress=False, log=lambda *_: None)
    a = ckpt.load(Path(straight.out) / "checkpoints" / "step0000004.pt")
    b = ckpt.load(Path(halves.out) / "checkpoints" / "step0000004.pt")
    for key in ("model", "critics", "opt_g", "opt_d", "rng_cpu", "step"):
        _states_equal(a[key], b[key], key)
    # The resumed metrics file holds each step once.
    steps = [ln.split(",")[0] for ln in (Path(halves.out) / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]


def test_an_existing_run_is_never_overwritten(tmp_path):
    cfg = small(tmp_path, steps=2)
    train(cfg, progress=False, log=lambda *_: None)
    before = (Path(cfg.out) / "checkpoints" / "step0000002.pt").read_bytes()
    with pytest.raises(TrainingError, match="already holds a training run"):
        train(cfg, progress=False, log=lambda *_: None)
    assert (Path(cfg.out) / "checkpoints" / "step0000002.pt").read_bytes() == before
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(small(tmp_path, "fresh"), resume=True, progress=False, log=lambda *_: None)


def test_non_finite_steps_are_skipped_then_training_stops(tmp_path, monkeypatch):
    real = loop_mod.mel_distance
    calls = {"n": 0}

    def flaky(a, b):
        calls["n"] += 1
        value = real(a, b)
        return value * float("nan") if calls["n"] in (3, 5, 6, 7) else value
    monkeypatch.setattr(loop_mod, "mel_distance", flaky)
    cfg = small(tmp_path, steps=8, max_bad_steps=3, checkpoint_every=1, eval_every=100)
    trainer = loop_mod.Trainer(cfg, progress=False, log=lambda *_: None)
    messages = []
    trainer.log = messages.append
    with pytest.raises(TrainingError, match=r"3 steps in a row.*the newest checkpoint that verifies is \S*"
                                            r"step0000006.pt \(step 6\)"):
        trainer.run()
    # Step 3 was skipped alone (weights untouched), then 5, 6, 7 in a row stopped the run at step 7.
    assert sum("non-finite" in m for m in messages) == 4
    ck = ckpt.load(Path(cfg.out) / "checkpoints" / "step0000004.pt")
    for name, p in trainer.model.state_dict().items():
        assert torch.equal(p, ck["model"][name]), f"{name} changed during skipped steps"
    assert all(torch.isfinite(t).all() for t in ck["model"].values())


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "fastcodec.train", *args], capture_output=True, text=True,
                          env=env, cwd=kw.pop("cwd", ROOT), timeout=kw.pop("timeout", 300), **kw)


def test_cli_reports_bad_data_in_one_line(tmp_path):
    r = _cli(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "no such folder" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    (tmp_path / "empty").mkdir()
    r = _cli(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    assert r.returncode == 1 and "no audio files" in r.stderr
    r = _cli(["--steps", "0", "--out", str(tmp_path / "run")])
    assert r.returncode == 1 and "steps must be a positive int" in r.stderr
    r = _cli(["--backend", "cuda", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert r.returncode == 1 and "--backend cuda" in r.stderr and "Traceback" not in r.stderr


def test_cli_trains_on_a_folder_and_resume_refuses_changed_settings(tmp_path):
    sf = pytest.importorskip("soundfile")  # absent on the GPU image; CI has it

    rng = np.random.default_rng(0)
    for i in range(3):
        t = np.arange(12000) / 24000
        tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(str(tmp_path / f"clip{i}.wav"), tone.astype(np.float32), 24000)  # resampled to 16 kHz
    (tmp_path / "bad.ogg").write_bytes(b"OggS broken")
    run = tmp_path / "run"
    common = ["--data", str(tmp_path), "--out", str(run), "--batch-size", "2", "--segment-seconds", "0.25",
              "--eval-every", "2", "--checkpoint-every", "2", "--disc-start", "1", "--vq-start", "0",
              "--no-progress"]
    r = _cli([*common, "--steps", "2", "--codec", "channels=4", "dilations=[1,2]"])
    assert r.returncode == 0, r.stderr
    assert "skipped 1 of 4 files: 1 unreadable" in r.stdout
    assert "training tiny --codec channels=4 dilations=[1,2] (" in r.stdout
    saved = json.loads((run / "config.json").read_text())
    assert saved["codec"]["channels"] == 4 and saved["codec"]["dilations"] == [1, 2]
    assert ckpt.load(run / "codec.pt")["codec_config"] == saved["codec"]
    assert (run / "checkpoints" / "step0000002.pt").exists() and (run / "data_index.json").exists()
    r = _cli([*common, "--steps", "3", "--resume", "--lr", "0.1"])
    assert r.returncode == 1 and "--lr" in r.stderr
    r = _cli([*common, "--steps", "3", "--resume", "--codec", "channels=5"])
    assert r.returncode == 1 and "--codec" in r.stderr
    r = _cli([*common, "--steps", "3", "--resume"])
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and (run / "checkpoints" / "step0000003.pt").exists()


def test_ctrl_c_finishes_the_step_and_saves_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["--out", str(run), "--device", "cpu", "--steps", "1000", "--batch-size", "2", "--segment-seconds", "0.25",
            "--eval-every", "1000", "--checkpoint-every", "1000", "--log-every", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "fastcodec.train", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        metrics = run / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint saved at step" in out
    saved = sorted((run / "checkpoints").glob("step*.pt"))
    assert len(saved) == 1
    step = ckpt.load(saved[0])["step"]
    assert 2 <= step < 1000
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert int(rows[-1].split(",")[0]) == step  # every finished step was logged, none after


def test_process_group_gets_the_timeout_asked_for(monkeypatch):
    """--dist-timeout reaches init_process_group, so a rank stuck in a collective fails the run
    rather than waiting gloo's default 30 min."""
    from fastcodec.train.__main__ import config_from_args, parser

    argv = ["--dist-timeout", "42", "--out", "x"]
    cfg = config_from_args(parser().parse_args(argv), argv)
    assert cfg.dist_timeout == 42.0
    with pytest.raises(ValueError, match="dist_timeout"):
        TrainConfig(dist_timeout=0)
    seen = {}
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    loop_mod._Dist("cpu", cfg.dist_timeout)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=42)}


def _torchrun(args, timeout, program=("-m", "fastcodec.train")):
    """`torchrun --standalone --nproc_per_node 2 -m fastcodec.train ARGS` on the CPU. Its own session,
    so a timeout kills the ranks too (killing torchrun alone would leave them running) and the
    failure shows how far they got."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *program, "--device", "cpu", "--no-progress", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # A rank may sit in a session of its own, out of reach of killpg, holding the pipes open:
        # find every descendant while torchrun is still their ancestor, then kill them all.
        stragglers = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in stragglers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            out, err = "", "(its output pipes stayed open after the kill)"
        pytest.fail(f"torchrun still running after {timeout} s; it printed:\n{out[-3000:]}\n{err[-5000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _descendants(root: int) -> list[int]:
    """Every live process below root, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def test_ddp_two_cpu_processes_stay_identical(tmp_path, monkeypatch):
    """torchrun with 2 processes (gloo): each rank trains on its own shard; after the steps every
    parameter, optimizer-updated weight and codebook is bit-identical on both ranks. With measured
    'auto' on: rank 0 tunes a step's shapes and the ranks share its table."""
    monkeypatch.setenv("FASTCODEC_TUNE", "1")
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    # --dist-timeout: a rank stuck in a collective fails the run in 2 min, with the collective named.
    r = _torchrun(["--out", str(run), "--steps", "3", "--batch-size", "2", "--segment-seconds", "0.25",
                   "--disc-start", "1", "--vq-start", "0", "--eval-every", "3", "--checkpoint-every", "3",
                   "--log-every", "1", "--dist-timeout", "120"], timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "FutureWarning" not in r.stderr, r.stderr[-2000:]
    record = json.loads((run / "replicas.json").read_text())
    assert record["step"] == 3 and len(record["fingerprints"]) == 2 and record["identical"]
    assert "x2" in r.stdout  # it said it trained on two processes
    state = ckpt.load(run / "checkpoints" / "step0000003.pt")
    assert bool(state["model"]["quantizer.initialized"]) and state["model"]["quantizer.updates"] == 3
    assert len(list((tmp_path / "cache").glob("tuning-*.json"))) == 1  # rank 0's measurements, kept


def test_ddp_timed_run_ends_together(tmp_path):
    """--time-budget under torchrun: rank 0's clock sets every rank's schedules and end, so the ranks
    step together to the same last step (a rank that ended alone would leave the other waiting in
    a collective until --dist-timeout) with identical weights, and the run ends with a checkpoint."""
    run = tmp_path / "run"
    r = _torchrun(["--out", str(run), "--time-budget", "0.2", "--steps", "40", "--batch-size", "2",
                   "--segment-seconds", "0.25", "--disc-start", "20", "--vq-start", "4", "--eval-every", "1000",
                   "--checkpoint-every", "1000", "--log-every", "1", "--dist-timeout", "120"], timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    last = int(rows[-1]["step"])
    record = json.loads((run / "replicas.json").read_text())
    assert record["step"] == last and record["identical"]
    assert [p.name for p in (run / "checkpoints").iterdir()] == [f"step{last:07d}.pt"]
    assert 0.5 < float(rows[-1]["progress"]) <= 1  # it ran by the clock


def test_a_stuck_rank_ends_the_run_after_the_timeout(tmp_path):
    """Rank 1 hangs in step 2; rank 0 gives up in its collective after --dist-timeout with one
    line saying so, torchrun ends rank 1, and step 1's checkpoint is intact."""
    run = tmp_path / "run"
    start = time.time()
    r = _torchrun(["--out", str(run), "--steps", "4", "--batch-size", "2", "--segment-seconds", "0.25",
                   "--disc-start", "1", "--vq-start", "0", "--eval-every", "100", "--checkpoint-every", "1",
                   "--log-every", "1", "--dist-timeout", "30"], timeout=300,
                  program=[str(ROOT / "tests" / "ddp_stuck_rank.py")])
    # 30 s: rank 0 also waits while rank 1 builds the demo set (~5 s here, slower on a loaded CI box).
    assert r.returncode != 0 and time.time() - start < 240
    lines = [ln for ln in r.stderr.splitlines() if "fastcodec.train: error: rank 0" in ln]
    assert len(lines) == 1 and "the other ranks stopped answering" in lines[0], r.stderr[-4000:]
    assert [p.name for p in (run / "checkpoints").glob("step*.pt")] == ["step0000001.pt"]
    assert ckpt.load(run / "checkpoints" / "step0000001.pt")["step"] == 1


def test_ranks_tear_their_groups_down_without_hanging():
    """A group whose last reference a DDP reducer dropped right after a collective deadlocked its
    destructor now and then (every few rounds on torch 2.13): the trainer drops its wrappers first
    and lets the backend's own binding, which releases the GIL, join the gloo workers."""
    r = _torchrun([], timeout=120, program=[str(ROOT / "tests" / "ddp_teardown.py")])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert sorted(r.stdout.split("\n")[:2]) == ["rank 0: 13 groups torn down", "rank 1: 13 groups torn down"]


def test_ddp_with_bad_data_ends_every_rank_with_the_reason(tmp_path):
    r = _torchrun(["--out", str(tmp_path / "run"), "--data", str(tmp_path / "nowhere")], timeout=300)
    assert r.returncode != 0 and "no such folder" in r.stderr


def _flip_a_weight_bit(path, state, name):
    """Flip one bit inside tensor `name`'s bytes in the checkpoint file at path (torch.save stores
    tensors uncompressed, so its bytes appear as they are)."""
    data = bytearray(Path(path).read_bytes())
    raw = state["model"][name].contiguous().view(torch.uint8).numpy().tobytes()
    at = data.find(raw[:64])
    assert at > 0 and data.find(raw[:64], at + 1) < 0, "the weight's bytes must appear once"
    data[at + 33] ^= 0x04
    Path(path).write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_never_trusted(tmp_path):
    """A flipped bit in a weight, a truncated file and NaN weights: --resume names each, moves it
    aside and resumes from the newest checkpoint that verifies, ending exactly where a resume from
    that checkpoint ends; rotation never deletes that checkpoint; Codec.load refuses each with the
    reason; with every checkpoint truncated, --resume refuses and touches nothing."""
    from fastcodec import Codec

    import shutil

    cfg = small(tmp_path, "run", steps=4, checkpoint_every=1, keep_checkpoints=3, eval_every=100)
    train(cfg, progress=False, log=lambda *_: None)
    folder = Path(cfg.out) / "checkpoints"
    assert [p.name for p in sorted(folder.iterdir())] == ["step0000002.pt", "step0000003.pt", "step0000004.pt"]
    # The reference: the same run resumed from its intact step 2.
    ref = dataclasses.replace(cfg, out=str(tmp_path / "ref"), steps=6, keep_checkpoints=2)
    shutil.copytree(cfg.out, ref.out)
    for n in (3, 4):
        (Path(ref.out) / "checkpoints" / f"step000000{n}.pt").unlink()
    train(ref, resume=True, progress=False, log=lambda *_: None)
    # Step 4: one flipped bit in a weight. Step 3: NaN weights, saved with a correct digest.
    s4 = ckpt.load(folder / "step0000004.pt")
    _flip_a_weight_bit(folder / "step0000004.pt", s4, max(s4["model"], key=lambda k: s4["model"][k].numel()))
    s3 = ckpt.load(folder / "step0000003.pt")
    name = next(k for k, v in s3["model"].items() if v.is_floating_point() and v.numel() > 4)
    s3["model"][name] = s3["model"][name].clone().fill_(float("nan"))
    ckpt.save(folder / "step0000003.pt", s3)
    for path, reason in ((folder / "step0000004.pt", "failed verification"),
                         (folder / "step0000003.pt", "holds NaN or Inf values")):
        with pytest.raises(ckpt.CheckpointError, match=reason):
            Codec.load(path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((folder / "step0000002.pt").read_bytes()[:5000])
    with pytest.raises(ckpt.CheckpointError, match="truncated.pt: not a readable checkpoint"):
        Codec.load(truncated)

    messages = []
    train(dataclasses.replace(cfg, steps=6, keep_checkpoints=2), resume=True, progress=False, log=messages.append)
    said = "\n".join(messages)
    assert "step0000004.pt is damaged (said above): moved aside to step0000004.pt.corrupt" in said
    assert "step0000003.pt is damaged" in said and "holds NaN" in said and "failed verification" in said
    assert "resumed from" in said and "step0000002.pt at step 2 (sha256 verified)" in said
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["step0000003.pt.corrupt", "step0000004.pt.corrupt", "step0000005.pt", "step0000006.pt"]
    a = ckpt.load(Path(ref.out) / "checkpoints" / "step0000006.pt")
    b = ckpt.load(folder / "step0000006.pt")
    for key in ("model", "critics", "opt_g", "opt_d", "step"):
        _states_equal(a[key], b[key], key)
    # A checkpoint from a newer fastcodec is not damaged: --resume stops, naming it, and moves nothing.
    newer = ckpt.load(folder / "step0000006.pt")
    newer["version"] = ckpt.VERSION + 1
    torch.save(newer, folder / "step0000007.pt")
    with pytest.raises(TrainingError, match="step0000007.pt: checkpoint version 3 is newer .* nothing was changed"):
        train(dataclasses.replace(cfg, steps=8), resume=True, progress=False, log=lambda *_: None)
    (folder / "step0000007.pt").unlink()
    # With every checkpoint damaged, --resume refuses and changes nothing.
    for p in folder.glob("step*.pt"):
        p.write_bytes(p.read_bytes()[:1000])
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(TrainingError, match="none of the 2 checkpoints .* verifies"):
        train(dataclasses.replace(cfg, steps=8), resume=True, progress=False, log=lambda *_: None)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_skipped_step_changes_nothing(tmp_path, monkeypatch):
    """A non-finite critic loss (and, separately, one in the step that runs the codebooks' k-means
    initialisation) leaves every parameter, buffer and optimizer state as it was."""
    import copy

    real_hinge = loop_mod.critic_hinge_loss
    poison = {"steps": set()}

    def hinge(*a):
        value = real_hinge(*a)
        return value * float("nan") if trainer.step in poison["steps"] else value
    monkeypatch.setattr(loop_mod, "critic_hinge_loss", hinge)
    cfg = small(tmp_path, steps=6, disc_start=1, vq_start=2, eval_every=100, checkpoint_every=100)
    trainer = loop_mod.Trainer(cfg, progress=False, log=lambda *_: None)
    from fastcodec.train.data import CropDataset, StepBatches

    data = CropDataset(trainer.train_src, trainer.segment)
    batches = StepBatches(len(trainer.train_src), cfg.batch_size, cfg.seed, start_step=0, steps=cfg.steps)

    def snapshot():
        return {"model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
                "critics": {k: v.clone() for k, v in trainer.critics.state_dict().items()},
                "opt_g": copy.deepcopy(trainer.opt_g.state_dict()), "opt_d": copy.deepcopy(trainer.opt_d.state_dict())}

    poison["steps"] = {1, 2, 4}  # step 2 quantizes first: its k-means initialisation must be undone
    for step in range(cfg.steps):
        x = torch.stack([data[k] for k in batches.batch_for(step)])
        before = snapshot()
        row = trainer.train_step(x)
        if step in poison["steps"]:
            assert row["bad_steps"] >= 1 and not np.isfinite(row["disc"])
            _states_equal(snapshot(), before, f"step {step + 1}")
        else:
            assert row["bad_steps"] == 0
    assert bool(trainer.model.quantizer.initialized)  # initialised at step 4, the next quantizing step that held


def test_resume_refuses_every_changed_setting_however_it_is_spelled(tmp_path):
    """Each flag that is not one of the resumable ones, given under --resume with another value than
    the saved run's, is refused (also as --flag=value); the same value is accepted; the resumable
    ones are applied; abbreviated flags are an error rather than a way past the check."""
    from fastcodec.train.__main__ import _RESUMABLE, config_from_args, parser

    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(out=str(run))
    (run / "config.json").write_text(json.dumps({"train": saved.to_dict()}))
    other = {"data": str(tmp_path), "preset": "seed-16k", "weights": '{"aux": 2}', "amp": "bf16", "device": "cpu",
             "backend": "torch", "dist_timeout": "5", "time_budget": "7.5", "codec": "channels=4"}
    flags = [a for a in parser()._actions
             if a.option_strings and a.dest not in ("help", "resume", "no_progress", "out")]
    assert len(flags) > 20
    for action in flags:
        flag, dest = action.option_strings[0], action.dest
        if action.nargs == 0:  # --compile
            argv = [flag]
        else:
            value = other.get(dest) or str(getattr(saved, dest) * 2 + 1 if not isinstance(getattr(saved, dest), str)
                                           else getattr(saved, dest))
            argv = [f"{flag}={value}"]
        argv += ["--resume", "--out", str(run)]
        if dest in _RESUMABLE:
            cfg = config_from_args(parser().parse_args(argv), argv)
            assert getattr(cfg, dest) != getattr(saved, dest), flag
        else:
            with pytest.raises(TrainingError, match=f"these flags differ from it: {flag}"):
                config_from_args(parser().parse_args(argv), argv)
    same = ["--lr", str(saved.lr), "--batch-size", str(saved.batch_size), "--resume", "--out", str(run)]
    assert config_from_args(parser().parse_args(same), same) == saved
    for abbreviated in (["--batch", "4"], ["--step", "99"], ["--lr=0.1", "--disc-l", "1"]):
        with pytest.raises(SystemExit):
            parser().parse_args(abbreviated + ["--resume"])
    r = _cli(["--batch", "4", "--resume", "--out", str(run)])
    assert r.returncode == 2 and "unrecognized arguments: --batch 4" in r.stderr


def test_a_run_made_before_its_presets_defaults_changed_resumes_its_own_model(tmp_path):
    """config.json holds the whole model; --resume rebuilds that, not the preset as it is now."""
    from fastcodec.nn import preset
    from fastcodec.train.__main__ import config_from_args, parser

    run = tmp_path / "run"
    run.mkdir()
    old_model = dataclasses.replace(preset("tiny"), quantizer_dropout=1.0, channels=6)
    saved = TrainConfig(out=str(run))
    train_section = {k: v for k, v in saved.to_dict().items() if k != "codec"}  # written before --codec
    (run / "config.json").write_text(json.dumps({"codec": old_model.to_dict(), "train": train_section}))
    argv = ["--resume", "--out", str(run)]
    cfg = config_from_args(parser().parse_args(argv), argv)
    assert cfg.codec_config() == old_model and cfg.codec == {"channels": 6, "quantizer_dropout": 1.0}
    argv = ["--resume", "--out", str(run), "--codec", "channels=6", "quantizer_dropout=1.0"]
    assert config_from_args(parser().parse_args(argv), argv).codec_config() == old_model
    argv = ["--resume", "--out", str(run), "--codec", "channels=8"]
    with pytest.raises(TrainingError, match="differ from it: --codec"):
        config_from_args(parser().parse_args(argv), argv)
