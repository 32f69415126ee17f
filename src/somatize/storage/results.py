"""The results file (SPEC §4): one JSON document, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import ResultsFileError
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
