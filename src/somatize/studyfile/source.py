"""Reading input files safely: regular files only, never more than a size limit.

A FIFO, a device such as /dev/zero or /dev/urandom, or a huge file must be
refused at once with one line, not read forever or into all memory. So a
file is opened without blocking (a FIFO with no writer would block `open`),
checked with fstat to be a regular file, and read for at most limit + 1
bytes, which also catches a file that grows while it is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import BinaryIO

from ..filekinds import file_kind

# A study file is a few KB; one with hundreds of categorical choices is still under
# 100 KB. Above 2 MiB the pure-Python YAML scanner alone needs seconds (measured on
# this project's 2-core CI machine: 1 MiB of comments 1.0 s, a 1 MiB string 0.65 s),
# and such a file is a mistake (a log or a data set given as the study), not a study.
MAX_STUDY_BYTES = 2 * 2**20
# A captured trial output for `validate --output-sample`: the metric scan took 5 s for
# 7 MiB of log lines on the loaded 2-core machine, so 8 MiB keeps validate to seconds;
# a longer log can be cut with `tail` (the metric lines that matter are all alike).
MAX_OUTPUT_SAMPLE_BYTES = 8 * 2**20

_READ_CHUNK = 2**16


class Unreadable(Exception):
    """Why a file cannot be read, as the text after `FILE: cannot read: `."""


def _size_text(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"


def too_large(limit: int) -> str:
    return f"it is larger than the {_size_text(limit)} limit"


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; Unreadable otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise Unreadable(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            hint = "; to read a pipe, give '-' and pipe it in" if stat.S_ISFIFO(info.st_mode) else ""
            raise Unreadable(f"it is {file_kind(info.st_mode)}, not a regular file{hint}")
        if info.st_size > limit:
            raise Unreadable(too_large(limit))
        data = _read_fd(fd, limit + 1)
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew after fstat
        raise Unreadable(too_large(limit))
    return data


def _read_fd(fd: int, limit: int) -> bytes:
    return _read_chunks(lambda size: os.read(fd, size), limit)


def _read_chunks(read: Callable[[int], bytes], limit: int) -> bytes:
    """Up to `limit` bytes, in chunks so that a small input never allocates `limit` up front."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = read(min(left, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_stream(stream: BinaryIO, limit: int) -> bytes:
    """All of a stream (standard input) of at most `limit` bytes; Unreadable when longer."""
    try:
        data = _read_chunks(stream.read, limit + 1)
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise Unreadable(too_large(limit))
    return data
