"""The `search_space:` section: dimensions, the list shorthand and constants (SPEC §1)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import SpaceError
from ..executors.command import TRIAL_PLACEHOLDERS
from ..space import PARAMETER_NAME, SCALES, CategoricalDimension, Dimension, FloatDimension, IntDimension, SearchSpace
from .conditions import build_space, check_conditions, check_when
from .fields import as_number, choice, is_int, mapping
from .problems import Where, show

KINDS = ("float", "int", "categorical")
DIMENSION_KEYS = ("type", "low", "high", "scale", "step", "default", "choices", "when")
_KEYS_OF = {
    "float": ("type", "low", "high", "scale", "step", "default", "when"),
    "int": ("type", "low", "high", "scale", "step", "default", "when"),
    "categorical": ("type", "choices", "default", "when"),
}
_REQUIRED = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
_NAME = PARAMETER_NAME
# Beyond 2**53 integers stop being exact as floats, which grid and log sampling use.
_INT_LIMIT = 2**53


def check_search_space(value: Any, where: Where) -> SearchSpace | None:
    """The search space, or None after reporting every problem of its dimensions and `when:`s."""
    if not isinstance(value, dict):
        where.error(f"search_space must be a mapping of parameter names to dimensions, got {show(value)}")
        return None
    dims: list[Dimension] = []
    constants: dict[str, Any] = {}
    conditions: dict[str, dict[str, tuple[Any, ...]]] = {}
    searched: list[str] = []
    ok = True
    for name, spec in value.items():
        place = where / name
        if isinstance(spec, (dict, list)):
            searched.append(name)
        if not _check_name(name, place):
            ok = False
            continue
        if isinstance(spec, dict) and "when" in spec:
            # A bad `when:` does not hide the dimension's own problems: both are reported.
            when = check_when(name, spec["when"], place / "when")
            if when is None:
                ok = False
            else:
                conditions[name] = when
            spec = {k: v for k, v in spec.items() if k != "when"}
        if isinstance(spec, (dict, list)):
            dim = _dimension(name, spec, place) if isinstance(spec, dict) else _categorical(name, spec, place)
            if dim is not None:
                dims.append(dim)
        elif _constant_ok(name, spec, place):
            constants[name] = spec
    if not searched:
        where.error("search_space needs at least one searched dimension ({type: ...} mapping or a list of choices)")
    ok = check_conditions(dims, conditions, searched, where) and ok
    if not ok or len(dims) != len(searched) or not dims:
        return None  # the reasons are already reported
    space = SearchSpace(tuple(dims), constants)
    return build_space(space, conditions, where) if conditions else space


def _check_name(name: str, where: Where) -> bool:
    if not _NAME.fullmatch(name):
        where.key_error(
            f"parameter name {name!r} must start with a letter or _ and use only letters, digits, _, . and -"
        )
        return False
    if name in TRIAL_PLACEHOLDERS:
        where.key_error(f"parameter name {name!r} is reserved for the {{{name}}} command placeholder")
        return False
    return True


def _constant_ok(name: str, value: Any, where: Where) -> bool:
    if value is None:
        where.error(f"{name} has no value: give a constant, a list of choices or a {{type: ...}} mapping")
        return False
    if isinstance(value, float) and not math.isfinite(value):
        where.error(f"{name}: a constant must be a finite number, got {show(value)}")
        return False
    return True


def _dimension(name: str, spec: dict[str, Any], where: Where) -> Dimension | None:
    mapping(spec, where, f"dimension {name!r}", DIMENSION_KEYS)
    if "type" not in spec:
        where.error(f"{name}: a dimension needs a type: float, int or categorical")
        return None
    kind = choice(spec["type"], where / "type", "type", KINDS)
    if kind is None:
        return None
    for key in spec:
        if key in DIMENSION_KEYS and key not in _KEYS_OF[kind]:
            (where / key).key_error(f"{name}: {key} is not used by {_a(kind)} dimension")
    missing = [key for key in _REQUIRED[kind] if key not in spec]
    for key in missing:
        where.error(f"{name}: {_a(kind)} dimension needs {key!r}")
    if missing or any(key not in _KEYS_OF[kind] for key in spec):
        return None
    if kind == "categorical":
        return _categorical(name, spec["choices"], where / "choices", spec.get("default"), where)
    fields = _numeric_fields(name, kind, spec, where)
    if fields is None or not _range_ok(name, fields, where):
        return None
    return _build(name, where, lambda: (FloatDimension if kind == "float" else IntDimension)(name, **fields))


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _numeric_fields(name: str, kind: str, spec: dict[str, Any], where: Where) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    ok = True
    for key, value in spec.items():
        if key == "type" or (value is None and key in ("step", "default")):
            continue
        if key == "scale":
            fields[key] = choice(value, where / key, f"{name}: scale", SCALES)
            ok = ok and fields[key] is not None
        elif kind == "int" and not (is_int(value) and abs(value) <= _INT_LIMIT):
            rule = "an integer" if not is_int(value) else "an integer between -2**53 and 2**53"
            (where / key).error(f"{name}: {key} must be {rule}, got {show(value)}")
            ok = False
        elif kind == "float" and as_number(value) is None:
            (where / key).error(f"{name}: {key} must be a finite number, got {show(value)}")
            ok = False
        else:
            fields[key] = value if kind == "int" else float(as_number(value))  # type: ignore[arg-type]
    return fields if ok else None


def _range_ok(name: str, fields: dict[str, Any], where: Where) -> bool:
    """Reject float ranges whose arithmetic overflows (1e308 bounds, a step of 1e-300)."""
    span = fields["high"] - fields["low"]
    step = fields.get("step")
    if not math.isfinite(span) or (step and not math.isfinite(span / step)):
        where.error(f"{name}: the range is too large to sample")
        return False
    return True


def _categorical(
    name: str, choices: Any, where: Where, default: Any = None, dimension: Where | None = None
) -> Dimension | None:
    if not isinstance(choices, list) or not choices:
        where.error(f"{name}: choices must be a non-empty list, got {show(choices)}")
        return None
    ok = True
    for i, item in enumerate(choices):
        if not isinstance(item, (str, int, float, bool)) or (isinstance(item, float) and not math.isfinite(item)):
            (where / i).error(f"{name}: a choice must be a string, number or boolean, got {show(item)}")
            ok = False
    if not ok:
        return None
    return _build(name, dimension or where, lambda: CategoricalDimension(name, tuple(choices), default))


def _build(name: str, where: Where, make: Callable[[], Dimension]) -> Dimension | None:
    """Let space.py judge the values; point its complaint at the key it names."""
    try:
        return make()
    except SpaceError as exc:
        place = where / exc.field if exc.field else where
        place.error(f"{name}: {exc}")
        return None
