"""The median stopping rule: stop a trial whose best value so far is worse than
the median of the other trials' best values at the same step."""

from __future__ import annotations

import statistics

from ..study import Objective
from .base import Pruner


class MedianPruner(Pruner):
    def __init__(self, objective: Objective, warmup_steps: int = 0, min_trials: int = 5, interval: int = 1):
        super().__init__(objective)
        self.warmup_steps = warmup_steps
        self.min_trials = min_trials  # other trials with a value at the step before any pruning
        self.interval = interval

    def _decide(self, number: int, step: int, best: float, value: float) -> str | None:
        if step < self.warmup_steps or (step - self.warmup_steps) % self.interval:
            return None
        # Finished trials and those still running (with --jobs) that reached this step.
        others = [v for n, v in self.by_step[step].items() if n != number]
        if len(others) < self.min_trials:
            return None
        median = statistics.median(others)
        if not self.direction.better(median, best):
            return None
        return f"{self.worse_word()} median of {len(others)} trials at step {step} ({best:.6g} vs {median:.6g})"
