"""Random search: uniform in linear or log space, seeded, never repeating a point."""

from __future__ import annotations

from typing import Any

from ..space import SearchSpace
from ..study import Objective
from .base import Sampler, SeenKeys
from .streams import UnitDraws

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
    The list is made once per study (FiniteRemainder), so filling a space up is
    linear in its size, not quadratic.
    """
    space = sampler.space
    if not space.is_enumerable():
        sampler.give_up = gave_up_message(draws)
        return None
    remainder = getattr(sampler, "_remainder", None)
    if remainder is None:
        remainder = FiniteRemainder(space, sampler.seen)
        sampler._remainder = remainder  # type: ignore[attr-defined]
    left = remainder.count()
    if not left:
        return None  # exhausted
    # The same draw as from the list of untried points in enumeration order, so seeded studies propose
    # what they always did, and a resumed one what an uninterrupted one would.
    return remainder.pick(int(rng.integers(left)))


class FiniteRemainder:
    """The feasible points of an enumerable space in enumeration order, and which of them are untried.

    A Fenwick tree over the points' ranks counts the untried ones before any
    rank, so the k-th untried point is found in O(log n) and each newly tried
    one is struck off in O(log n). It follows `seen` through the keys that
    SeenKeys lists as they are added.
    """

    def __init__(self, space: SearchSpace, seen: set[tuple]):
        self.points = [p for p in space.enumerate() if space.feasible(p)]
        self.rank = {space.key(p): i for i, p in enumerate(self.points)}
        size = len(self.points)
        self.tried = bytearray(size)
        self.left = size
        tree = [0] + [1] * size  # every point untried; built in O(n)
        for i in range(1, size + 1):
            parent = i + (i & -i)
            if parent <= size:
                tree[parent] += tree[i]
        self.tree = tree
        self.seen = seen
        self.added = seen.watch() if isinstance(seen, SeenKeys) else None
        for key in seen:
            self._strike(key)

    def count(self) -> int:
        """How many points are untried."""
        if self.added is None:  # a plain set: look through it (only samplers built outside make_sampler)
            for key in self.seen:
                self._strike(key)
        else:
            for key in self.added:
                self._strike(key)
            self.added.clear()
        return self.left

    def pick(self, k: int) -> dict[str, Any]:
        """A copy of the k-th untried point (0-based, in enumeration order)."""
        tree, position, step = self.tree, 0, 1 << (len(self.tree) - 1).bit_length()
        while step:
            following = position + step
            if following < len(tree) and tree[following] <= k:
                position = following
                k -= tree[following]
            step >>= 1
        return dict(self.points[position])  # position is the 0-based rank of the point sought

    def _strike(self, key: tuple) -> None:
        i = self.rank.get(key)
        if i is None or self.tried[i]:
            return  # not a feasible point of the space (a warm start from elsewhere), or struck already
        self.tried[i] = 1
        self.left -= 1
        i += 1
        while i < len(self.tree):
            self.tree[i] -= 1
            i += i & -i


class RandomSampler(Sampler):
    def __init__(self, space: SearchSpace, objective: Objective, n_trials: int | None, seed: int | None = None):
        super().__init__(space, objective, n_trials, seed)

    def propose(self, number: int) -> dict[str, Any] | None:
        if self.exhausted():
            return None
        rng = UnitDraws(self._entropy, number)  # numpy's draws, without importing numpy
        width = len(self.space)
        space = self.space
        checked = bool(space.constraints)
        draws = REDRAWS if not checked else CONSTRAINED_REDRAWS
        for _ in range(draws):
            params = space.from_unit(rng.random(width))
            key = space.key(params)
            if key not in self.seen and (not checked or space.feasible(params)):
                self.seen.add(key)
                self._noted = params
                return params
        # A nearly exhausted finite space, or constraints few draws satisfy.
        params = pick_unseen(self, rng, draws)
        if params is not None:
            self.seen.add(space.key(params))
            self._noted = params
        return params
