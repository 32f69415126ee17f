"""Constraints over parameters and metrics: small expressions parsed and evaluated safely (SPEC §7, §9).

`batch_size * layers <= 1024`, `optimizer == "sgd" or lr < 0.01`,
`activation in ["relu", "gelu"]`, `not (a > 2 and b < 1)`.

The text is parsed with Python's `ast` module (parsing only, no evaluation)
and the tree is checked against a short list of allowed nodes: names of
parameters, number/string/bool literals and lists of them, arithmetic,
comparisons, `in`, `and`/`or`/`not` and parentheses. Anything else (calls,
attributes, subscripts, lambdas, comprehensions) is rejected before the study
starts, and evaluation walks the checked tree itself, with a cap on powers so
`10 ** 10 ** 10` cannot hang it.

A constraint that names a metric (`latency_ms <= 50`) is an *outcome*
constraint: it is judged after the trial, on its metric values (`judge`), and
a model of feasibility learns from its `margin`, a number that is positive
when it holds and grows with the room left.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 1000  # characters; a constraint is a line, not a program
MAX_EXPONENT = 1024  # |b| in a ** b, beyond which the result is rejected rather than computed

_ARITHMETIC: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARISONS: dict[type, Any] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_SYMBOLS = {
    ast.Pow: "**", ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
}


class ConstraintError(ValueError):
    """A constraint that cannot be parsed, names an unknown parameter, or cannot be evaluated."""


@dataclass(frozen=True)
class Constraint:
    text: str
    tree: ast.expr = field(compare=False, repr=False)
    names: frozenset[str] = frozenset()
    metrics: frozenset[str] = frozenset()  # the names that are metrics: judged after the trial when any

    @property
    def on_outcome(self) -> bool:
        """Whether it names a metric, so it can only be judged once the trial has run."""
        return bool(self.metrics)

    def holds(self, params: Mapping[str, Any]) -> bool:
        """Whether the parameters satisfy it. A constraint naming an inactive (absent)
        parameter does not apply to that parameter set, so it holds."""
        if not self.names.issubset(params):
            return True
        return bool(_evaluate(self.tree, params))

    def judge(self, params: Mapping[str, Any], metrics: Mapping[str, float]) -> str | None:
        """None when a finished trial satisfies it, else why not (one line).

        A metric the trial did not report, or reported as NaN, violates it: a
        constraint that cannot be checked is not known to hold, and a trial is
        never reported as best on a promise. An inactive parameter makes it hold,
        as before a trial.
        """
        missing = sorted(m for m in self.metrics if not _finite(metrics.get(m)))
        if missing:
            return f"{self.text} (no value for {', '.join(missing)})"
        if not (self.names - self.metrics).issubset(params):
            return None
        try:
            return None if _evaluate(self.tree, {**params, **metrics}) else self.text
        except ConstraintError as exc:
            return f"{self.text} ({exc})"

    def margin(self, params: Mapping[str, Any], metrics: Mapping[str, float]) -> float | None:
        """How far from violation a finished trial is: > 0 inside, < 0 outside, None when it cannot tell.

        For `a <= b` it is b - a, for `a >= b` a - b; `and` takes the smallest
        margin, `or` the largest, `not` the negation; anything else (==, in, a
        bare truth value) counts ±1. The feasibility model fits a GP to it.
        """
        if any(not _finite(metrics.get(m)) for m in self.metrics):
            return None
        values = {**params, **metrics}
        if not self.names.issubset(values):
            return None
        try:
            found = _margin(self.tree, values)
        except ConstraintError:
            return None
        return found if math.isfinite(found) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _margin(node: ast.AST, values: Mapping[str, Any]) -> float:
    if isinstance(node, ast.BoolOp):
        margins = [_margin(v, values) for v in node.values]
        return min(margins) if isinstance(node.op, ast.And) else max(margins)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return -_margin(node.operand, values)
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        margins = []
        for op, comparator in zip(node.ops, node.comparators):
            right = _evaluate(comparator, values)
            margins.append(_pair_margin(op, left, right, node))
            left = right
        return min(margins)
    return 1.0 if _evaluate(node, values) else -1.0


def _pair_margin(op: ast.cmpop, left: Any, right: Any, node: ast.AST) -> float:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    if numeric and isinstance(op, (ast.Lt, ast.LtE)):
        return float(right) - float(left)
    if numeric and isinstance(op, (ast.Gt, ast.GtE)):
        return float(left) - float(right)
    try:
        return 1.0 if _COMPARISONS[type(op)](left, right) else -1.0
    except TypeError:
        raise ConstraintError(f"cannot compare {left!r} with {right!r} in {ast.unparse(node)!r}") from None


def parse_constraint(text: str, known: Iterable[str], metrics: Iterable[str] = ()) -> Constraint:
    """Parse and check one constraint over the `known` parameters and the declared `metrics`;
    ConstraintError says what is wrong, in one line."""
    if not isinstance(text, str) or not text.strip():
        raise ConstraintError("a constraint must be a non-empty expression such as 'batch * layers <= 1024'")
    if len(text) > MAX_TEXT:
        raise ConstraintError(f"a constraint must be at most {MAX_TEXT} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ConstraintError(f"cannot parse constraint {text!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ConstraintError(f"cannot parse constraint {text!r}") from None
    names: set[str] = set()
    try:
        _check(tree, names)
    except RecursionError:
        raise ConstraintError(f"constraint {text!r} is nested too deeply") from None
    except ConstraintError as exc:  # say which constraint: a file may refuse several for the same reason
        raise ConstraintError(f"constraint {text!r}: {exc}") from None
    known, metrics = set(known), set(metrics) - set(known)
    unknown = sorted(names - known - metrics)
    if unknown:
        listed = f"parameters: {', '.join(sorted(known))}"
        if metrics:
            listed += f"; metrics: {', '.join(sorted(metrics))}"
        hint = _did_you_mean(unknown[0], known | metrics)
        raise ConstraintError(
            f"constraint {text!r} names {', '.join(map(repr, unknown))}, not a parameter or a declared metric "
            f"({listed}; declare a metric under objectives: or metrics:){hint}"
        )
    return Constraint(text, tree, frozenset(names), frozenset(names & metrics))


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check(node: ast.AST, names: set[str]) -> None:
    if isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool)):
            raise ConstraintError(f"{node.value!r} is not allowed in a constraint")
    elif isinstance(node, (ast.List, ast.Tuple)):
        for item in node.elts:
            if not isinstance(item, (ast.Constant, ast.UnaryOp)):
                raise ConstraintError("lists in a constraint may hold only literal values")
            _check(item, names)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, names)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
        _check(node.operand, names)
    elif isinstance(node, ast.BinOp) and type(node.op) in _SYMBOLS:
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.Compare) and all(type(op) in _COMPARISONS for op in node.ops):
        _check(node.left, names)
        for comparator in node.comparators:
            _check(comparator, names)
    else:
        raise ConstraintError(f"{_describe(node)} is not allowed in a constraint")


def _describe(node: ast.AST) -> str:
    kinds = {
        ast.Call: "a function call",
        ast.Attribute: "attribute access",
        ast.Subscript: "indexing",
        ast.Lambda: "a lambda",
        ast.IfExp: "'x if c else y'",
    }
    return kinds.get(type(node), f"'{type(node).__name__}'")


def _evaluate(node: ast.AST, params: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return params[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(item, params) for item in node.elts]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_evaluate(value, params) for value in node.values)
        return any(_evaluate(value, params) for value in node.values)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, params)
        if isinstance(node.op, ast.Not):
            return not operand
        return _number(operand, node) * (-1 if isinstance(node.op, ast.USub) else 1)
    if isinstance(node, ast.BinOp):
        left, right = _number(_evaluate(node.left, params), node), _number(_evaluate(node.right, params), node)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        try:
            return _ARITHMETIC[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ConstraintError(f"division by zero in {ast.unparse(node)!r}") from None
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, params)
        for op, comparator in zip(node.ops, node.comparators):
            right = _evaluate(comparator, params)
            try:
                if not _COMPARISONS[type(op)](left, right):
                    return False
            except TypeError:
                raise ConstraintError(f"cannot compare {left!r} with {right!r} in {ast.unparse(node)!r}") from None
            left = right
        return True
    raise ConstraintError(f"{_describe(node)} is not allowed in a constraint")  # unreachable after _check


def _number(value: Any, node: ast.AST) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConstraintError(f"{value!r} is not a number in {ast.unparse(node)!r}")
    return value


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise ConstraintError(f"exponent {exponent!r} is too large (at most {MAX_EXPONENT})")
    try:
        result = float(base) ** float(exponent)
    except (OverflowError, ZeroDivisionError):
        raise ConstraintError(f"{base!r} ** {exponent!r} cannot be computed") from None
    if isinstance(result, complex) or not math.isfinite(result):
        raise ConstraintError(f"{base!r} ** {exponent!r} is not a finite real number")
    return result
