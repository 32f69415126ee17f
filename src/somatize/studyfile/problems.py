"""Collecting validation problems and pointing each at its YAML node or --set option."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .yamlnodes import Document, Path, PathKey, Position


class Problems:
    """Every problem found in one study file, rendered as FILE:LINE:COL: message lines."""

    def __init__(self, filename: str, document: Document):
        self.filename = filename
        self.document = document
        self._overrides: dict[Path, str] = {}  # path -> the --set KEY that replaced it
        self._found: list[tuple[tuple[int, int, int], str]] = []
        for problem in document.problems:
            self._add_line(
                (1, problem.position.line, problem.position.column), f"{self._at(problem.position)}: {problem.message}"
            )

    def __bool__(self) -> bool:
        return bool(self._found)

    def set_by_override(self, path: Path, key: str) -> None:
        """From now on `path` and everything under it come from `--set key=...`."""
        self._overrides[path] = key
        for table in (self.document.values, self.document.keys):
            for stale in [p for p in table if p[: len(path)] == path]:
                del table[stale]

    def add(self, path: Path, message: str, *, at_key: bool = False) -> None:
        order, place = self._locate(path, at_key)
        self._add_line(order, f"{place}: {message}")

    def location(self, path: Path) -> str:
        """Where the value at `path` came from: `FILE:LINE:COL`, or `--set KEY` for an override."""
        return self._locate(path, False)[1]

    def _locate(self, path: Path, at_key: bool) -> tuple[tuple[int, int, int], str]:
        for depth in range(len(path), -1, -1):
            prefix = path[:depth]
            if prefix in self._overrides:
                return (2, 0, 0), f"--set {self._overrides[prefix]}"
            position = self._position(prefix, at_key and depth == len(path))
            if position is not None:
                return (1, position.line, position.column), self._at(position)
        return (1, 1, 1), f"{self.filename}:1:1"  # an empty document has no nodes

    def add_line(self, line: str) -> None:
        """A problem that is already fully formatted (YAML syntax, a malformed --set)."""
        self._add_line((2, 0, 0), line)

    def _position(self, path: Path, at_key: bool) -> Position | None:
        if at_key and path in self.document.keys:
            return self.document.keys[path]
        return self.document.values.get(path)

    def _at(self, position: Position) -> str:
        return f"{self.filename}:{position.line}:{position.column}"

    def _add_line(self, order: tuple[int, int, int], line: str) -> None:
        line = one_line(line)
        if all(line != seen for _, seen in self._found):
            self._found.append((order, line))

    def lines(self) -> list[str]:
        """File problems in document order, then those from --set, each once."""
        return [line for _, line in sorted(self._found, key=lambda item: item[0])]


@dataclass(frozen=True)
class Where:
    """A path in the study document together with the problem list it reports to."""

    problems: Problems
    path: Path = ()

    def __truediv__(self, key: PathKey) -> Where:
        return Where(self.problems, self.path + (key,))

    @property
    def name(self) -> str:
        return ".".join(str(p) for p in self.path) or "the study file"

    def error(self, message: str) -> None:
        self.problems.add(self.path, message)

    def key_error(self, message: str) -> None:
        self.problems.add(self.path, message, at_key=True)


def one_line(text: str) -> str:
    """Problems are one line each: a newline in a key or a --set option must not split one."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, for `got ...` in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
