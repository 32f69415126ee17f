"""Samplers behind one interface; the Bayesian one (scikit-optimize) is imported only when asked for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..space import SearchSpace
from ..study import Objective
from .base import Sampler

if TYPE_CHECKING:
    from ..constraints import Constraint

STRATEGIES = ("grid", "random", "bayesian")


def make_sampler(
    strategy: Mapping[str, Any], space: SearchSpace, objective: Objective | Sequence[Objective], seed: int | None,
    constraints: Sequence[Constraint] = (),
) -> Sampler:
    """Build the sampler a validated `strategy:` mapping names.

    `objective` is the primary objective, or every objective of the study: with two or more, the
    Bayesian strategy searches their Pareto front (multiobjective.py); grid and random need only the first.
    `constraints` are those on metrics (SPEC §9): the Bayesian strategy models them; grid and random
    only see trials judged.
    """
    objectives = (objective,) if isinstance(objective, Objective) else tuple(objective)
    objective = objectives[0]
    options = {k: v for k, v in strategy.items() if k not in ("type", "n_trials")}
    kind = strategy.get("type")
    n_trials = strategy.get("n_trials")
    if kind == "grid":
        from .grid import GridSampler

        return GridSampler(space, objective, n_trials, seed, **options)
    if kind == "random":
        from .random import RandomSampler

        return RandomSampler(space, objective, n_trials, seed)
    if kind == "bayesian" and len(objectives) > 1:
        from .multiobjective import MultiObjectiveSampler

        return MultiObjectiveSampler(space, objectives, n_trials, seed, outcome_constraints=tuple(constraints),
                                     **options)
    if kind == "bayesian":
        from .bayesian import BayesianSampler

        return BayesianSampler(space, objective, n_trials, seed, outcome_constraints=tuple(constraints), **options)
    raise ValueError(f"unknown strategy {kind!r}")


__all__ = ["STRATEGIES", "Sampler", "make_sampler"]
