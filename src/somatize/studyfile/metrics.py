"""The `metrics:` section: metrics recorded and usable in constraints, not optimised (SPEC §9)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .problems import Where, show

RESERVED_METRIC = "step"  # a JSON output line's `step` marks an intermediate report
# As for an objective's metric: metric lines are `name=value` or `name: value`.
_METRIC = re.compile(r"[^\s=:]+")


def check_metrics(value: Any, where: Where, objectives: Sequence[str], params: Sequence[str]) -> tuple[str, ...]:
    """`metrics: [latency_ms, size_mb]`: unique names, none an objective's metric or a parameter's name
    (a constraint naming it would be ambiguous). Problems are reported; the good names are returned."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        where.error(f"metrics must be a non-empty list of metric names such as [latency_ms], got {show(value)}")
        return ()
    found: list[str] = []
    for i, name in enumerate(value):
        place = where / i
        if not isinstance(name, str) or not _METRIC.fullmatch(name):
            place.error(f"a metric must be a name without spaces, '=' or ':', got {show(name)}")
        elif name == RESERVED_METRIC:
            place.error(
                f"metric {RESERVED_METRIC!r} is reserved: a JSON output line's step marks an intermediate report"
            )
        elif name in objectives:
            place.error(f"metric {name!r} is already an objective (an objective's metric is recorded anyway)")
        elif name in params:
            place.error(f"metric {name!r} has the name of a parameter; a constraint naming it would be ambiguous")
        elif name in found:
            place.error(f"metric {name!r} is listed twice")
        else:
            found.append(name)
    return tuple(found)
