"""`when:` on dimensions and the `constraints:` section (SPEC §7, §9)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..constraints import Constraint, ConstraintError, parse_constraint
from ..errors import SpaceError
from ..space import Dimension, SearchSpace
from .problems import Where, did_you_mean, show

# Random draws `validate` makes of a continuous space before declaring the constraints unsatisfiable.
FEASIBILITY_DRAWS = 4000


def check_when(name: str, value: Any, where: Where) -> dict[str, tuple[Any, ...]] | None:
    """`when: {optimizer: sgd}` or `{optimizer: [sgd, rmsprop]}` as {parent: allowed values}."""
    if not isinstance(value, dict) or not value:
        where.error(f"{name}: when must map other parameters to a value or a list of values, got {show(value)}")
        return None
    out: dict[str, tuple[Any, ...]] = {}
    for parent, allowed in value.items():
        values = allowed if isinstance(allowed, list) else [allowed]
        if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            (where / parent).error(f"{name}: when {parent} must be a value or a non-empty list of values")
            return None
        out[str(parent)] = tuple(values)
    return out


def check_conditions(
    dims: Sequence[Dimension],
    conditions: dict[str, dict[str, tuple[Any, ...]]],
    searched: Sequence[str],
    where: Where,
) -> bool:
    """Report every bad `when:` reference, impossible value and cycle, each at its own node.

    `searched` names every searched dimension, built or not: a parent whose own
    definition is broken is a valid reference whose values cannot be checked yet.
    """
    by_name = {d.name: d for d in dims}
    ok = True
    edges: dict[str, set[str]] = {}
    for name, when in conditions.items():
        edges[name] = set()
        for parent, allowed in when.items():
            place = where / name / "when" / parent
            if parent == name or parent not in searched:
                others = [n for n in searched if n != name]
                hint = did_you_mean(parent, others)
                place.key_error(f"{name}: when names {parent!r}, which is not another searched dimension{hint}")
                ok = False
                continue
            edges[name].add(parent)
            dim = by_name.get(parent)
            for value in allowed if dim is not None else ():
                if not dim.contains(value):
                    place.error(f"{name}: when {parent} is {value!r}, which {parent} can never be")
                    ok = False
    cycle = _cycle(edges)
    if cycle:
        (where / cycle[0] / "when").key_error(
            f"the when conditions of {', '.join(cycle)} depend on each other in a cycle"
        )
        ok = False
    return ok


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """The conditioned names that can never be placed after their parents (sorted), or []."""
    placed: set[str] = set()
    waiting = dict(edges)
    while True:
        ready = [name for name, parents in waiting.items() if parents <= placed | (parents - set(edges))]
        if not ready:
            return sorted(waiting)
        for name in ready:
            placed.add(name)
            del waiting[name]


def build_space(
    space: SearchSpace, conditions: dict[str, dict[str, tuple[Any, ...]]], where: Where
) -> SearchSpace | None:
    """The space with its conditions; a bad reference or a cycle is reported at the `when:` key."""
    try:
        return replace(space, conditions=conditions)
    except SpaceError as exc:
        place = where / exc.field / "when" if exc.field in conditions else where
        place.error(str(exc))
        return None


def check_constraints(
    value: Any, where: Where, space: SearchSpace | None, names: Sequence[str], metrics: Sequence[str] = ()
) -> tuple[SearchSpace | None, tuple[Constraint, ...]]:
    """The space with its parameter constraints, and the constraints that name a metric
    (`metrics`: the objectives' and `metrics:`), each parsed and checked. The space is None
    when any constraint is wrong or when no parameter set can satisfy them.

    With a broken `space` (None) each constraint is still parsed against the
    declared `names`, so its problems come in the same report as the space's.
    A metric constraint is judged after its trial (SPEC §9), so only the
    parameter constraints are checked for a satisfiable space.
    """
    if not isinstance(value, list) or not value:
        example = "'batch * layers <= 1024'"
        where.error(f"constraints must be a non-empty list of expressions such as {example}, got {show(value)}")
        return None, ()
    known = [*space.names, *space.constants] if space is not None else list(names)
    parsed = []
    for i, text in enumerate(value):
        if not isinstance(text, str):
            (where / i).error(f"a constraint must be an expression in quotes, got {show(text)}")
            continue
        try:
            parsed.append(parse_constraint(text, known, metrics))
        except ConstraintError as exc:
            (where / i).error(str(exc))
    outcome = tuple(c for c in parsed if c.on_outcome)
    if len(parsed) != len(value) or space is None:
        return None, outcome
    on_params = tuple(c for c in parsed if not c.on_outcome)
    if not on_params:
        return space, outcome
    constrained = replace(space, constraints=on_params)
    problem = _unsatisfiable(constrained)
    if problem:
        where.error(problem)
        return None, outcome
    return constrained, outcome


def _unsatisfiable(space: SearchSpace) -> str | None:
    """Why no parameter set can run, or None: an exact count of a small finite space, else random
    draws (a larger finite space is not counted, so it is drawn from like a continuous one)."""
    if space.cardinality_is_exact():
        return None if space.cardinality() else "no parameter set in the search space satisfies the constraints"
    rng = random.Random(0)
    first_error = None
    for _ in range(FEASIBILITY_DRAWS):
        params = space.from_unit([rng.random() for _ in space.dimensions])
        try:
            if all(c.holds(params) for c in space.constraints):
                return None
        except ConstraintError as exc:
            first_error = first_error or str(exc)
    because = f" (e.g. {first_error})" if first_error else ""
    return f"none of {FEASIBILITY_DRAWS} random parameter sets satisfies the constraints{because}"
