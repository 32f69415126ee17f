"""The sampler interface the runner depends on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..space import SearchSpace
from ..study import Objective, Trial


class Sampler(ABC):
    """Proposes parameter sets and learns from finished trials.

    `propose` returns None when the sampler has nothing left to offer (a grid
    walked to its end, a finite space exhausted); the study then ends. When it
    stops for another reason (every draw violates the constraints) it says why
    in `give_up`.
    """

    def __init__(self, space: SearchSpace, objective: Objective, n_trials: int | None, seed: int | None):
        self.space = space
        self.objective = objective
        self.n_trials = n_trials
        self.seed = seed
        # Identities of every parameter set proposed or told, so a finite space is never revisited.
        self.seen: set[tuple] = set()
        # Why `propose` returned None other than a space exhausted: one line for the user.
        self.give_up: str | None = None

    @property
    def total(self) -> int | None:
        """The planned number of trials when it is known."""
        size = self.space.cardinality()
        if size is None:
            return self.n_trials
        return size if self.n_trials is None else min(size, self.n_trials)

    def exhausted(self) -> bool:
        size = self.space.cardinality()
        return size is not None and len(self.seen) >= size

    @abstractmethod
    def propose(self, number: int) -> dict[str, Any] | None:
        """Parameters (constants included) for trial `number`, or None when exhausted."""

    def tell(self, trial: Trial) -> None:
        """Learn from a finished trial (also used to replay history on resume)."""
        self.seen.add(self.space.key(trial.params))
