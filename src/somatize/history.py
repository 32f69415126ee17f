"""Finished trials kept out of the garbage collector's full passes, so a long study's loop does not stall.

A run keeps every finished trial in memory (its record, params, values, metric
records, its encoded line): some ten objects the cyclic collector tracks per
trial, and they live to the end of the run. CPython's full collection walks
every tracked object, and runs each time the heap has grown by a quarter: at
100,000 trials that is a pause of the whole loop of 200-480 ms (seven of them
in a run; measured with gc.callbacks on the loaded 2-core machine, issue 18),
the longest gaps between two finished trials, longer than any results write.

`FrozenHistory`, a bus subscriber of `somatize run`, moves what is alive into
the collector's permanent generation (gc.freeze) when the study starts (the
modules imported by then, without a collection: it would walk them all), then
every FREEZE_EVERY finished trials, first collecting what is garbage among the
objects made since the last time, so that pass walks those alone. Objects that are frozen are still freed
when nothing refers to them; only a reference cycle among them that becomes
garbage later is not collected before `close` (gc.unfreeze) at the end of the run.
It is for the process that runs the study (the CLI): the collector is the
whole interpreter's, so the runner does not do this by itself for programs that
embed it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .events import FINISHED_TRIAL_EVENTS, Event, StudyStarted

if TYPE_CHECKING:
    from .study import Trial

# Finished trials between two freezes. Each freeze is one collection of what was made since the
# last: measured at 100,000 trials (BENCHMARKS.md "The trial loop during periodic results writes"),
# 1,000 trials' objects are collected in 2-5 ms on the loaded 2-core machine, a few µs a trial.
FREEZE_EVERY = 1000
# The youngest generation's threshold while the study runs (CPython's default is 700 allocations): a quick
# trial leaves some ten tracked objects that live to the end of the run, so at 700 the collector walked
# each of them in a young and a middle collection before the freeze took it, some 1,500 young and 100
# middle collections in a 100,000-trial run. Above the objects FREEZE_EVERY trials leave, those
# collections do not happen; the freeze's collection alone walks each once: 234,000 instructions a trial
# against 241,600 at 700 (valgrind, a 2,000-trial `somatize run` less a 1-trial one; BENCHMARKS.md "Per-trial
# cost of somatize run", issue 18, fourth round).
YOUNG_THRESHOLD = 20_000


class FrozenHistory:
    """Every FREEZE_EVERY finished trials: collect the young garbage, then gc.freeze what is left."""

    events = (StudyStarted, *FINISHED_TRIAL_EVENTS)

    def __init__(self, every: int = FREEZE_EVERY):
        self.every = every
        self._finished = 0
        self._froze = False
        self._thresholds: tuple[int, int, int] | None = None  # the collector's own, to put back at the end

    def __call__(self, event: Event) -> None:
        if isinstance(event, StudyStarted):
            gc.freeze()
            self._froze = True
            if self._thresholds is None:
                self._thresholds = gc.get_threshold()
                gc.set_threshold(max(self._thresholds[0], YOUNG_THRESHOLD), *self._thresholds[1:])
            return
        self._finished += 1
        if self._finished % self.every == 0:
            gc.collect()  # the frozen objects are not walked: this pass covers the last `every` trials' objects
            gc.freeze()
            self._froze = True

    def close(self) -> None:
        """Give the objects back to the collector (the oldest generation), and its thresholds."""
        if self._froze:
            gc.unfreeze()
            self._froze = False
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None


@contextlib.contextmanager
def history_frozen(trials: list[Trial]) -> Iterator[None]:
    """A resumed run's history (`trials`, kept to its end) out of the collector's sight meanwhile: re-telling
    the sampler 100,000 trials set off collections that walked them all, 0.2-0.3 s of a resume's CPU."""
    if not trials:
        yield
        return
    gc.freeze()  # every object tracked now, the history's and the rest, until the unfreeze
    try:
        yield
    finally:
        gc.unfreeze()
