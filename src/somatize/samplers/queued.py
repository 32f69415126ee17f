"""Known parameter sets run before the strategy's own proposals: `enqueue:` and `--retry-failed` (SPEC §10).

A wrapper around any sampler: it hands out the given sets first and tells
every finished trial to the wrapped sampler, so the strategy learns from them
as from its own. Enqueued sets that a resumed study has already run (told
before the first proposal) are skipped; reruns of failed trials always run,
and each takes the budget slot of the trial it reruns (`total` grows by
their number), since the failed trial stays in the results as history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from ..study import Recommendation, Trial
from .base import Sampler


class QueuedSampler(Sampler):
    def __init__(self, inner: Sampler, enqueued: Sequence[dict[str, Any]] = (), reruns: Sequence[dict[str, Any]] = ()):
        super().__init__(inner.space, inner.objective, inner.n_trials, inner.seed)
        self.inner = inner
        self.seen = inner.seen  # one set: what runs from the queue is never proposed again by the strategy
        self._enqueued = deque(dict(p) for p in enqueued)
        self._reruns = deque(dict(p) for p in reruns)
        self._extra = len(self._reruns)
        self._told: set[tuple] = set()

    @property
    def total(self) -> int | None:
        total = self.inner.total
        return None if total is None else total + self._extra

    @property  # type: ignore[override]
    def give_up(self) -> str | None:
        return self.inner.give_up

    @give_up.setter
    def give_up(self, value: str | None) -> None:
        if hasattr(self, "inner"):  # Sampler.__init__ sets it before `inner` exists
            self.inner.give_up = value

    def propose(self, number: int) -> dict[str, Any] | None:
        if self._reruns:
            params = self._reruns.popleft()
            self.seen.add(self.space.key(params))
            return params
        while self._enqueued:
            params = self._enqueued.popleft()
            key = self.space.key(params)
            if key in self._told:  # a resumed study ran it already
                continue
            self.seen.add(key)
            return params
        return self.inner.propose(number)

    def tell(self, trial: Trial) -> None:
        self._told.add(self.space.key(trial.params))
        self.inner.tell(trial)

    def hold(self, params: dict[str, Any]) -> None:
        # Running elsewhere (an asked trial, SPEC §8): taken from the queue like a finished one, and
        # pending for the strategy's model.
        self._told.add(self.space.key(params))
        self.inner.hold(params)

    def recommend(self) -> Recommendation | None:
        return self.inner.recommend()
