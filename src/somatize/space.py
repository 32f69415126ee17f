"""Search-space dimensions and the ordered SearchSpace.

Pure Python on purpose: `validate` and `best` load this module and must stay
fast, so numpy is left to the samplers. Every dimension maps a unit number
u in [0, 1) to a value (`from_unit`), which is all a sampler needs.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from .constraints import Constraint, ConstraintError
from .errors import SpaceError

Scalar = Union[str, int, float, bool]

LINEAR = "linear"
LOG = "log"
SCALES = (LINEAR, LOG)

# A parameter name, and so a `{placeholder}` name: safe unquoted in any shell word,
# so `--name` literals need no quoting anywhere in a command.
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def tidy(value: float) -> float:
    """Drop binary noise (0.30000000000000004 -> 0.3) that lattice arithmetic leaves."""
    return float(f"{value:.15g}")


_SCALARS = (str, int, float, bool)  # a categorical's choices: hashable


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(value: Any, name: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise SpaceError(f"{name} must be a finite number, got {value!r}", name)
    return value


def _evenly(low: float, high: float, points: int, scale: str) -> list[float]:
    if points <= 1:
        return [low]
    if scale == LOG:
        a, b = math.log10(low), math.log10(high)
        values = [10 ** (a + i * (b - a) / (points - 1)) for i in range(points)]
    else:
        values = [low + i * (high - low) / (points - 1) for i in range(points)]
    values[0], values[-1] = low, high
    return values


def _unique(values: Sequence[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


@dataclass(frozen=True)
class FloatDimension:
    name: str
    low: float
    high: float
    scale: str = LINEAR
    step: float | None = None
    default: float | None = None

    def __post_init__(self) -> None:
        low = _check_number(self.low, "low")
        high = _check_number(self.high, "high")
        if self.scale not in SCALES:
            raise SpaceError(f"scale must be linear or log, got {self.scale!r}", "scale")
        if not low < high:
            raise SpaceError(f"low ({low}) must be less than high ({high})", "low")
        if self.scale == LOG and low <= 0:
            raise SpaceError(f"a log-scale dimension needs low > 0, got {low}", "low")
        if self.step is not None:
            step = _check_number(self.step, "step")
            if self.scale == LOG:
                raise SpaceError("step is only allowed with scale: linear", "step")
            if step <= 0 or step > high - low:
                raise SpaceError(f"step must be in (0, high - low], got {step}", "step")
        if self.default is not None:
            _check_number(self.default, "default")
            if not self.contains(self.default):
                raise SpaceError(f"default {self.default!r} is not in the dimension", "default")
        if self.scale == LOG:  # from_unit runs for every proposal
            object.__setattr__(self, "_log_span", (math.log(low), math.log(high) - math.log(low)))

    @property
    def kind(self) -> str:
        return "float"

    @property
    def _last_k(self) -> int:
        assert self.step is not None
        return int(math.floor((self.high - self.low) / self.step + 1e-9))

    def _on_lattice(self, k: int) -> float:
        assert self.step is not None
        return tidy(self.low + k * self.step)

    def cardinality(self) -> int | None:
        return None if self.step is None else self._last_k + 1

    def values(self) -> list[float] | None:
        """Every value of a finite dimension, None when continuous."""
        return None if self.step is None else [self._on_lattice(k) for k in range(self._last_k + 1)]

    def contains(self, value: Any) -> bool:
        if not _is_number(value) or not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-6

    def from_unit(self, u: float) -> float:
        if self.step is not None:
            return self._on_lattice(min(int(u * (self._last_k + 1)), self._last_k))
        if self.scale == LOG:
            a, width = self._log_span  # type: ignore[attr-defined]
            return min(max(math.exp(a + u * width), self.low), self.high)
        return self.low + u * (self.high - self.low)

    def grid(self, points: int) -> list[float]:
        values = _evenly(self.low, self.high, points, self.scale)
        if self.step is None:
            return [tidy(v) for v in values]
        last = self._last_k
        return _unique([self._on_lattice(min(round((v - self.low) / self.step), last)) for v in values])

    def to_spec(self) -> dict[str, Any]:
        return _spec(self, low=self.low, high=self.high, scale=self.scale, step=self.step)


@dataclass(frozen=True)
class IntDimension:
    name: str
    low: int
    high: int
    scale: str = LINEAR
    step: int = 1
    default: int | None = None

    def __post_init__(self) -> None:
        for key in ("low", "high", "step"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SpaceError(f"{key} must be an integer, got {value!r}", key)
        if self.scale not in SCALES:
            raise SpaceError(f"scale must be linear or log, got {self.scale!r}", "scale")
        if not self.low <= self.high:
            raise SpaceError(f"low ({self.low}) must not exceed high ({self.high})", "low")
        if self.scale == LOG and self.low < 1:
            raise SpaceError(f"a log-scale int dimension needs low >= 1, got {self.low}", "low")
        if self.step < 1:
            raise SpaceError(f"step must be a positive integer, got {self.step}", "step")
        if self.step != 1 and self.scale == LOG:
            raise SpaceError("step is only allowed with scale: linear", "step")
        if self.default is not None and not self.contains(self.default):
            raise SpaceError(f"default {self.default!r} is not in the dimension", "default")

    @property
    def kind(self) -> str:
        return "int"

    def cardinality(self) -> int:
        return (self.high - self.low) // self.step + 1

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def _snap(self, value: float) -> int:
        k = min(max(round((value - self.low) / self.step), 0), self.cardinality() - 1)
        return self.low + k * self.step

    def from_unit(self, u: float) -> int:
        if self.scale == LOG:
            # Log-uniform over [low-0.5, high+0.5] so both ends get their share after rounding.
            a, b = math.log(self.low - 0.5), math.log(self.high + 0.5)
            return self._snap(math.exp(a + u * (b - a)))
        n = self.cardinality()
        return self.low + min(int(u * n), n - 1) * self.step

    def grid(self, points: int) -> list[int]:
        return _unique([self._snap(v) for v in _evenly(self.low, self.high, points, self.scale)])

    def to_spec(self) -> dict[str, Any]:
        return _spec(self, low=self.low, high=self.high, scale=self.scale, step=None if self.step == 1 else self.step)


@dataclass(frozen=True)
class CategoricalDimension:
    name: str
    choices: tuple[Scalar, ...]
    default: Scalar | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.choices, tuple) or not self.choices:
            raise SpaceError("choices must be a non-empty list", "choices")
        keys = []
        for choice in self.choices:
            if not isinstance(choice, (str, int, float, bool)):
                raise SpaceError(f"choices must be scalars (str, int, float, bool), got {choice!r}", "choices")
            keys.append((type(choice), choice))
        if len(set(keys)) != len(keys):
            raise SpaceError("choices must be unique", "choices")
        # contains() by hashing (each trial of a resumed study is checked): none when a choice is NaN, equal to nothing.
        nan = any(isinstance(c, float) and math.isnan(c) for c in self.choices)
        object.__setattr__(self, "_keys", None if nan else frozenset(keys))
        if self.default is not None and not self.contains(self.default):
            raise SpaceError(f"default {self.default!r} is not one of the choices", "default")

    @property
    def kind(self) -> str:
        return "categorical"

    def cardinality(self) -> int:
        return len(self.choices)

    def values(self) -> list[Scalar]:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        keys = self._keys  # type: ignore[attr-defined]
        if keys is not None and type(value) in _SCALARS:
            return (type(value), value) in keys
        return any(type(c) is type(value) and c == value for c in self.choices)

    def from_unit(self, u: float) -> Scalar:
        n = len(self.choices)
        return self.choices[min(int(u * n), n - 1)]

    def grid(self, points: int) -> list[Scalar]:
        return list(self.choices)

    def to_spec(self) -> dict[str, Any]:
        return _spec(self, choices=list(self.choices))


Dimension = Union[FloatDimension, IntDimension, CategoricalDimension]


def _spec(dim: Dimension, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": dim.kind}
    spec.update({k: v for k, v in fields.items() if v is not None and not (k == "scale" and v == LINEAR)})
    if dim.default is not None:
        spec["default"] = dim.default
    return spec


def dimension_from_spec(name: str, spec: Mapping[str, Any]) -> Dimension:
    """Build a dimension from its canonical mapping (`{type: float, low: .., high: ..}`)."""
    fields = {k: v for k, v in spec.items() if k != "type"}
    kind = spec.get("type")
    try:
        if kind == "float":
            return FloatDimension(name, **fields)
        if kind == "int":
            return IntDimension(name, **fields)
        if kind == "categorical":
            choices = fields.pop("choices", None)
            if not isinstance(choices, list):
                raise SpaceError("choices must be a non-empty list", "choices")
            return CategoricalDimension(name, tuple(choices), **fields)
    except TypeError as exc:  # unexpected keyword
        raise SpaceError(str(exc).replace("__init__() ", "")) from None
    raise SpaceError(f"type must be float, int or categorical, got {kind!r}", "type")


def _column_fits(dim: Dimension, values: list[Any]) -> bool:
    """Whether `dim.contains` holds for every one of `values` (TypeError for an unhashable one)."""
    types = set(map(type, values))
    if not types:
        return True
    if isinstance(dim, FloatDimension) and dim.step is None and types <= {float, int}:
        # min/max mistake NaN for a number in range: a value read from JSON is never NaN, but say no to one.
        return dim.low <= min(values) and max(values) <= dim.high and not any(map(math.isnan, values))
    if isinstance(dim, IntDimension) and dim.step == 1 and types == {int}:
        return dim.low <= min(values) and max(values) <= dim.high
    # By (type, value), so that True, 1 and 1.0 are each checked: few distinct values in a finite dimension.
    return all(dim.contains(v) for _, v in set(zip(map(type, values), values)))


# Above this many raw combinations a conditional or constrained space's size is not
# counted exactly, and samplers never list what is left of it: listing is O(size).
ENUMERATION_LIMIT = 200_000


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, so True and 1 stay distinct."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class SearchSpace:
    """Searched dimensions in declared order, plus constants passed to every trial.

    `conditions` makes a dimension active only for some values of others
    (SPEC §7): {"momentum": {"optimizer": ("sgd",)}}. An inactive dimension is
    absent from the parameters. `constraints` must all hold for a parameter set
    to be run.
    """

    dimensions: tuple[Dimension, ...]
    constants: Mapping[str, Any] = field(default_factory=dict)
    conditions: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise SpaceError("the search space needs at least one searched dimension")
        names = [d.name for d in self.dimensions] + list(self.constants)
        if len(set(names)) != len(names):
            raise SpaceError("parameter names must be unique")
        object.__setattr__(self, "_names", tuple(d.name for d in self.dimensions))
        object.__setattr__(self, "_order", self._check_conditions())
        # Samplers ask for it before every proposal; the dimensions never change.
        object.__setattr__(self, "_cardinality", self._count())
        object.__setattr__(self, "_known", frozenset(names))
        # The orders of names seen in parameter sets that name exactly this space's parameters (see problem).
        object.__setattr__(self, "_fitting_names", set())

    def _check_conditions(self) -> tuple[Dimension, ...]:
        """The dimensions with every `when` parent before its children; SpaceError on a bad
        reference or a cycle."""
        by_name = {d.name: d for d in self.dimensions}
        for name, when in self.conditions.items():
            if name not in by_name:
                raise SpaceError(f"condition for {name!r}, which is not a searched dimension", name)
            for parent, allowed in when.items():
                if parent == name or parent not in by_name:
                    raise SpaceError(f"{name}: when names {parent!r}, which is not another searched dimension", name)
                for value in allowed:
                    if not by_name[parent].contains(value):
                        raise SpaceError(f"{name}: when {parent} is {value!r}, which {parent} can never be", name)
        order: list[Dimension] = []
        placed: set[str] = set()
        while len(order) < len(self.dimensions):
            ready = [
                d for d in self.dimensions
                if d.name not in placed and set(self.conditions.get(d.name, {})) <= placed
            ]
            if not ready:
                cycle = sorted(d.name for d in self.dimensions if d.name not in placed)
                raise SpaceError(f"the when conditions of {', '.join(cycle)} depend on each other in a cycle", cycle[0])
            for dim in ready:
                order.append(dim)
                placed.add(dim.name)
        return tuple(order)

    def __iter__(self) -> Iterator[Dimension]:
        return iter(self.dimensions)

    def __len__(self) -> int:
        return len(self.dimensions)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def cardinality(self) -> int | None:
        """Number of distinct runnable parameter sets, or None when a dimension is continuous."""
        return self._cardinality  # type: ignore[attr-defined]

    def raw_size(self) -> int | None:
        """Combinations of every dimension's values, before conditions and constraints; None when continuous."""
        total = 1
        for dim in self.dimensions:
            size = dim.cardinality()
            if size is None:
                return None
            total *= size
        return total

    def is_enumerable(self) -> bool:
        """Finite and small enough (ENUMERATION_LIMIT) to list every parameter set."""
        size = self.raw_size()
        return size is not None and size <= ENUMERATION_LIMIT

    def cardinality_is_exact(self) -> bool:
        """Whether `cardinality()` counts the runnable sets, rather than bounding them from above."""
        return self.raw_size() is not None and (not (self.conditions or self.constraints) or self.is_enumerable())

    def _count(self) -> int | None:
        total = self.raw_size()
        if total is None or not (self.conditions or self.constraints) or total > ENUMERATION_LIMIT:
            return total  # conditional or constrained and huge: an upper bound, which only delays "exhausted"
        return sum(1 for params in self.enumerate() if self.feasible(params))

    def enumerate(self, values_per_dimension: list[list[Any]] | None = None) -> Iterator[dict[str, Any]]:
        """Cartesian product in declared order, first dimension slowest (all values by default).

        Only active combinations, each once: combinations that differ only in
        inactive dimensions are the same parameter set, and the first of them in
        product order is the one whose inactive dimensions all hold their first
        value, so that one is kept. Lazy, in constant memory: a grid of a
        million points is walked, never listed.
        """
        columns = values_per_dimension or [d.values() for d in self.dimensions]
        if any(column is None for column in columns):
            raise SpaceError("cannot enumerate a continuous dimension")
        names = self.names
        firsts = {name: column[0] for name, column in zip(names, columns)}  # type: ignore[index]
        for combo in itertools.product(*columns):  # type: ignore[arg-type]
            params = dict(zip(names, combo))
            if self.conditions:
                params = self.active(params)
                if len(params) < len(names) and any(
                    name not in params and not _same(value, firsts[name]) for name, value in zip(names, combo)
                ):
                    continue  # the same parameter set as an earlier combination
            yield self.with_constants(params)

    def active(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters without the dimensions their `when` conditions switch off (in place)."""
        for dim in self._order:  # type: ignore[attr-defined]
            when = self.conditions.get(dim.name)
            if when and not all(
                parent in params and any(_same(params[parent], v) for v in allowed) for parent, allowed in when.items()
            ):
                params.pop(dim.name, None)
        return params

    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        when = self.conditions.get(name)
        return not when or all(
            parent in params and any(_same(params[parent], v) for v in allowed) for parent, allowed in when.items()
        )

    def feasible(self, params: Mapping[str, Any]) -> bool:
        """Whether every constraint holds; one that cannot be evaluated (say, a division by
        zero for these values) counts as violated, so the parameter set never runs."""
        try:
            return all(c.holds(params) for c in self.constraints)
        except ConstraintError:
            return False

    def key(self, params: Mapping[str, Any]) -> tuple:
        """A hashable identity of the searched values, for duplicate detection.

        Types are part of it so that True and 1 stay distinct; built with map()
        because it runs twice per trial on the hot path.
        """
        values = tuple(map(params.get, self._names))
        return values + tuple(map(type, values))

    def keys(self, params_sets: Sequence[Mapping[str, Any]]) -> list[tuple]:
        """`key` of each of `params_sets`, built a column at a time: the 100,000 keys of a resumed study's
        history in 0.07-0.10 s, where `key` for each took 0.11-0.15 s (issue 18)."""
        columns = [[params.get(name) for params in params_sets] for name in self._names]  # type: ignore[attr-defined]
        return list(zip(*columns, *(map(type, column) for column in columns)))

    def with_constants(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.constants:
            params.update(self.constants)
        return params

    def from_unit(self, units: Sequence[float]) -> dict[str, Any]:
        params = {d.name: d.from_unit(u) for d, u in zip(self.dimensions, units)}
        if self.conditions:
            params = self.active(params)
        return self.with_constants(params)

    def contains(self, params: Mapping[str, Any]) -> bool:
        """Every active dimension holds one of its values and every inactive one is absent."""
        if not self.conditions:
            return all(d.contains(params.get(d.name)) for d in self.dimensions)
        for dim in self._order:  # type: ignore[attr-defined]
            if self.is_active(dim.name, params):
                if not dim.contains(params.get(dim.name)):
                    return False
            elif dim.name in params:
                return False
        return True

    def problem(self, params: Mapping[str, Any]) -> str | None:
        """Why `params` is not a runnable parameter set of this space, in words; None when it is.

        The check for parameters read back from disk (a journal on --resume):
        every searched value in its dimension (`contains`), inactive ones
        absent, constants as declared, nothing else, every constraint holding.
        """
        if not self.conditions and self._plainly_fits(params):
            return None
        known = set(self._names) | set(self.constants)  # type: ignore[attr-defined]
        unknown = next((name for name in params if name not in known), None)
        if unknown is not None:
            return f"{unknown!r} is not a parameter of this study"
        for name, value in self.constants.items():
            if name not in params or not _same(params[name], value):
                return f"{name}={params.get(name)!r}, but the study's constant is {name}={value!r}"
        for dim in self._order:  # type: ignore[attr-defined]
            if not self.is_active(dim.name, params):
                if dim.name in params:
                    return f"{dim.name} is set, but its when: condition does not hold"
            elif dim.name not in params:
                return f"{dim.name} is missing"
            elif not dim.contains(params[dim.name]):
                return f"{dim.name}={params[dim.name]!r} is not in the search space"
        for constraint in self.constraints:
            try:
                holds = constraint.holds(params)
            except ConstraintError:
                holds = False
            if not holds:
                return f"the constraint {constraint.text!r} does not hold"
        return None

    def _plainly_fits(self, params: Mapping[str, Any]) -> bool:
        """Whether `params` fits this (unconditional) space, with its names checked once per order they
        come in (all of a resumed study's trials have the same): for the 100,000 trials of a resumed
        study, 0.15 s where problem's checks took 0.45 (issue 18). False: problem says what is wrong."""
        shape = tuple(params)
        if shape not in self._fitting_names:  # type: ignore[attr-defined]
            if len(shape) != len(self._known) or not self._known.issuperset(shape):  # type: ignore[attr-defined]
                return False
            self._fitting_names.add(shape)  # type: ignore[attr-defined]
        for name, value in self.constants.items():  # loops, not all(): a generator costs more than a check
            if not _same(params[name], value):
                return False
        for dim in self.dimensions:
            if not dim.contains(params[dim.name]):
                return False
        return not self.constraints or self.feasible(params)

    def all_fit(self, params_sets: Sequence[Mapping[str, Any]]) -> bool:
        """Whether `problem` finds nothing wrong with any of `params_sets`, checked a column at a time.

        For the history of a resumed study (100,000 trials): each dimension's values together (a
        continuous one by its least and greatest value, any other by its distinct values), 0.10 s
        where `problem` for each trial took 0.20-0.25 s (issue 18). False says only that some set
        may not fit: `problem`, set by set, then names the first that does not.
        """
        if self.conditions:
            return all(self.problem(params) is None for params in params_sets)
        # Every name looked up below (a KeyError if one is missing) and no more names than that: exactly these.
        if set(map(len, params_sets)) - {len(self._known)}:  # type: ignore[attr-defined]
            return False
        try:
            for name, value in self.constants.items():
                column = list(map(operator.itemgetter(name), params_sets))
                if not all(_same(v, value) for _, v in set(zip(map(type, column), column))):
                    return False
            for dim in self.dimensions:
                if not _column_fits(dim, list(map(operator.itemgetter(dim.name), params_sets))):
                    return False
        except (KeyError, TypeError):  # a name missing, an unhashable value (a list): problem names it
            return False
        return not self.constraints or all(map(self.feasible, params_sets))

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        for dim in self.dimensions:
            spec[dim.name] = dim.to_spec()
            when = self.conditions.get(dim.name)
            if when:
                spec[dim.name]["when"] = {p: v[0] if len(v) == 1 else list(v) for p, v in when.items()}
        spec.update(self.constants)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SearchSpace:
        """Inverse of `to_spec`: mappings are dimensions (with their `when`), other values constants."""
        dims = []
        constants = {}
        conditions: dict[str, dict[str, tuple[Any, ...]]] = {}
        for name, value in spec.items():
            if isinstance(value, Mapping):
                fields = dict(value)
                when = fields.pop("when", None)
                if when is not None:
                    if not isinstance(when, Mapping):
                        raise SpaceError("when must be a mapping of parameters to values", "when")
                    conditions[name] = {str(p): tuple(v) if isinstance(v, list) else (v,) for p, v in when.items()}
                dims.append(dimension_from_spec(name, fields))
            else:
                constants[name] = value
        return cls(tuple(dims), constants, conditions)
