"""Run Python-function trials in worker processes (`--jobs N`, or a trial timeout).

Threads cannot run Python functions in parallel (the GIL) and cannot be
stopped, so each trial slot gets its own spawned process. A worker lives for
the whole study, imports the function once, and talks to the runner over a
pipe: intermediate reports and should_prune questions go up while the trial
runs, the outcome at the end. A worker that times out or is cancelled is
killed with its process group and replaced for the next trial.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..errors import TrialPruned
from .base import Executor, Failed, Outcome, Pruned, Reporter, TrialRequest, failure
from .processes import LIVE_GROUPS, PROCESS_TAG, child_tag, signal_group, sweep

CANCEL_CHECK = 0.25  # longest wait without looking at the timeout or an interrupt
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a worker's process group


class _PipeReporter:
    """The worker's side of the reporter: forwards reports, asks the runner about pruning."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def report(self, name: str, value: float, step: int | None = None) -> None:
        self.conn.send(("report", name, value, step))

    def should_prune(self) -> bool:
        self.conn.send(("should_prune",))
        return bool(self.conn.recv())


def serve(conn: Connection, target: str, metrics: list[str], base_dir: str, env: Mapping[str, str]) -> None:
    """A worker process's main loop: run requests until the pipe closes."""
    os.setsid()  # its own group: Ctrl-C reaches somatize only, and killpg reaches the function's children
    os.dup2(2, 1)  # prints go to stderr; stdout may carry results or events
    os.environ.update(env)  # thread caps before numpy and friends load
    from .artifacts import FdCapture
    from .python import FunctionExecutor

    capture = FdCapture()  # what the trial prints, C code and child processes included, into its directory
    executor = FunctionExecutor(target, metrics, Path(base_dir), capture=False)
    reporter = _PipeReporter(conn)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            with capture.trial(request.trial_dir):
                outcome: Outcome = executor.run(request, reporter)
        except TrialPruned as exc:
            outcome = Pruned(exc.step, exc.reason)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - user code: any error fails the trial
            # In a worker even KeyboardInterrupt is the objective's: somatize stops workers by killing them.
            outcome = failure(exc)
        conn.send(("outcome", outcome))


class _Worker:
    def __init__(self, process: Any, conn: Connection, tag: str | None = None):
        self.process = process
        self.conn = conn
        self.tag = tag  # carried by what the objective starts, so those can be swept with the worker
        self.dead = False
        self.slot: str | None = None  # the only slot it runs trials of: CUDA binds a process to its first devices

    def kill(self) -> None:
        """TERM the worker's group, KILL it after a grace; the process is reaped."""
        if self.dead:  # its pid may belong to another process by now
            return
        self.dead = True
        pid = self.process.pid
        signal_group(pid, signal.SIGTERM)
        self.process.join(KILL_GRACE)
        signal_group(pid, signal.SIGKILL)  # children that ignored TERM
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        LIVE_GROUPS.discard(pid)
        self.conn.close()
        sweep(self.tag, KILL_GRACE)  # what the objective started with setsid, re-parented to somatize

    def stop(self) -> None:
        """Ask an idle worker to leave, and make sure it did."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(1.0)
        self.kill()


def _context() -> Any:
    """Where workers come from: never a plain fork of somatize, which runs threads
    (trial slots, the live table), and forking a threaded process can deadlock the
    child. A fork server, which imports this module once and then forks each
    worker in milliseconds, where the platform has one; else a fresh interpreter
    per worker (spawn, about 0.1 s each)."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class WorkerPoolExecutor(Executor):
    """Python-function trials in up to `size` spawned worker processes."""

    def __init__(
        self,
        target: str,
        metrics: list[str],
        base_dir: Path,
        size: int,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.target = target
        self.metrics = list(metrics)
        self.base_dir = Path(base_dir).resolve()
        self.size = size
        self.timeout = timeout
        self.env = dict(env or {})
        self._idle: dict[str | None, list[_Worker]] = {}  # idle workers by the slot they serve
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._numbers = itertools.count()

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        worker = self._acquire(request.slot)
        try:
            worker.conn.send(request)
            outcome = self._follow(worker, reporter)
        except (EOFError, OSError):  # the pipe broke: the worker died or was killed
            outcome = Failed(self._death_message(worker))
        if worker.process.is_alive():
            with self._lock:
                self._idle.setdefault(worker.slot, []).append(worker)
        else:
            self._retire(worker)
        return outcome

    def _follow(self, worker: _Worker, reporter: Reporter) -> Outcome:
        """Relay the trial's messages until its outcome; kill the worker on timeout or cancel."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            wait = CANCEL_CHECK if deadline is None else min(CANCEL_CHECK, deadline - time.monotonic())
            if self._cancelled.is_set():
                worker.kill()
                return Failed("cancelled: the study was interrupted")
            if wait <= 0:
                worker.kill()
                return Failed(f"timeout after {self.timeout:g} s")
            if not worker.conn.poll(wait):
                if not worker.process.is_alive() and not worker.conn.poll():
                    return Failed(self._death_message(worker))
                continue
            message = worker.conn.recv()
            if message[0] == "report":
                reporter.report(*message[1:])
            elif message[0] == "should_prune":
                worker.conn.send(reporter.should_prune())
            else:
                return message[1]

    @staticmethod
    def _death_message(worker: _Worker) -> str:
        worker.process.join(1.0)
        code = worker.process.exitcode
        if code is not None and code < 0:
            return f"worker process died from {signal.Signals(-code).name}"
        return f"worker process exited with status {code}"

    def _acquire(self, slot: str | None) -> _Worker:
        """An idle worker of this slot, else a new one (an idle worker of another slot leaves to make room)."""
        surplus = None
        with self._lock:
            idle = self._idle.get(slot)
            if idle:
                return idle.pop()
            if len(self._all) >= self.size:
                surplus = next((ws.pop() for ws in self._idle.values() if ws), None)
                if surplus is not None:
                    self._all.discard(surplus)
        if surplus is not None:
            surplus.stop()
        worker = self._spawn()
        worker.slot = slot
        return worker

    def _spawn(self) -> _Worker:
        context = _context()
        parent, child = context.Pipe()
        tag = child_tag(f"worker.{next(self._numbers)}")
        env = self.env if tag is None else {**self.env, PROCESS_TAG: tag}
        process = context.Process(
            target=serve,
            args=(child, self.target, self.metrics, str(self.base_dir), env),
            name="somatize-worker",
            daemon=True,
        )
        process.start()
        child.close()
        LIVE_GROUPS.add(process.pid)
        worker = _Worker(process, parent, tag)
        with self._lock:
            self._all.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        with self._lock:
            idle = [worker for workers in self._idle.values() for worker in workers]
            self._idle.clear()
        for worker in idle:
            worker.stop()
            with self._lock:
                self._all.discard(worker)
        with self._lock:
            leftovers = list(self._all)  # busy workers of an interrupted study
            self._all.clear()
        for worker in leftovers:
            worker.kill()
