"""The journal: every finished trial appended and flushed before the next one starts.

A bus subscriber (inline, so the flush happens before the runner moves on).
One JSON object per line: a header naming the study, then one line per
finished trial. A `kill -9` loses at most the trials that were running; a
torn last line (killed mid-write) is ignored on reading. With `sync` (the
study file's `durability: power`, the default) a background thread fsyncs the
journal at most SYNC_INTERVAL after a trial finishes, so a power loss loses at
most the trials of the last second; closing fsyncs whatever is left.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import OutputWriteError, ResultsFileError
from ..space import SearchSpace
from ..study import Study, Trial, TrialState
from . import fastjson
from .paths import check_own_file
from .reader import gc_paused
from .results import TrialLines, check_trial, load_json, one_line, trial_line, write_all

if TYPE_CHECKING:
    from ..events import Event

JOURNAL_FORMAT = "somatize.journal"

# What must not change between a study and its resumption.
RESUME_KEYS = ("search_space", "constraints", "strategy", "objectives")

# One encoder for every line: json.dumps with options builds a new one per call.
_encode_line = json.JSONEncoder(allow_nan=False, check_circular=False).encode  # plain trees: no cycles to look for


# Group commit: one fsync covers every line appended within this many seconds, the most a power loss
# may lose (issue 18). Measured (benchmarks/durability.py, BENCHMARKS.md "Durability"): one fsync of a
# journal takes 4.0 ms on ext4 here, 20 times a trivial trial; once a second off the trial loop,
# durability power and process cost the same per trial (173 µs medians, within 1 µs).
SYNC_INTERVAL = 1.0


def journal_path(results_path: Path) -> Path:
    """`results/mlp.json` -> `results/mlp.journal.jsonl`."""
    name = results_path.name
    stem = name[: -len(".json")] if name.endswith(".json") else name
    return results_path.with_name(f"{stem}.journal.jsonl")


# Trial lines to one write of a resumed history (Journal._write_history).
_HISTORY_LINES = 512


class Journal:
    """Appends each finished trial, one unbuffered write per line.

    A line is in the file (the kernel's page cache) when the write returns,
    so a `kill -9` of this process cannot lose it. A write that fails (a full
    disk) is cut back off, so the journal never keeps half a line, and raises
    a one-line ResultsFileError. With `sync`, a _Syncer thread makes the lines
    durable (fsync) at most SYNC_INTERVAL after they were written.
    """

    @property
    def events(self) -> tuple[type[Event], ...]:
        """All it reads: the bus calls it for no other event."""
        from ..events import FINISHED_TRIAL_EVENTS  # here, not at the top: ask and tell import this module

        return FINISHED_TRIAL_EVENTS

    def __init__(self, path: Path, sync: bool = True):
        self.path = path
        self._fd: int | None = None
        self._size = 0  # bytes of whole lines in the file
        self._syncer: _Syncer | None = None
        self._sync = sync
        self._lines: TrialLines | None = None  # set by begin

    def begin(self, study: Study, lines: TrialLines | None = None) -> None:
        """Start a new journal with the study header and any trials it already has (resumed).

        `lines` (shared with the results file's writer) holds trials' JSON already encoded
        (read from the results file): those are written as they are, all in one write; each
        trial that finishes is encoded there once, for both.
        """
        self._lines = lines
        if journal_exists(self.path):
            self._open()
            self._drop_torn_tail()
            return
        self._append(header_record(study))
        if self._sync:
            _sync_directory(self.path)  # the new file's name survives a power loss too
        if study.trials:  # a resumed study's history, copied in
            text = list(map(trial_line, study.trials)) if lines is None else lines.texts(study.trials)
            self._write_history(text)

    def _write_history(self, lines: list[str]) -> None:
        """The trials' lines, _HISTORY_LINES to a write. A failed write removes the journal: it holds nothing
        the file the history was read from does not, and a journal of part of it, or of none (as a failed
        write cut back to the header left it), would be what the next --resume reads instead of that file.

        In pieces, not one: one join, concatenation and encoding of a 100,000-trial history made three
        new 50 MB blocks, each a fresh mapping whose pages faulted in as it was filled: 0.49 s where
        pieces of 512 lines, their memory reused from one to the next, took 0.08 s (issue 18, load 7).
        """
        try:
            for i in range(0, len(lines), _HISTORY_LINES):
                self._write(('{"trial": ' + '}\n{"trial": '.join(lines[i : i + _HISTORY_LINES]) + "}\n").encode())
        except OutputWriteError:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise

    def _write(self, data: bytes, written: int | None = None) -> None:
        """Append whole lines; a failed write is cut back off (see _append). `written`: how much of `data` a
        write has taken already."""
        fd = self._fd if self._fd is not None else self._open()
        try:
            if written is None:
                written = os.write(fd, data)  # one system call for a trial's line
            if written < len(data):  # a write may take only part of it
                write_all(fd, data[written:])
        except OSError as exc:
            self._cut_back(fd, exc)
        self._size += len(data)
        if self._syncer is not None:
            self._syncer.written()

    def _cut_back(self, fd: int, exc: OSError) -> NoReturn:
        """After a failed write: the journal cut back to its whole lines, and a one-line error."""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, self._size)  # frees space: works on a full disk too
            if self._size == 0:  # not even the header: no journal to keep
                os.unlink(self.path)
        raise OutputWriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def __call__(self, event: Event) -> None:
        # A finished trial's event is the one that carries the trial: no `from ..events import` here, which
        # costs a trivial trial a microsecond each time (ask and tell import this module, never events).
        trial = getattr(event, "trial", None)
        if trial is None:
            return
        if self._lines is None:
            self._append({"trial": trial.to_dict()})
            return
        # The trial's JSON, encoded once for the journal and the results file.
        data = ('{"trial": ' + self._lines.line(trial) + "}\n").encode("utf-8")
        fd = self._fd
        if fd is None:
            self._write(data)
            return
        # _write's common case inline (a call fewer, and none of _Syncer.written while a sync is already due):
        # one system call, the line in the kernel's page cache before the trial is counted as done.
        try:
            written = os.write(fd, data)
        except OSError as exc:
            self._cut_back(fd, exc)
        if written < len(data):  # a part: _write writes the rest, or cuts the part back off
            self._write(data, written)
            return
        self._size += written
        syncer = self._syncer
        # Read after the write, as _Syncer.written reads it: a sync due then begins after this line, so covers it.
        if syncer is not None and (syncer._dirty is False or syncer._error is not None):
            syncer.written()

    def _open(self) -> int:
        if self._fd is None:
            self._fd = open_for_append(self.path, os.O_WRONLY)
            self._size = os.fstat(self._fd).st_size
            if self._sync:
                self._syncer = _Syncer(self._fd, self.path)
        return self._fd

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line (a kill mid-write, which reading skips), so appends start on a line of their own."""
        fd = self._open()
        with open(self.path, "rb") as handle:
            data = handle.read()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            os.ftruncate(fd, whole)
            if self._syncer is not None:
                self._syncer.written()
        self._size = whole

    def _append(self, record: Mapping[str, Any]) -> None:
        self._write((_encode_line(record) + "\n").encode("utf-8"))

    def close(self) -> None:
        """Close the journal, first making every line durable (with `sync`)."""
        if self._fd is not None:
            try:
                if self._syncer is not None:
                    self._syncer.stop()
            finally:
                os.close(self._fd)
                self._fd = None
                self._syncer = None

    def remove(self) -> None:
        """Once the results file holds everything, the journal has done its job."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _Syncer:
    """A thread that fsyncs the journal's fd soon after lines are written: group commit.

    A line written at least SYNC_INTERVAL after the last fsync is synced at
    once; lines written sooner share the next fsync, SYNC_INTERVAL after the
    last one. The trial loop only sets a flag; it never waits for the disk
    (except in stop, which waits for the last fsync).
    """

    def __init__(self, fd: int, path: Path):
        self._fd = fd
        self._path = path
        self._wake = threading.Condition()
        self._dirty = False  # lines written since the last fsync began
        self._stopping = False
        self._error: OSError | None = None
        self._last = -SYNC_INTERVAL  # monotonic time the last fsync began
        self._thread = threading.Thread(target=self._loop, name="somatize-journal-fsync", daemon=True)
        self._thread.start()

    def written(self) -> None:
        """Called after each write: the journal has lines to sync. Raises an earlier fsync's failure."""
        if self._error is not None:
            self._raise()
        if self._dirty:  # without the lock: the fsync that clears it begins after this write, so covers it
            return
        with self._wake:
            if not self._dirty:
                self._dirty = True
                self._wake.notify()

    def stop(self) -> None:
        """Sync what is left and end the thread; raises an fsync's failure."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        if self._error is not None:
            self._raise()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._dirty and not self._stopping:
                    self._wake.wait()
                if not self._dirty:
                    return  # stopping, nothing left
                wait = self._last + SYNC_INTERVAL - time.monotonic()
                if wait > 0 and not self._stopping:
                    self._wake.wait(wait)  # gathers the lines of the next second; stop ends the wait
                    continue
                self._dirty = False
                self._last = time.monotonic()
            try:
                os.fsync(self._fd)
            except OSError as exc:  # EIO, ENOSPC on some file systems: the next append or close says so
                self._error = exc
                return

    def _raise(self) -> None:
        exc = self._error
        assert exc is not None
        raise OutputWriteError(f"cannot sync {self._path} to disk: {exc.strerror or exc}")


def open_for_append(path: Path, access: int) -> int:
    """The journal's descriptor for appending (`access`: os.O_WRONLY or os.O_RDWR), created if need be; a
    journal that is not a regular file of this user's is refused (check_own_file). O_NOFOLLOW: never write
    through a symlink that appeared at the journal's name."""
    check_own_file(path, "journal")
    try:
        return os.open(path, access | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise ResultsFileError(f"cannot write {path}: {exc.strerror or exc}") from None


def _sync_directory(path: Path) -> None:
    """fsync the directory holding `path`, so that a file just created there keeps its name."""
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # a directory we cannot open cannot be synced: the file's lines are still fsynced
    try:
        os.fsync(fd)
    except OSError as exc:
        raise OutputWriteError(f"cannot sync {path.parent} to disk: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def journal_exists(path: Path) -> bool:
    try:
        return os.lstat(path).st_size > 0  # lstat: a symlink at the name is not taken for a journal
    except FileNotFoundError:
        return False


def header_record(study: Study) -> dict[str, Any]:
    """A journal's first line: the study it belongs to."""
    return {"format": JOURNAL_FORMAT, "version": 1, "study": _header(study)}


def _header(study: Study) -> dict[str, Any]:
    return {"name": study.name, "id": study.id, "spec": study.spec, "objectives": [o.to_dict() for o in study.objectives]}


# No real study reaches a billion trials (at a millisecond each, eleven days of
# trials): a larger number in a journal is corruption, not history.
MAX_TRIAL_NUMBER = 10**9 - 1


def read_journal_header(path: Path) -> dict[str, Any]:
    """The header alone (the first line), as read_journal checks it: what --resume compares first,
    before it reads a 100,000-trial journal once, with the study's space."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path}: cannot read journal: {exc}") from None
    if not first.endswith("\n"):  # no whole line: read_journal says what is wrong
        return read_journal(path)[0]
    try:
        record = load_json(first)
        if not isinstance(record, dict) or record.get("format") != JOURNAL_FORMAT:
            raise ValueError("not a somatize journal")
        return _check_header(record["study"])
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
        return read_journal(path)[0]  # the same message as ever


def read_journal(path: Path, space: SearchSpace | None = None) -> tuple[dict[str, Any], list[Trial]]:
    """The header and each trial's latest record, in number order.

    A torn last line (killed mid-write) is skipped. Any other bad line is a
    one-line ResultsFileError naming the path and line: a line that is not a
    trial record, a trial number told twice or out of range, and, given the
    study's `space`, parameters that are not a parameter set of it.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path}: cannot read journal: {exc}") from None
    state = JournalState(path, space)
    with gc_paused():  # the trials built (as a results file's are read, storage/reader.py)
        for index, line in enumerate(lines):
            state.add(line, torn=index == len(lines) - 1)
        if state.header is None:
            raise ResultsFileError(f"{path}: empty journal")
        return state.header, state.sorted_trials()


class JournalState:
    """What a journal says, line by line: its header and each trial's latest record.

    A trial asked by `somatize ask` has several records: `running` (again at
    each renewal of its lease), perhaps `stale`, then its outcome. Any record
    may follow a running or stale one; nothing may follow an outcome.

    Only a trial's latest record becomes a Trial, when `trials` is read:
    converting and checking a record took 90 µs, half of reading a line
    (benchmarks/asktell.py, 1,000 trials: two records each).
    """

    def __init__(self, path: Path, space: SearchSpace | None = None):
        self.path = path
        self.space = space
        self.header: dict[str, Any] | None = None
        self._trials: dict[int, Trial] = {}
        self._latest: dict[int, tuple[int, Any, TrialState]] = {}  # number -> (line index, record, state), unread
        self.lines = 0  # lines read, for the line numbers of messages

    @property
    def trials(self) -> dict[int, Trial]:
        """Each trial's latest record, by number (in the order first seen)."""
        if self._latest:
            self._settle()
        return self._trials

    def add(self, line: str, torn: bool = False) -> None:
        """Read one line; `torn`: it may be the torn end of a killed write, skipped if it does not parse."""
        index = self.lines
        trial = None
        try:
            record = fastjson.loads(line, load_json)  # as load_json reads it (a resumed journal: 100,000 lines)
            if index == 0:
                if not isinstance(record, dict) or record.get("format") != JOURNAL_FORMAT:
                    raise ValueError("not a somatize journal")
                self.header = _check_header(record["study"])
                self.lines += 1
                return
            data = record["trial"]
            if torn:  # whole or skipped: a torn line is not kept for later
                trial = check_trial(Trial.from_dict(data))
                number, state = trial.number, trial.state
            else:
                number, state = _record_number(data), TrialState(data["state"])
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
            if torn and index > 0:
                return  # torn final line from a kill mid-write
            reason = "nested too deeply" if isinstance(exc, RecursionError) else one_line(exc)
            raise ResultsFileError(f"{self.path}:{index + 1}: corrupt journal line ({reason})") from None
        # A whole record that does not fit is refused wherever it is, the last line too.
        problem = _order_problem(number, self._state_of(number))
        if problem is None and trial is not None:
            problem = trial_problem(trial, self.space, {})
        if problem is not None:
            raise ResultsFileError(f"{self.path}:{index + 1}: {one_line(problem)}")
        if trial is not None:
            self._latest.pop(number, None)
            self._trials[number] = trial
        else:
            self._latest[number] = (index, data, state)
            self._trials.pop(number, None)
        self.lines += 1

    def _state_of(self, number: int) -> TrialState | None:
        if number in self._latest:
            return self._latest[number][2]
        trial = self._trials.get(number)
        return None if trial is None else trial.state

    def _settle(self) -> None:
        """The unread latest records as Trials, checked, in line order (so the first bad line is named).

        Built up to the first record that is not a trial, then checked against the space all at once
        (SearchSpace.all_fit), one by one only when that finds a misfit: the first bad line either way.
        """
        built: list[tuple[int, int, Trial]] = []  # (line index, number, trial)
        corrupt: str | None = None
        for number, (index, data, _) in sorted(self._latest.items(), key=lambda item: item[1][0]):
            try:
                built.append((index, number, check_trial(Trial.from_dict(data))))
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else one_line(exc)
                corrupt = f"{self.path}:{index + 1}: corrupt journal line ({reason})"
                break
        if self.space is not None and not self.space.all_fit([trial.params for _, _, trial in built]):
            for index, _, trial in built:
                problem = trial_problem(trial, self.space, {})
                if problem is not None:
                    raise ResultsFileError(f"{self.path}:{index + 1}: {one_line(problem)}")
        if corrupt is not None:
            raise ResultsFileError(corrupt)
        for _, number, trial in built:
            self._trials[number] = trial
        self._latest.clear()

    def sorted_trials(self) -> list[Trial]:
        trials = self.trials
        return [trials[n] for n in sorted(trials)]


def _record_number(data: Any) -> int:
    number = data["number"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ValueError(f"trial number must be a non-negative integer, got {number!r}")
    return number


def _order_problem(number: int, before: TrialState | None) -> str | None:
    if number > MAX_TRIAL_NUMBER:
        return f"trial number {number} is out of range (at most {MAX_TRIAL_NUMBER})"
    if before is not None and before.is_finished():  # an asked trial's records precede its outcome
        return f"trial number {number} appears twice"
    return None


def trial_problem(trial: Trial, space: SearchSpace | None, earlier: Mapping[int, Trial]) -> str | None:
    """Why a trial read back from disk cannot be part of the study, or None."""
    if trial.number > MAX_TRIAL_NUMBER:
        return f"trial number {trial.number} is out of range (at most {MAX_TRIAL_NUMBER})"
    before = earlier.get(trial.number)
    if before is not None and before.state.is_finished():  # an asked trial's records precede its outcome
        return f"trial number {trial.number} appears twice"
    if space is not None:
        problem = space.problem(trial.params)
        if problem is not None:
            return f"trial {trial.number}'s params do not fit the study: {problem}"
    return None


def check_trials(trials: list[Trial], space: SearchSpace, source: Path) -> None:
    """The checks of read_journal, for trials read from a results file (no lines to name)."""
    if _plainly_fit(trials, space):
        return
    seen: dict[int, Trial] = {}
    for trial in trials:
        problem = trial_problem(trial, space, seen)
        if problem is not None:
            raise ResultsFileError(f"{source}: {one_line(problem)}")
        seen[trial.number] = trial


def _plainly_fit(trials: list[Trial], space: SearchSpace | None) -> bool:
    """Whether trial_problem finds nothing wrong with any of `trials` (numbers all distinct and in range,
    every parameter set in the space), checked all at once; False: trial by trial, to name the first."""
    numbers = set(map(operator.attrgetter("number"), trials))  # C-level passes: 100,000 trials on a resume
    if len(numbers) != len(trials) or (numbers and max(numbers) > MAX_TRIAL_NUMBER):
        return False
    return space is None or space.all_fit(list(map(operator.attrgetter("params"), trials)))


def _check_header(header: Any) -> dict[str, Any]:
    """The header as --resume uses it: a mapping whose spec is a mapping and whose id is a string."""
    if not isinstance(header, dict):
        raise TypeError("the study header must be a JSON object")
    if not isinstance(header.get("spec", {}), dict):
        raise TypeError("the study spec must be a JSON object")
    if not isinstance(header.get("id", ""), str):
        raise TypeError("the study id must be a string")
    return header


def spec_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two study specs among the keys a resume must keep (n_trials may grow)."""
    changes = []
    for key in RESUME_KEYS:
        before, after = old.get(key), new.get(key)
        if key == "strategy" and isinstance(before, Mapping) and isinstance(after, Mapping):
            before = {k: v for k, v in before.items() if k != "n_trials"}
            after = {k: v for k, v in after.items() if k != "n_trials"}
        if _canonical(before) != _canonical(after):
            changes.append(key)
    return changes


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
