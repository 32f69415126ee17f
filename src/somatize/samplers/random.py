"""Random search: uniform in linear or log space, seeded, never repeating a point."""

from __future__ import annotations

from typing import Any

from ..space import SearchSpace
from ..study import Objective
from .base import NoFeasiblePoint, Sampler

# Draws before falling back to picking among the points not yet seen.
REDRAWS = 64
# With constraints a draw may also be infeasible; validate makes sure some draws are not.
CONSTRAINED_REDRAWS = 5000


def no_feasible_point_message() -> str:
    return f"no untried parameter set satisfying the constraints was found in {CONSTRAINED_REDRAWS} random draws"


class RandomSampler(Sampler):
    def __init__(self, space: SearchSpace, objective: Objective, n_trials: int | None, seed: int | None = None):
        super().__init__(space, objective, n_trials, seed)

    def propose(self, number: int) -> dict[str, Any] | None:
        if self.exhausted():
            return None
        rng = self.rng_for(number)
        width = len(self.space)
        space = self.space
        checked = bool(space.constraints)
        for _ in range(REDRAWS if not checked else CONSTRAINED_REDRAWS):
            params = space.from_unit(rng.random(width).tolist())
            key = space.key(params)
            if key not in self.seen and (not checked or space.feasible(params)):
                self.seen.add(key)
                return params
        if space.cardinality() is None:
            raise NoFeasiblePoint(no_feasible_point_message())  # continuous: untried points are always left
        # A nearly exhausted finite space: choose uniformly among what is left.
        left = [p for p in space.enumerate() if space.key(p) not in self.seen and space.feasible(p)]
        if not left:
            return None
        params = left[int(rng.integers(len(left)))]
        self.seen.add(self.space.key(params))
        return params
