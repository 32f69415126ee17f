"""Hypervolume of a set of objective vectors, and its growth over a study's trials (issue 17).

The one home of moocore (C implementations of the hypervolume for any number
of objectives, by the authors of the standard algorithms: O(n log n) in 2-D
and 3-D). moocore was chosen over pymoo's indicator, which imports pymoo's
whole framework (and is Python for more than 2 objectives), and over
Optuna's, which is private API. It is LGPL-2.1-or-later, used as an
unmodified library; it installs as one abi3 wheel (with cffi and
platformdirs) and imports in about 90 ms. Only the report and the benchmarks
compute hypervolumes, so it comes with the `report` and `bench` extras and
is imported inside the functions here: `validate`, `best`, `show` and every
`run` never load it. (The Bayesian sampler needs no hypervolume, only the
boxes of the region the front does not dominate: samplers/multiobjective.py.)

Every function takes objective vectors to minimise; `signed` turns a
trial's values into one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .study import Direction, Objective, Trial, TrialState

if TYPE_CHECKING:
    import numpy as np


def hypervolume(points: Sequence[Sequence[float]] | np.ndarray, reference: Sequence[float]) -> float:
    """The volume dominated by `points` (to minimise) and bounded by `reference`; 0 for no point below it."""
    import moocore
    import numpy as np

    array = np.asarray(points, dtype=float).reshape(-1, len(reference))
    array = array[np.all(array < np.asarray(reference, dtype=float), axis=1)]
    if len(array) == 0:
        return 0.0
    return float(moocore.hypervolume(array, ref=np.asarray(reference, dtype=float)))


def signed(trial: Trial, objectives: Sequence[Objective]) -> tuple[float, ...] | None:
    """A trial's values as a vector to minimise (maximised objectives negated), or None when it has no
    finite value for every objective, is not completed, or is marked infeasible."""
    if trial.state is not TrialState.COMPLETED or getattr(trial, "feasible", True) is False:
        return None
    vector = []
    for objective in objectives:
        value = trial.values.get(objective.metric)
        if value is None or not math.isfinite(value):
            return None
        vector.append(value if objective.direction is Direction.MINIMIZE else -value)
    return tuple(vector)


def progress(trials: Sequence[Trial], objectives: Sequence[Objective]) -> tuple[list[int], list[float]]:
    """The hypervolume of the front of the trials finished so far, after each trial that has a vector.

    Normalised to the study's own box: every objective is scaled so that the
    best value any trial reached is 0 and the worst is 1, and the reference
    point is (1, ..., 1). So the figure is the fraction of that box the front
    dominates, comparable across objectives of any units (a point best at
    everything would score 1), and it never decreases.
    """
    rows = [(t.number, v) for t in sorted(trials, key=lambda t: t.number) if (v := signed(t, objectives)) is not None]
    if not rows:
        return [], []
    width = len(objectives)
    low = [min(v[d] for _, v in rows) for d in range(width)]
    high = [max(v[d] for _, v in rows) for d in range(width)]
    span = [(h - lo) if h > lo else 1.0 for lo, h in zip(low, high)]
    scaled = [[(v[d] - low[d]) / span[d] for d in range(width)] for _, v in rows]
    reference = [1.0] * width
    numbers, volumes = [], []
    for end in range(1, len(rows) + 1):
        numbers.append(rows[end - 1][0])
        volumes.append(hypervolume(scaled[:end], reference))
    return numbers, volumes
