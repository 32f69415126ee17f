"""Grid search: the cartesian product of each dimension's grid points (SPEC §2)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from ..space import SearchSpace
from ..study import Objective
from .base import Sampler

DEFAULT_POINTS_PER_DIM = 5


class GridSampler(Sampler):
    def __init__(
        self,
        space: SearchSpace,
        objective: Objective,
        n_trials: int | None = None,
        seed: int | None = None,
        points_per_dim: int = DEFAULT_POINTS_PER_DIM,
    ):
        super().__init__(space, objective, n_trials, seed)
        self.columns = [d.grid(points_per_dim) for d in space]
        self._points: Iterator[dict[str, Any]] = space.enumerate(self.columns)
        if space.conditions or space.constraints:
            # Only active, feasible points: count them by listing them.
            points = [p for p in self._points if space.feasible(p)]
            self.size = len(points)
            self._points = iter(points)
        else:
            self.size = math.prod(len(c) for c in self.columns)

    @property
    def total(self) -> int:
        return self.size if self.n_trials is None else min(self.size, self.n_trials)

    def propose(self, number: int) -> dict[str, Any] | None:
        # Walk the product in order, skipping points already told (resume).
        for params in self._points:
            key = self.space.key(params)
            if key not in self.seen:
                self.seen.add(key)
                return params
        return None
