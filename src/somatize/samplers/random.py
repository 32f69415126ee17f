"""Random search: uniform in linear or log space, seeded, never repeating a point."""

from __future__ import annotations

import sys
from typing import Any

from ..space import LINEAR, CategoricalDimension, Dimension, FloatDimension, IntDimension, SearchSpace
from ..study import Objective
from .base import Sampler, SeenKeys
from .streams import UnitDraws, unit_block

# Draws before falling back to picking among the points not yet seen.
REDRAWS = 64
# With constraints a draw may also be infeasible; validate makes sure some draws are not.
# 5000 draws of three dimensions with a constraint check took 0.2 s on the loaded 2-core
# machine: giving up costs little, and a constraint 1 in 5000 draws meets is rarely meant.
CONSTRAINED_REDRAWS = 5000
# First draws made ahead, a block of trials at a time, with numpy (streams.unit_block): 1,024 trials
# cost 0.28 µs a trial there against 0.85 µs in blocks of 256 and 0.13 µs in blocks of 4,096 (four draws
# each, against 6.4 µs a trial one by one; load ~6, issue 18): past 1,024 the block's 0.3 ms gains little.
BLOCK = 1024
# Proposals made one by one in this process before any block: an `ask` (one proposal a process) never
# imports numpy for it, a `run` starts blocks from its 65th trial.
BLOCK_AFTER = 64
# Without numpy already imported (by the objective, typically), blocks only for a run with at least this
# many trials still to propose: importing numpy costs 0.1-0.25 s of CPU (python -X importtime, load 1-6)
# and blocks save some 7 µs a trial, so the import pays for itself after 15,000-35,000 trials.
BLOCK_IMPORT_TRIALS = 30_000


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


class FirstDraws:
    """The parameters of the first draw of each trial of a block, made at once (unit_block, then each
    dimension's values from a whole row of draws): what `space.from_unit` of the trial's first
    `len(space)` draws gives, value for value, as the same arithmetic in the same order (numpy's float64
    operations are IEEE's, as Python's), or `from_unit` itself for what is not plain arithmetic (a log
    scale's exp, a step's lattice)."""

    __slots__ = ("first", "names", "rows", "space")

    def __init__(self, space: SearchSpace, entropy: int, first: int, count: int):
        units = unit_block(entropy, first, count, len(space))
        self.first = first
        self.names = tuple(d.name for d in space.dimensions)
        self.rows = list(zip(*(_column(d, row) for d, row in zip(space.dimensions, units))))
        self.space = space

    def proposal(self, number: int) -> tuple[dict[str, Any], tuple]:
        """Trial `number`'s first draw as from_unit gives it (a number of the block's), and its `space.key`."""
        row = self.rows[number - self.first]
        params = dict(zip(self.names, row))
        space = self.space
        if space.conditions:
            params = space.active(params)
            key = space.key(params)
        else:  # every dimension active: the key is the row's values and their types, as key() makes it
            key = row + tuple(map(type, row))
        if space.constants:
            params.update(space.constants)  # with_constants
        return params, key


def _column(dimension: Dimension, units: Any) -> list[Any]:
    """`dimension.from_unit(u)` of each of `units` (a numpy row), as Python values."""
    kind = type(dimension)
    if kind is FloatDimension and dimension.step is None and dimension.scale == LINEAR and _plain(dimension):
        return (dimension.low + units * (dimension.high - dimension.low)).tolist()
    if kind is IntDimension and dimension.scale == LINEAR and _plain(dimension):
        import numpy as np

        n = dimension.cardinality()
        index = np.minimum((units * n).astype(np.int64), n - 1)
        return (index * dimension.step + dimension.low).tolist()
    if kind is CategoricalDimension:
        import numpy as np

        n = len(dimension.choices)
        return list(map(dimension.choices.__getitem__, np.minimum((units * n).astype(np.int64), n - 1).tolist()))
    return list(map(dimension.from_unit, units.tolist()))


def _plain(dimension: FloatDimension | IntDimension) -> bool:
    """Bounds (and step) that numpy's float64 and int64 hold as Python does: floats, or ints well inside 2**53."""
    numbers = (dimension.low, dimension.high, getattr(dimension, "step", None) or 1)
    return all(type(v) is float or (type(v) is int and abs(v) < 2**52) for v in numbers)


class RandomSampler(Sampler):
    def __init__(self, space: SearchSpace, objective: Objective, n_trials: int | None, seed: int | None = None):
        super().__init__(space, objective, n_trials, seed)
        self._block: FirstDraws | None = None
        self._one_by_one = 0  # proposals made without a block
        self._size = space.cardinality()  # None: continuous, never exhausted

    def propose(self, number: int) -> dict[str, Any] | None:
        size = self._size
        if size is not None and len(self.seen) >= size:  # exhausted(), with the size looked up once
            return None
        block = self._block
        if block is None or not 0 <= number - block.first < len(block.rows):
            if not self._blocks_pay():
                self._one_by_one += 1
                return self._propose_drawn(number)
            block = self._block = FirstDraws(self.space, self._entropy, number, BLOCK)
        params, key = block.proposal(number)
        if key not in self.seen and (not self.space.constraints or self.space.feasible(params)):
            self.seen.add(key)
            self._noted = params
            return params
        # Taken or infeasible: the trial's stream from its start, whose first draw is this one again.
        return self._propose_drawn(number)

    def _blocks_pay(self) -> bool:
        """Whether to draw a block: after BLOCK_AFTER proposals, when numpy is there or enough trials are left."""
        if self._one_by_one < BLOCK_AFTER:
            return False
        if "numpy" in sys.modules:
            return True
        left = None if self.n_trials is None else self.n_trials - len(self.seen)
        return left is not None and left >= BLOCK_IMPORT_TRIALS

    def _propose_drawn(self, number: int) -> dict[str, Any] | None:
        """Trial `number`'s proposal from its own stream, drawn one by one."""
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
