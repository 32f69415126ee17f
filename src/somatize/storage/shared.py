"""A journal several processes share: `ask`, `tell`, `heartbeat` and `run --join` (SPEC §8).

Each process holds the study lock shared (storage/lock.py), so a plain
`run` is kept out while any of them lives, and they take turns through an
exclusive `flock` on the journal file itself: one transaction reads every
line the others appended since its last one, appends its own, fsyncs (with
`sync`) and lets go. `flock` works across machines on file systems that
pass POSIX locks on (NFSv4, Lustre, GPFS, CephFS); the kernel drops it when
its holder dies, however it dies, so a `kill -9` never leaves the study locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OutputWriteError, ResultsFileError
from ..space import SearchSpace
from .journal import JournalState, journal_path, open_for_append
from .lock import StudyLock, lock_path
from .results import write_all

if TYPE_CHECKING:
    from typing_extensions import Self

_encode = json.JSONEncoder(allow_nan=False, check_circular=False).encode


class SharedJournal:
    """The study's journal, read and appended one locked transaction at a time.

    `state` is what the journal says (every process's records), brought up to
    date at the start of each transaction. Use as a context manager: entering
    takes the shared study lock, leaving closes the journal and lets go.
    """

    def __init__(self, results: Path, sync: bool = True, space: SearchSpace | None = None):
        self.results = results
        self.path = journal_path(results)
        self.sync = sync
        self.state = JournalState(self.path, space)
        self._lock = StudyLock(lock_path(results), results, shared=True)
        self._fd: int | None = None
        self._offset = 0  # bytes of the journal read into `state`
        self._appended = False
        self._in_process = threading.Lock()  # flock is per open file: threads of one process take turns here

    def __enter__(self) -> Self:
        self._lock.acquire()  # a plain run holding the study: StudyBusyError, exit 2
        try:
            self._fd = open_for_append(self.path, os.O_RDWR)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[JournalState]:
        """Hold the journal alone: `state` is up to date inside, and `append` adds to it."""
        assert self._fd is not None, "use the SharedJournal as a context manager"
        with self._in_process:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._appended = False
                self._read_new()
                yield self.state
                if self._appended and self.sync:
                    try:
                        os.fsync(self._fd)
                    except OSError as exc:
                        raise OutputWriteError(f"cannot sync {self.path} to disk: {exc.strerror or exc}") from None
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record (inside a transaction) and take it into `state`."""
        assert self._fd is not None
        line = _encode(record) + "\n"
        data = line.encode("utf-8")
        try:
            write_all(self._fd, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)  # never half a line; frees space on a full disk
            raise OutputWriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._offset += len(data)
        self._appended = True
        self.state.add(line.rstrip("\n"))

    def _read_new(self) -> None:
        """Take in the lines appended since the last transaction; cut a torn tail (its writer died mid-line)."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size < self._offset:
            raise ResultsFileError(f"{self.path}: the journal shrank while in use; was it replaced?")
        if size == self._offset:
            return
        data = os.pread(self._fd, size - self._offset, self._offset)
        whole = data.rfind(b"\n") + 1
        if whole < len(data):  # we hold the lock, so no one is still writing it
            os.ftruncate(self._fd, self._offset + whole)
        try:
            text = data[:whole].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ResultsFileError(f"{self.path}: cannot read journal: {exc}") from None
        for line in text.splitlines():
            self.state.add(line)
        self._offset += whole
