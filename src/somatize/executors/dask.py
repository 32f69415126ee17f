"""Run trials on a Dask cluster (`--cluster ADDRESS`).

Each trial is one Dask task. The task gets a *recipe* (a picklable
zero-argument callable building a local executor: FunctionExecutor,
ShellExecutor) rather than an executor, because executors hold locks and do
not pickle. A worker process builds the executor once per recipe and keeps
it, so a Python objective is imported once per worker, not once per trial.

Intermediate reports cannot reach the runner while the trial runs: the
worker collects them and the client replays them, in order, when the task
returns. So trials on a cluster are never pruned mid-run.

Dask is optional: it is imported inside functions only, so importing this
module costs nothing when `--cluster` is not used.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any, NamedTuple

from ..errors import TrialPruned, UsageError
from .base import Executor, Failed, Outcome, Pruned, Reporter, TrialRequest, failure

CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler before giving up
CANCEL_CHECK = 0.5  # longest wait on a task without looking whether the executor was cancelled or closed
CANCELLED = "cancelled: the study was interrupted"  # the same words as the shell executor
WORKER_TIMEOUT = 60.0  # seconds without any worker before running trials fail (study key cluster_worker_timeout)
WORKER_POLL = 1.0  # at most one worker count per this many seconds, however many trials wait

Report = tuple[str, float, "int | None"]  # (name, value, step) as given to Reporter.report


class WorkerIdentity(NamedTuple):
    """Where a trial ran, for messages and for checking that trials spread over the cluster."""

    host: str
    pid: int
    address: str  # the Dask worker's address; "" outside a Dask worker

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


# The worker's side ------------------------------------------------------------

# Local executors built on this worker process, keyed by their pickled recipe:
# equal recipes pickle to equal bytes, and bytes are a safe dict key.
_EXECUTORS: dict[bytes, Executor] = {}
_EXECUTORS_LOCK = threading.Lock()  # a worker may run several tasks in threads


def _local_executor(recipe: bytes) -> Executor:
    with _EXECUTORS_LOCK:
        executor = _EXECUTORS.get(recipe)
        if executor is None:
            executor = _EXECUTORS[recipe] = pickle.loads(recipe)()
        return executor


class _CollectingReporter:
    """Keeps the trial's reports for the client to replay; nobody can answer should_prune live."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def report(self, name: str, value: float, step: int | None = None) -> None:
        self.reports.append((name, value, step))

    def should_prune(self) -> bool:
        return False


def _worker_identity() -> WorkerIdentity:
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):  # not inside a Dask worker (called directly)
        address = ""
    return WorkerIdentity(socket.gethostname(), os.getpid(), address)


def run_on_worker(recipe: bytes, request: TrialRequest) -> tuple[Outcome, list[Report], WorkerIdentity]:
    """The Dask task: run one trial with the recipe's executor; never raises for the trial's errors."""
    reporter = _CollectingReporter()
    try:
        outcome: Outcome = _local_executor(recipe).run(request, reporter)
    except TrialPruned as exc:  # as the runner does for local executors
        outcome = Pruned(exc.step, exc.reason)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - user code: any error fails the trial
        outcome = failure(exc)  # signals reach a Dask worker's main thread, never this task's thread
    return outcome, reporter.reports, _worker_identity()


# The client's side ------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class NoWorkers(Exception):
    """The cluster has had no worker for longer than the executor's worker timeout."""


class DaskExecutor(Executor):
    """Sends each trial to a Dask cluster; `run` may be called from several threads at once.

    A task waits in the scheduler for as long as no worker exists; Dask never
    gives up on it. So a cluster left without workers for `worker_timeout`
    seconds (None: wait forever) fails the waiting trials and stops the study.
    """

    def __init__(
        self,
        address: str,
        recipe: Callable[[], Executor],
        connect_timeout: float = CONNECT_TIMEOUT,
        worker_timeout: float | None = WORKER_TIMEOUT,
    ):
        self.address = address
        self.connect_timeout = connect_timeout
        self.worker_timeout = worker_timeout
        self._workers_polled_at = -math.inf  # monotonic time of the last worker count
        self._workerless_since: float | None = None  # monotonic time the cluster was first seen without workers
        self._recipe = pickle.dumps(recipe)  # once, here: an unpicklable recipe fails before any trial
        self._lock = threading.Lock()  # the state below; never held while waiting on the network
        self._connect_lock = threading.Lock()  # one connection attempt at a time
        self._client: Any = None  # distributed.Client, created by connect()
        self._closed = False
        self._cancelled = threading.Event()
        self._in_flight: set[Any] = set()  # distributed.Future of the running trials
        self.placements: dict[str, WorkerIdentity] = {}  # trial id -> where it last ran

    def connect(self) -> None:
        """Reach the scheduler now, so a bad address fails before the first trial (UsageError)."""
        self._connected()

    def worker_slots(self) -> int:
        """Threads across the cluster's workers now: how many trials can run at once (at least 1)."""
        return max(1, sum(self._connected().nthreads().values()))

    def _connected(self) -> Any:
        with self._connect_lock:
            client = self._client
            if self._closed:
                raise UsageError("the Dask executor is closed")
            # A client that lost the scheduler closes itself after `connect_timeout` of trying to
            # reconnect; the next trial tries a fresh one (the scheduler may have been restarted).
            if client is None or client.status == "closed":
                client = self._open_client()
                with self._lock:
                    closed, self._client = self._closed, client
                if closed:  # close() ran while we were connecting
                    self.close()
                    raise UsageError("the Dask executor is closed")
            return client

    def _open_client(self) -> Any:
        try:
            from distributed import Client
            from distributed.comm import get_address_host_port, resolve_address
        except ImportError:
            raise UsageError("--cluster needs Dask: pip install 'somatize[dask]'") from None
        try:
            # Resolving first gives a fast, clear error for a malformed address or an
            # unknown host, and spares Client a failed start (it then complains at exit).
            resolved = resolve_address(self.address)
            if resolved.startswith("tcp://"):
                # Client retries a refused connection until its timeout; a plain socket
                # says at once that nothing listens there.
                host, port = get_address_host_port(resolved)
                socket.create_connection((host, port), timeout=self.connect_timeout).close()
            return Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, TimeoutError: all mean unreachable
            raise UsageError(f"cannot reach the Dask scheduler at {self.address}: {_first_line(exc)}") from None

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        if self._cancelled.is_set():
            return Failed(CANCELLED)
        if self._workers_gone():
            return self._no_workers_left()
        try:
            client = self._connected()
        except UsageError as exc:
            return Failed(str(exc))
        with self._lock:  # no task may start after cancel() collected the futures to cancel
            if self._cancelled.is_set():
                return Failed(CANCELLED)
            try:
                future = client.submit(
                    run_on_worker,
                    self._recipe,
                    request,
                    pure=False,  # a retried trial with the same params must run again
                    key=f"{request.trial_id}-{uuid.uuid4().hex}",
                )
            except Exception as exc:  # noqa: BLE001 - e.g. the client lost its scheduler and closed
                return Failed(self._task_error(exc, client))
            self._in_flight.add(future)
        try:
            outcome, reports, where = self._wait(client, future)
        except NoWorkers:
            with contextlib.suppress(Exception):  # so it never starts should a worker come back
                client.cancel([future])
            return self._no_workers_left()
        except Exception as exc:  # noqa: BLE001 - whatever Dask raises, the trial fails and the study goes on
            return Failed(self._task_error(exc, client))
        finally:
            with self._lock:
                self._in_flight.discard(future)
        with self._lock:
            self.placements[request.trial_id] = where
        for name, value, step in reports:
            reporter.report(name, value, step)
        return outcome

    def _wait(self, client: Any, future: Any) -> Any:
        """The task's result; short waits so a closed client or cancel() can never leave us hanging."""
        from distributed import TimeoutError as WaitTimeout  # asyncio's, not the builtin, before 3.11

        while True:
            try:
                return future.result(timeout=CANCEL_CHECK)
            except WaitTimeout:
                if self._cancelled.is_set() or client.status in ("closing", "closed"):
                    raise CancelledError() from None
                if self._workers_gone(client):
                    raise NoWorkers() from None

    def _workers_gone(self, client: Any = None) -> bool:
        """Whether the cluster has had no worker for longer than the worker timeout.

        Counts the workers (one call to the scheduler) at most every WORKER_POLL
        seconds for all waiting trials together; without `client`, only says
        what the last count found.
        """
        if self.worker_timeout is None:
            return False
        now = time.monotonic()
        with self._lock:
            poll = client is not None and now - self._workers_polled_at >= WORKER_POLL
            if poll:
                self._workers_polled_at = now
        if poll:
            try:
                workers = len(client.nthreads())
            except Exception:  # noqa: BLE001 - the scheduler is unreachable: the connection checks deal with that
                workers = None
            with self._lock:
                if workers:
                    self._workerless_since = None
                elif workers == 0 and self._workerless_since is None:
                    self._workerless_since = now
        with self._lock:
            since = self._workerless_since
        return since is not None and now - since >= self.worker_timeout

    def _no_workers_left(self) -> Failed:
        return Failed(f"no Dask workers left: none for {self.worker_timeout:g} s", stops_study=True)

    def _task_error(self, exc: Exception, client: Any) -> str:
        """One line saying why a task gave no result."""
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            # The scheduler reran the trial on other workers (allowed-failures) and gave up.
            tries = exc.allowed_failures + 1
            last = getattr(exc.last_worker, "address", exc.last_worker)
            return f"worker died: {tries} worker(s) died while running this trial, the last {last}"
        if self._cancelled.is_set():
            return CANCELLED
        if client.status != "running" or getattr(exc, "reason", "") == "scheduler-connection-lost":
            return f"lost the connection to the Dask scheduler at {self.address}"
        if isinstance(exc, CancelledError):
            return f"Dask cancelled the trial: {getattr(exc, 'reason', 'unknown')}"
        # E.g. the recipe does not unpickle on the worker (somatize missing there).
        return f"Dask error: {type(exc).__name__}: {_first_line(exc)}"

    def cancel(self) -> None:
        """Cancel every queued or running task; the waiting `run` calls return promptly.

        A task already running on a worker cannot be interrupted by Dask: the
        trial runs on there until it ends (or its timeout), its result discarded.
        """
        with self._lock:
            self._cancelled.set()
            futures = list(self._in_flight)
            client = self._client
        if client is not None and futures:
            with contextlib.suppress(Exception):  # a lost client: the waits end on their own
                client.cancel(futures)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
