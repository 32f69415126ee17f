"""The study lock: one `somatize run` at a time writes a results file and its journal.

An advisory `flock` on a small file beside the results (`results.json` ->
`results.lock`) holding the owner's pid. The kernel drops a `flock` when its
process dies, however it dies (`kill -9`, a segfault), so a lock file left
behind never blocks the next run: only a live holder does.

`StudyLock.acquire(wait=False)` is the whole-run hold of `somatize run`;
`wait=True` blocks until the holder lets go. `shared=True` is the hold of
a process that shares the study with others (`ask`, `tell`, `run --join`,
SPEC §8): any number of them at once, never beside a plain run; they take
turns through a lock on the journal itself (storage/shared.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import ResultsFileError, StudyBusyError
from .paths import describe_non_regular


def lock_path(results_path: Path) -> Path:
    """`results/mlp.json` -> `results/mlp.lock`."""
    return results_path.with_name(f"{results_path.name.removesuffix('.json')}.lock")


class StudyLock:
    """An exclusive lock on one study's files, held through an open lock file."""

    def __init__(self, path: Path, subject: Path, shared: bool = False):
        self.path = path
        self.subject = subject  # what the lock protects, for messages
        # Shared holders never remove the file: another holder may hold it, and a plain run that
        # then locked a new file at the name would not be kept out.
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock, or raise StudyBusyError naming the holder's pid (wait=False)."""
        while self._fd is None:
            fd = self._open()
            try:
                mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
                fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                holder = _read_pid(fd)
                sharers = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) and not self.shared and _held_shared(fd)
                os.close(fd)
                if sharers:
                    raise StudyBusyError(
                        f"{self.subject} is shared by somatize ask/tell or run --join processes; "
                        "join them with `somatize run --join`"
                    ) from None
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    who = f"pid {holder}" if holder else "pid unknown"
                    raise StudyBusyError(f"{self.subject} is being written by another somatize run ({who})") from None
                raise ResultsFileError(f"{self.path}: cannot lock: {exc.strerror}") from None
            if not _same_file(fd, self.path):
                os.close(fd)  # the holder removed the file as we opened it: lock the new one
                continue
            with contextlib.suppress(OSError):  # the pid only names the holder; a full disk must not stop the lock
                if not self.shared:  # a shared holder leaves the pid of the one before: they are alike
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                elif os.fstat(fd).st_size == 0:
                    os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd

    def release(self) -> None:
        """Remove the lock file and let go (removed first, so a waiter never locks a file that is gone)."""
        if self._fd is None:
            return
        if not self.shared:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    @contextlib.contextmanager
    def hold(self, wait: bool = False) -> Iterator[StudyLock]:
        self.acquire(wait)
        try:
            yield self
        finally:
            self.release()

    def _open(self) -> int:
        problem = describe_non_regular(self.path)  # before opening: opening a device can have effects
        if problem is None:
            try:
                # O_NOFOLLOW: a symlink that appears at the lock's name is refused, never followed.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                problem = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            else:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    return fd
                os.close(fd)
                problem = "it is not a regular file"
        raise ResultsFileError(f"{self.path}: cannot use it as the study's lock file: {problem}")


def _held_shared(fd: int) -> bool:
    """Whether the lock that kept us out is shared holders' (a shared lock is still granted) rather than a run's."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
