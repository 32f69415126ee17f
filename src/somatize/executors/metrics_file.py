"""Reading $SOMATIZE_METRICS_FILE: whatever a trial leaves at that path (issue 14.13).

A trial may replace its metrics file with a FIFO (open() would block until a
writer comes), a symlink to /dev/zero (endless), a directory, or a sparse
file of 200 GB. Only a regular file is read, and only what it held when the
trial ended, at most METRICS_FILE_BYTES of it (its two ends), with the
trial's deadline checked between reads.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import BinaryIO

from ..bounds import MetricLog
from ..filekinds import file_kind
from ..study import MetricRecord
from .output import MetricStream

# The deadline is checked between reads: 64 KiB of metric lines parse in about 50 ms.
READ_CHUNK = 64 * 1024
# Of a larger file only the first and last halves are read: 256 MiB is about 2.5 million metric
# lines, which take about a minute to parse (1 million JSON lines: 44 s through `somatize run`).
METRICS_FILE_BYTES = 256 * 1024 * 1024


def _parse_span(handle: BinaryIO, length: int, stream: MetricStream, log: MetricLog, deadline: float | None) -> None:
    """Feed the next `length` bytes of a file to `stream`, its records to `log`; TimeoutError past `deadline`."""
    while length > 0:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError
        chunk = handle.read(min(READ_CHUNK, length))
        if not chunk:
            return
        length -= len(chunk)
        log.extend(MetricRecord(r.name, r.value, r.step) for r in stream.feed(chunk))


def remove_metrics_file(path: Path) -> None:
    """Remove what the trial left at its metrics-file path: a file, a FIFO, a symlink, even a directory."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError):  # unlink(2) of a directory: EISDIR on Linux, EPERM elsewhere
        shutil.rmtree(path, ignore_errors=True)


def open_regular_file(path: Path) -> tuple[int | None, str | None]:
    """A descriptor to read `path` if it is a regular file, else None and why not (no reason: it does not exist).

    A trial may put a FIFO, /dev/zero or a symlink to a device where its
    metrics file was: such a file is never opened (opening a device can have
    effects, and a FIFO blocks open() until a writer comes), and O_NONBLOCK
    guards the moment between the check and the open.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return None, f"is {file_kind(mode)}, not a regular file: not read"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}"
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped after the check
        os.close(fd)
        return None, f"is {file_kind(mode)}, not a regular file: not read"
    return fd, None


def read_metrics_file(path: Path, stream: MetricStream, log: MetricLog, deadline: float | None) -> str | None:
    """Parse the metrics file into `log`; why it was not read, if it was not (TimeoutError past `deadline`).

    Only what the file held when the trial ended is read (a writer left behind
    is not followed), and of a file over METRICS_FILE_BYTES its two ends.
    """
    fd, problem = open_regular_file(path)
    if fd is None:
        return problem
    with os.fdopen(fd, "rb", buffering=0) as handle:
        size = os.fstat(fd).st_size
        if size <= METRICS_FILE_BYTES:
            _parse_span(handle, size, stream, log, deadline)
        else:
            half = METRICS_FILE_BYTES // 2
            _parse_span(handle, half, stream, log, deadline)
            handle.seek(size - half)
            stream.resync(f"its last {half} bytes")
            _parse_span(handle, half, stream, log, deadline)
            log.cuts["metrics_file"] = {"bytes": size, "read": 2 * half}
    log.extend(MetricRecord(r.name, r.value, r.step) for r in stream.close())
    return None
