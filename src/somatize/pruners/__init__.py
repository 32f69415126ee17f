"""Pruners: stop unpromising trials early from their intermediate reports (SPEC §6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..study import Objective
from .base import Pruner


def make_pruner(spec: Mapping[str, Any] | None, objective: Objective) -> Pruner | None:
    """Build the pruner a validated `pruning:` mapping names (None: no pruning)."""
    if not spec:
        return None
    options = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "median":
        from .median import MedianPruner

        return MedianPruner(objective, **options)
    if spec["type"] == "successive_halving":
        from .halving import SuccessiveHalvingPruner

        return SuccessiveHalvingPruner(objective, **options)
    raise ValueError(f"unknown pruning type {spec['type']!r}")


__all__ = ["Pruner", "make_pruner"]
