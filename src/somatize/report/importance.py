"""Parameter importance: which parameters the primary objective depends on most.

A random forest (scikit-learn's RandomForestRegressor) is fitted to the
completed trials, and each parameter's importance is its mean decrease in
impurity, normalised to sum to 1. A categorical is one ordinal-encoded column
(its choice's index), so each parameter gets exactly one score; trees split on
order, so this is enough for them, and a log scale changes nothing. A
parameter a trial lacks (conditional, switched off) is a value below all the
others, so a tree can still split on "absent or not". scikit-learn
comes with scikit-optimize but is imported here only, when a report asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import ParamAxis, Sample

MIN_TRIALS = 5
TREES = 100
METHOD = (
    f"Mean decrease in impurity of a random forest (scikit-learn RandomForestRegressor, {TREES} trees, seed 0) "
    "fitted to the completed trials' parameters (categoricals ordinal-encoded, absent parameters as a value "
    "below the rest) against the primary objective; "
    "the scores sum to 1. Impurity importance favours parameters with many distinct values, so read small "
    "differences with care."
)


@dataclass(frozen=True)
class Importance:
    scores: dict[str, float]  # parameter -> importance, most important first; empty when not computed
    note: str  # how the scores were computed, or why there are none


def parameter_importance(axes: list[ParamAxis], samples: list[Sample]) -> Importance:
    if len(samples) < MIN_TRIALS:
        return Importance({}, f"Needs at least {MIN_TRIALS} completed trials with a finite value; "
                              f"this study has {len(samples)}.")
    values = [s.value for s in samples]
    if max(values) == min(values):
        return Importance({}, "Every completed trial has the same value: no parameter explains any difference.")
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError:
        return Importance({}, "scikit-learn is not installed (pip install scikit-learn), so importance is not computed.")
    forest = RandomForestRegressor(n_estimators=TREES, random_state=0)
    forest.fit(_feature_rows(axes, samples), values)
    scores = {axis.name: float(score) for axis, score in zip(axes, forest.feature_importances_)}
    if not any(scores.values()):
        return Importance({}, "No parameter varies among the completed trials, so none explains their values.")
    ranked = dict(sorted(scores.items(), key=lambda item: -item[1]))
    return Importance(ranked, METHOD)


def _feature_rows(axes: list[ParamAxis], samples: list[Sample]) -> list[list[float]]:
    """One row per sample; an absent parameter takes a value below all of that column's values."""
    columns = []
    for index in range(len(axes)):
        present = [s.params[index] for s in samples if s.params[index] is not None]
        low, high = (min(present), max(present)) if present else (0.0, 0.0)
        absent = low - (high - low) - 1.0
        columns.append([absent if s.params[index] is None else s.params[index] for s in samples])
    return [list(row) for row in zip(*columns)]  # type: ignore[arg-type]
