"""Trial directories: `<results stem>.trials/<trial_id>/` beside the results file (SPEC §10).

Each trial has a directory it may write its own artifacts to
($SOMATIZE_TRIAL_DIR, `{trial_dir}`, `trial.dir`); somatize keeps the trial's
stdout and stderr there (`stdout.txt`, `stderr.txt`, each bounded, the tail
kept) and a shell trial's metrics file (`metrics.txt`). A shell trial's
directory is made when it starts; a Python function's only when it is first
needed (its first byte of output, or its reading `trial.dir`), so a quiet
function costs no directory. `TrialDirs` hands the runner each trial's
directory and, as a bus subscriber, removes the directories that the study's
`trial_dirs: keep:` says not to keep once their trials have finished.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import SomatizeError, UsageError
from ..study import Objective, Study, Trial, TrialState

if TYPE_CHECKING:
    from ..events import Event

STDOUT = "stdout.txt"
STDERR = "stderr.txt"
METRICS = "metrics.txt"
KEEP = ("all", "best", "none")
# Bytes of each stream kept on disk. A training log's last 1 MiB is some 10,000 lines, which holds
# the end of any run worth reading; while a trial runs a stream takes at most twice this on disk
# (the file is cut back to its tail each time it doubles), so 1,000 parallel trials stay under 4 GB.
OUTPUT_BYTES = 1024 * 1024
_TRIAL_DIR = re.compile(r"trial_\d{4,}")


class NothingKept(SomatizeError):
    """A trial that is in the results but whose output is not on disk (exit 1, like `best` finding none)."""

    exit_code = 1


def trials_root(results: Path) -> Path:
    """`results/mlp.json` -> `results/mlp.trials`: the directory that holds every trial's directory."""
    return results.with_name(f"{results.name.removesuffix('.json')}.trials")


class TailFile:
    """A file that keeps the last `limit` bytes written to it; memory and disk stay bounded.

    Bytes go straight to disk. When the file has grown to twice the limit it is
    cut back to its last `limit` bytes (amortised: each byte is copied at most
    once more). On close a file that was cut starts with a line saying how
    many bytes were dropped. The file is made at the first byte: a trial that
    prints nothing costs no file (a quick trial's opening and closing two
    files was most of what trial directories added to it), and its directory
    too, when it is not there yet (a Python function's is made on first use).
    """

    def __init__(self, path: str | Path, limit: int = OUTPUT_BYTES):
        self.path = path
        self.limit = limit
        self.written = 0  # bytes written in all
        self._size = 0  # bytes in the file now
        self._handle: Any = None  # a raw (unbuffered) binary file once the first byte comes
        self._closed = False

    def write(self, data: bytes) -> None:
        """Keep `data`; a file that cannot be written (a full disk) stops being written, and the trial goes on."""
        if not data or self._closed:
            return
        try:
            if self._handle is None:
                self._handle = self._open()
            self._write_all(data)
            self.written += len(data)
            self._size += len(data)
            if self._size >= 2 * self.limit:
                self._keep_tail()
        except OSError:
            self.close()

    def _open(self) -> Any:
        # Unbuffered: what was read is on disk even if the process is killed (a worker past its timeout).
        try:
            return open(self.path, "w+b", buffering=0)
        except FileNotFoundError:  # the trial's directory is made at its first byte of output
            make_trial_dir(os.path.dirname(self.path))
            return open(self.path, "w+b", buffering=0)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a raw write may take only part of it
            view = view[self._handle.write(view) :]

    def _keep_tail(self, header: bytes = b"") -> None:
        handle = self._handle
        assert handle is not None
        keep = min(self.limit, self._size)
        tail = os.pread(handle.fileno(), keep, self._size - keep)  # through our descriptor, even if unlinked
        handle.seek(0)
        handle.truncate()
        self._write_all(header + tail)
        self._size = len(header) + len(tail)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._handle is None:
            return
        cut = self.written - self.limit
        try:
            if cut > 0:
                note = f"[somatize: the first {cut} of {self.written} bytes were cut; the last are kept]\n"
                self._keep_tail(note.encode())
        except OSError:
            pass  # what is in the file stays: more than the limit, without the note
        finally:
            self._handle.close()


def make_trial_dir(path: str | Path) -> None:
    """Make a trial's directory (and the `.trials` root) if it is not there yet: its first use."""
    os.makedirs(path, exist_ok=True)


def prepare_metrics_file(path: Path) -> None:
    """Remove what an earlier attempt left at the metrics file's path (a file, a FIFO, a link, a directory)."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def keep_metrics_file(path: Path) -> None:
    """Keep the metrics file the trial wrote if it is a regular file; anything else at its path goes."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        prepare_metrics_file(path)


# Capturing what a Python function prints ---------------------------------------------------------


# Each thread running a trial -> that trial's directory, for the two routers alike (sys.stdout and sys.stderr
# are the whole process's, so their routers and this are too): one entry a trial, where a path for each router
# and its removal from each took 10,200 instructions a trial (valgrind, issue 18, fifth round).
_TRIAL_DIRS: dict[int, str] = {}


class _Router:
    """Stands in for sys.stdout or sys.stderr: writes from a capturing thread also go to its file.

    Every write still reaches the stream it replaced, as before; Dask runs
    several trials in threads of one process, so the capture is per thread.
    A thread's file is made at its first write (and the trial's directory
    with it, on first use), in the directory `_TRIAL_DIRS` names for it.
    """

    def __init__(self, wrapped: TextIO, name: str):
        self.wrapped = wrapped
        self.name = name
        self.suffix = os.sep + (STDOUT if name == "stdout" else STDERR)  # the file's name in a trial's directory
        self.files: dict[int, TailFile] = {}  # thread -> its trial's file, once that trial wrote

    def write(self, text: str) -> int:
        if _TRIAL_DIRS:
            me = threading.get_ident()
            trial_dir = _TRIAL_DIRS.get(me)
            if trial_dir is not None:
                sink = self.files.get(me)
                if sink is None:
                    sink = self.files[me] = TailFile(trial_dir + self.suffix)
                sink.write(text.encode("utf-8", "replace"))
        return self.wrapped.write(text)

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


_ROUTERS_LOCK = threading.Lock()


class OutputRouting:
    """What a thread writes to sys.stdout and sys.stderr while its trial runs also goes to the trial's files.

    Python-level only: output of C code and of child processes writing to the
    file descriptors directly is not seen (worker processes capture those too).
    The two routers are put in place at the first trial and stay there, passing
    every write on, until `close` (the executor's, at the end of the run) puts
    the streams back; each trial only names its directory for its thread (`begin`,
    `end`: one dictionary entry, no file until the first byte). Putting the
    routers in and taking them out around every trial, with a file object
    per stream, was most of the 65,900 instructions a trivial trial spent on its capture and environment,
    18,500 now (valgrind; BENCHMARKS.md "A different shape of trial", issue 18). A stream replaced meanwhile (by the
    function, or a test's capture) gets a router of its own at the next trial.
    """

    __slots__ = ("_routers",)

    def __init__(self) -> None:
        self._routers: tuple[_Router, _Router] | None = None

    def begin(self, trial_dir: str) -> tuple[_Router, _Router]:
        """This thread's output goes to `trial_dir`'s files too, until `end` with what this returns."""
        routers = self._routers
        if routers is None or sys.stdout is not routers[0] or sys.stderr is not routers[1]:
            routers = self._install()
        _TRIAL_DIRS[threading.get_ident()] = trial_dir
        return routers

    def end(self, routers: tuple[_Router, _Router]) -> None:
        me = threading.get_ident()
        _TRIAL_DIRS.pop(me, None)
        for router in routers:
            if router.files:  # a trial wrote (this one, or another thread's): this thread's file, to close
                sink = router.files.pop(me, None)
                if sink is not None:
                    sink.close()

    def _install(self) -> tuple[_Router, _Router]:
        with _ROUTERS_LOCK:
            routers = []
            for name in ("stdout", "stderr"):
                current = getattr(sys, name)
                if isinstance(current, _Router) and current.name == name:
                    router = current  # another executor's (a Dask worker's threads), or ours still in place
                else:  # the other stream's router (sys.stdout = sys.stderr): route to what it wraps
                    router = _Router(current.wrapped if isinstance(current, _Router) else current, name)
                    setattr(sys, name, router)
                routers.append(router)
            self._routers = (routers[0], routers[1])
            return self._routers

    def close(self) -> None:
        """Put the streams back, where nobody replaced them since and no other trial is writing through them."""
        routers, self._routers = self._routers, None
        if routers is None:
            return
        with _ROUTERS_LOCK:
            for router in routers:
                if getattr(sys, router.name) is router and not _TRIAL_DIRS and not router.files:
                    setattr(sys, router.name, router.wrapped)


class FdCapture:
    """A worker process's file descriptors 1 and 2, read through pipes for the trial running.

    Catches what C code and child processes write too. Everything still goes
    on to the worker's stderr, where it went before; while a trial runs it
    also goes to that trial's files.
    """

    def __init__(self) -> None:
        self._out = os.dup(2)  # where worker output went before (fd 1 is a copy of 2 in a worker)
        self._sinks: dict[int, TailFile | None] = {1: None, 2: None}
        self._drained = {1: threading.Event(), 2: threading.Event()}
        self._marker = os.urandom(16).hex().encode()
        self._threads: list[threading.Thread] = []
        for fd in (1, 2):
            read, write = os.pipe()
            os.dup2(write, fd)
            os.close(write)
            thread = threading.Thread(target=self._pump, args=(read, fd), name=f"somatize-capture-{fd}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, read: int, fd: int) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read, 65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            marker_at = pending.find(self._marker)
            while marker_at >= 0:  # everything the trial wrote before the marker has been read
                self._emit(fd, pending[:marker_at])
                pending = pending[marker_at + len(self._marker) :]
                self._drained[fd].set()
                marker_at = pending.find(self._marker)
            keep = _marker_start(pending, self._marker)  # a marker split across two reads: hold its head back
            self._emit(fd, pending[: len(pending) - keep])
            pending = pending[len(pending) - keep :]

    def _emit(self, fd: int, data: bytes) -> None:
        if not data:
            return
        sink = self._sinks[fd]
        if sink is not None:
            sink.write(data)
        with contextlib.suppress(OSError):
            os.write(self._out, data)

    @contextlib.contextmanager
    def trial(self, trial_dir: str | None) -> Iterator[None]:
        if trial_dir is None:
            yield
            return
        self._sinks = {1: TailFile(Path(trial_dir) / STDOUT), 2: TailFile(Path(trial_dir) / STDERR)}
        try:
            yield
        finally:
            self._barrier()
            sinks, self._sinks = self._sinks, {1: None, 2: None}
            for sink in sinks.values():
                if sink is not None:
                    sink.close()

    def _barrier(self, timeout: float = 2.0) -> None:
        """Wait until what the trial wrote has gone through the pipes: a marker written after it came out."""
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        for fd in (1, 2):
            self._drained[fd].clear()
            with contextlib.suppress(OSError):
                os.write(fd, self._marker)
        for fd in (1, 2):
            self._drained[fd].wait(timeout)


def _marker_start(data: bytes, marker: bytes) -> int:
    """The length of the longest end of `data` that begins `marker` (0: none)."""
    for length in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-length:]):
            return length
    return 0


# The trial directories of one study ------------------------------------------------------------


@dataclass(frozen=True)
class KeepPolicy:
    """`trial_dirs:` in the study file: keep every trial's directory, the best `best`, or none."""

    keep: str = "all"
    best: int = 1


class TrialDirs:
    """Where each trial's directory is; a bus subscriber that removes the directories the keep
    policy drops as trials finish.

    With `on_demand` (Python functions) a trial's directory is only named when
    it starts: the executor makes it at its first use (TailFile, `trial.dir`),
    because most quick functions print nothing and a mkdir per trial was a
    large share of their cost and left a folder of empty directories
    (`somatize run` of 3,000 trivial in-process trials, load ~9 on 2 cores:
    5.0 s with a mkdir per trial, 3.7 s without; ~1.1 against ~0.7 ms a
    trial once the 1.6 s start-up is taken off). Otherwise
    (shell commands, whose process start dwarfs a mkdir) it is made when the
    trial starts. Either way the trial's record names it only if it is there
    when the trial finishes.
    """

    @property
    def events(self) -> tuple[type[Event], ...]:
        """All it reads: the bus calls it for no other event, and for none when every directory is kept."""
        from ..events import FINISHED_TRIAL_EVENTS  # here, not at the top: ask and tell import this module

        return () if self.policy.keep == "all" else FINISHED_TRIAL_EVENTS

    def __init__(
        self, results: Path, policy: KeepPolicy | None = None, objective: Objective | None = None,
        on_demand: bool = False,
    ):  # fmt: skip
        self.results = results
        self.root = trials_root(results)
        self.policy = policy or KeepPolicy()
        self.objective = objective
        self.on_demand = on_demand
        self._kept: list[Trial] = []  # with keep: best, the best so far (at most `best`), best first
        self._base: str | None = None  # the root, resolved once
        self._left: set[str] = set()  # with on_demand: what was in the root before the first trial

    def recorded(self, trial_id: str) -> str:
        """The trial record's `log_dir`: relative to the results file's directory."""
        return f"{self.root.name}/{trial_id}"

    def prepare(self, trial_id: str) -> str:
        """The trial's directory, made new and empty, or with `on_demand` not there yet (what an earlier
        study of the same name left at its path goes)."""
        base = self._base
        if base is None:
            if not self.on_demand:
                self.root.mkdir(parents=True, exist_ok=True)
            base = self._base = str(self.root.resolve())
            if self.on_demand:  # listed once: a lstat per trial was a tenth of a trivial trial's cost (issue 18)
                try:
                    self._left = set(os.listdir(base))
                except OSError:  # not there (yet): nothing left at any trial's path
                    self._left = set()
        path = base + os.sep + trial_id  # strings: pathlib's joins, even os.path.join, cost more than the system calls
        if self.on_demand:
            if trial_id in self._left:  # usually nothing is there
                self._left.discard(trial_id)
                if os.path.lexists(path):
                    _remove_path(Path(path))
            return path
        try:
            os.mkdir(path)  # the common case, a new number: one system call
        except FileExistsError:
            _remove_path(Path(path))
            os.mkdir(path)
        return path

    def finished(self, trial_id: str) -> str | None:
        """The trial record's `log_dir` once the trial has finished: None when it has no directory."""
        if self._base is None:
            return None
        path = self._base + os.sep + trial_id
        # access() answers "nothing there" without the exception isdir() takes for it: most quick
        # functions have no directory, and that exception was a twentieth of such a trial's cost.
        if not os.access(path, os.F_OK, follow_symlinks=False) or not os.path.isdir(path):
            return None
        return self.recorded(trial_id)

    def start_afresh(self) -> None:
        """A new study over this results file: the trial directories of the study it replaces go with it."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            if _TRIAL_DIR.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)

    def resumed(self, trials: list[Trial]) -> None:
        """The finished trials of a resumed study, so the policy ranks them with the new ones."""
        if self.policy.keep == "all":  # nothing to rank: not even a sort of a 100,000-trial history
            return
        for trial in sorted((t for t in trials if t.state.is_finished()), key=lambda t: t.number):
            self._finish(trial)

    def __call__(self, event: Event) -> None:
        from ..events import FINISHED_TRIAL_EVENTS, StudyStarted  # here: the study-file loader imports this module

        if isinstance(event, StudyStarted):
            return
        if isinstance(event, FINISHED_TRIAL_EVENTS) and event.trial is not None:  # type: ignore[attr-defined]
            self._finish(event.trial)  # type: ignore[attr-defined]

    def _finish(self, trial: Trial) -> None:
        """Apply the keep policy to a trial that has just finished: a few list operations, no sorting of all."""
        if self.policy.keep == "all":
            return
        if self.policy.keep == "best" and self._ranks(trial):
            self._kept.append(trial)
            self._kept.sort(key=self._rank)  # at most best + 1 of them
            if len(self._kept) <= self.policy.best:
                return
            trial = self._kept.pop()  # the one pushed out of the top
        self._remove(trial)

    def _ranks(self, trial: Trial) -> bool:
        """Whether the trial competes for a place among the best: completed, with a primary value and a directory."""
        objective = self.objective
        return (
            trial.state is TrialState.COMPLETED and trial.log_dir is not None  # the best that have a directory
            and objective is not None and objective.metric in trial.values
        )  # fmt: skip

    def _rank(self, trial: Trial) -> tuple[float, int]:
        assert self.objective is not None
        sign = 1.0 if self.objective.direction.value == "minimize" else -1.0
        return sign * trial.values[self.objective.metric], trial.number  # ties: the earliest

    def _remove(self, trial: Trial) -> None:
        if trial.log_dir is not None:
            shutil.rmtree(self.root / trial.id, ignore_errors=True)
            trial.log_dir = None  # the record says no directory is kept


def _remove_path(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def trial_files(study: Study, results: Path, wanted: str) -> tuple[Path, Path]:
    """The stdout and stderr files kept for trial `wanted` (an id, or a number) of the study in `results`.

    Looked up beside the results file, by the trial's id: a results file names
    the directory (`log_dir`), but is not trusted to say where it is.
    UsageError for a trial the study does not have, NothingKept when none are kept.
    """
    number = int(wanted) if wanted.isdigit() else None
    trial = next((t for t in study.trials if t.id == wanted or t.number == number), None)
    if trial is None:
        known = ", ".join(t.id for t in study.trials[:3]) + (", ..." if len(study.trials) > 3 else "")
        raise UsageError(f"{results} has no trial {wanted!r} (its trials: {known or 'none'})")
    if trial.log_dir is None:
        raise NothingKept(_no_directory(study, trial))
    directory = trials_root(results) / trial.id
    files = directory / STDOUT, directory / STDERR
    if not directory.is_dir():
        raise NothingKept(f"{directory}: no such directory (moved or removed since the run?)")
    return files  # a file that is not there: the trial printed nothing on that stream


def _no_directory(study: Study, trial: Trial) -> str:
    """Why a trial has no directory, as far as its study's spec tells: a Python function's is made on
    first use, so one that printed nothing (and did not use `trial.dir`) never had one."""
    spec = study.spec or {}
    executor = spec.get("executor")
    kept = spec.get("trial_dirs")
    keep = kept.get("keep", "all") if isinstance(kept, dict) else "all"
    if isinstance(executor, dict) and executor.get("function") is not None and keep != "none":
        why = "it printed nothing and did not use trial.dir"
        if keep == "best":  # or it had one, and the keep policy removed it
            best = kept.get("best", 1)  # type: ignore[union-attr]
            return f"{trial.id} has no directory: {why}, or it was not among the best {best} kept (trial_dirs)"
        return f"{trial.id} has no directory: {why} (or the results went to stdout)"
    return f"{trial.id} has no directory kept (trial_dirs: keep, or the results went to stdout)"
