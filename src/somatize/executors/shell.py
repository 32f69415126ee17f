"""Run a trial as a shell command or an argv list (SPEC §3, §6).

The trial runs in its own process group (new session) so a timeout, pruning
or Ctrl-C can end the whole tree, not only the shell. Its stdout is read
incrementally in this thread with a selector: each metric line is reported
at once, so the live table and the pruner see intermediate values while the
trial runs. Metrics written to $SOMATIZE_METRICS_FILE are read after a
successful exit and returned as the trial's final records.

Nothing a trial does can make reading its output block past the timeout or
grow without bound: pipes are read only when select says so, the metrics
file as metrics_file.py says, within the same deadline, and its records go
into a bounded MetricLog (issues 14.12, 14.13).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..bounds import MetricLog
from .artifacts import METRICS, STDERR, STDOUT, TailFile, keep_metrics_file, prepare_metrics_file
from .base import Completed, Executor, Failed, Outcome, Pruned, Reporter, TrialRequest
from .command import Command, compile_template
from .metrics_file import read_metrics_file, remove_metrics_file
from .output import MetricStream, ParsedMetric
from .processes import LIVE_GROUPS, PROCESS_TAG, SPAWN_LOCK, child_tag, signal_group, sweep

READ_CHUNK = 64 * 1024
CANCEL_CHECK = 0.25  # longest wait without looking whether the study was interrupted
POLL_INTERVAL = 0.05  # exit polling, only where pidfd_open is unavailable (not Linux)
_Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)  # no epoll fd per trial
# dash: "/bin/sh: 1: xyz: not found"; bash: "bash: line 1: xyz: command not found"
_NOT_FOUND = re.compile(r"(?:^|: )(?P<name>[^:]+): (?:command )?not found$")


class TailBuffer:
    """The last bytes of a stream (stderr): enough for a failure message, bounded in memory."""

    def __init__(self, limit: int):
        self.limit = limit
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > 2 * self.limit:  # trim in batches, not on every chunk
            del self._data[: -self.limit]

    def lines(self, count: int) -> list[str]:
        text = bytes(self._data[-self.limit :]).decode("utf-8", "replace")
        return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """Whether the process has exited, without reaping it (its pid keeps the group id reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class TrialProcess:
    """One running trial: its pipes, exit detection, and the stderr tail.

    The main process is reaped only in `close()`, so until then its pid, and
    with it the process group id, cannot be reused by an unrelated process:
    signalling the group is always safe.
    """

    def __init__(self, popen: subprocess.Popen[bytes], stderr_limit: int, trial_dir: str | None = None):
        assert popen.stdout is not None and popen.stderr is not None
        self.popen = popen
        self.stderr = TailBuffer(stderr_limit)
        # The trial directory's copies of both streams (bounded, the tail kept), when it has one.
        self.files = None
        if trial_dir is not None:
            self.files = (TailFile(Path(trial_dir) / STDOUT), TailFile(Path(trial_dir) / STDERR))
        self.exited = False
        self.open_pipes = 2
        self._selector = _Selector()
        self._selector.register(popen.stdout.fileno(), selectors.EVENT_READ, "out")
        self._selector.register(popen.stderr.fileno(), selectors.EVENT_READ, "err")
        self._pidfd = _open_pidfd(popen.pid)
        if self._pidfd is not None:
            self._selector.register(self._pidfd, selectors.EVENT_READ, "exit")

    def pump(self, timeout: float | None) -> bytes:
        """Wait up to `timeout` s for output or exit; returns the stdout bytes read."""
        polling = self._pidfd is None and not self.exited
        if polling:
            timeout = POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)
        out = b""
        for key, _ in self._selector.select(timeout):
            if key.data == "exit":
                self._mark_exited()
                continue
            chunk = os.read(key.fd, READ_CHUNK)
            if not chunk:
                self._selector.unregister(key.fd)
                self.open_pipes -= 1
            elif key.data == "out":
                out += chunk
                if self.files is not None:
                    self.files[0].write(chunk)
            else:
                self.stderr.add(chunk)
                if self.files is not None:
                    self.files[1].write(chunk)
        if polling and _has_exited(self.popen.pid):
            self.exited = True
        return out

    def _mark_exited(self) -> None:
        assert self._pidfd is not None
        self._selector.unregister(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self.exited = True

    def close(self) -> int:
        """Reap the main process, release descriptors; the exit status (negative: signal)."""
        try:
            return self.popen.wait()
        finally:
            for file in self.files or ():
                file.close()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            self._selector.close()
            for pipe in (self.popen.stdout, self.popen.stderr):
                if pipe is not None:
                    pipe.close()


def command_not_found(stderr_lines: Sequence[str]) -> str | None:
    """The missing command's name from a shell's 'not found' message."""
    for line in reversed(stderr_lines):
        match = _NOT_FOUND.search(line)
        if match:
            return match["name"].strip()
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_error(returncode: int, stderr_lines: Sequence[str], shell: bool) -> str:
    """A failure reason: what ended the process, then the last stderr lines."""
    if returncode < 0:
        head = f"killed by signal {_signal_name(-returncode)}"
    elif returncode == 127:
        missing = command_not_found(stderr_lines)
        if missing:
            return f"command not found: {missing}"
        head = "exit status 127 (command not found?)"
    elif shell and returncode == 126:
        head = "exit status 126 (command not executable)"
    elif shell and 128 < returncode < 128 + signal.NSIG:  # sh reports a killed child as 128+N
        head = f"exit status {returncode} (killed by {_signal_name(returncode - 128)}?)"
    else:
        head = f"exit status {returncode}"
    if not stderr_lines:
        return head
    message = f"{head}: {stderr_lines[-1]}"
    if len(stderr_lines) > 1:
        message += "\n" + "\n".join(stderr_lines)
    return message


def spawn_error(exc: OSError, argv: Sequence[str], workdir: Path) -> str:
    if str(exc.filename) == str(workdir) or not workdir.is_dir():
        return f"workdir not found: {workdir}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {argv[0]}"
    if isinstance(exc, PermissionError):
        return f"cannot execute {argv[0]}: permission denied"
    return f"cannot start {argv[0]}: {exc.strerror or exc}"


class ShellExecutor(Executor):
    """Runs the study's `command:` once per trial and reads metrics from its output."""

    KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the process group
    PIPE_GRACE = 0.5  # how long to keep reading after exit when a background child holds stdout
    STDERR_TAIL_BYTES = 4096
    STDERR_TAIL_LINES = 20

    def __init__(
        self,
        command: str | list[str],
        declared_metrics: list[str],
        workdir: Path,
        env: Mapping[str, str],
        timeout: float | None,
    ):
        self.command = command
        self._template = compile_template(command)  # parsed once; TemplateError (a ValueError) if malformed
        self.declared = list(declared_metrics)
        self.workdir = Path(workdir)
        self.env = dict(env)
        self.timeout = timeout
        self._counter = itertools.count()
        self._tmpdir: Path | None = None
        self._cleanup: weakref.finalize | None = None
        self._base_env: dict[bytes, bytes] | None = None
        self._lock = threading.Lock()  # parallel trials share the executor
        self._cancelled = threading.Event()

    # The trial ---------------------------------------------------------------

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        try:
            command = self._template.render(request.params, self._trial_values(request))
        except ValueError as exc:  # a value that cannot go where its placeholder stands
            return Failed(str(exc))
        if not command.argv:
            return Failed("empty command")
        if request.trial_dir is not None:  # kept with the trial's other files
            metrics_file = Path(request.trial_dir) / METRICS
            prepare_metrics_file(metrics_file)  # an earlier attempt's must not be read again
            try:
                return self._run(command, request, reporter, metrics_file)
            finally:
                keep_metrics_file(metrics_file)
        metrics_file = self._metrics_dir() / f"{request.trial_id}.{next(self._counter)}.metrics"
        try:
            return self._run(command, request, reporter, metrics_file)
        finally:
            remove_metrics_file(metrics_file)

    def _run(self, command: Command, request: TrialRequest, reporter: Reporter, metrics_file: Path) -> Outcome:
        argv, shell = command.argv, command.shell
        tag = child_tag(f"{request.trial_id}.{next(self._counter)}")
        try:
            popen = self._start(argv, self._environment(request, metrics_file, command.env), tag)
        except OSError as exc:
            return Failed(spawn_error(exc, argv, self.workdir))
        process = TrialProcess(popen, self.STDERR_TAIL_BYTES, request.trial_dir)
        stream = MetricStream(self.declared, source="stdout")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        supervised = False
        try:
            outcome = self._supervise(process, stream, reporter, deadline)
            supervised = True
        finally:
            if not supervised:  # Ctrl-C or an error while waiting: never leave the trial running
                self.terminate(process)
            self._end_leftovers(process, tag)
            returncode = process.close()
            LIVE_GROUPS.discard(popen.pid)
        if outcome is not None:
            return outcome
        for record in stream.close():  # a last line without newline
            reporter.report(record.name, record.value, record.step)
        if returncode != 0:
            return Failed(exit_error(returncode, process.stderr.lines(self.STDERR_TAIL_LINES), shell))
        return self._completed(stream, metrics_file, deadline)

    def _supervise(
        self, process: TrialProcess, stream: MetricStream, reporter: Reporter, deadline: float | None
    ) -> Outcome | None:
        """Read output until the trial ends; an outcome for a timeout or pruning, else None."""
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            if process.exited:
                exited_at = exited_at or now
                if not process.open_pipes:
                    return None
                wait = exited_at + self.PIPE_GRACE - now
                if wait <= 0:  # a background child still holds stdout: it belongs to the trial
                    self.terminate(process)
                    return None
            elif deadline is not None and now >= deadline:
                self.terminate(process)
                return Failed(f"timeout after {self.timeout:g} s")
            elif self._cancelled.is_set():
                self.terminate(process)
                return Failed("cancelled: the study was interrupted")
            elif reporter.should_prune():  # decided elsewhere while the trial was quiet (on a Dask worker)
                self.terminate(process)
                return Pruned(None, "pruned")
            else:
                wait = CANCEL_CHECK if deadline is None else min(deadline - now, CANCEL_CHECK)
            data = process.pump(wait)
            if data:
                pruned = self._report(stream.feed(data), reporter)
                if pruned is not None:
                    self.terminate(process)
                    return pruned

    @staticmethod
    def _report(records: list[ParsedMetric], reporter: Reporter) -> Pruned | None:
        for record in records:
            reporter.report(record.name, record.value, record.step)
            if record.step is not None and reporter.should_prune():
                return Pruned(record.step, f"pruned at step {record.step}")
        return None

    def cancel(self) -> None:
        self._cancelled.set()

    # Starting and ending the trial's processes ------------------------------------

    def _start(self, argv: list[str], env: dict[bytes, bytes], tag: str | None) -> subprocess.Popen[bytes]:
        """Start the trial in its own session, tagged, and registered before any sweep can see it."""
        if tag is not None:
            env[os.fsencode(PROCESS_TAG)] = os.fsencode(tag)
        with SPAWN_LOCK:
            popen = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,  # `somatize run -` may be reading the study from stdin
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            LIVE_GROUPS.add(popen.pid)
        return popen

    def _end_leftovers(self, process: TrialProcess, tag: str | None) -> None:
        """End what is left of the trial once its main process has: background children in its
        group, and (under `somatize run`) those that left it with setsid. The main process is not
        reaped yet, so its group id cannot have been reused."""
        pgid = process.popen.pid
        signal_group(pgid, signal.SIGTERM)
        sweep(tag, self.KILL_GRACE)
        signal_group(pgid, signal.SIGKILL)

    def terminate(self, process: TrialProcess) -> None:
        """SIGTERM the trial's process group, SIGKILL whatever is left after KILL_GRACE."""
        pgid = process.popen.pid
        signal_group(pgid, signal.SIGTERM)
        end = time.monotonic() + self.KILL_GRACE
        # Keep draining the pipes: a child blocked writing to a full pipe could not exit.
        while not process.exited or process.open_pipes:
            left = end - time.monotonic()
            if left <= 0:
                break
            process.pump(left)
        # The main process and every pipe holder are gone, or the grace ran out; a child
        # that ignored SIGTERM and let go of the pipes would otherwise survive the trial.
        signal_group(pgid, signal.SIGKILL)

    # Environment and metrics file -----------------------------------------------

    @staticmethod
    def _trial_values(request: TrialRequest) -> dict[str, Any]:
        return {
            "trial_id": request.trial_id,
            "trial_number": request.number,
            "trial_seed": request.trial_seed,
            "study": request.study_name,
            "trial_dir": request.trial_dir,
            "gpus": request.gpus,
            "slot": request.slot,
        }

    def _environment(
        self, request: TrialRequest, metrics_file: Path, values: Mapping[str, str]
    ) -> dict[bytes, bytes]:
        # Bytes, built from a snapshot taken at the first trial: re-encoding the whole
        # environment for every trial was a large part of the per-trial overhead.
        if self._base_env is None:
            self._base_env = {**os.environb, **{os.fsencode(k): os.fsencode(v) for k, v in self.env.items()}}
        trial = {
            "SOMATIZE_TRIAL_ID": request.trial_id,
            "SOMATIZE_TRIAL_NUMBER": str(request.number),
            "SOMATIZE_TRIAL_SEED": str(request.trial_seed),
            "SOMATIZE_STUDY": request.study_name,
            "SOMATIZE_PARAMS": json.dumps(dict(request.params)),
            "SOMATIZE_METRICS_FILE": str(metrics_file),
            **request.environment(),
            **values,  # the placeholders' values, which a string command's script refers to
        }
        env = dict(self._base_env)
        env.update((os.fsencode(k), os.fsencode(v)) for k, v in trial.items())
        return env

    def _metrics_dir(self) -> Path:
        with self._lock:
            if self._tmpdir is None or self._cleanup is None or not self._cleanup.alive:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="somatize-metrics-"))
                self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmpdir, ignore_errors=True)
            return self._tmpdir

    def _completed(self, stdout: MetricStream, metrics_file: Path, deadline: float | None) -> Outcome:
        """The outcome of a trial that exited 0: its metrics file's records, and why lines were not read."""
        log = MetricLog(self.declared)
        file_stream = MetricStream(self.declared, source="metrics file")
        notes: tuple[str, ...] = ()
        try:
            problem = read_metrics_file(metrics_file, file_stream, log, deadline)
        except TimeoutError:
            return Failed(f"timeout after {self.timeout:g} s (reading $SOMATIZE_METRICS_FILE)")
        if problem is not None:
            notes = (f"$SOMATIZE_METRICS_FILE {problem}",)
        unread = {**file_stream.unread_for(self.declared), **stdout.unread_for(self.declared)}
        thinned = log if log.truncation() is not None else None
        return Completed(log.records(), unread=unread, notes=notes, thinned=thinned)

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()
        self._tmpdir = None
