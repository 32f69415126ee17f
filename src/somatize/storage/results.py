"""The results file (SPEC §4): one JSON document, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from ..errors import ResultsFileError
from ..events import FINISHED_TRIAL_EVENTS, Event
from ..study import Study


def results_json(study: Study) -> str:
    return json.dumps(study.to_dict(), indent=2, allow_nan=False) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_results(study: Study, path: Path) -> None:
    write_atomically(path, results_json(study))


def check_writable(path: Path) -> None:
    """Fail before the first trial when the results could not be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ResultsFileError(f"{path}: cannot write results: directory {parent} does not exist")
    if path.is_dir():
        raise ResultsFileError(f"{path}: cannot write results: it is a directory")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ResultsFileError(f"{path}: cannot write results: permission denied")


def parse_results(text: str, name: str) -> Study:
    """A Study from results JSON text; any problem is a ResultsFileError naming the file."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ResultsFileError(f"{name}: not valid JSON ({reason}); is the file truncated?") from None
    if not isinstance(data, dict):
        raise ResultsFileError(f"{name}: not a somatize results file (expected a JSON object)")
    try:
        return Study.from_dict(data)
    except KeyError as exc:
        raise ResultsFileError(f"{name}: not a valid results file: missing {exc}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ResultsFileError(f"{name}: not a valid results file: {exc}") from None


def read_results(path: str | Path) -> Study:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_results(text, str(path))


class PeriodicResults:
    """A bus subscriber that rewrites the results file every few seconds while trials finish.

    It keeps its own copy of the study (definition plus the trials it was told
    of), so a reader of the results file sees progress without waiting for the end.
    """

    def __init__(self, study: Study, path: Path, every_seconds: float = 2.0):
        self.study = Study(study.name, study.space, study.objectives, study.strategy, study.spec, study.id,
                           list(study.trials), "running", study.started_at)
        self.path = path
        self.every_seconds = every_seconds
        self._last_write = time.monotonic()

    def __call__(self, event: Event) -> None:
        if isinstance(event, FINISHED_TRIAL_EVENTS):
            self.study.trials.append(event.trial)  # type: ignore[attr-defined]
            if time.monotonic() - self._last_write >= self.every_seconds:
                write_results(self.study, self.path)
                self._last_write = time.monotonic()
