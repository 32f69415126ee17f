"""The `strategy:`, `objectives:`, `target:`, `pruning:` and `mlflow:` sections (SPEC §1, §2, §6, §10)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from ..samplers import STRATEGIES
from ..samplers.grid import DEFAULT_POINTS_PER_DIM
from ..space import CategoricalDimension, SearchSpace
from ..study import REDUCES, Direction, Objective
from .fields import as_number, choice, integer, mapping, number, text
from .problems import Where, did_you_mean, show


@dataclass(frozen=True)
class WordOrNumber:
    """An option that is one of `words` or a number of at least `minimum` (what it means: `unit`)."""

    words: tuple[str, ...]
    minimum: float
    unit: str


OptionRule = Union[int, tuple[str, ...], WordOrNumber]
# Each strategy's own options: an int is the option's minimum (an integer option), a tuple its choices.
# The checks below and the JSON Schema (schema.py) both read this table.
_STRATEGY_OPTIONS: dict[str, dict[str, OptionRule]] = {
    "grid": {"points_per_dim": 1},
    "random": {},
    "bayesian": {
        "n_initial": 1,
        "acquisition": ("gp_hedge", "EI", "PI", "LCB"),
        "estimator": ("GP", "RF", "ET", "GBRT"),
        "initial_points": ("random", "sobol", "lhs"),
        # samplers/noise.py: auto (fitted), none, or the noise's standard deviation.
        "noise": WordOrNumber(("auto", "none"), 0.0, "a standard deviation, in the primary metric's units"),
    },
}
# Upper bounds of integer options, beyond which `run` would build lists it cannot hold.
# Walking a grid of a million points whose constraint skips them all took 16 s on the
# loaded 2-core machine (a bound on how long run can search before it gives up), and a
# million-trial grid is far beyond any grid search actually run.
MAX_GRID_POINTS = 1_000_000
# skopt builds a sobol or lhs design of n_initial points up front, and a surrogate
# fitted to more than a few thousand points is too slow to help anyway.
MAX_N_INITIAL = 10_000
OPTION_MAXIMA = {"points_per_dim": MAX_GRID_POINTS, "n_initial": MAX_N_INITIAL}
STRATEGY_KEYS = ("type", "n_trials", *(k for options in _STRATEGY_OPTIONS.values() for k in options))
N_TRIALS_MIN = 1
# Strategies whose n_trials is an optional cap (null: no cap); the others require it.
N_TRIALS_OPTIONAL = ("grid",)

# Each pruner's options and their minimum value.
_PRUNER_OPTIONS = {
    "median": {"warmup_steps": 0, "min_trials": 1, "interval": 1},
    "successive_halving": {"min_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0},
}
PRUNING_KEYS = ("type", *(k for options in _PRUNER_OPTIONS.values() for k in options))

OBJECTIVE_KEYS = ("metric", "direction", "reduce")
DIRECTIONS = tuple(d.value for d in Direction)
DEFAULT_DIRECTION = Direction.MINIMIZE.value  # minimize when unsaid, as in Optuna and Objective itself
DEFAULT_REDUCE = REDUCES[0]
RESERVED_METRIC = "step"
TARGET_KEYS = ("metric", "value")
# `mlflow:` (docs/tracking.md); both optional: MLflow's own default URI, the study's name.
MLFLOW_KEYS = ("tracking_uri", "experiment")
# Metric lines are `name=value` or `name: value`, and `step` marks a report in JSON lines.
_METRIC = re.compile(r"[^\s=:]+")


def _owner(key: str, table: dict[str, dict[str, Any]]) -> str:
    return next(kind for kind, options in table.items() if key in options)


def check_strategy(value: Any, where: Where) -> dict[str, Any] | None:
    spec = mapping(value, where, "strategy", STRATEGY_KEYS, required=("type",))
    if spec is None or "type" not in spec:
        return None
    kind = choice(spec["type"], where / "type", "strategy type", STRATEGIES)
    if kind is None:
        return None
    out: dict[str, Any] = {"type": kind, "n_trials": None}
    if "n_trials" not in spec and kind not in N_TRIALS_OPTIONAL:
        where.error(f"a {kind} strategy needs n_trials")
    elif spec.get("n_trials") is not None or kind not in N_TRIALS_OPTIONAL:  # grid: null means no cap
        out["n_trials"] = integer(spec["n_trials"], where / "n_trials", "n_trials", N_TRIALS_MIN)
    options = _STRATEGY_OPTIONS[kind]
    for key, raw in spec.items():
        if key in options:
            out[key] = _option(raw, where / key, key, options[key])
        elif key in STRATEGY_KEYS and key not in ("type", "n_trials"):
            owner = _owner(key, _STRATEGY_OPTIONS)
            (where / key).key_error(f"{key} is a {owner} option; it does not apply to a {kind} strategy")
    return out


def _option(value: Any, where: Where, key: str, rule: OptionRule) -> Any:
    if isinstance(rule, WordOrNumber):
        return _word_or_number(value, where, key, rule)
    if isinstance(rule, tuple):
        return choice(value, where, key, rule)
    found = integer(value, where, key, rule)
    maximum = OPTION_MAXIMA.get(key)
    if found is not None and maximum is not None and found > maximum:
        where.error(f"{key} must be at most {maximum:,}, got {found:,}")
        return None
    return found


def check_grid_size(strategy: dict[str, Any], space: SearchSpace, where: Where) -> None:
    """A grid's combinations (before conditions and constraints) at most MAX_GRID_POINTS.

    Each column is at most points_per_dim long (fewer on a short lattice, all
    choices of a categorical), so the product is known without building it.
    """
    if strategy.get("type") != "grid" or strategy.get("points_per_dim", DEFAULT_POINTS_PER_DIM) is None:
        return
    points = strategy.get("points_per_dim", DEFAULT_POINTS_PER_DIM)
    size = 1
    for dim in space:
        if isinstance(dim, CategoricalDimension):
            size *= len(dim.choices)
        else:
            size *= min(points, dim.cardinality() or points)
        if size > MAX_GRID_POINTS:
            place = where / "points_per_dim" if "points_per_dim" in strategy else where / "type"
            place.error(
                f"the grid has more than {MAX_GRID_POINTS:,} points (up to {points} per dimension over "
                f"{len(space)} dimensions): lower points_per_dim, or search with type random"
            )
            return


def _word_or_number(value: Any, where: Where, key: str, rule: WordOrNumber) -> str | float | None:
    if isinstance(value, str) and value in rule.words:
        return value
    found = as_number(value)
    if found is not None and found >= rule.minimum:
        return float(found)
    hint = did_you_mean(value, rule.words) if isinstance(value, str) else ""
    words = ", ".join(rule.words)
    where.error(f"{key} must be {words} or a number >= {rule.minimum:g} ({rule.unit}), got {show(value)}{hint}")
    return None


def check_objectives(document: dict[str, Any], where: Where) -> list[Objective] | None:
    """`objectives:` (a list) or `objective:` (one mapping); the first is primary."""
    if "objectives" in document and "objective" in document:
        (where / "objective").key_error("give either objectives (a list) or objective (one mapping), not both")
        return None
    if "objective" in document:
        items = [(document["objective"], where / "objective")]
    elif "objectives" in document:
        listed = document["objectives"]
        if not isinstance(listed, list) or not listed:
            (where / "objectives").error(
                f"objectives must be a non-empty list of {{metric, direction}}, got {show(listed)}"
            )
            return None
        items = [(item, where / "objectives" / i) for i, item in enumerate(listed)]
    else:
        where.error("the study needs objectives (a list of {metric, direction}) or objective (one mapping)")
        return None
    found = [_objective(item, place) for item, place in items]
    _check_unique_metrics(items)
    return None if None in found else found  # type: ignore[return-value]


def objective_metrics(document: dict[str, Any]) -> list[str]:
    """The metric names as written, even when an objective is otherwise invalid."""
    listed = [document["objective"]] if "objective" in document else document.get("objectives")
    if not isinstance(listed, list):
        return []
    names = [item["metric"] for item in listed if isinstance(item, dict) and isinstance(item.get("metric"), str)]
    return list(dict.fromkeys(names))


def _objective(value: Any, where: Where) -> Objective | None:
    spec = mapping(value, where, "objective", OBJECTIVE_KEYS, required=("metric",))
    if spec is None:
        return None
    rule = "a metric name without spaces, '=' or ':'"
    metric = text(spec["metric"], where / "metric", "metric", _METRIC, rule) if "metric" in spec else None
    if metric == RESERVED_METRIC:
        (where / "metric").error(
            f"metric {RESERVED_METRIC!r} is reserved: a JSON output line's step marks an intermediate report"
        )
        metric = None
    direction = choice(spec.get("direction", DEFAULT_DIRECTION), where / "direction", "direction", DIRECTIONS)
    reduce = choice(spec.get("reduce", DEFAULT_REDUCE), where / "reduce", "reduce", REDUCES)
    if metric is None or direction is None or reduce is None:
        return None
    return Objective(metric, Direction(direction), reduce)


def _check_unique_metrics(items: list[tuple[Any, Where]]) -> None:
    seen: set[str] = set()
    for item, place in items:
        metric = item.get("metric") if isinstance(item, dict) else None
        if not isinstance(metric, str):
            continue
        if metric in seen:
            (place / "metric").error(f"metric {metric!r} is already an objective")
        seen.add(metric)


def check_target(value: Any, where: Where, metrics: list[str]) -> tuple[str, float] | None:
    """Optional `{metric, value}`; the metric defaults to the primary objective's."""
    if value is None:
        return None
    spec = mapping(value, where, "target", TARGET_KEYS, required=("value",))
    if spec is None or "value" not in spec:
        return None
    target = number(spec["value"], where / "value", "target value")
    metric = spec.get("metric", metrics[0] if metrics else None)
    if metrics and metric not in metrics:
        hint = did_you_mean(metric, metrics) if isinstance(metric, str) else ""
        (where / "metric").error(
            f"target metric must be one of the objectives ({', '.join(metrics)}), got {show(metric)}{hint}"
        )
        return None
    if target is None or not isinstance(metric, str):
        return None
    return metric, target


def check_pruning(value: Any, where: Where) -> dict[str, Any] | None:
    if value is None:
        return None
    spec = mapping(value, where, "pruning", PRUNING_KEYS, required=("type",))
    if spec is None or "type" not in spec:
        return None
    kind = choice(spec["type"], where / "type", "pruning type", tuple(_PRUNER_OPTIONS))
    if kind is None:
        return None
    out: dict[str, Any] = {"type": kind}
    for key, raw in spec.items():
        if key in _PRUNER_OPTIONS[kind]:
            out[key] = integer(raw, where / key, key, _PRUNER_OPTIONS[kind][key])
        elif key in PRUNING_KEYS and key != "type":
            owner = _owner(key, _PRUNER_OPTIONS)
            (where / key).key_error(f"{key} is a {owner} option; it does not apply to {kind} pruning")
    return out


def check_mlflow(value: Any, where: Where) -> dict[str, str] | None:
    """Optional `{tracking_uri, experiment}`: log every trial to MLflow (null: don't)."""
    if value is None:
        return None
    spec = mapping(value, where, "mlflow", MLFLOW_KEYS)
    if spec is None:
        return None
    out = {}
    for key in MLFLOW_KEYS:
        if key in spec:
            found = text(spec[key], where / key, f"mlflow {key}")
            if found is None:
                return None
            out[key] = found
    return out
