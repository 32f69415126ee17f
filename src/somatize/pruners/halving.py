"""Asynchronous successive halving (ASHA).

Rung k sits at step min_resource * reduction_factor ** (min_early_stopping_rate + k).
A trial that reaches a rung goes on only if its value there is among the best
1/reduction_factor of all values recorded at that rung so far; otherwise it is
pruned. A rung judges only once it holds reduction_factor values: before that
there is no fraction to be in, and the first trials would be pruned for merely
not being the best. No trial waits for others, which suits --jobs and trials of
uneven length.
"""

from __future__ import annotations

from ..study import Objective
from .base import Pruner


class SuccessiveHalvingPruner(Pruner):
    def __init__(
        self, objective: Objective, min_resource: int = 1, reduction_factor: int = 3, min_early_stopping_rate: int = 0
    ):
        super().__init__(objective)
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_early_stopping_rate = min_early_stopping_rate
        self.rungs: list[dict[int, float]] = []  # rung -> {trial number: value at the rung}
        self._next_rung: dict[int, int] = {}  # trial number -> the next rung it has to pass

    def rung_step(self, rung: int) -> int:
        return self.min_resource * self.reduction_factor ** (self.min_early_stopping_rate + rung)

    def _forget(self, number: int) -> None:
        super()._forget(number)
        self._next_rung.pop(number, None)
        for rung in self.rungs:
            rung.pop(number, None)

    def _enter_rungs(self, number: int, step: int, value: float) -> int | None:
        """Record the trial at every rung it reached with this report; the last such rung."""
        reached = None
        rung = self._next_rung.get(number, 0)
        while step >= self.rung_step(rung):
            while len(self.rungs) <= rung:
                self.rungs.append({})
            self.rungs[rung][number] = value
            reached = rung
            rung += 1
        self._next_rung[number] = rung
        return reached

    def _decide(self, number: int, step: int, best: float, value: float) -> str | None:
        rung = self._enter_rungs(number, step, value)
        if rung is None:
            return None
        values = sorted(self.rungs[rung].values(), reverse=self.direction.value == "maximize")
        if len(values) < self.reduction_factor:
            return None
        keep = len(values) // self.reduction_factor
        threshold = values[keep - 1]
        if value == threshold or self.direction.better(value, threshold):
            return None
        return (
            f"not in the best {keep} of {len(values)} trials at rung {rung} (step {self.rung_step(rung)}): "
            f"{value:.6g}, needed {threshold:.6g}"
        )

    def _replay(self, number: int, step: int, best: float, value: float) -> None:
        self._enter_rungs(number, step, value)
