"""encode-dir's worker processes (fastcodec/codec/workers.py): a worker that dies fails only the
job it held and is replaced; workers that cannot start fail the jobs with the reason; never a hang."""
import os
import signal

from fastcodec.codec import workers


def _init(how):
    if how == "die":
        os._exit(3)
    return how


def _work(state, job):
    if job.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a segfault would
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
