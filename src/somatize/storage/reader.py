"""Reading a results file a part at a time: the study's head, one trial, or the trials one by one.

A file that somatize wrote (storage/results.py) has the study's definition
indented, then `  "trials": [` and every trial on a line of its own. That
layout lets `best` read the head and the best trial's line only, and `show`
print each trial as it is read, in bounded memory, instead of building a
100,000-trial study first (3.8 s and 800 MB before issue 18). A file in any
other layout (an older somatize's, one reformatted by jq) is not refused:
`open_results` returns None and the caller reads it whole (results.read_results).
"""

from __future__ import annotations

import contextlib
import gc
import json
import mmap
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import ResultsFileError
from ..study import Recommendation, Study, Trial, TrialState, _number, trial_id
from . import fastjson
from .results import TRIAL_INDENT, TRIALS_OPENING, check_study, check_trial, load_json, one_line, parse_results

# The head (the study's definition) of any real study is a few kilobytes; past this, the file is not read in parts.
MAX_HEAD_BYTES = 16 * 2**20
_CLOSING = ("  ]\n", "}\n")


class ResultsFile:
    """A results file in somatize's layout: `study` is its head (no trials), `trials()` reads them one by one."""

    def __init__(self, path: Path, handle: IO[bytes], study: Study, best: int | None, offset: int, line: int,
                 empty: bool):
        self.path = path
        self._handle = handle  # kept open: a rewrite (a rename over the file) does not change what is read
        self.study = study  # the head: definition, status, recommendation; trials empty
        self.best = best  # the number of the head's best_trial
        self._offset = offset  # byte offset of the first trial line
        self._line = line  # its line number, for messages
        self._empty = empty  # `"trials": []`

    def trials(self) -> Iterator[Trial]:
        """Every trial in file order, each checked as read_results checks it; a bad one is a ResultsFileError."""
        for number, line in self.lines():
            yield self.parse(line, number)

    def lines(self) -> Iterator[tuple[int, str]]:
        """(line number, text) of each trial line, in file order; one line in memory at a time."""
        if self._empty:
            return
        handle = self._handle
        handle.seek(self._offset)
        number = self._line
        for raw in handle:
            line = _decode(raw, self.path, number)
            if line == _CLOSING[0]:
                if handle.read() != _CLOSING[1].encode():
                    raise ResultsFileError(f"{self.path}:{number + 1}: not a valid results file: "
                                           "expected the end of the document after the trials")
                return
            yield number, line
            number += 1
        raise ResultsFileError(f"{self.path}: not valid JSON (the trials list does not end); is the file truncated?")

    def read_plain(self) -> tuple[list[Trial], list[str], list[str | None]] | None:
        """Every trial at once, with its line's JSON object and its log_dir, when every line is as the
        writer writes it (storage/bulkread.py); None otherwise (then `lines` and `parse` say what is wrong)."""
        if self._empty:
            return None
        from .bulkread import read_plain

        self._handle.seek(self._offset)
        return read_plain(self._handle)

    def summary(self, line: str, number: int) -> tuple[int, TrialState, dict[str, float]]:
        """A trial line's number, state and values only, for the trials `show --limit` does not print but
        sums up in its best-so-far line: read from the line's opening and its `values` object alone
        (a tenth of the cost of parse); a line that does not start as the writer writes it is parsed."""
        opening = _OPENING.match(line)
        if opening is not None:
            start = line.find('"values": {', opening.end())
            try:
                if start >= 0:
                    values, _ = _DECODER.raw_decode(line, start + 10)  # len('"values": ')
                    for value in values.values():
                        if type(value) is not float:  # "nan", an int: as parse reads them
                            values = {str(k): _number(v) for k, v in values.items()}
                            break
                    number, state = opening.groups()
                    return int(number), _STATES[state], values
            except (ValueError, AttributeError, KeyError):
                pass
        trial = self.parse(line, number)
        return trial.number, trial.state, trial.values

    def trial(self, number: int) -> Trial | None:
        """The trial numbered `number`, found by its line's opening (no other line is parsed); None if absent."""
        needle = f'\n{TRIAL_INDENT}{{"id": {json.dumps(trial_id(number))}, "number": {number},'.encode()
        with mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            start = data.find(needle, self._offset - 1)
            if start < 0:
                return None
            end = data.find(b"\n", start + 1)
            raw = data[start + 1 : len(data) if end < 0 else end + 1]
            line_number = self._line + data[self._offset : start + 1].count(b"\n")
        trial = self.parse(_decode(raw, self.path, line_number), line_number)
        return trial if trial.number == number else None

    def parse(self, line: str, number: int) -> Trial:
        """The trial on `line` (line `number` of the file), checked; a ResultsFileError naming the line if bad."""
        return self.parse_element(_element(line), number)

    def parse_element(self, element: str, number: int) -> Trial:
        """parse, given the line's JSON object alone (`_element`)."""
        try:
            return check_trial(Trial.from_dict(_load_line(element)))
        except RecursionError:
            reason = "nested too deeply"
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else one_line(exc)
        raise ResultsFileError(f"{self.path}:{number}: not a valid trial record ({reason})")


# How the writer starts a trial line; a parameter's value is never an object, so the first `"values": {`
# after it is the trial's values (a quote inside a string is escaped: no string holds one).
_OPENING = re.compile(r'    \{"id": "trial_\d+", "number": (\d+), "state": "([a-z]+)", "params": \{')


_STATES = {state.value: state for state in TrialState}


def _element(line: str) -> str:
    """A trial line without its indent, comma and newline."""
    text = line.strip()
    return text.removesuffix(",")


def _trial_number(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"trial number must be a non-negative integer, got {value!r}")
    return value


def _no_constant(literal: str) -> float:
    raise ValueError(f"{literal} is not a JSON number")  # as results.load_json: NaN is written as "nan"


# One decoder for every line: json.loads with an option builds a new one per call (a tenth of the reading time).
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _load_line(text: str) -> Any:
    """One trial line's object (no surrounding whitespace, as the writer leaves none and _element strips:
    json's raw_decode would refuse it, orjson not)."""
    return fastjson.loads(text, _load_line_json)


def _load_line_json(text: str) -> Any:
    value, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError(f"extra data after the trial's object (column {end + 1})")
    return value


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path}:{number}: cannot read: not UTF-8 text") from None


def open_results(path: str | Path) -> ResultsFile | None:
    """The results file at `path` read as far as its trials; None when it is not in somatize's layout
    (or not readable at all: read_results then says why, as it always did)."""
    path = Path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the ResultsFile reads on from it
    except OSError:
        return None
    try:
        head, offset, line, empty = _read_head(handle)
    except (OSError, ValueError):
        head = None
    read = None if head is None else _head_study(head)
    if read is None:
        handle.close()
        return None
    return ResultsFile(path, handle, *read, offset, line, empty)


def _read_head(handle: IO[bytes]) -> tuple[str | None, int, int, bool]:
    """The text before the trials (closed into a document with no trials), the byte offset and line
    number of the first trial line, and whether the list is empty; None for another layout."""
    lines: list[bytes] = []
    size = 0
    opening = TRIALS_OPENING.encode()
    for raw in handle:
        size += len(raw)
        if size > MAX_HEAD_BYTES:
            return None, 0, 0, False
        if raw in (opening + b"\n", opening + b"]\n"):
            empty = raw.endswith(b"]\n")
            if not empty:
                first = handle.readline()  # one trial per line, or another layout (an indented `{`)
                if not (first.startswith(TRIAL_INDENT.encode() + b"{") and first.rstrip(b",\n").endswith(b"}")):
                    return None, 0, 0, False
            elif handle.read() != b"}\n":
                return None, 0, 0, False
            head = b"".join(lines).decode("utf-8") + '  "trials": []\n}'
            return head, size, len(lines) + 2, empty
        lines.append(raw)
    return None, 0, 0, False


def _head_study(text: str) -> tuple[Study, int | None] | None:
    """The study the head describes, checked as read_results checks it; None when it is not one
    (read_results then reports what is wrong, with the same message as before)."""
    try:
        data: Any = load_json(text)
        if not isinstance(data, dict):
            return None
        recommended = data.pop("recommended_trial", None)  # names a trial not read yet: checked when it is
        study = check_study(Study.from_dict(data))
        if recommended is not None:
            if not isinstance(recommended, dict):
                return None
            study.recommended = Recommendation.from_dict(recommended)
        best = data.get("best_trial")
        if best is not None and not (isinstance(best, dict) and _is_number(best.get("number"))):
            return None
        return study, None if best is None else best["number"]
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_for_best(path: str | Path, objective: str | None = None) -> Study:
    """The study with only the trials `best` prints: the best one (by the primary objective) and the
    recommended one, read from their lines; any other objective, or a file in another layout: all trials.

    The head's `best_trial` names the best trial (the writer chose it by the same rule as
    Study.best_trial), so the rest of a 100,000-trial file is never parsed.
    """
    results = open_results(path)
    if results is None:
        from .results import read_results

        return read_results(path)
    study = results.study
    if objective is not None and objective != study.primary.metric:
        study.trials = list(results.trials())
        return _with_recommendation_checked(study, path)
    numbers = {results.best}
    if study.recommended is not None:
        numbers.add(study.recommended.number)
    for number in sorted(n for n in numbers if n is not None):
        trial = results.trial(number)
        if trial is None or trial.state is not TrialState.COMPLETED:
            from .results import read_results

            return read_results(path)  # the head does not match the trials: read it all, as before
        study.trials.append(trial)
    return _with_recommendation_checked(study, path)


def _with_recommendation_checked(study: Study, path: str | Path) -> Study:
    if study.recommended is not None and study.recommended_trial() is None:
        raise ResultsFileError(f"{path}: not a valid results file: recommended_trial names no completed trial "
                               f"(number {study.recommended.number})")
    return study


def read_all(path: str | Path, lines: dict[int, tuple[Trial, str, str | None]] | None = None) -> Study:
    """The whole study, as read_results reads it, but a line at a time where the layout allows.

    Given `lines`, it is filled with each trial, its JSON object as the file holds it and its log_dir
    (storage.results.TrialLines), which
    `run --resume` writes again (journal, results) instead of encoding 100,000 trials anew.
    """
    results = open_results(path)
    if results is None:
        from .results import read_results

        return read_results(path)
    study = results.study
    with gc_paused():
        # At once only for a resume (`lines`: its writers take the lines over), which reads the metrics of
        # almost no trial. A reader that reads them all (`report`) would hold every decoded record at once
        # and then build every trial's metrics anyway: `report` of 100,000 trials peaked at 497 MiB this
        # way against 434 MiB a line at a time, and took no less time (two runs each, load ~1).
        plain = None if lines is None else results.read_plain()
        if plain is not None:  # every trial as the writer wrote it: read at once
            trials, elements, log_dirs = plain
            study.trials = trials
            lines.update(zip((trial.number for trial in trials), zip(trials, elements, log_dirs)))
        elif lines is None:
            study.trials = list(results.trials())
        else:
            for number, line in results.lines():
                element = _element(line)
                trial = results.parse_element(element, number)
                study.trials.append(trial)
                lines[trial.number] = (trial, element, trial.log_dir)
    return _with_recommendation_checked(study, path)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a whole study's trials are built, then as it was.

    Each trial is a dozen objects that all live on, none in a cycle, yet every
    few hundred of them set off a collection that walks those built so far:
    reading the 100,000 trials of a resumed study took 4.5 s of CPU, 2.5 s
    with the collector off (parsing and building them; issue 18).

    Switched on again, the collector's first pass would walk every object made
    meanwhile (they are all in its youngest generation): 0.13 s after the 100,000
    trials of a resume. So they go to its oldest generation first, without a walk
    (gc.freeze then gc.unfreeze: two list splices), unless a program froze objects
    of its own, which unfreeze would give back.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()



__all__ = ["ResultsFile", "open_results", "parse_results", "read_all", "read_for_best"]
