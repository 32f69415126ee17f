"""What a path that is not a regular file is, in words: for the one-line refusals of study files,
metrics files and results files alike."""

from __future__ import annotations

import stat

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def file_kind(mode: int) -> str:
    """`a directory`, `a named pipe (FIFO)`, ... for a stat mode; `not a regular file` for anything else."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")
