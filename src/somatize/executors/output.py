"""Metrics in trial output (SPEC §3): JSON-object lines and `name=value` lines.

A line that is a JSON object gives one metric per numeric member; an integer
member `step` marks the line as an intermediate report. A line
`name=value` or `name: value` gives one metric, but only for a declared
metric name, so log noise such as `epoch: 3` never becomes a metric.
NaN and infinities are kept as floats: the runner must be able to say
"primary metric was NaN" rather than silently dropping the value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

MAX_LINE_BYTES = 64 * 1024

# A plain decimal number or nan/inf; stricter than float(), which also takes "1_0".
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
_NAME_VALUE = re.compile(r"\s*(?P<name>[^\s=:{]+)\s*[=:]\s*(?P<value>.*?)\s*")


class ParsedMetric(NamedTuple):
    name: str
    value: float
    step: int | None = None


def parse_number(text: str) -> float | None:
    """The float a metric value stands for, or None when it is not a number."""
    if not _NUMBER.fullmatch(text):
        return None
    return float(text)  # 1e400 overflows to inf here, as intended


def numeric_value(value: Any) -> float | None:
    """A JSON member as a metric value: ints and floats, never bools or strings."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # a JSON integer too large for a float
        return math.copysign(math.inf, value)


def _json_step(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # 3.0 from writers without ints
        return int(value)
    return None


def _parse_json_object(text: str) -> list[ParsedMetric] | None:
    try:
        data = json.loads(text)  # accepts NaN, Infinity, -Infinity; 1e400 becomes inf
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    step = _json_step(data.get("step"))
    out = []
    for name, raw in data.items():
        value = numeric_value(raw)
        if name != "step" and value is not None:  # `step` is never a metric, even when malformed
            out.append(ParsedMetric(name, value, step))
    return out


def parse_metric_line(line: str, declared: Collection[str]) -> list[ParsedMetric]:
    """The metrics one line of trial output reports (an empty list for most lines)."""
    text = line.strip()
    if text.startswith("{"):
        return _parse_json_object(text) or []
    match = _NAME_VALUE.fullmatch(text)
    if match is None or match["name"] not in declared:
        return []
    value = parse_number(match["value"])
    return [] if value is None else [ParsedMetric(match["name"], value)]


def _candidate_pattern(declared: Iterable[str]) -> re.Pattern[bytes]:
    """Lines that may hold a metric; lets a C-speed scan skip megabytes of log noise."""
    names = b"|".join(re.escape(n.encode()) for n in sorted(declared, key=len, reverse=True))
    # A JSON object with a metric starts with `{"` and ends with `}`; `{'a': 1}` never parses.
    json_object = rb'\{[ \t\r]*".*\}[ \t\r\f\v]*$'
    name_value = rb"(?:" + names + rb")[ \t]*[=:].*$" if names else None
    alternatives = json_object if name_value is None else json_object + b"|" + name_value
    return re.compile(rb"^[ \t\r\f\v]*(?:" + alternatives + rb")", re.MULTILINE)


class MetricStream:
    """Reads trial output incrementally and yields the metrics of each complete line.

    Memory stays bounded: only the unfinished last line is kept, and a line
    longer than `max_line` bytes is dropped (it cannot be a sensible metric).
    """

    def __init__(self, declared: Collection[str], max_line: int = MAX_LINE_BYTES):
        self.declared = frozenset(declared)
        self.max_line = max_line
        self._candidates = _candidate_pattern(self.declared)
        self._markers = [b"{"] + [name.encode() for name in self.declared]
        self._partial = bytearray()
        self._skipping = False  # inside an over-long line: drop bytes up to its newline

    def feed(self, data: bytes | str) -> list[ParsedMetric]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        cut = data.rfind(b"\n")
        if cut < 0:
            self._hold(data)
            return []
        complete, rest = data[: cut + 1], data[cut + 1 :]
        if self._skipping:
            complete = complete[complete.find(b"\n") + 1 :]
            self._skipping = False
        elif self._partial:
            complete = bytes(self._partial) + complete
        self._partial.clear()
        records = self._scan(complete)
        self._hold(rest)
        return records

    def close(self) -> list[ParsedMetric]:
        """Metrics of a last line that had no newline."""
        tail = b"" if self._skipping else bytes(self._partial)
        self._partial.clear()
        self._skipping = False
        return self._scan(tail) if tail.strip() else []

    def _hold(self, data: bytes) -> None:
        if self._skipping:
            return
        self._partial += data
        if len(self._partial) > self.max_line:
            self._partial.clear()
            self._skipping = True

    def _scan(self, block: bytes) -> list[ParsedMetric]:
        records: list[ParsedMetric] = []
        if not any(marker in block for marker in self._markers):  # most log output: one fast scan
            return records
        for match in self._candidates.finditer(block):
            raw = match.group()
            if len(raw) <= self.max_line:
                records += parse_metric_line(raw.decode("utf-8", "replace"), self.declared)
        return records


# Explaining a captured output (`somatize validate --output-sample`) ------------

_MAX_NOTES_PER_METRIC = 5


def _shown(text: str, limit: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _describe(record: ParsedMetric, number: int) -> str:
    text = f"line {number}: {record.name} = {record.value!r}"
    if record.step is not None:
        text += f" (step {record.step})"
    if math.isnan(record.value):
        text += " (NaN: a trial whose primary metric is NaN fails)"
    return text


def _near_miss(line: str, declared: Collection[str], found: set[str]) -> str | None:
    """Why a line that mentions a declared metric gave no value for it, if it does."""
    text = line.strip()
    if text.startswith("{") and text.endswith("}") and _parse_json_object(text) is None:
        return "starts with '{' but is not a JSON object (single quotes? use json.dumps)"
    for name in declared:
        if name not in found and re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text):
            return f"mentions {name!r} but is not read (expected '{name}=0.8' or '{name}: 0.8')"
    return None


def explain_output(text: str, declared: Collection[str]) -> list[str]:
    """Human lines saying which metrics a captured trial output would give."""
    lines: list[str] = []
    seen: set[str] = set()
    notes, max_notes = 0, _MAX_NOTES_PER_METRIC * max(1, len(declared))
    for number, line in enumerate(text.splitlines(), start=1):
        records = parse_metric_line(line, declared)
        lines += [_describe(r, number) for r in records]
        found = {r.name for r in records}
        seen |= found
        note = _near_miss(line, declared, found)
        if note is not None:
            notes += 1
            if notes <= max_notes:
                lines.append(f"line {number}: {_shown(line)} {note}")
    if notes > max_notes:
        lines.append(f"... and {notes - max_notes} more lines like these")
    for name in declared:
        if name not in seen:
            lines.append(f"{name}: not found (lines like '{name}=0.8', '{name}: 0.8' or {{\"{name}\": 0.8}} are read)")
    return lines
