"""Where a run stands: by its step count, or, with a time budget, by its own clock.

With `time_budget` (minutes) every schedule that is given in steps (warm-up, quantizer start,
critic start, LR decay) or in progress (the loss-weight curricula) is laid over the budget: at a
fraction p of the budget the schedules stand where a run of `steps` steps stands at step p * steps.
The run stops when the work due at this step (a periodic evaluation or checkpoint), the next step
and the final evaluation and checkpoint would no longer fit, each estimated from the run's own
earlier ones (an evaluation not yet seen is not reserved for: the first one comes early in any
budget worth setting). The estimates travel in checkpoints, and a run that ended stays ended.
"""
from __future__ import annotations

import time

# Recent steps weigh most: a step costs several times more once the critics join.
_STEP_EMA = 0.3


class Clock:
    """steps: the run's length in steps (the schedules' unit); budget_s: seconds, or None to run
    by steps; elapsed_s: seconds already spent (a resumed run's)."""

    def __init__(self, steps: int, budget_s: float | None = None, elapsed_s: float = 0.0):
        self.steps, self.budget_s = steps, budget_s
        self._spent, self._since = float(elapsed_s), None
        self._step_s, self._final = None, {}
        self.finished = False  # a timed run's end was reached

    def state(self) -> dict:
        """What a checkpoint keeps of the clock."""
        return {"elapsed_s": self.elapsed_s, "step_s": self._step_s, "final": dict(self._final),
                "finished": self.finished}

    @classmethod
    def from_state(cls, steps: int, budget_s: float | None, state: dict | None) -> "Clock":
        state = state or {}
        clock = cls(steps, budget_s, float(state.get("elapsed_s", 0.0)))
        clock._step_s = state.get("step_s")
        clock._final = {str(k): float(v) for k, v in (state.get("final") or {}).items()}
        clock.finished = bool(state.get("finished", False))
        return clock

    @staticmethod
    def now() -> float:
        """Seconds on the clock the run is timed by (monotonic)."""
        return time.perf_counter()

    def start(self):
        self._since = self.now()

    @property
    def elapsed_s(self) -> float:
        return self._spent + (self.now() - self._since if self._since is not None else 0.0)

    def progress(self, step: int) -> float:
        """The fraction of the run done, 0..1."""
        if self.budget_s is None:
            return min(1.0, step / max(1, self.steps))
        return min(1.0, self.elapsed_s / self.budget_s)

    def position(self, step: int) -> float:
        """The step the schedules read: `step` itself, or with a budget the step count a run of
        `steps` steps would have reached at this fraction of the budget."""
        return step if self.budget_s is None else self.progress(step) * self.steps

    def took_step(self, seconds: float):
        self._step_s = seconds if self._step_s is None else (1 - _STEP_EMA) * self._step_s + _STEP_EMA * seconds

    def took_final_work(self, kind: str, seconds: float):
        """An evaluation or a checkpoint (kind) took this long: the run's last one, which ends it,
        is expected to take as long as the slowest so far."""
        self._final[kind] = max(self._final.get(kind, 0.0), seconds)

    def done(self, step: int, due=()) -> bool:
        """Whether `step` steps end the run. due: the kinds of work (eval, checkpoint) that follow
        this step anyway; when it ends the run, that work is its final work."""
        if self.budget_s is None:
            return step >= self.steps
        due_s = sum(self._final.get(kind, 0.0) for kind in due)
        self.finished = (self.finished or self.elapsed_s + due_s + (self._step_s or 0.0) + sum(self._final.values())
                         >= self.budget_s)
        return self.finished

    def spent(self) -> bool:
        """Whether a timed run has nothing left to do."""
        return self.budget_s is not None and (self.finished or self.progress(0) >= 1)
