"""The sampler interface the runner depends on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..space import SearchSpace
from ..study import Objective, Recommendation, Trial

if TYPE_CHECKING:
    import numpy as np

    from .streams import TrialStreams


def _fresh_entropy() -> int:
    import secrets  # here: with hmac and hashlib, about 5 ms of a cold `ask` of a seeded study otherwise

    return secrets.randbits(64)


class SeenKeys(set):
    """A set of parameter-set keys that, once `watch`ed, also lists the keys added since.

    What lets a finite space's remainder (random.py) follow what was tried
    without looking through the whole set at every proposal.
    """

    __slots__ = ("added",)

    def __init__(self, keys: tuple = ()):
        super().__init__(keys)
        self.added: list[tuple] | None = None

    def watch(self) -> list[tuple]:
        """From now on, every new key is appended to the returned list (the watcher empties it)."""
        self.added = []
        return self.added

    def add(self, key: tuple) -> None:
        if self.added is not None and key not in self:
            self.added.append(key)
        set.add(self, key)

    def update(self, keys: Iterable[tuple]) -> None:  # type: ignore[override]
        if self.added is None:
            set.update(self, keys)
        else:
            for key in keys:
                self.add(key)


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
        self.seen: SeenKeys = SeenKeys()
        # The root of every random stream: the seed, or fresh entropy for an unseeded study.
        self._entropy = seed if seed is not None else _fresh_entropy()
        self._streams: TrialStreams | None = None
        # Why `propose` returned None other than a space exhausted: one line for the user.
        self.give_up: str | None = None
        # The runner's stop reason when `claim` returned None for another reason than the space or a
        # give-up (a shared study's budget used by other processes: "n_trials"); None otherwise.
        self.ended_by: str | None = None
        # The parameters `propose` returned last, when it noted their key in `seen` itself: telling that
        # trial need not make the key again (two calls of a trivial trial's ~100, issue 18).
        self._noted: dict[str, Any] | None = None

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

    def rng_for(self, number: int) -> np.random.Generator:
        """The generator of trial `number`'s random draws, set from the study's seed and the number
        alone (see streams.py: a resumed study continues instead of replaying). The same object for
        every number, re-positioned at each call."""
        if self._streams is None:
            from .streams import TrialStreams

            self._streams = TrialStreams(self._entropy)
        return self._streams.at(number)

    @abstractmethod
    def propose(self, number: int) -> dict[str, Any] | None:
        """Parameters (constants included) for trial `number`, or None when exhausted."""

    def claim(self, number: int) -> tuple[int, dict[str, Any]] | None:
        """The next trial's number and parameters: `number` and its proposal, or None when there is none.

        A study shared with other processes (asktell.SharedSampler) picks the number itself.
        """
        params = self.propose(number)
        return None if params is None else (number, params)

    def tell(self, trial: Trial) -> None:
        """Learn from a finished trial (also used to replay history on resume)."""
        if trial.params is self._noted:
            self._noted = None
            return
        self.seen.add(self.space.key(trial.params))

    def replay(self, trials: list[Trial]) -> None:
        """Learn from a resumed study's finished trials, in order: `tell` for each, as one step where `tell`
        is this class's (random and grid search: each parameter set's key into `seen`)."""
        if type(self).tell is not Sampler.tell:
            for trial in trials:
                self.tell(trial)
            return
        self.seen.update(self.space.keys([trial.params for trial in trials]))

    def warm_from(self, other: Sampler) -> None:
        """Take over what an earlier build of this sampler for the same study learnt that is costly to
        learn again (a model's fitted hyperparameters); the history itself is told again."""

    def hold(self, params: dict[str, Any]) -> None:
        """A parameter set that is running elsewhere (an asked trial not told yet): not to be proposed
        again, and pending for a sampler that models what is in flight."""
        self.seen.add(self.space.key(params))

    def recommend(self) -> Recommendation | None:
        """The finished trial this sampler recommends, with its model's prediction there; None
        when it has no model to judge by (grid, random), as `best_trial` is then the answer."""
        return None
