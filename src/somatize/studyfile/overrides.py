"""`--set KEY=VALUE`: replace one value of the study document before it is validated (SPEC §5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .problems import Problems
from .yamlnodes import Path, YamlProblems, compose_document


class OverrideError(ValueError):
    """A --set option that cannot be applied; the message is shown after `--set KEY=VALUE: `."""


def parse_value(raw: str) -> Any:
    """The VALUE part read as YAML, with the same rules (and limits) as the study file."""
    try:
        document = compose_document(raw)
    except YamlProblems as exc:
        raise OverrideError(f"cannot read the value as YAML: {exc.problems[0].message}") from None
    if document.problems:
        raise OverrideError(f"cannot read the value as YAML: {document.problems[0].message}")
    return document.data


def split_override(option: str) -> tuple[str, list[str], Any]:
    """`a.b=1` -> ("a.b", ["a", "b"], 1)."""
    key, sep, raw = option.partition("=")
    key = key.strip()
    if not sep:
        raise OverrideError("expected KEY=VALUE, e.g. strategy.n_trials=20")
    parts = key.split(".")
    if not key or not all(parts):
        raise OverrideError("the key must be a dotted path such as strategy.n_trials")
    return key, parts, parse_value(raw)


def apply_overrides(data: dict[str, Any], options: Sequence[str], problems: Problems) -> None:
    """Apply each option in order; a bad one is reported and the others still apply."""
    for option in options:
        try:
            key, parts, value = split_override(option)
            for path in _assign(data, parts, value):
                problems.set_by_override(path, key)
        except OverrideError as exc:
            problems.add_line(f"--set {option}: {exc}")


def _assign(data: dict[str, Any], parts: list[str], value: Any) -> list[Path]:
    """Set the value, creating missing mappings; returns the paths that now come from the option."""
    node: Any = data
    path: Path = ()
    created: list[Path] = []
    for i, part in enumerate(parts):
        step = _step(node, part, path)
        path += (step,)
        if i == len(parts) - 1:
            node[step] = value
            return created + [path]
        if isinstance(node, dict) and node.get(step) is None:
            node[step] = {}
            created.append(path)
        node = node[step]
    return created  # unreachable: parts is never empty


def _step(node: Any, part: str, path: Path) -> str | int:
    where = ".".join(str(p) for p in path) or "the study file"
    if isinstance(node, dict):
        return part
    if isinstance(node, list):
        if part.isascii() and part.isdigit() and int(part) < len(node):
            return int(part)
        raise OverrideError(f"{where} is a list of {len(node)} items; {part!r} is not an index in it")
    raise OverrideError(f"{where} is not a mapping, so it has no key {part!r}")
