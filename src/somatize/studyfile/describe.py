"""A plain-text summary of a validated study, for `somatize validate`."""

from __future__ import annotations

import math
from typing import Any

from ..executors.command import value_text
from ..samplers.grid import DEFAULT_POINTS_PER_DIM
from ..space import CategoricalDimension, Dimension, SearchSpace
from .config import StudyConfig

# Above this many points per dimension, estimate the grid size instead of building the grid.
_EXACT_GRID_LIMIT = 10_000


def describe(config: StudyConfig) -> list[str]:
    """Summary lines: the dimensions, strategy and planned trials, objectives and executor."""
    lines = [f"study: {config.name}" + (f" (seed {config.seed})" if config.seed is not None else "")]
    lines += _space_lines(config.space)
    trials = planned_trials(config.strategy, config.space)
    lines.append(f"strategy: {_strategy_text(config.strategy)}, {trials} trial{'s' if trials != 1 else ''} planned")
    lines.append("objectives: " + ", ".join(f"{o.metric} ({o.direction.value})" for o in config.objectives))
    if config.metrics:
        lines.append("metrics (recorded, not optimised): " + ", ".join(config.metrics))
    if config.outcome_constraints:
        lines.append("constraints on metrics (checked after each trial; a trial that breaks one is infeasible):")
        lines += [f"  {c.text}" for c in config.outcome_constraints]
    if config.target is not None:
        metric, value = config.target
        primary = next(o for o in config.objectives if o.metric == metric)
        lines.append(f"target: stop when {metric} {'>=' if primary.direction.value == 'maximize' else '<='} {value:g}")
    if config.pruning:
        options = [f"{k}={v}" for k, v in config.pruning.items() if k != "type"]
        lines.append(f"pruning: {config.pruning['type']}" + (f" ({', '.join(options)})" if options else ""))
    if config.parallel > 1:
        lines.append(f"parallel: {config.parallel} trials at once")
    if config.slots:
        kind = "device slots" if config.slots[0].gpus is not None else "slots"
        lines.append(f"resources: {len(config.slots)} {kind} ({'; '.join(s.label for s in config.slots)}), "
                     "one per running trial")
    if config.enqueue:
        lines.append(f"enqueue: {len(config.enqueue)} parameter set{'s' if len(config.enqueue) != 1 else ''} "
                     "run first")
    if config.trial_dirs.keep != "all":
        kept = "none" if config.trial_dirs.keep == "none" else f"the best {config.trial_dirs.best}"
        lines.append(f"trial directories: {kept} kept")
    if config.cluster:
        lines.append(f"cluster: Dask scheduler at {config.cluster}")
    if config.mlflow is not None:
        uri = config.mlflow.get("tracking_uri", "the default tracking URI (MLFLOW_TRACKING_URI)")
        lines.append(f"mlflow: experiment {config.mlflow.get('experiment', config.name)} at {uri}")
    lines.append(_executor_text(config))
    lines += [f"warning: {caveat}" for caveat in caveats(config)]
    return lines


def caveats(config: StudyConfig) -> list[str]:
    """What the study asks for that somatize will not do, one line each (validate and run say them).

    `acquisition:` with several objectives: the Bayesian search then maximises the expected growth of the
    front's hypervolume (samplers/multiobjective.py), and EI, PI, LCB and gp_hedge are single-objective
    criteria, so the key has no effect; a study that sets it is told so rather than left believing it does.
    """
    out = []
    strategy = config.strategy
    if strategy.get("type") == "bayesian" and len(config.objectives) > 1 and "acquisition" in strategy:
        where = config.locations.get("strategy.acquisition", str(config.path))
        out.append(
            f"{where}: acquisition {strategy['acquisition']} is not used with {len(config.objectives)} objectives: "
            "the Bayesian search maximises the expected growth of the Pareto front's hypervolume"
        )
    return out


def planned_trials(strategy: dict[str, Any], space: SearchSpace) -> int:
    """Grid: the product of grid sizes; others: n_trials, capped by a finite space's size."""
    n_trials = strategy.get("n_trials")
    if strategy["type"] == "grid":
        points = strategy.get("points_per_dim", DEFAULT_POINTS_PER_DIM)
        size = math.prod(_grid_size(d, points) for d in space)
        if (space.conditions or space.constraints) and size <= _EXACT_GRID_LIMIT * 10:
            # Only active, feasible points run: count them.
            grid = space.enumerate([d.grid(points) for d in space])
            size = sum(1 for params in grid if space.feasible(params))
        return size if n_trials is None else min(size, n_trials)
    size = space.cardinality()
    return n_trials if size is None else min(size, n_trials)


def _grid_size(dim: Dimension, points: int) -> int:
    if points <= _EXACT_GRID_LIMIT or isinstance(dim, CategoricalDimension):
        return len(dim.grid(points))
    return min(points, dim.cardinality() or points)


def _space_lines(space: SearchSpace) -> list[str]:
    width = max(len(name) for name in [*space.names, *space.constants])
    lines = ["search space:"]
    for dim in space:
        when = space.conditions.get(dim.name)
        condition = "  when " + ", ".join(
            f"{parent} in {'|'.join(value_text(v) for v in allowed)}" if len(allowed) > 1
            else f"{parent}={value_text(allowed[0])}"
            for parent, allowed in when.items()
        ) if when else ""
        lines.append(f"  {dim.name:<{width}}  {dim.kind:<11}  {_range_text(dim)}{condition}")
    for name, value in space.constants.items():
        lines.append(f"  {name:<{width}}  = {value_text(value)} (constant)")
    if space.constraints:
        lines.append("constraints:")
        lines += [f"  {c.text}" for c in space.constraints]
    return lines


def _range_text(dim: Dimension) -> str:
    if isinstance(dim, CategoricalDimension):
        text = "|".join(value_text(c) for c in dim.choices)
    else:
        text = f"[{dim.low}, {dim.high}]"
        if dim.scale == "log":
            text += " log"
        if dim.step not in (None, 1):
            text += f" step {dim.step}"
    return text + (f"  default {value_text(dim.default)}" if dim.default is not None else "")


def _strategy_text(strategy: dict[str, Any]) -> str:
    options = [f"{k}={v}" for k, v in strategy.items() if k not in ("type", "n_trials")]
    return strategy["type"] + (f" ({', '.join(options)})" if options else "")


def _executor_text(config: StudyConfig) -> str:
    executor = config.executor
    if executor.function is not None:
        text = f"executor: function {executor.function}"
    elif isinstance(executor.command, list):
        text = f"executor: command (argv) {executor.command}"
    else:
        text = f"executor: command {executor.command}"
    if executor.timeout is not None:
        text += f" (timeout {executor.timeout:g}s)"
    return text
