"""Random search: uniform in linear or log space, seeded, never repeating a point."""

from __future__ import annotations

from typing import Any

from ..space import SearchSpace
from ..study import Objective
from .base import Sampler

# Draws before falling back to picking among the points not yet seen.
REDRAWS = 64
# With constraints a draw may also be infeasible; validate makes sure some draws are not.
# 5000 draws of three dimensions with a constraint check took 0.2 s on the loaded 2-core
# machine: giving up costs little, and a constraint 1 in 5000 draws meets is rarely meant.
CONSTRAINED_REDRAWS = 5000


def gave_up_message(draws: int) -> str:
    return (
        f"gave up after {draws} parameter sets in a row violated the constraints or had already run; "
        "loosen the constraints or give fewer n_trials"
    )


def pick_unseen(sampler: Sampler, rng: Any, draws: int) -> dict[str, Any] | None:
    """What is left of a small finite space, chosen uniformly; None (with `give_up` set) otherwise.

    Only a space of at most ENUMERATION_LIMIT combinations is listed: a larger
    one, or a continuous one, where `draws` random draws in a row all failed
    ends the study with a message instead of a walk through billions of points.
    """
    space = sampler.space
    if not space.is_enumerable():
        sampler.give_up = gave_up_message(draws)
        return None
    left = [p for p in space.enumerate() if space.key(p) not in sampler.seen and space.feasible(p)]
    if not left:
        return None  # exhausted
    return left[int(rng.integers(len(left)))]


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
        draws = REDRAWS if not checked else CONSTRAINED_REDRAWS
        for _ in range(draws):
            params = space.from_unit(rng.random(width).tolist())
            key = space.key(params)
            if key not in self.seen and (not checked or space.feasible(params)):
                self.seen.add(key)
                return params
        # A nearly exhausted finite space, or constraints few draws satisfy.
        params = pick_unseen(self, rng, draws)
        if params is not None:
            self.seen.add(space.key(params))
        return params
