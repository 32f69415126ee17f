"""The results file (SPEC §4): one JSON document, written atomically."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import OutputWriteError, ResultsFileError, SomatizeError
from ..study import Direction, ParetoFront, Study, Trial, TrialState
from .paths import describe_non_regular, results_target, temp_prefix
from .trialjson import trial_json

if TYPE_CHECKING:
    from ..events import Event

# The line that opens the trials array; readers (storage/reader.py) look for it to read a file line by line.
TRIALS_OPENING = '  "trials": ['
TRIAL_INDENT = "    "
# Lines per write(): few system calls, and no copy of the whole document in memory.
_LINES_PER_WRITE = 512


def trial_line(trial: Trial) -> str:
    """A trial's JSON object on one line, as the results file holds it: the encoding of `trial.to_dict()`,
    written from the trial's fields in one pass (trialjson.py)."""
    return trial_json(trial)


class TrialLines:
    """Each finished trial's JSON object, encoded once for the journal and the results file alike.

    Keyed by trial number and holding the trial itself: a line is reused only for
    the very trial it was encoded from. Shared by the journal (which writes
    `{"trial": LINE}`) and PeriodicResults, so a trial is turned into JSON once per
    run, not once per writer; a resumed study starts with the lines read from its
    results file (storage/reader.py).
    """

    def __init__(self, known: dict[int, tuple[Trial, str, str | None]] | None = None):
        """`known`: number -> (trial, its line, its log_dir then), taken over, not copied (a resumed study's
        100,000 lines: a copy cost a tenth of a second, issue 18)."""
        # What a finished trial's record may still change: `trial_dirs: keep: best` removes the directory of
        # a trial pushed out of the best (and sets its log_dir to None) after that trial was encoded.
        self._lines: dict[int, tuple[Trial, str, str | None]] = {} if known is None else known

    def get(self, number: int) -> tuple[Trial, str] | None:
        entry = self._lines.get(number)
        return None if entry is None else entry[:2]

    def line(self, trial: Trial) -> str:
        entry = self._lines.get(trial.number)
        if entry is not None and entry[0] is trial and entry[2] == trial.log_dir:
            return entry[1]
        text = trial_line(trial)
        self._lines[trial.number] = (trial, text, trial.log_dir)
        return text

    def texts(self, trials: Iterable[Trial]) -> list[str]:
        """The line of each of `trials`, in order (`line` for each, as one loop)."""
        get, line = self._lines.get, self.line
        return [
            entry[1] if (entry := get(trial.number)) is not None and entry[0] is trial and entry[2] == trial.log_dir
            else line(trial)
            for trial in trials
        ]


def results_pieces(head: dict[str, Any], lines: Iterable[str]) -> Iterator[str]:
    """The results document in pieces: `head` (Study.head_dict) indented by 2, then each trial's line.

    The study's definition reads as before (indented); each trial is one line
    (`"trials": [` then `    {"id": "trial_0000", ...},` ...): the same JSON
    document as indenting every trial, written by the C encoder (a pretty-printed
    100,000-trial file took 6.4 s to encode, the pure-Python indenting encoder;
    one line per trial 0.4 s), and a reader can take one trial at a time.
    """
    yield head_text(head)
    written = False
    for piece in body_pieces(lines):
        yield piece
        written = True
    yield results_tail(written)


def head_text(head: dict[str, Any]) -> str:
    """The document up to and including the line that opens the trials array."""
    text = json.dumps(head, indent=2, allow_nan=False)
    return text[: -len("\n}")] + ",\n" + TRIALS_OPENING


def results_tail(any_trials: bool) -> str:
    """What closes the document after the last trial's line (or after the opening of an empty array)."""
    return "\n  ]\n}\n" if any_trials else "]\n}\n"


_SEPARATOR = ",\n" + TRIAL_INDENT  # between two trials' lines
_OPENING = "\n" + TRIAL_INDENT  # before the first


def body_pieces(lines: Iterable[str], first: bool = True) -> Iterator[str]:
    """The trials' lines with what goes between them, _LINES_PER_WRITE lines joined in one call a piece;
    `first`: whether these lines start the array (else they follow lines written before).

    The results writer runs in a thread beside the trial loop, and a Python loop over every line here
    (100,000 iterations a write at 100,000 trials) took the GIL from the loop for the whole of it (issue 18).
    """
    if isinstance(lines, list):  # the writer's own list: slices, no copy of the lines themselves
        batches: Iterator[list[str]] = (lines[i : i + _LINES_PER_WRITE] for i in range(0, len(lines), _LINES_PER_WRITE))
    else:
        source = iter(lines)
        batches = iter(lambda: list(itertools.islice(source, _LINES_PER_WRITE)), [])
    for batch in batches:
        yield (_OPENING if first else _SEPARATOR) + _SEPARATOR.join(batch)
        first = False


def results_json(study: Study) -> str:
    return "".join(results_pieces(study.head_dict(), map(trial_line, study.trials)))


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


# New files get the usual permissions (0644 under a 022 umask), not mkstemp's 0600.
_FILE_MODE = 0o666 & ~_current_umask()


def write_atomically(path: Path, text: str | Iterable[str], sync: bool = True) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file.

    `text` may come in pieces (results_pieces), written as they come. A failure
    (a full disk) leaves the old file as it was and no temp file behind. Without `sync`
    the data is not forced to disk before the rename (for a file rebuilt from a journal anyway).
    """
    path = Path(path)
    problem = describe_non_regular(path)  # again at every write: a rename would replace a device or FIFO
    if problem is not None:
        raise ResultsFileError(f"cannot write {path}: {problem}")
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent or ".")
    try:
        os.fchmod(fd, _FILE_MODE)
        for piece in [text] if isinstance(text, str) else text:
            write_all(fd, piece.encode("utf-8"))
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may take only part of them)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_results(study: Study, path: Path, lines: TrialLines | None = None, sync: bool = True) -> None:
    """Write the results file; a failure to write (a full disk) is a one-line ResultsFileError.

    A trial whose line `lines` holds already is not encoded again. Without `sync`, not forced to disk
    (a study shared by ask/tell rebuilds it from its fsynced journal).
    """
    line = trial_line if lines is None else lines.line
    try:
        write_atomically(path, results_pieces(study.head_dict(), map(line, study.trials)), sync)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_atomically_results(study: Study, path: Path, lines: Iterable[str],
                             best: Trial | None | str = "compute") -> None:
    """write_results with every trial's line given, in the order of study.trials (and its best trial if known)."""
    try:
        write_atomically(path, results_pieces(study.head_dict(best), lines))
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_writable(path: Path) -> Path:
    """Fail before the first trial when the results could not be written; the file to write to."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ResultsFileError(f"{path}: cannot write results: directory {parent} does not exist")
    target = results_target(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ResultsFileError(f"{path}: cannot write results: permission denied")
    return target


def parse_results(text: str, name: str) -> Study:
    """A Study from results JSON text; any problem is a one-line ResultsFileError naming the file."""
    try:
        data = load_json(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{name}: not valid JSON (line {exc.lineno}: {exc.msg}); is the file truncated?") from None
    except RecursionError:
        raise ResultsFileError(f"{name}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # a NaN/Infinity literal, or an integer too long to read
        raise ResultsFileError(f"{name}: not valid JSON ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ResultsFileError(f"{name}: not a somatize results file (expected a JSON object)")
    try:
        return check_study(Study.from_dict(data))
    except KeyError as exc:
        raise ResultsFileError(f"{name}: not a valid results file: missing {exc}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ResultsFileError(f"{name}: not a valid results file: {one_line(exc)}") from None


def _no_constant(literal: str) -> float:
    # somatize writes NaN and the infinities as the strings "nan"/"inf"; a bare
    # literal is not standard JSON and could not be written back (allow_nan=False).
    raise ValueError(f"{literal} is not a JSON number")


# One decoder for every call: json.loads with an option builds a new one per call, which was a fifth
# of reading a journal line (benchmarks/asktell.py, 1,000 trials).
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def load_json(text: str) -> Any:
    """json.loads without NaN/Infinity literals; raises ValueError (or RecursionError) on bad text."""
    return _DECODER.decode(text)


def one_line(message: object) -> str:
    """An error message on one line (names from the file may hold newlines)."""
    return " ".join(str(message).splitlines())


def check_study(study: Study) -> Study:
    """What Study.from_dict leaves unchecked, so a study read is one that can be shown and written back."""
    for objective in study.objectives:
        _check_type("objective metric", objective.metric, str, optional=False)
    _check_type("stop_reason", study.stop_reason, str)
    _check_time("started_at", study.started_at)
    _check_time("finished_at", study.finished_at)
    for trial in study.trials:
        check_trial(trial)
    return study


def check_trial(trial: Trial) -> Trial:
    """Field types Trial.from_dict leaves unchecked, and times that can be written back; TypeError/ValueError if not."""
    if _plainly_valid(trial):
        return trial
    where = f"trial {trial.number}"
    # pruned_step is only ever printed, and an objective may raise TrialPruned(step=1.5): not checked.
    for field in ("duration_ms", "trial_seed"):
        _check_type(f"{where} {field}", getattr(trial, field), int)
    _check_type(f"{where} attempts", trial.attempts, int, optional=False)
    _check_type(f"{where} error", trial.error, str)
    _check_type(f"{where} reason", trial.reason, str)
    _check_type(f"{where} truncated", trial.truncated, dict)  # only written back, never interpreted
    _check_time(f"{where} started_at", trial.started_at)
    _check_time(f"{where} lease until", trial.lease_until)
    for record in trial.metrics:
        _check_type(f"{where} metric step", record.step, int)
        _check_time(f"{where} metric timestamp", record.timestamp)
    return trial


def _plainly_valid(trial: Trial) -> bool:
    """check_trial's checks as one expression, for a trial as somatize writes it: 7,000 instructions
    where the calls below take 19,000, for each of a resumed 100,000-trial study's trials (issue 18).
    False says nothing: the checks below then name what is wrong, if anything is."""
    low, high = _TIME_RANGE
    return (
        (trial.duration_ms is None or type(trial.duration_ms) is int)
        and (trial.trial_seed is None or type(trial.trial_seed) is int)
        and type(trial.attempts) is int
        and (trial.error is None or type(trial.error) is str)
        and (trial.reason is None or type(trial.reason) is str)
        and trial.truncated is None
        and (trial.started_at is None or low <= trial.started_at <= high)
        and trial.lease_until is None
        and all(
            (r.step is None or type(r.step) is int) and (r.timestamp is None or low <= r.timestamp <= high)
            for r in trial.metrics
        )
    )


def _check_type(what: str, value: Any, kind: type, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = {int: "an integer", dict: "an object"}.get(kind, "a string")
        raise TypeError(f"{what} must be {expected}{' or null' if optional else ''}, got {repr(value)[:40]}")


# Times that iso() writes as a four-digit year, so from_iso() reads them back (years 1000 to 9999).
_TIME_RANGE = (-30_610_224_000.0, 253_402_300_000.0)


def _check_time(what: str, timestamp: float | None) -> None:
    if timestamp is not None and not _TIME_RANGE[0] <= timestamp <= _TIME_RANGE[1]:
        raise ValueError(f"{what} is out of range (years 1000 to 9999)")


def read_results(path: str | Path) -> Study:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_results(text, str(path))


# How often the results file is rewritten while trials finish: a reader sees
# progress within seconds, and a study of millisecond trials does not spend
# its time rewriting a file that grows with every trial. Counted from the end
# of the last write, so a write that takes long (a huge study) spaces them out.
PERIODIC_WRITE_SECONDS = 2.0


class _Written(NamedTuple):
    """What a periodic write left at the results path: how to know that file again, and where its trials are."""

    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns: a file changed since is not reused
    body_start: int  # the offset of the trials' lines (just past the head)
    body_length: int  # their bytes, separators included
    lines: int  # how many


class _SourceChanged(Exception):
    """The file a periodic write copies from ended early: it was changed behind the writer's back."""


# copy_file_range's answers for "not between these files" (another file system before Linux 5.3, one that
# cannot, a kernel without it): the bytes are then read and written instead.
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})
_COPY_CHUNK = 1 << 20  # bytes a read and write of the fallback move: a few GIL-free system calls per MB


def copy_range(source: int, target: int, offset: int, length: int) -> None:
    """Append `length` bytes of `source` from `offset` to `target` (at its position).

    In the kernel where it can (os.copy_file_range, Linux): the bytes never pass
    through Python and the GIL is free meanwhile, so the trial loop runs on while
    a periodic write copies the lines of the file before it (46 MB at 100,000
    trials). Raises _SourceChanged when `source` ends early.
    """
    end = offset + length
    copy = getattr(os, "copy_file_range", None)
    while copy is not None and offset < end:
        try:
            done = copy(source, target, end - offset, offset)
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE:
                raise
            break
        if done == 0:
            raise _SourceChanged
        offset += done
    while offset < end:
        data = os.pread(source, min(end - offset, _COPY_CHUNK), offset)
        if not data:
            raise _SourceChanged
        write_all(target, data)
        offset += len(data)


# The most buffers one writev takes (IOV_MAX on Linux and the BSDs).
_IOV_MAX = 1024


def write_buffers(fd: int, buffers: list[bytes]) -> int:
    """Write `buffers` one after the other, _IOV_MAX to a system call (os.writev, without the GIL); bytes written."""
    written = 0
    for i in range(0, len(buffers), _IOV_MAX):
        batch = buffers[i : i + _IOV_MAX]
        size = sum(map(len, batch))
        done = os.writev(fd, batch)
        if done < size:  # a short write (a signal, a nearly full disk): the rest as one piece
            write_all(fd, b"".join(batch)[done:])
        written += size
    return written


class PeriodicResults:
    """A bus subscriber that rewrites the results file every few seconds while trials finish.

    It keeps its own copy of the study (definition plus the trials it was told
    of), so a reader of the results file sees progress without waiting for the
    end. The trial loop only appends the finished trial's line (encoded once, for
    the journal too) and, when a write is due, encodes the document's small head;
    a background thread writes the file: a new file renamed over the old one, as
    every results write. A write after the first is incremental: the trials'
    lines of the file it replaces are copied in the kernel (copy_range), and only
    the bytes of the trials finished since (encoded on the loop as each finished)
    are written with writev. So the write thread takes the GIL for a few dozen
    system calls a write, for nothing that grows with the study, and the loop
    does not wait for it (issue 18: a 100,000-trial file rewritten in the loop
    took 3.9-4.6 s; in a thread that joined and wrote every line 512 at a time,
    some 200 GIL hand-overs a write, the loop stalled up to 21 ms). The file is, byte
    for byte, what writing every line afresh gives. `write_final` waits for a
    write in progress and writes the finished study, reusing the lines.
    """

    @property
    def events(self) -> tuple[type[Event], ...]:
        """All it reads: the bus calls it for no other event."""
        from ..events import FINISHED_TRIAL_EVENTS  # here, not at the top: ask and tell import this module

        return FINISHED_TRIAL_EVENTS

    def __init__(self, study: Study, path: Path, every_seconds: float | None = None, lines: TrialLines | None = None):
        """`lines`: where trials already encoded are (the journal's, a resumed results file's)."""
        from ..events import FINISHED_TRIAL_EVENTS  # not at the top: ask and tell import this module

        # Looked up once: an import statement in __call__ ran importlib's relative-name code for every trial.
        self._finished = FINISHED_TRIAL_EVENTS
        self.study = Study(study.name, study.space, study.objectives, study.strategy, study.spec, study.id,
                           list(study.trials), "running", study.started_at)
        self.path = path
        self.every_seconds = PERIODIC_WRITE_SECONDS if every_seconds is None else every_seconds
        self._last_write = time.monotonic()
        self._given = len(self.study.trials)  # trials it started with (a resumed study's)
        self._lines: list[str] = []  # the line of each of those, in order, as far as encoded (by the first write)
        # The line of each trial finished since, in order: taken as it finishes, on the trial loop (a lookup of
        # the line the journal has just encoded), so the write thread runs no Python per trial while the loop
        # waits for the GIL (issue 18).
        self._added: list[str] = []
        self._encoded = lines if lines is not None else TrialLines()
        # The best trial so far, kept up as trials finish by Study.best_trial's rule: the write
        # thread would otherwise walk every trial for it (0.3 s at 100,000 trials, holding the GIL).
        self._best = self.study.best_trial()
        self._front = ParetoFront(self.study)  # likewise for the front of a study of several objectives
        self._fronted = len(study.objectives) > 1  # one objective has no front to keep: no call a trial for it
        # One thread for every write, started at the first: a thread started per write made the loop wait in
        # Thread.start until the new thread ran, up to 6 ms on the loaded machine (issue 18).
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[tuple[bytes, list[bytes], int] | None] = queue.SimpleQueue()
        self._busy = False  # a write handed to the thread has not ended
        self._idle = threading.Event()
        self._idle.set()
        self._error: SomatizeError | None = None
        self._written: _Written | None = None  # the last periodic write's file, which the next one copies from
        # Each trial finished since the last write began, as the bytes the file holds for it (its line and what
        # goes before it): encoded on the loop as it finishes (0.1 µs for an ASCII line), so the thread passes them to
        # writev and runs no Python per trial; handed over at each write.
        self._pending: list[bytes] = []
        self._handed = 0  # how many of _added the writes begun so far were handed

    def __call__(self, event: Event) -> None:
        if isinstance(event, self._finished):
            trial: Trial = event.trial  # type: ignore[attr-defined]
            line = self._encoded.line(trial)
            self._pending.append(((_SEPARATOR if self.study.trials else _OPENING) + line).encode("utf-8"))
            self.study.trials.append(trial)
            self._added.append(line)
            self._consider(trial)
            if self._fronted:
                self._front.add(trial)
            if self._error is not None:  # a full disk: the run stops as when the write was in the loop
                error, self._error = self._error, None
                raise error
            if not self._busy and time.monotonic() - self._last_write >= self.every_seconds:
                # The head here, on the loop: a fraction of a millisecond, and the thread then runs no Python
                # but its system calls.
                head = head_text(self.study.head_dict(self._best, self._front.trials())).encode("utf-8")
                pending, self._pending = self._pending, []
                start, self._handed = self._handed, len(self._added)
                self._busy = True
                self._idle.clear()
                self._jobs.put((head, pending, start))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="somatize-results-write", daemon=True)
                    self._thread.start()

    @property
    def writing(self) -> bool:
        """Whether a periodic write is under way."""
        return self._busy

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._write_snapshot(*job)

    def _consider(self, trial: Trial) -> None:
        if trial.state is not TrialState.COMPLETED or trial.feasible is False:  # infeasible: never best (SPEC §9)
            return
        primary = self.study.objectives[0]  # Study.primary, without the property's call (every trial)
        metric = primary.metric
        value = trial.values.get(metric)
        if value is None or math.isnan(value):
            return
        best = self._best
        if best is None:
            self._best = trial
            return
        incumbent = best.values[metric]
        # Direction.better inline: one call fewer per trial (issue 18)
        better = value < incumbent if primary.direction is Direction.MINIMIZE else value > incumbent
        if better or (value == incumbent and trial.number < best.number):
            self._best = trial  # ties go to the earliest trial, also when trials finish out of order

    def _write_snapshot(self, head: bytes, pending: list[bytes], start: int) -> None:
        """Write the file of `head` and the trials finished since the start: `pending` after the first `start`."""
        try:
            self._written = self._write_file(head, pending, start)
        except OSError as exc:
            self._error = OutputWriteError(f"cannot write {self.path}: {exc.strerror or exc}")
        except SomatizeError as exc:
            self._error = exc
        finally:
            self._last_write = time.monotonic()
            self._busy = False
            self._idle.set()

    def _write_file(self, head: bytes, pending: list[bytes], start: int) -> _Written:
        """A new file renamed over the results (write_atomically's steps), from the previous one where it can."""
        path = self.path
        problem = describe_non_regular(path)
        if problem is not None:
            raise ResultsFileError(f"cannot write {path}: {problem}")
        count = self._given + start  # the trials before `pending`
        last = self._written
        previous = self._open_previous() if last is not None and last.lines == count else None
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent or ".")
        try:
            os.fchmod(fd, _FILE_MODE)
            write_all(fd, head)
            if previous is not None and last is not None:
                copy_range(previous, fd, last.body_start, last.body_length)
                body = last.body_length
            else:  # the first write, or the file was changed since (or a write failed): every line before
                body = 0
                self._encode_given(self.study.trials)
                for piece in body_pieces(self._lines + self._added[:start]):
                    data = piece.encode("utf-8")
                    write_all(fd, data)
                    body += len(data)
            body += write_buffers(fd, pending)
            count += len(pending)
            write_all(fd, results_tail(count > 0).encode("utf-8"))
            os.fsync(fd)
            status = os.fstat(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except BaseException as exc:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, _SourceChanged):  # copied from a file changed behind our back: every line again
                self._written = None
                return self._write_file(head, pending, start)
            raise
        finally:
            if previous is not None:
                os.close(previous)
        identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        return _Written(identity, len(head), body, count)

    def _open_previous(self) -> int | None:
        """A descriptor of the file the last periodic write left, if the results path still holds it unchanged."""
        last = self._written
        if last is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        status = os.fstat(fd)
        if (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns) != last.identity:
            os.close(fd)
            return None
        return fd

    def _encode_given(self, trials: list[Trial]) -> None:
        """The lines of the trials it was given at the start, once (most were read from a results file)."""
        lines = self._lines
        if len(lines) < self._given:
            lines.extend(self._encoded.texts(trials[len(lines) : self._given]))

    def wait(self) -> None:
        """Until a write in progress has ended."""
        self._idle.wait()

    def close(self) -> None:
        """End the write thread, after the write in progress (if any); write_final does this too."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def write_final(self, study: Study) -> None:
        """Write the finished `study` (the runner's, in trial order), reusing every line already encoded.

        Each line through TrialLines, not the writer's own list: a trial's record may have changed since
        it finished (`trial_dirs: keep: best` drops the directory of a trial pushed out of the best), and
        TrialLines encodes such a trial again (a lookup for the others: 0.1 s at 100,000 trials).
        """
        self.close()
        self.wait()
        ours = self.study.trials
        # The best kept up as the trials finished, when the runner's trials are those it was told of: not
        # looked for again (a walk over every trial: 0.3 s at 100,000).
        same = len(study.trials) == len(ours) and all(a is b for a, b in zip(study.trials, ours))
        write_atomically_results(study, self.path, self._encoded.texts(study.trials),
                                 self._best if same else "compute")
