"""Constraints over parameters: small expressions parsed and evaluated safely (SPEC §7).

`batch_size * layers <= 1024`, `optimizer == "sgd" or lr < 0.01`,
`activation in ["relu", "gelu"]`, `not (a > 2 and b < 1)`.

The text is parsed with Python's `ast` module (parsing only, no evaluation)
and the tree is checked against a short list of allowed nodes: names of
parameters, number/string/bool literals and lists of them, arithmetic,
comparisons, `in`, `and`/`or`/`not` and parentheses. Anything else (calls,
attributes, subscripts, lambdas, comprehensions) is rejected before the study
starts, and evaluation walks the checked tree itself, with a cap on powers so
`10 ** 10 ** 10` cannot hang it.
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

    def holds(self, params: Mapping[str, Any]) -> bool:
        """Whether the parameters satisfy it. A constraint naming an inactive (absent)
        parameter does not apply to that parameter set, so it holds."""
        if not self.names.issubset(params):
            return True
        return bool(_evaluate(self.tree, params))


def parse_constraint(text: str, known: Iterable[str]) -> Constraint:
    """Parse and check one constraint; ConstraintError says what is wrong, in one line."""
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
    known = set(known)
    unknown = sorted(names - known)
    if unknown:
        raise ConstraintError(
            f"constraint {text!r} names {', '.join(map(repr, unknown))}, not a parameter "
            f"(parameters: {', '.join(sorted(known))})"
        )
    return Constraint(text, tree, frozenset(names))


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
