"""`somatize show` for a study of any size: rows written while the trials are read.

Up to TABLE_BLOCK trials, the output is exactly format_trials' (a rich table,
CSV, indented JSON). Beyond that, nothing waits for the whole study: the
columns are those of the first TABLE_BLOCK trials, and a table's widths are
theirs too, widened for a later block that needs it. rich is not used then:
laying out 100,000 rows took it 68 s and 794 MB (issue 18).
"""

from __future__ import annotations

import csv
import itertools
import json
import operator
from collections.abc import Iterable, Iterator
from math import isnan
from pathlib import Path
from typing import Any, Protocol, TextIO

from ..study import Direction, Study, Trial, TrialState
from .formats import _columns, _judged, best_so_far_text, csv_row, format_trials, numeric_columns, table_row

# Rows gathered before the first is written: enough for the columns and widths of any real study
# (at ~30 µs a trial read, 30 ms), few enough that the first row shows at once.
TABLE_BLOCK = 1000
_GAP = "   "  # between columns, as the rich table (SIMPLE_HEAD, padding 1 and a blank divider)


class TrialSource(Protocol):
    """What show reads: storage.reader.ResultsFile."""

    study: Study

    def lines(self) -> Iterator[tuple[int, str]]: ...

    def parse(self, line: str, number: int) -> Trial: ...

    def summary(self, line: str, number: int) -> tuple[int, TrialState, dict[str, float]]: ...


def show_trials(source: TrialSource, fmt: str, out: TextIO, state: str | None = None, limit: int | None = None,
                trial_dirs: Path | None = None) -> None:
    """Write the trials of `source` (only those in `state`, at most `limit`) in `fmt`, as they are read;
    a table ends with the best-so-far line of the whole study, as format_trials' caller prints it.
    `trial_dirs`: the results file's directory, for the log_dir column (format_trials')."""
    study = source.study
    wanted = None if state is None else TrialState(state)
    writer = _Writer(study, fmt, out, trial_dirs)
    curve = _Curve(study)
    shown = 0
    for number, line in source.lines():
        if limit is None or shown < limit:
            trial = source.parse(line, number)
            curve.add(trial.number, trial.state, trial.values)
            if wanted is None or trial.state is wanted:
                writer.add(trial)
                shown += 1
        elif fmt != "table":
            break  # nothing more to write
        else:
            curve.add(*source.summary(line, number))  # the best-so-far line covers every trial
    writer.close()
    if fmt == "table":
        out.write(curve.line())


class _Curve:
    """The best value of the primary objective after each completed trial, built trial by trial."""

    def __init__(self, study: Study):
        self.objective = study.primary
        self.metric = self.objective.metric
        self.points: list[tuple[int, float]] = []
        self.trials = 0

    def add(self, number: int, state: TrialState, values: dict[str, float]) -> None:
        self.trials += 1
        if state is TrialState.COMPLETED:
            value = values.get(self.metric)
            if value is not None and not isnan(value):
                self.points.append((number, value))

    def line(self) -> str:
        # Sorted by number, then by C-level passes: a loop of comparisons was a third of `show --limit 10`'s
        # reading of a 100,000-trial file (issue 18).
        self.points.sort(key=operator.itemgetter(0))
        better = min if self.objective.direction is Direction.MINIMIZE else max
        curve = list(itertools.accumulate(map(operator.itemgetter(1), self.points), better))
        return best_so_far_text(self.metric, curve, self.trials)


class _Writer:
    """Holds the first TABLE_BLOCK trials, then writes block by block."""

    def __init__(self, study: Study, fmt: str, out: TextIO, trial_dirs: Path | None = None):
        self.study, self.fmt, self.out = study, fmt, out
        self.trial_dirs = trial_dirs
        self.judged = False  # the feasible column, as the first block has it
        self.dirs: Path | None = None  # the log_dir column, as the first block has it
        self.block: list[Trial] = []
        self.params: list[str] | None = None  # the columns, once streaming
        self.widths: list[int] = []
        self.written = 0

    def add(self, trial: Trial) -> None:
        self.block.append(trial)
        if len(self.block) >= TABLE_BLOCK:
            self._flush()

    def close(self) -> None:
        if self.params is None:  # a small study: exactly what format_trials writes
            self.out.write(format_trials(self.study, self.fmt, self.block, self.trial_dirs))
            return
        self._flush()
        if self.fmt == "json":
            self.out.write("\n]\n")

    def _flush(self) -> None:
        if self.params is None:
            header, self.params = _columns(self.study, self.block)
            self.judged = _judged(self.block)
            if self.trial_dirs is not None and any(t.log_dir for t in self.block):
                self.dirs = self.trial_dirs
                header.append("log_dir")
            self._begin(header)
        getattr(self, f"_{self.fmt}")(self.block)
        self.written += len(self.block)
        self.block = []
        self.out.flush()

    def _begin(self, header: list[str]) -> None:
        if self.fmt == "csv":
            csv.writer(self.out, lineterminator="\n").writerow(header)
        elif self.fmt == "json":
            self.out.write("[")
        else:
            self.header = header
            self.right = [name in numeric_columns(self.study) for name in header]
            self.widths = [len(name) for name in header]

    def _csv(self, trials: Iterable[Trial]) -> None:
        assert self.params is not None
        csv.writer(self.out, lineterminator="\n").writerows(csv_row(self.study, t, self.params, self.judged, self.dirs) for t in trials)

    def _json(self, trials: Iterable[Trial]) -> None:
        # format_trials' indented array, an element at a time: each element indented one level more.
        separator = "\n  " if self.written == 0 else ",\n  "
        for trial in trials:
            text = json.dumps(trial.to_dict(), indent=2, ensure_ascii=False).replace("\n", "\n  ")
            self.out.write(separator + text)
            separator = ",\n  "

    def _table(self, trials: list[Trial]) -> None:
        assert self.params is not None
        rows = [table_row(self.study, t, self.params, self.judged, self.dirs) for t in trials]
        for row in rows:
            self.widths = [max(width, len(cell)) for width, cell in zip(self.widths, row)]
        lines = []
        if self.written == 0:
            lines.append(self._line(self.header))
            lines.append("─" * (sum(self.widths) + len(_GAP) * (len(self.widths) - 1)))
        lines += [self._line(row) for row in rows]
        if lines:
            self.out.write("\n".join(lines) + "\n")

    def _line(self, cells: list[Any]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, self.widths, self.right)
        ]
        return _GAP.join(parts).rstrip()
