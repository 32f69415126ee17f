"""The study-file keys of a workstation's trials: `trial_dirs:`, `resources:` and `enqueue:` (SPEC §10)."""

from __future__ import annotations

import math
from typing import Any

from ..executors.artifacts import KEEP, KeepPolicy
from ..executors.slots import Slot, gpu_slots, named_slots
from ..space import FloatDimension, SearchSpace
from .fields import as_number, choice, integer, is_int, mapping
from .problems import Where, did_you_mean, show

TRIAL_DIRS_KEYS = ("keep", "best")
RESOURCES_KEYS = ("gpus", "per_trial", "slots")
# More slots than this is no workstation: parallel's own maximum (loader.MAX_PARALLEL).
MAX_SLOTS = 1024


def check_trial_dirs(value: Any, where: Where) -> KeepPolicy:
    """`trial_dirs: {keep: all | best | none, best: k}`; absent or null: keep all."""
    if value is None:
        return KeepPolicy()
    spec = mapping(value, where, "trial_dirs", TRIAL_DIRS_KEYS)
    if spec is None:
        return KeepPolicy()
    chosen = choice(spec.get("keep", "all"), where / "keep", "trial_dirs keep", KEEP)
    keep = chosen or "all"
    best = integer(spec.get("best", 1), where / "best", "trial_dirs best", 1) or 1
    if "best" in spec and chosen not in (None, "best"):
        (where / "best").error(f"trial_dirs best is the number kept with keep: best (keep is {keep})")
    return KeepPolicy(keep, best)


def _labels(value: Any, where: Where, what: str) -> list[str] | None:
    """A non-empty list of unique device ids or slot names (strings or integers, no commas)."""
    if not isinstance(value, list) or not value:
        where.error(f"{what} must be a non-empty list, got {show(value)}")
        return None
    labels: list[str] = []
    for i, item in enumerate(value):
        ok = (is_int(item) and item >= 0) or (isinstance(item, str) and item.strip() and "," not in item)
        if not ok:
            where_item = where / i
            where_item.error(f"{what} entries must be non-negative integers or names without commas, got {show(item)}")
            continue
        label = str(item).strip()
        if label in labels:
            (where / i).error(f"{what} lists {label!r} twice: no two running trials may share it")
            continue
        labels.append(label)
    if len(labels) > MAX_SLOTS:
        where.error(f"{what} may list at most {MAX_SLOTS} entries, got {len(labels)}")
        return None
    return labels if len(labels) == len(value) else None


def check_resources(value: Any, where: Where) -> tuple[Slot, ...]:
    """`resources: {gpus: [...], per_trial: k}` or `resources: {slots: [...]}`: the trial slots."""
    if value is None:
        return ()
    spec = mapping(value, where, "resources", RESOURCES_KEYS)
    if spec is None:
        return ()
    if "gpus" in spec and "slots" in spec:
        where.error("resources takes gpus (devices, with per_trial) or slots (any names), not both")
        return ()
    if "slots" in spec:
        if "per_trial" in spec:
            (where / "per_trial").error("resources per_trial goes with gpus; each of slots is one trial's")
        labels = _labels(spec["slots"], where / "slots", "resources slots")
        return tuple(named_slots(labels)) if labels else ()
    if "gpus" not in spec:
        where.error("resources needs gpus (a list of device ids) or slots (a list of names)")
        return ()
    labels = _labels(spec["gpus"], where / "gpus", "resources gpus")
    per_trial = integer(spec.get("per_trial", 1), where / "per_trial", "resources per_trial", 1)
    if not labels or per_trial is None:
        return ()
    if per_trial > len(labels):
        (where / "per_trial").error(f"resources per_trial is {per_trial} but gpus lists only {len(labels)} devices")
        return ()
    return tuple(gpu_slots(labels, per_trial))


def check_parallel(parallel: int | None, slots: tuple[Slot, ...], given: bool, where: Where) -> int | None:
    """With resources, parallel defaults to the number of slots and may not exceed it."""
    if not slots or parallel is None:
        return parallel
    if not given:
        return len(slots)
    if parallel > len(slots):
        where.error(
            f"parallel (-j) is {parallel} but resources allow {len(slots)} trials at once "
            f"({'; '.join(s.label for s in slots)}); ask for at most {len(slots)}"
        )
        return None
    return parallel


# enqueue ---------------------------------------------------------------------------------------


def check_enqueue(value: Any, where: Where, space: SearchSpace | None) -> list[dict[str, Any]]:
    """`enqueue:` a list of parameter sets, each a point of the space: run first, in this order."""
    if value is None:
        return []
    if not isinstance(value, list):
        where.error(f"enqueue must be a list of parameter mappings, got {show(value)}")
        return []
    points = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            (where / i).error(f"enqueue entries are mappings of parameter values, got {show(entry)}")
            continue
        if space is not None:
            point = _point(entry, where / i, space)
            if point is not None:
                points.append(point)
    return points


def _point(entry: dict[str, Any], where: Where, space: SearchSpace) -> dict[str, Any] | None:
    names = space.names
    constants = dict(space.with_constants({}))
    bad = False
    for key, value in entry.items():
        if key not in names and key not in constants:
            (where / key).key_error(f"enqueue: {key!r} is not a parameter of search_space{did_you_mean(key, names)}")
            bad = True
        elif key in constants and value != constants[key]:
            (where / key).error(f"enqueue: {key} is a constant ({show(constants[key])}); leave it out")
            bad = True
    params: dict[str, Any] = {}
    for dim in space:
        if dim.name in entry:
            params[dim.name] = entry[dim.name] = _as_dimension_type(dim, entry[dim.name])
    for dim in space:  # in declared order, so a condition sees the values it depends on
        active = space.is_active(dim.name, params)
        if dim.name in entry:
            if not active:
                (where / dim.name).error(
                    f"enqueue: {dim.name} is inactive here (its when: does not hold); leave it out"
                )
                bad = True
            elif not _fits(dim, entry[dim.name]):
                (where / dim.name).error(f"enqueue: {dim.name} = {show(entry[dim.name])} is not in the dimension")
                bad = True
        elif active:
            if dim.default is None:
                where.error(f"enqueue: missing parameter {dim.name!r} (give it, or a default in search_space)")
                bad = True
            else:
                params[dim.name] = dim.default
    if bad:
        return None
    params = space.with_constants(space.active(params))
    problem = space.problem(params)  # what is left: a constraint that does not hold
    if problem is not None:
        where.error(f"enqueue: this parameter set cannot run: {problem}")
        return None
    return params


def _as_dimension_type(dim: Any, value: Any) -> Any:
    """A float dimension's value as a float: `1` and a quoted `"1e-3"` (YAML 1.1 reads 1e-3 as text) too."""
    if isinstance(dim, FloatDimension) and not isinstance(value, bool):
        number = as_number(value)
        if number is not None:
            return float(number)
    return value


def _fits(dim: Any, value: Any) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    try:
        return bool(dim.contains(value))
    except (TypeError, ValueError):
        return False
