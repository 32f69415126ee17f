"""The numbers a report plots, taken from a Study: no plotly here, so it is cheap to test.

Plots need finite numbers: a trial without a finite value of the primary
objective is left out of the plots and counted on the page. A parameter a
trial lacks (a conditional one switched off) is None here and drawn apart.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..executors.command import value_text
from ..space import LOG, CategoricalDimension, Dimension
from ..study import Objective, Study, Trial, TrialState


def finite(value: Any) -> float | None:
    """value as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def objective_value(trial: Trial, objective: Objective) -> float | None:
    """A completed trial's value of an objective, when finite."""
    return finite(trial.values.get(objective.metric))


def last_reported(trial: Trial, metric: str) -> float | None:
    """The last finite value a trial reported for a metric: where a pruned trial stood when it was stopped."""
    for record in reversed(trial.metrics):
        if record.name == metric and finite(record.value) is not None:
            return record.value
    return finite(trial.values.get(metric))


@dataclass(frozen=True)
class Point:
    trial: Trial
    value: float


@dataclass(frozen=True)
class History:
    """The primary objective by trial number, and what could not be plotted."""

    completed: list[Point]
    pruned: list[Point]
    best_so_far: list[Point]  # one point per completed trial: the best value up to it
    states: Counter  # TrialState -> number of trials
    completed_without_value: int
    pruned_without_value: int
    # Completed trials that broke a constraint on metrics (SPEC §9): drawn apart, never in best_so_far.
    infeasible: list[Point] = field(default_factory=list)


def history(study: Study) -> History:
    objective = study.primary
    trials = sorted(study.trials, key=lambda t: t.number)
    completed, pruned, best, infeasible = [], [], [], []
    missing_completed = missing_pruned = 0
    for trial in trials:
        if trial.state is TrialState.COMPLETED:
            value = objective_value(trial, objective)
            if value is None:
                missing_completed += 1
                continue
            if not trial.is_feasible:
                infeasible.append(Point(trial, value))
                continue
            completed.append(Point(trial, value))
            if not best or objective.direction.better(value, best[-1].value):
                best.append(Point(trial, value))
            else:
                best.append(Point(trial, best[-1].value))
        elif trial.state is TrialState.PRUNED:
            value = last_reported(trial, objective.metric)
            if value is None:
                missing_pruned += 1
            else:
                pruned.append(Point(trial, value))
    states = Counter(t.state for t in trials)
    return History(completed, pruned, best, states, missing_completed, missing_pruned, infeasible)


@dataclass(frozen=True)
class ParamAxis:
    """How one searched parameter is drawn: numbers (maybe on a log scale) or categories."""

    name: str
    kind: str  # "float", "int" or "categorical"
    log: bool
    low: float | None
    high: float | None
    categories: tuple[str, ...]  # labels of a categorical, in declared order

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    def label(self, value: Any) -> str:
        return value_text(value)

    def number(self, value: Any) -> float | None:
        """A plottable number: a category's index, or the value itself (None when it cannot be drawn)."""
        if self.categorical:
            label = self.label(value)
            return float(self.categories.index(label)) if label in self.categories else None
        number = finite(value)
        if number is None or (self.log and number <= 0):
            return None
        return number


def param_axes(study: Study) -> list[ParamAxis]:
    """One axis per searched dimension; categories also hold values the trials carry beyond the choices."""
    return [_axis(dim, study.trials) for dim in study.space.dimensions]


def _axis(dim: Dimension, trials: list[Trial]) -> ParamAxis:
    if isinstance(dim, CategoricalDimension):
        labels = dict.fromkeys(value_text(c) for c in dim.choices)
        for trial in trials:
            if dim.name in trial.params:
                labels.setdefault(value_text(trial.params[dim.name]))
        return ParamAxis(dim.name, "categorical", False, None, None, tuple(labels))
    return ParamAxis(dim.name, dim.kind, dim.scale == LOG, float(dim.low), float(dim.high), ())


@dataclass(frozen=True)
class Sample:
    """A completed trial with a finite primary value, and its parameters as plottable numbers."""

    trial: Trial
    value: float
    # ParamAxis.number of each axis, in axis order; None where the trial has no such parameter
    # (a conditional one that was switched off) or a value that cannot be drawn.
    params: tuple[float | None, ...]


def samples(study: Study, axes: list[ParamAxis]) -> list[Sample]:
    """The completed trials that have a finite primary value, in trial order."""
    out = []
    for trial in sorted(study.completed(), key=lambda t: t.number):
        value = objective_value(trial, study.primary)
        if value is not None:
            numbers = tuple(axis.number(trial.params[axis.name]) if axis.name in trial.params else None for axis in axes)
            out.append(Sample(trial, value, numbers))
    return out


@dataclass(frozen=True)
class Curve:
    """One trial's intermediate reports of a metric, in step order."""

    trial: Trial
    steps: list[int]
    values: list[float]


@dataclass(frozen=True)
class Curves:
    """The learning curves of a study: every trial's stepped reports of the primary metric."""

    metric: str
    by_state: dict[TrialState, list[Curve]]  # in TrialState order; states without curves left out
    best: Curve | None  # the best trial's curve, when it has one


def curves(study: Study) -> Curves | None:
    """Each trial's reports that carry a step, for the primary metric; None when no trial has any."""
    metric = study.primary.metric
    found: dict[TrialState, list[Curve]] = {}
    best_trial = study.best_trial()
    best = None
    for trial in sorted(study.trials, key=lambda t: t.number):
        points = sorted(
            (r.step, r.value)
            for r in trial.metrics
            if r.name == metric and r.step is not None and finite(r.value) is not None
        )
        if not points:
            continue
        curve = Curve(trial, [step for step, _ in points], [value for _, value in points])
        found.setdefault(trial.state, []).append(curve)
        if trial is best_trial:
            best = curve
    if not found:
        return None
    return Curves(metric, {state: found[state] for state in TrialState if state in found}, best)
