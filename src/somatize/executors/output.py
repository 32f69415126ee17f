"""Metrics in trial output (SPEC §3): JSON-object lines and `name=value` lines.

A line that is a JSON object gives one metric per numeric member; an integer
member `step` marks the line as an intermediate report. A line
`name=value` or `name: value` gives one metric, but only for a declared
metric name, so log noise such as `epoch: 3` never becomes a metric. The
value is a plain number, or one wrapped in the repr Python prints for a
numpy or torch scalar (`np.float64(0.91)`, `tensor(0.9100, device='cuda:0')`):
`print(f"{acc=}")` writes that under numpy 2 (issue 15.6).
NaN and infinities are kept as floats: the runner must be able to say
"primary metric was NaN" rather than silently dropping the value.

A line that names a declared metric but gives no value for it is remembered
(the first such line per metric), so a trial that lacks its primary metric
can say which line named it and why it was not read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

MAX_LINE_BYTES = 64 * 1024

# A plain decimal number or nan/inf; stricter than float(), which also takes "1_0".
_NUMBER_TEXT = r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf|infinity))"
_NUMBER = re.compile(_NUMBER_TEXT)
# The reprs of numpy and torch scalars around such a number: np.float64(0.91), np.longdouble('0.1'),
# tensor(0.9100), tensor(2., device='cuda:0', dtype=torch.float64, requires_grad=True, grad_fn=<AddBackward0>).
_NUMPY_SCALAR = rf"(?:np|numpy)\.(?:float(?:16|32|64|96|128)|longdouble|u?int(?:8|16|32|64))\(\s*(?P<q>'?)(?P<np>{_NUMBER_TEXT})(?P=q)\s*\)"
_TORCH_ARGUMENT = r",\s*[A-Za-z_]\w*\s*=\s*(?:'[^']*'|\"[^\"]*\"|<[^<>]*>|[\w.]+)\s*"
_TORCH_SCALAR = rf"tensor\(\s*(?P<t>{_NUMBER_TEXT})\s*(?:{_TORCH_ARGUMENT})*\)"
_WRAPPED = re.compile(rf"{_NUMPY_SCALAR}|{_TORCH_SCALAR}")
_NAME_VALUE = re.compile(r"\s*(?P<name>[^\s=:{]+)\s*[=:]\s*(?P<value>.*?)\s*")


class ParsedMetric(NamedTuple):
    name: str
    value: float
    step: int | None = None


def parse_number(text: str) -> float | None:
    """The float a metric value stands for, or None when it is not a number.

    A plain number, or one wrapped in a numpy or torch scalar's repr.
    """
    if _NUMBER.fullmatch(text):
        return float(text)  # 1e400 overflows to inf here, as intended
    wrapped = _WRAPPED.fullmatch(text)
    if wrapped is None:
        return None
    return float(wrapped["np"] if wrapped["np"] is not None else wrapped["t"])


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


# Why a line that names a metric gives no value for it ------------------------------


def _mention(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")


def _mention_line(name: str) -> re.Pattern[bytes]:
    """A whole line of output that names `name` as a word, as _mention does for text."""
    return re.compile(rb"^.*(?<![\w.])" + re.escape(name.encode()) + rb"(?!\w).*$", re.MULTILINE)


def _value_problem(name: str, value: str) -> str:
    if not value:
        return "nothing follows the name"
    if value.startswith(("[", "tensor([", "array(", "np.array(")):
        return "the value is an array, not one number (print float(x) or x.item())"
    number = _NUMBER.match(value)
    if number and number.end() < len(value):
        return f"text follows the number ({_shown(value[number.end():], 20)}); print only {name}=<number>"
    if "(" in value and value.endswith(")"):
        return f"{_shown(value, 40)} is not a number nor a numpy/torch scalar's repr (print float(x))"
    return f"{_shown(value, 40)} is not a number"


def _json_problem(text: str, name: str) -> str | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        if text.endswith("}"):
            return "it starts with '{' but is not a JSON object (single quotes? use json.dumps)"
        return "it starts with '{' but is not a JSON object on one line"
    if not isinstance(data, dict):
        return None
    if name not in data:
        return f"it is a JSON object without a top-level member {name!r}"
    member = data[name]
    if numeric_value(member) is not None:
        return None
    if isinstance(member, str):
        return f"its value {_shown(member, 30)} is a string; write the number unquoted"
    return f"its value {_shown(json.dumps(member), 30)} is not a number"


def why_unread(line: str, name: str) -> str | None:
    """Why a line that names declared metric `name` gives no value for it (None: it gives one, or does not name it)."""
    text = line.strip()
    if name not in text or not _mention(name).search(text):
        return None
    if text.startswith("{"):
        problem = _json_problem(text, name)
    else:
        match = _NAME_VALUE.fullmatch(text)
        if match is not None and match["name"] == name:
            problem = None if parse_number(match["value"]) is not None else _value_problem(name, match["value"])
        else:
            problem = f"expected '{name}=0.8' or '{name}: 0.8' on a line of its own, or a JSON object"
    return None if problem is None else f"names {name!r} but is not read: {problem}"


class MetricStream:
    """Reads trial output incrementally and yields the metrics of each complete line.

    Memory stays bounded: only the unfinished last line is kept, and a line
    longer than `max_line` bytes is dropped (it cannot be a sensible metric).
    For each declared metric not read yet, the first line naming it without a
    value for it is kept in `unread` (as a sentence naming `source` and the line).
    """

    def __init__(self, declared: Collection[str], max_line: int = MAX_LINE_BYTES, source: str = "output"):
        self.declared = frozenset(declared)
        self.max_line = max_line
        self.source = source
        self.unread: dict[str, str] = {}
        self._read: set[str] = set()
        self._lines = 0  # complete lines before the current block
        self._candidates = _candidate_pattern(self.declared)
        self._mentions = {name: _mention_line(name) for name in self.declared}
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
            self._lines += 1  # the over-long line
        elif self._partial:
            complete = bytes(self._partial) + complete
        self._partial.clear()
        records = self._scan(complete)
        self._lines += complete.count(b"\n")
        self._hold(rest)
        return records

    def close(self) -> list[ParsedMetric]:
        """Metrics of a last line that had no newline."""
        tail = b"" if self._skipping else bytes(self._partial)
        self._partial.clear()
        self._skipping = False
        return self._scan(tail) if tail.strip() else []

    def resync(self, where: str) -> None:
        """Go on reading from another place in the stream (past a skipped middle): drop bytes up to a newline.

        Line numbers count again from there, and `where` says from where.
        """
        self._partial.clear()
        self._skipping = True
        self._lines = 0
        self.source = f"{self.source} ({where})"

    def unread_for(self, names: Iterable[str]) -> dict[str, str]:
        """`unread` for the names among `names` that no line gave a value for."""
        return {name: self.unread[name] for name in names if name in self.unread and name not in self._read}

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
        self._read.update(record.name for record in records)
        self._look_for_unread(block)
        return records

    def _look_for_unread(self, block: bytes) -> None:
        """Remember the first line naming a still missing metric; stops looking once each is read or explained."""
        for name in self.declared:
            if name in self._read or name in self.unread or name.encode() not in block:
                continue
            for match in self._mentions[name].finditer(block):
                raw = match.group()
                if len(raw) > self.max_line:
                    continue
                line = raw.decode("utf-8", "replace")
                reason = why_unread(line, name)
                if reason is not None:
                    number = self._lines + block.count(b"\n", 0, match.start()) + 1
                    self.unread[name] = f"{self.source} line {number} {_shown(line)} {reason}"
                    break


# Explaining a captured output (`somatize validate --output-sample`) ------------

_MAX_NOTES_PER_METRIC = 5
_MAX_VALUES_PER_METRIC = 20  # a captured log of a long run reports thousands


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
    """Why a line that names a declared metric gave no value for it, if it does."""
    for name in declared:
        if name not in found:
            reason = why_unread(line, name)
            if reason is not None:
                return reason
    return None


def explain_output(text: str, declared: Collection[str]) -> list[str]:
    """Human lines saying which metrics a captured trial output would give (bounded for a long output)."""
    lines: list[str] = []
    values: dict[str, int] = {}  # metric -> values read
    last: dict[str, str] = {}  # metric -> its last value, described, past the ones listed
    notes, max_notes = 0, _MAX_NOTES_PER_METRIC * max(1, len(declared))
    for number, line in enumerate(text.splitlines(), start=1):
        records = parse_metric_line(line, declared)
        for record in records:
            values[record.name] = values.get(record.name, 0) + 1
            if values[record.name] <= _MAX_VALUES_PER_METRIC:
                lines.append(_describe(record, number))
            else:
                last[record.name] = _describe(record, number)
        note = _near_miss(line, declared, {r.name for r in records})
        if note is not None:
            notes += 1
            if notes <= max_notes:
                lines.append(f"line {number}: {_shown(line)} {note}")
    if notes > max_notes:
        lines.append(f"... and {notes - max_notes} more lines like these")
    for name, described in last.items():
        lines.append(f"... and {values[name] - _MAX_VALUES_PER_METRIC} more values of {name}, the last {described}")
    for name in declared:
        if name not in values:
            lines.append(f"{name}: not found (lines like '{name}=0.8', '{name}: 0.8' or {{\"{name}\": 0.8}} are read)")
    return lines
