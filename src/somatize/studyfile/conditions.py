"""`when:` on dimensions and the `constraints:` section (SPEC §7)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from ..constraints import ConstraintError, parse_constraint
from ..errors import SpaceError
from ..space import SearchSpace
from .problems import Where, show

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


def check_constraints(value: Any, where: Where, space: SearchSpace) -> SearchSpace | None:
    """The space with its constraints, each parsed and checked; None when any is wrong or
    when no parameter set can satisfy them."""
    if not isinstance(value, list) or not value:
        example = "'batch * layers <= 1024'"
        where.error(f"constraints must be a non-empty list of expressions such as {example}, got {show(value)}")
        return None
    known = [*space.names, *space.constants]
    parsed = []
    for i, text in enumerate(value):
        if not isinstance(text, str):
            (where / i).error(f"a constraint must be an expression in quotes, got {show(text)}")
            continue
        try:
            parsed.append(parse_constraint(text, known))
        except ConstraintError as exc:
            (where / i).error(str(exc))
    if len(parsed) != len(value):
        return None
    constrained = replace(space, constraints=tuple(parsed))
    problem = _unsatisfiable(constrained)
    if problem:
        where.error(problem)
        return None
    return constrained


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
