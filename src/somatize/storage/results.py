"""The results file (SPEC §4): one JSON document, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import OutputWriteError, ResultsFileError
from ..events import FINISHED_TRIAL_EVENTS, Event
from ..study import Study, Trial
from .paths import describe_non_regular, results_target, temp_prefix


def results_json(study: Study, trial_lines: bool = False) -> str:
    """The results document, indented; with `trial_lines`, each trial on one line of its own.

    One line per trial is what a study shared by ask/tell writes at every
    transaction: json's C encoder only serves unindented output, and indented,
    the document of 200 trials took 50 ms to encode (the whole ask 140 ms),
    a tenth of that as lines, on the loaded 2-core machine.
    """
    document = study.to_dict()
    if not trial_lines:
        return json.dumps(document, indent=2, allow_nan=False) + "\n"
    trials = document.pop("trials")
    head = json.dumps(document, indent=2, allow_nan=False)[: -len("\n}")]
    if not trials:
        return head + ',\n  "trials": []\n}\n'
    encode = json.JSONEncoder(allow_nan=False).encode  # one encoder for all the lines
    lines = ",\n".join("    " + encode(trial) for trial in trials)
    return head + ',\n  "trials": [\n' + lines + "\n  ]\n}\n"


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


# New files get the usual permissions (0644 under a 022 umask), not mkstemp's 0600.
_FILE_MODE = 0o666 & ~_current_umask()


def write_atomically(path: Path, text: str, sync: bool = True) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file.

    A failure (a full disk) leaves the old file as it was and no temp file behind. Without `sync`
    the data is not forced to disk before the rename (for a file rebuilt from a journal anyway).
    """
    path = Path(path)
    problem = describe_non_regular(path)  # again at every write: a rename would replace a device or FIFO
    if problem is not None:
        raise ResultsFileError(f"cannot write {path}: {problem}")
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent or ".")
    try:
        os.fchmod(fd, _FILE_MODE)
        write_all(fd, text.encode("utf-8"))
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may take only part of them)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_results(study: Study, path: Path, trial_lines: bool = False, sync: bool = True) -> None:
    """Write the results file; a failure to write (a full disk) is a one-line ResultsFileError."""
    try:
        write_atomically(path, results_json(study, trial_lines), sync)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_writable(path: Path) -> Path:
    """Fail before the first trial when the results could not be written; the file to write to."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ResultsFileError(f"{path}: cannot write results: directory {parent} does not exist")
    target = results_target(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ResultsFileError(f"{path}: cannot write results: permission denied")
    return target


def parse_results(text: str, name: str) -> Study:
    """A Study from results JSON text; any problem is a one-line ResultsFileError naming the file."""
    try:
        data = load_json(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{name}: not valid JSON (line {exc.lineno}: {exc.msg}); is the file truncated?") from None
    except RecursionError:
        raise ResultsFileError(f"{name}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # a NaN/Infinity literal, or an integer too long to read
        raise ResultsFileError(f"{name}: not valid JSON ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ResultsFileError(f"{name}: not a somatize results file (expected a JSON object)")
    try:
        return check_study(Study.from_dict(data))
    except KeyError as exc:
        raise ResultsFileError(f"{name}: not a valid results file: missing {exc}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ResultsFileError(f"{name}: not a valid results file: {one_line(exc)}") from None


def _no_constant(literal: str) -> float:
    # somatize writes NaN and the infinities as the strings "nan"/"inf"; a bare
    # literal is not standard JSON and could not be written back (allow_nan=False).
    raise ValueError(f"{literal} is not a JSON number")


# One decoder for every call: json.loads with an option builds a new one per call, which was a fifth
# of reading a journal line (benchmarks/asktell.py, 1,000 trials).
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def load_json(text: str) -> Any:
    """json.loads without NaN/Infinity literals; raises ValueError (or RecursionError) on bad text."""
    return _DECODER.decode(text)


def one_line(message: object) -> str:
    """An error message on one line (names from the file may hold newlines)."""
    return " ".join(str(message).splitlines())


def check_study(study: Study) -> Study:
    """What Study.from_dict leaves unchecked, so a study read is one that can be shown and written back."""
    for objective in study.objectives:
        _check_type("objective metric", objective.metric, str, optional=False)
    _check_type("stop_reason", study.stop_reason, str)
    _check_time("started_at", study.started_at)
    _check_time("finished_at", study.finished_at)
    for trial in study.trials:
        check_trial(trial)
    return study


def check_trial(trial: Trial) -> Trial:
    """Field types Trial.from_dict leaves unchecked, and times that can be written back; TypeError/ValueError if not."""
    where = f"trial {trial.number}"
    # pruned_step is only ever printed, and an objective may raise TrialPruned(step=1.5): not checked.
    for field in ("duration_ms", "trial_seed"):
        _check_type(f"{where} {field}", getattr(trial, field), int)
    _check_type(f"{where} attempts", trial.attempts, int, optional=False)
    _check_type(f"{where} error", trial.error, str)
    _check_type(f"{where} reason", trial.reason, str)
    _check_type(f"{where} truncated", trial.truncated, dict)  # only written back, never interpreted
    _check_time(f"{where} started_at", trial.started_at)
    _check_time(f"{where} lease until", trial.lease_until)
    for record in trial.metrics:
        _check_type(f"{where} metric step", record.step, int)
        _check_time(f"{where} metric timestamp", record.timestamp)
    return trial


def _check_type(what: str, value: Any, kind: type, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = {int: "an integer", dict: "an object"}.get(kind, "a string")
        raise TypeError(f"{what} must be {expected}{' or null' if optional else ''}, got {repr(value)[:40]}")


# Times that iso() writes as a four-digit year, so from_iso() reads them back (years 1000 to 9999).
_TIME_RANGE = (-30_610_224_000.0, 253_402_300_000.0)


def _check_time(what: str, timestamp: float | None) -> None:
    if timestamp is not None and not _TIME_RANGE[0] <= timestamp <= _TIME_RANGE[1]:
        raise ValueError(f"{what} is out of range (years 1000 to 9999)")


def read_results(path: str | Path) -> Study:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_results(text, str(path))


# How often the results file is rewritten while trials finish: a reader sees
# progress within seconds, and a study of millisecond trials does not spend
# its time rewriting a file that grows with every trial.
PERIODIC_WRITE_SECONDS = 2.0


class PeriodicResults:
    """A bus subscriber that rewrites the results file every few seconds while trials finish.

    It keeps its own copy of the study (definition plus the trials it was told
    of), so a reader of the results file sees progress without waiting for the end.
    """

    def __init__(self, study: Study, path: Path, every_seconds: float | None = None):
        self.study = Study(study.name, study.space, study.objectives, study.strategy, study.spec, study.id,
                           list(study.trials), "running", study.started_at)
        self.path = path
        self.every_seconds = PERIODIC_WRITE_SECONDS if every_seconds is None else every_seconds
        self._last_write = time.monotonic()

    def __call__(self, event: Event) -> None:
        if isinstance(event, FINISHED_TRIAL_EVENTS):
            self.study.trials.append(event.trial)  # type: ignore[attr-defined]
            if time.monotonic() - self._last_write >= self.every_seconds:
                write_results(self.study, self.path)
                self._last_write = time.monotonic()
