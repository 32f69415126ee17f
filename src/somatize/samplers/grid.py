"""Grid search: the cartesian product of each dimension's grid points (SPEC §2)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from ..space import ENUMERATION_LIMIT, SearchSpace
from ..study import Objective
from .base import Sampler

DEFAULT_POINTS_PER_DIM = 5
_NO_FEASIBLE_POINT = "no point of the grid satisfies the constraints; try another points_per_dim or random search"


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
        # Validation bounds the product (MAX_GRID_POINTS); the points are walked lazily, never listed.
        self.size = math.prod(len(c) for c in self.columns)
        self._checked = bool(space.conditions or space.constraints)
        if self._checked and self.size <= ENUMERATION_LIMIT:
            # Only active, feasible points run: count them (a larger grid keeps the product as a bound).
            self.size = sum(1 for p in space.enumerate(self.columns) if space.feasible(p))
            if self.size == 0 and space.constraints:
                self.give_up = _NO_FEASIBLE_POINT
        self._points: Iterator[dict[str, Any]] = space.enumerate(self.columns)
        self._proposed = 0

    @property
    def total(self) -> int:
        return self.size if self.n_trials is None else min(self.size, self.n_trials)

    def propose(self, number: int) -> dict[str, Any] | None:
        # Walk the product in order, skipping infeasible points and those already told (resume).
        space = self.space
        for params in self._points:
            if self._checked and not space.feasible(params):
                continue
            key = space.key(params)
            if key not in self.seen:
                self.seen.add(key)
                self._proposed += 1
                return params
        if self._proposed == 0 and not self.seen and space.constraints:
            self.give_up = _NO_FEASIBLE_POINT
        return None
