"""A results file's trials read all at once, when every one is as somatize writes it (issue 18).

`run --resume` of a 100,000-trial study read its trial lines one by one: each
decoded (orjson through fastjson's guard), built by Trial.from_dict with its
metric records and timestamps, and checked by check_trial; 1.2-1.7 s of a
resume. Here the trials' part of the file is read in one piece, split into
lines and decoded by orjson with no Python between two lines, the records
are checked a column at a time (one field of every trial together, by
C-level maps: the checks of from_dict and check_trial, for the values somatize
writes), and each record becomes its trial's __dict__ (study.adopt_trials),
its metrics and start time parsed only when read.

Anything else returns None, and the caller reads the lines one by one as
before, so every error names its line with the message it always had: a line
not in the writer's shape, text that is not UTF-8 or not ASCII, JSON orjson
refuses, a record with a key or a value the fast checks do not take (a lease,
a dict of truncated output, an integer value, a NaN written as "nan", ...).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from ..study import Trial, adopt_trials
from . import fastjson
from .fastjson import orjson  # None without it: then the lines one by one
from .results import TRIAL_INDENT

# After the last trial line (storage/results.py results_tail).
_CLOSING = b"\n  ]\n}\n"
_INDENT = TRIAL_INDENT + "{"  # how each trial line starts: the writer's indent and the object's brace
_SEPARATOR = ",\n" + TRIAL_INDENT  # between two trial lines' objects
# The keys a record may have on this path, and those it must have (the writer writes them all, always).
_REQUIRED = frozenset({"id", "number", "state", "params", "values", "metrics", "started_at"})
_ALLOWED = _REQUIRED | {
    "duration_ms",
    "error",
    "pruned_step",
    "reason",
    "trial_seed",
    "attempts",
    "log_dir",
    "slot",
    "feasible",
}
_METRIC_KEYS = ("name", "value", "step", "timestamp")  # a metric record's, in the writer's order
_INT_OR_NONE = frozenset({int, type(None)})
_STR_OR_NONE = frozenset({str, type(None)})
_BOOL_OR_NONE = frozenset({bool, type(None)})
# Whether each optional field's values are of the types check_trial passes as they are (pruned_step: any).
_OPTIONAL_TYPES = {
    "duration_ms": _INT_OR_NONE,
    "trial_seed": _INT_OR_NONE,
    "error": _STR_OR_NONE,
    "reason": _STR_OR_NONE,
    "log_dir": _STR_OR_NONE,
    "slot": _STR_OR_NONE,
    "feasible": _BOOL_OR_NONE,
}
_STATES = frozenset({"running", "completed", "pruned", "failed", "stale"})  # TrialState's values


def read_plain(handle: IO[bytes]) -> tuple[list[Trial], list[str], list[str | None]] | None:
    """The trials `handle` holds from where it stands (a results file's first trial line) to its end, each
    trial's JSON object as the file holds it, and each one's log_dir; None when the file is not plainly as
    the writer leaves it (the caller then reads it a line at a time, which says what is wrong)."""
    if orjson is None:
        return None
    elements: list[str] = []
    records: list[Any] = []
    try:
        for piece in _pieces(handle):
            if piece is None:
                return None
            cut = _objects(piece)
            if cut is None:
                return None
            # A line at a time, by map: 0.20 s for the 100,000 lines, where one orjson call for the whole
            # array took 0.33 s (orjson 3.8, in the same process).
            decoded = list(map(orjson.loads, cut))
            runs = _long_runs(piece)
            if runs:
                _decode_as_json_does(cut, decoded, runs)
            elements += cut
            records += decoded
        plain = _plainly_valid(records)
    except (ValueError, RecursionError, TypeError, KeyError):  # JSONDecodeError, an unhashable state, ...
        return None
    if not plain:
        return None
    log_dirs = list(map(dict.get, records, itertools.repeat("log_dir")))
    return adopt_trials(records), elements, log_dirs


# Bytes read at a time: the text of the trials is in memory one piece at a time beside the lines cut from
# it (4 MiB: peak RSS of a 100,000-trial resume as when the lines were read one by one, where reading the
# 46 MB at once added 54 MiB to it).
_PIECE_BYTES = 4 * 2**20


def _pieces(handle: IO[bytes]) -> Iterator[bytes | None]:
    """The trial lines in pieces of whole lines, each as read but for the last one's closing of the
    document (which must be as the writer writes it); None for a file not so, or not ASCII (so UTF-8, and a
    byte's offset is its character's)."""
    carry = b""
    while True:
        data = handle.read(_PIECE_BYTES)
        if not data:
            if not carry.endswith(_CLOSING):
                yield None
                return
            yield carry[: -len(_CLOSING)] + b"\n"
            return
        data = carry + data
        end = data.rfind(b"\n", 0, len(data) - len(_CLOSING)) + 1  # the closing, whole, stays for the end
        if end <= 0:
            carry = data
            continue
        piece, carry = data[:end], data[end:]
        if not piece.isascii():
            yield None
            return
        yield piece


def _objects(piece: bytes) -> list[str] | None:
    """The JSON object of each line of `piece` (without its indent and comma), or None when a line is not
    the writer's: no line of another shape (its newline stays in an object), each an object's braces."""
    if not piece.startswith(_INDENT.encode()):
        return None
    text = str(memoryview(piece)[len(TRIAL_INDENT) : -1], "ascii").removesuffix(",")
    elements = text.split(_SEPARATOR)
    if any(map(operator.contains, elements, itertools.repeat("\n"))):
        return None
    try:
        firsts, lasts = set(map(operator.itemgetter(0), elements)), set(map(operator.itemgetter(-1), elements))
    except IndexError:  # an empty line
        return None
    return elements if firsts == {"{"} and lasts == {"}"} else None


def _long_runs(data: bytes) -> list[int]:
    """The offset of a run of 19 digits in each line that has one: where fastjson's guard sends a line to
    json (orjson reads an integer past 64 bits as a float), one translate and a find for each such line
    (2% of the lines of the benchmark's study: floats such as 0.00012345678901234567)."""
    zeroed = data.translate(fastjson._ZEROED)
    runs = []
    at = zeroed.find(fastjson._LONG_RUN)
    while at >= 0:
        runs.append(at)
        at = zeroed.find(b"\n", at)
        at = -1 if at < 0 else zeroed.find(fastjson._LONG_RUN, at)
    return runs


def _decode_as_json_does(elements: list[str], records: list[Any], long_runs: list[int]) -> None:
    """The records of the lines with a long run (offsets in the piece they were cut from) decoded again as
    fastjson decodes them, by json; a ValueError or RecursionError when json refuses one."""
    from .reader import _load_line_json  # here: reader imports this module

    # Where each element starts in its piece: its line's indent, then the elements before, each with the
    # comma, newline and indent after it.
    lengths = itertools.accumulate(map(len, elements), initial=0)
    starts = list(map(operator.add, lengths, range(len(TRIAL_INDENT), 2**62, len(_SEPARATOR))))
    for at in long_runs:
        index = bisect.bisect_right(starts, at) - 1
        records[index] = _load_line_json(elements[index])


def _plainly_valid(records: list[Any]) -> bool:
    """Whether Trial.from_dict and check_trial take every record as it is (nothing to convert), checked a
    field at a time; False says nothing about whether they would take it."""
    if set(map(type, records)) != {dict}:
        return False
    shapes = [set(keys) for keys in set(map(tuple, records))]  # the writer's key order: one or a few
    if not all(_REQUIRED <= keys <= _ALLOWED for keys in shapes):
        return False
    column = _columns(records, set.intersection(*shapes), set.union(*shapes))
    numbers = column["number"]
    if set(map(type, numbers)) != {int} or min(numbers) < 0:
        return False
    if not set(column["state"]) <= _STATES or set(map(type, column["params"])) != {dict}:
        return False
    values = column["values"]
    if set(map(type, values)) != {dict}:
        return False
    if set(map(type, itertools.chain.from_iterable(map(dict.values, values)))) - {float}:  # ints: from_dict's float()
        return False
    if "attempts" in column and set(map(type, column["attempts"])) - {int}:  # absent: 1
        return False
    for key, types in _OPTIONAL_TYPES.items():
        if key in column and not set(map(type, column[key])) <= types:
            return False
    started = [stamp for stamp in column["started_at"] if stamp is not None]
    return _metrics_plain(column["metrics"], started)


def _metrics_plain(lists: tuple[Any, ...], stamps: list[Any]) -> bool:
    """Every trial's metrics a list of records as the writer writes them (MetricRecord.from_dict's fields,
    check_trial's types), and every timestamp (theirs and `stamps`) one from_iso reads within the range."""
    if set(map(type, lists)) - {list}:
        return False
    records = list(itertools.chain.from_iterable(lists))
    if records:
        if set(map(type, records)) != {dict} or set(map(tuple, records)) != {_METRIC_KEYS}:
            return False
        column = _columns(records, set(_METRIC_KEYS), set(_METRIC_KEYS))
        if set(map(type, column["name"])) != {str} or set(map(type, column["value"])) != {float}:
            return False
        if not set(map(type, column["step"])) <= _INT_OR_NONE:
            return False
        stamps = stamps + list(column["timestamp"])
    return _times_plain(stamps)


def _times_plain(stamps: list[Any]) -> bool:
    """Each of `stamps` text that from_iso reads, in a year from 1001 to 8999: within check_trial's range
    (years 1000 to 9999) whatever its offset from UTC."""
    if not stamps:
        return True
    if set(map(type, stamps)) != {str}:
        return False
    collections.deque(map(datetime.fromisoformat, stamps), maxlen=0)  # ValueError for one it cannot read
    # Every text fromisoformat reads starts with a four-digit year, so the least and the greatest text
    # hold the least and the greatest year.
    return min(stamps)[:4] >= "1001" and max(stamps)[:4] <= "8999"


def _columns(records: list[dict[str, Any]], everywhere: set[str], anywhere: set[str]) -> dict[str, tuple[Any, ...]]:
    """Each field of `anywhere` as one tuple of every record's value, in order (None where a record has not
    got it): those every record has (`everywhere`) taken by one itemgetter a record and a transposition,
    a fifth of the time of a dict.get for each field of each record; the others by dict.get."""
    keys = sorted(everywhere)
    taken = (
        map(operator.itemgetter(*keys), records)
        if len(keys) > 1
        else ((v,) for v in map(operator.itemgetter(*keys), records))
    )
    columns = dict(zip(keys, zip(*taken)))
    for key in anywhere - everywhere:
        columns[key] = tuple(map(dict.get, records, itertools.repeat(key)))
    return columns
