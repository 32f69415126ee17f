"""What one trial may make somatize hold and write: its metric records and its error text (issue 14.12).

A trial that prints a million metric lines, or fails with a 50 MB message,
must not make somatize grow without bound, nor write a results file of
hundreds of megabytes. Every metric keeps its records up to a cap, then an
evenly thinned set; the records that decide a trial's values (the last, the
last finite, the smallest and the largest) are always kept, so `reduce: best`
and `reduce: last` give the same value as with every record. Error text
keeps its head and its tail. What was cut is said in the trial record's
`truncated` member.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from .study import MetricRecord

# Records kept in full per declared metric before thinning: 10,000 steps cover a
# long per-batch curve, and cost about 1.5 MB of results JSON and 2 MB of memory
# (measured: 1,000,000 records of one metric made 173 MB of results and 1.68 GB RSS).
DECLARED_RECORDS = 10_000
# Undeclared metrics (other JSON members) are kept for the report, on a smaller budget:
# at most OTHER_NAMES names, OTHER_RECORDS records each (together at most ~15 MB of JSON).
OTHER_RECORDS = 1_000
OTHER_NAMES = 100
_DROPPED_NAMES_SHOWN = 10  # names past OTHER_NAMES listed in the record, as examples
# A trial's records that no bound above can cut, however they are named: as many as the smallest cap.
FEW_RECORDS = min(DECLARED_RECORDS, OTHER_RECORDS, OTHER_NAMES)

# Error text: a traceback's cause is at its end, the message at its start; 16,000 characters
# hold a long traceback whole (the default 6-line tail is well under 2,000).
ERROR_CHARS = 16_000
_ERROR_HEAD = 4_000
_MARKER_ROOM = 40  # the '[... N characters cut ...]' line


@dataclass
class _Series:
    """One metric's records: all of them up to `cap`, then every `stride`-th, plus the deciding ones."""

    cap: int
    count: int = 0  # records reported, kept or not
    stride: int = 1
    sampled: list[tuple[int, int, MetricRecord]] = field(default_factory=list)  # (index in series, seq, record)
    deciding: dict[str, tuple[int, MetricRecord]] = field(default_factory=dict)  # role -> (seq, record)

    def add(self, seq: int, record: MetricRecord) -> None:
        index = self.count
        self.count += 1
        if index % self.stride == 0:
            self.sampled.append((index, seq, record))
            if len(self.sampled) > self.cap:
                self.stride *= 2  # the kept records stay evenly spread, and the first is always kept
                self.sampled = [item for item in self.sampled if item[0] % self.stride == 0]
        self._keep_deciding(seq, record)

    def _keep_deciding(self, seq: int, record: MetricRecord) -> None:
        value, deciding = record.value, self.deciding
        deciding["last"] = (seq, record)  # a NaN at the end is what the trial said last
        if math.isnan(value):
            return
        deciding["last_number"] = (seq, record)  # reduce: last
        if math.isfinite(value):
            deciding["last_finite"] = (seq, record)  # where a pruned trial stood (report, sampler)
        low, high = deciding.get("min"), deciding.get("max")
        if low is None or value < low[1].value:  # strict: ties keep the earliest, as min() does
            deciding["min"] = (seq, record)
        if high is None or value > high[1].value:
            deciding["max"] = (seq, record)

    def kept(self) -> dict[int, MetricRecord]:
        out = {seq: record for _, seq, record in self.sampled}
        out.update(self.deciding.values())
        return out


class MetricLog:
    """A trial's metric records, bounded: the trial record's `metrics` and what was cut from them."""

    def __init__(
        self,
        declared: Collection[str],
        declared_records: int = DECLARED_RECORDS,
        other_records: int = OTHER_RECORDS,
        other_names: int = OTHER_NAMES,
    ):
        self.declared = frozenset(declared)
        self.declared_records = declared_records
        self.other_records = other_records
        self.other_names = other_names
        self._series: dict[str, _Series] = {}
        self._others = 0  # undeclared names kept
        self._seq = 0
        self.records_dropped = 0  # records of undeclared names past the cap: none of them is kept
        self.names_dropped: list[str] = []  # the first of those names, for the record
        self.cuts: dict[str, Any] = {}  # other output cut before its records came here (a huge metrics file)

    def add(self, record: MetricRecord) -> bool:
        """Keep the record, or a thinned share of its metric; False when its name is not kept at all."""
        series = self._series.get(record.name)
        if series is None:
            series = self._new_series(record.name)
            if series is None:
                self.records_dropped += 1
                return False
        series.add(self._seq, record)
        self._seq += 1
        return True

    def extend(self, records: Iterable[MetricRecord]) -> None:
        for record in records:
            self.add(record)

    def merge(self, other: MetricLog) -> list[MetricRecord]:
        """Take in another log's records (an executor's, thinned already) and its counts; the records taken."""
        taken = [record for record in other.records() if self.add(record)]
        for name, theirs in other._series.items():
            unkept = theirs.count - len(theirs.kept())
            ours = self._series.get(name)
            if ours is not None:
                ours.count += unkept
            else:
                self.records_dropped += unkept
        self.records_dropped += other.records_dropped
        for name in other.names_dropped:
            self._note_dropped(name)
        self.cuts.update(other.cuts)
        return taken

    def _new_series(self, name: str) -> _Series | None:
        if name in self.declared:
            cap = self.declared_records
        elif self._others < self.other_names:
            self._others += 1
            cap = self.other_records
        else:
            self._note_dropped(name)
            return None
        series = self._series[name] = _Series(cap)
        return series

    def _note_dropped(self, name: str) -> None:
        if len(self.names_dropped) < _DROPPED_NAMES_SHOWN and name not in self.names_dropped:
            self.names_dropped.append(name)

    def records(self) -> list[MetricRecord]:
        """The kept records in the order they were reported."""
        kept: dict[int, MetricRecord] = {}
        for series in self._series.values():
            kept.update(series.kept())
        return [kept[seq] for seq in sorted(kept)]

    def truncation(self) -> dict[str, Any] | None:
        """What was cut, for the trial record's `truncated` member; None when nothing was."""
        metrics = {}
        for name, series in self._series.items():
            kept = len(series.kept())
            if kept < series.count:
                metrics[name] = {"reported": series.count, "kept": kept}
        out: dict[str, Any] = {}
        if metrics:
            out["metrics"] = metrics
        if self.records_dropped:
            out["metrics_dropped"] = {"records": self.records_dropped, "names": list(self.names_dropped)}
        out.update(self.cuts)
        return out or None


def clip_text(text: str, limit: int = ERROR_CHARS, head: int = _ERROR_HEAD) -> tuple[str, int]:
    """`text` cut to its head and tail when longer than `limit`; also how many characters were cut.

    Idempotent: a text cut once (its marker included) is not cut again.
    """
    if len(text) <= limit + _MARKER_ROOM:
        return text, 0
    cut = len(text) - limit
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[len(text) - (limit - head) :]}", cut
