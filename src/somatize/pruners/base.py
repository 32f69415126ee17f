"""What every pruner shares: the curves of intermediate values, trial by trial."""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod

from ..study import Objective, Trial, TrialState


class Pruner(ABC):
    """Sees each intermediate report of the primary metric and may stop the trial.

    The runner calls `report` from the threads running trials (several at once
    with --jobs), `start` before each attempt, and `finish` with every finished
    trial, resumed history included. Everything happens under one lock.
    """

    def __init__(self, objective: Objective):
        self.objective = objective
        self.direction = objective.direction
        self._lock = threading.Lock()
        # step -> {trial number: best value of that trial up to and including the step}
        self.by_step: dict[int, dict[int, float]] = {}
        self._best: dict[int, float] = {}  # trial number -> best value so far

    def start(self, number: int) -> None:
        """A trial (or a retry of it) begins: forget what an earlier attempt reported."""
        with self._lock:
            self._forget(number)

    def report(self, number: int, step: int, value: float) -> str | None:
        """Record an intermediate value; the reason to prune the trial now, or None."""
        if math.isnan(value):
            return None
        with self._lock:
            best = self._best.get(number)
            if best is None or self.direction.better(value, best):
                best = self._best[number] = value
            self.by_step.setdefault(step, {})[number] = best
            return self._decide(number, step, best, value)

    def finish(self, trial: Trial) -> None:
        """A trial ended: keep its curve unless it failed (a failed run's values are suspect)."""
        with self._lock:
            if trial.state is TrialState.FAILED:
                self._forget(trial.number)
                return
            if trial.number in self._best:
                self._ended(trial.number)
                return
            # Resumed history: rebuild the curve from the trial's metric records.
            for record in trial.metrics:
                if record.name == self.objective.metric and record.step is not None and not math.isnan(record.value):
                    best = self._best.get(trial.number)
                    if best is None or self.direction.better(record.value, best):
                        best = self._best[trial.number] = record.value
                    self.by_step.setdefault(record.step, {})[trial.number] = best
                    self._replay(trial.number, record.step, best, record.value)
            self._ended(trial.number)

    def _forget(self, number: int) -> None:
        self._best.pop(number, None)
        for values in self.by_step.values():
            values.pop(number, None)

    @abstractmethod
    def _decide(self, number: int, step: int, best: float, value: float) -> str | None:
        """Under the lock: prune trial `number` after it reported `value` at `step`?"""

    def _replay(self, number: int, step: int, best: float, value: float) -> None:
        """Under the lock: a resumed trial's report, to rebuild state beyond the curves."""

    def _ended(self, number: int) -> None:
        """Under the lock: trial `number` finished (completed or pruned)."""

    def worse_word(self) -> str:
        return "above" if self.direction.value == "minimize" else "below"
