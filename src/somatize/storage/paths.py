"""What a results file, its journal and its lock may be: a regular file or a new path, nothing else.

A rename over a device node, a FIFO or a socket would replace it with a
regular file, and opening a dangling symlink would create a file wherever it
points; so every check looks at the path itself (lstat), not at what
`Path.is_file()` follows it to.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import ResultsFileError
from ..filekinds import file_kind


def describe_non_regular(path: Path) -> str | None:
    """None when `path` does not exist or is a regular file (a symlink is neither); else what it is."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if stat.S_ISREG(mode) else f"it is {file_kind(mode)}"


def results_target(path: Path) -> Path:
    """The file the results go to: `path`, or the regular file a symlink at `path` points to.

    Results are renamed into place, which would replace the link itself;
    writing beside its target keeps the link. Anything but a regular file or
    a new path (a device, a FIFO, a socket, a directory, a symlink to one of
    these or to nothing) is refused.
    """
    problem = describe_non_regular(path)
    if problem is None:
        return path
    if problem != "it is a symbolic link":
        raise ResultsFileError(f"{path}: cannot write results: {problem}")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ResultsFileError(f"{path}: cannot write results: it is a symbolic link to a missing file") from None
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot write results: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ResultsFileError(f"{path}: cannot write results: it is a symbolic link to {file_kind(mode)}")
    return Path(os.path.realpath(path))


def check_own_file(path: Path, role: str) -> None:
    """A file somatize creates and removes itself (the journal, the lock): absent or regular, never a link."""
    problem = describe_non_regular(path)
    if problem is not None:
        raise ResultsFileError(f"{path}: cannot use it as the {role}: {problem}")


def _temp_pattern(results: Path) -> re.Pattern[str]:
    # write_atomically's temp files: mkstemp(prefix=".NAME.", suffix=".tmp"), eight random
    # characters of mkstemp's alphabet between them.
    return re.compile(rf"\.{re.escape(results.name)}\.[a-z0-9_]{{8}}\.tmp")


def temp_prefix(results: Path) -> str:
    return f".{results.name}."


def remove_stale_temp_files(results: Path) -> list[Path]:
    """Remove temp files a killed run left beside `results` (only our own pattern, only regular files).

    Call it holding the study lock: a live run's temp file is never stale then.
    """
    parent = results.parent if str(results.parent) else Path(".")
    pattern = _temp_pattern(results)
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed
