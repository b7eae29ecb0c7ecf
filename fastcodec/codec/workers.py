"""Worker processes for `fastcodec encode-dir`: jobs handed out one at a time over a pipe per
worker, so the parent always knows which job each worker holds.

- A worker that dies (a crash in a library, the OOM killer) fails its job with the exit code and
  is replaced while jobs remain; nothing waits for a result that cannot come. A worker that dies
  before it took a job is not replaced; if none is left, the remaining jobs fail with the reason.
- Ctrl-C is the parent's: workers start with SIGINT blocked (an interrupt while they import torch
  prints nothing), and the parent neither loses one nor takes it halfway through starting a
  worker. On any exception the parent stops them with SIGTERM. It ends a worker outright while
  the worker starts (an exception raised inside `import torch` can be swallowed there, and it
  has written nothing) and in its teardown; while it takes and codes jobs it raises SystemExit,
  so an atomic output in progress removes its partial file. Workers still alive STOP_SECONDS
  after SIGTERM are killed (which can leave a `.NAME.partial`, overwritten by the next run):
  nothing hangs on one.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.resource_tracker
import signal
import time

STOP_SECONDS = 30


def _stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: an atomic output in progress removes its partial file


@contextlib.contextmanager
def _sigint_held():
    """Ctrl-C during the block is raised when it ends, not lost and not inside it (a process
    half started would be left running). A process started in it inherits SIGINT blocked, and a
    blocked signal stays blocked in a spawned interpreter: a worker never sees the terminal's Ctrl-C."""
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one that waited blocked is raised now
        if caught and callable(previous):  # one another thread took: now to its handler
            previous(signal.SIGINT, None)


def _serve(conn, init, init_args, work):
    """A worker: init(*init_args), then work(job) for each job the parent sends, until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    state = init(*init_args)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        conn.send(None)  # ready
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(work(state, job))
    finally:  # the interpreter's teardown has nothing to unwind: SIGTERM ends it quietly
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run(jobs, workers, init, init_args, work, on_result, on_lost):
    """Run work(init(*init_args), job) for every job in `workers` spawned processes; calls
    on_result(job, result) as results come (in the parent, in completion order) and on_lost(job,
    reason) for a job whose worker died. init and work must be importable module-level functions."""
    ctx = mp.get_context("spawn")
    # Started by the first worker's start otherwise, and that start unblocks SIGINT on its way
    multiprocessing.resource_tracker.ensure_running()
    pending = list(jobs)[::-1]
    live = {}  # parent end of a worker's pipe -> [process, job it holds or None]

    def start():
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_serve, args=(child, init, init_args, work), daemon=True)
        with _sigint_held():
            p.start()
            live[parent] = [p, None]
        child.close()

    def hand_out(conn):
        job = pending.pop() if pending else None
        live[conn][1] = job
        conn.send(job)

    try:
        for _ in range(min(workers, len(pending))):
            start()
        while live:
            by_sentinel = {entry[0].sentinel: conn for conn, entry in live.items()}
            for ready in multiprocessing.connection.wait(list(live) + list(by_sentinel)):
                conn = by_sentinel.get(ready, ready)
                if conn not in live:
                    continue
                p, job = live[conn]
                try:
                    while conn.poll():
                        message = conn.recv()
                        if job is not None:
                            on_result(job, message)
                        hand_out(conn)
                        job = live[conn][1]
                except (EOFError, OSError):  # the worker is gone
                    pass
                if p.is_alive():
                    continue
                p.join()
                conn.close()
                del live[conn]
                if job is not None:
                    on_lost(job, f"the worker process coding it died (exit code {p.exitcode})")
                    if pending:
                        start()
        for job in pending[::-1]:  # every worker died before it took a job
            on_lost(job, "no worker process could start")
    except BaseException:
        for p, _ in live.values():
            p.terminate()
        raise
    finally:
        deadline = time.monotonic() + STOP_SECONDS
        for p, _ in live.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
