"""Where a run stands: by its step count, or, with a time budget, by its own clock.

With `time_budget` (minutes) every schedule that is given in steps (warm-up, quantizer start,
critic start, LR decay) or in progress (the loss-weight curricula) is laid over the budget: at a
fraction p of the budget the schedules stand where a run of `steps` steps stands at step p * steps.
The run stops when the next step and the final evaluation and checkpoint would no longer fit, both
estimated from what the run itself has measured so far.
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

    def done(self, step: int) -> bool:
        """Whether `step` steps end the run."""
        if self.budget_s is None:
            return step >= self.steps
        return self.elapsed_s + (self._step_s or 0.0) + sum(self._final.values()) >= self.budget_s
