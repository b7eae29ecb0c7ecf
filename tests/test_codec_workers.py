"""encode-dir's worker processes (fastcodec/codec/workers.py): a worker that dies fails only the
job it held and is replaced; workers that cannot start fail the jobs with the reason; never a hang."""
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fastcodec.codec import workers


def _init(how):
    if how == "die":
        os._exit(3)
    if how == "sigint blocked":
        return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    if how.startswith("slow "):  # a long import; unwinding it would write the marker
        marker = Path(how[5:])
        try:
            (marker.parent / f"{os.getpid()}.pid").touch()
            time.sleep(600)
        finally:
            marker.touch()
    return how


def _work(state, job):
    if job.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a segfault would
    if job.startswith("slow "):  # long enough that the other workers take the other jobs
        time.sleep(1)
    if job.startswith("stuck "):  # deaf to SIGTERM (as code stuck in a library can be)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(job[6:]).write_text(str(os.getpid()))
        time.sleep(600)
    return state, job


def _run(jobs, n, how):
    done, lost = [], []
    workers.run(jobs, n, _init, (how,), _work, lambda job, result: done.append(result),
                lambda job, why: lost.append((job, why)))
    return done, lost


def test_a_worker_that_dies_fails_its_job_and_the_others_go_on():
    jobs = ["a", "crash1", "b", "c", "crash2", "d", "e"]
    done, lost = _run(jobs, 2, "ok")
    assert sorted(done) == [("ok", j) for j in "abcde"]
    assert sorted(j for j, _ in lost) == ["crash1", "crash2"]
    assert all(why == "the worker process coding it died (exit code -9)" for _, why in lost)


def test_workers_that_cannot_start_fail_every_job_with_the_reason():
    done, lost = _run(["a", "b", "c"], 2, "die")
    assert done == [] and lost == [(j, "no worker process could start") for j in "abc"]


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextlib.contextmanager
def _interrupt_when(ready):
    """Ctrl-C to this process once ready() holds, from a thread stopped when the block ends."""
    stop = threading.Event()

    def fire():
        while not stop.is_set():
            if ready():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def test_workers_do_not_see_the_terminals_ctrl_c():
    """In a fresh process: there the first worker's start also starts multiprocessing's resource
    tracker, which unblocks SIGINT on its way."""
    code = "from test_codec_workers import _run; print(sorted(_run(['slow a', 'slow b'], 2, 'sigint blocked')[0]))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path])))
    assert r.returncode == 0 and r.stdout == "[(True, 'slow a'), (True, 'slow b')]\n", r.stderr


def test_a_worker_deaf_to_sigterm_is_killed_and_nothing_hangs(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "STOP_SECONDS", 1)
    pid_file = tmp_path / "stuck.pid"
    start = time.time()
    with _interrupt_when(pid_file.exists), pytest.raises(KeyboardInterrupt):
        _run([f"stuck {pid_file}", "b", "c"], 2, "ok")
    assert time.time() - start < 100
    assert _gone(int(pid_file.read_text()))


def test_an_interrupted_worker_is_ended_not_unwound_while_it_starts(tmp_path):
    """Before a worker is ready SIGTERM ends it: an exception inside `import torch` could be
    swallowed there and leave it running."""
    marker = tmp_path / "unwound"
    with _interrupt_when(lambda: len(list(tmp_path.glob("*.pid"))) == 2), pytest.raises(KeyboardInterrupt):
        _run(["a", "b"], 2, f"slow {marker}")
    pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 2 and all(_gone(pid) for pid in pids)
    assert not marker.exists()


def test_ctrl_c_while_a_worker_starts_is_raised_after_it_started():
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with workers._sigint_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # where the interrupt would otherwise land
            reached = True
    assert reached and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
