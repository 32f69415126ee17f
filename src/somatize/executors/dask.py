"""Run trials on a Dask cluster (`--cluster ADDRESS`).

Each trial is one Dask task. The task gets a *recipe* (a picklable
zero-argument callable building a local executor: FunctionExecutor,
ShellExecutor) rather than an executor, because executors hold locks and do
not pickle. A worker process builds the executor once per recipe and keeps
it, so a Python objective is imported once per worker, not once per trial.

Live reports and pruning go through two Dask mechanisms, no socket of ours:
- up: the task logs each intermediate report as a Dask event
  (`Worker.log_event`) on a topic of this run, which the client subscribes
  to (`Client.subscribe_topic`). The scheduler forwards them in order, ahead
  of the task's result; the thread waiting for the trial hands them to the
  runner's reporter, so the live table and the pruner see them as for a
  local trial. Reports are numbered, and the task returns how many it sent
  and the last REPORT_TAIL of them, so a report still in flight is not lost
  and a rerun (the worker died) does not report the same steps twice.
- down: when the pruner decides, or the study is interrupted, the client
  runs a small function on the trial's worker (`Client.run`, out of band of
  the task graph) that flags the trial there: a shell trial's process group
  is ended, a Python function's `trial.should_prune()` turns true. A flag is
  pushed rather than polled, so `should_prune()` costs a function nothing.
A pruned trial is recorded at the step the pruner judged; what it reports
after that is ignored.

Dask is optional: it is imported inside functions only, so importing this
module costs nothing when `--cluster` is not used.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import queue
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any, NamedTuple

from ..errors import TrialPruned, UsageError
from .base import Executor, Failed, Outcome, Pruned, Reporter, TrialRequest, failure
from .processes import tagged_scope

CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler before giving up
CANCEL_CHECK = 0.5  # longest wait on a task without looking whether the executor was cancelled or closed
CANCELLED = "cancelled: the study was interrupted"  # the same words as the shell executor
WORKER_TIMEOUT = 60.0  # seconds without any worker before running trials fail (study key cluster_worker_timeout)
WORKER_POLL = 1.0  # at most one worker count per this many seconds, however many trials wait
# Reports a task keeps and returns with its result. Each report is streamed as it is made, so these only
# stand in for reports the client has not seen when the result comes (none in practice: the scheduler
# forwards a worker's events ahead of its task's result) and for a task run outside a Dask worker.
# Bounded, so a trial that reports millions of values costs its worker and its result no more than this.
REPORT_TAIL = 1000
# Reports per event at most. The scheduler keeps each topic's last 1000 events, so this bounds what a run
# leaves there (10 000 reports, about 300 kB). A trial making 20 000 reports as fast as it can took 0.31 s
# when they were replayed at the end (before streaming), 1.9 s sent one event each, and 0.36, 0.38 and
# 0.37 s with batches of at most 10, 100 and 1000: the batching, not its cap, is what counts (median of 3
# trials on a one-thread local worker, load average 12 on 2 cores).
BATCH = 10
TAIL_WAIT = 1.0  # seconds to wait for streamed reports still in flight once a task returned
STOP_WAIT = 5.0  # longest wait for the workers to take a stop (Ctrl-C) before the client closes
STOPPED_KEYS = 4096  # stops a worker keeps for trials it has not started (yet), the oldest dropped

Numbered = tuple[int, str, float, "int | None"]  # (sequence number, name, value, step)


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


class _StreamingReporter:
    """The worker's side of a running trial's reporter: streams the reports, and is told to stop.

    `report` runs in the trial's thread. It does not send each report itself: it
    queues it and asks the worker's event loop to send what is queued, so a trial
    that reports faster than the loop sends has its reports go in batches (one
    event per BATCH), and one that reports now and then has each sent at once.
    `stop` runs in the event loop too (_stop_trials).
    """

    def __init__(self, topic: str, key: str, worker: Any):
        self.topic = topic
        self.key = key
        self.worker = worker  # distributed.Worker; None outside a Dask worker: the tail only
        self.sent = 0
        self.tail: deque[Numbered] = deque(maxlen=REPORT_TAIL)
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # the queue below, shared with the event loop
        self._queued: list[list[Any]] = []  # [name, value, step] not sent yet
        self._first = 0  # sequence number of _queued[0]
        self._flushing = False  # a flush is due in the event loop
        if worker is not None:  # first, so the client knows where to send a stop
            worker.log_event(topic, ["start", key, worker.address])

    def report(self, name: str, value: float, step: int | None = None) -> None:
        if self.stopped.is_set():  # pruned or interrupted: what it reports now is ignored
            return
        seq, value = self.sent, float(value)
        self.sent += 1
        self.tail.append((seq, name, value, step))
        if self.worker is None:
            return
        with self._lock:
            if not self._queued:
                self._first = seq
            self._queued.append([name, value, step])
            if self._flushing:
                return
            self._flushing = True
        self.worker.loop.add_callback(self._flush)

    def _flush(self) -> None:
        """In the worker's event loop: send the queued reports, in order, as events of BATCH at most."""
        with self._lock:
            queued, first = self._queued, self._first
            self._queued, self._flushing = [], False
        for start in range(0, len(queued), BATCH):
            self.worker.log_event(self.topic, ["reports", self.key, first + start, queued[start : start + BATCH]])

    def should_prune(self) -> bool:
        return self.stopped.is_set()

    def stop(self) -> None:
        self.stopped.set()


# The trials running on this worker process by task key, and stops that came before their trial started.
_RUNNING: dict[str, _StreamingReporter] = {}
_STOPPED: OrderedDict[str, None] = OrderedDict()
_RUNNING_LOCK = threading.Lock()


def _stop_trials(keys: list[str]) -> int:
    """Run on a worker by Client.run: flag these trials to stop; how many were running here."""
    found = 0
    with _RUNNING_LOCK:
        for key in keys:
            reporter = _RUNNING.get(key)
            if reporter is not None:
                reporter.stop()
                found += 1
            else:  # queued here, or about to start: it stops as it starts
                _STOPPED[key] = None
                while len(_STOPPED) > STOPPED_KEYS:
                    _STOPPED.popitem(last=False)
    return found


def _current_worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker (called directly)
        return None


def _worker_identity(worker: Any = None) -> WorkerIdentity:
    return WorkerIdentity(socket.gethostname(), os.getpid(), "" if worker is None else worker.address)


def run_on_worker(
    recipe: bytes, request: TrialRequest, topic: str = "", key: str = ""
) -> tuple[Outcome, int, list[Numbered], WorkerIdentity]:
    """The Dask task: run one trial with the recipe's executor; never raises for the trial's errors.

    Returns the outcome, how many reports were streamed, the last of them, and where it ran.
    """
    worker = _current_worker() if topic else None
    reporter = _StreamingReporter(topic, key, worker)
    with _RUNNING_LOCK:
        _RUNNING[key] = reporter
        if key in _STOPPED:
            del _STOPPED[key]
            reporter.stop()
    try:
        # Tagged, so that a shell trial's children that left its process group (setsid) end with it.
        with tagged_scope(f"dask-{key or uuid.uuid4().hex}"):
            outcome: Outcome = _local_executor(recipe).run(request, reporter)
    except TrialPruned as exc:  # as the runner does for local executors
        outcome = Pruned(exc.step, exc.reason)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - user code: any error fails the trial
        outcome = failure(exc)  # signals reach a Dask worker's main thread, never this task's thread
    finally:
        with _RUNNING_LOCK:
            if _RUNNING.get(key) is reporter:
                del _RUNNING[key]
    return outcome, reporter.sent, list(reporter.tail), _worker_identity(worker)


# The client's side ------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class NoWorkers(Exception):
    """The cluster has had no worker for longer than the executor's worker timeout."""


_DONE = object()  # put in a trial's inbox once its task has ended


class _TrialStream:
    """The client's side of one trial's task: its streamed messages, and the pruner's verdict on it.

    The event handler (in the client's event loop) fills `inbox`; everything else
    is touched only by the thread waiting for the trial.
    """

    def __init__(self, key: str):
        self.key = key
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.next_seq = 0  # sequence number of the next report to relay: lower ones were relayed
        self.address: str | None = None  # the worker running it, from its start message
        self.told: set[str | None] = set()  # workers told to stop it (None: all of them)
        self.verdict: Pruned | None = None  # the pruner stopped it at this step


def _stop_remote(client: Any, keys: list[str], workers: list[str] | None) -> None:
    """Flag the trials `keys` to stop on `workers` (None: all); a worker or scheduler that is gone is left be."""
    with contextlib.suppress(Exception):
        client.run(_stop_trials, keys, workers=workers, on_error="ignore")


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
        self._streams: dict[str, _TrialStream] = {}  # task key -> its stream, while the task runs
        self._topic = f"somatize-{uuid.uuid4().hex}"  # this run's reports; the scheduler keeps the last 1000
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
            client = Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, TimeoutError: all mean unreachable
            raise UsageError(f"cannot reach the Dask scheduler at {self.address}: {_first_line(exc)}") from None
        # Before any task is sent on this client: the subscription travels ahead of it to the scheduler.
        client.subscribe_topic(self._topic, self._on_event)
        return client

    def _on_event(self, event: Any) -> None:
        """In the client's event loop: hand a task's message to the thread waiting for its trial."""
        try:
            message = event[1]
            key = message[1]
        except (TypeError, IndexError, KeyError):  # not ours: someone else logged on the topic
            return
        with self._lock:
            stream = self._streams.get(key)
        if stream is not None:  # else the trial is over (a message of a rerun that lost the race)
            stream.inbox.put(message)

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        if self._cancelled.is_set():
            return Failed(CANCELLED)
        if self._workers_gone():
            return self._no_workers_left()
        try:
            client = self._connected()
        except UsageError as exc:
            return Failed(str(exc))
        key = f"{request.trial_id}-{uuid.uuid4().hex}"
        stream = _TrialStream(key)
        with self._lock:  # no task may start after cancel() collected the futures to cancel
            if self._cancelled.is_set():
                return Failed(CANCELLED)
            self._streams[key] = stream  # before the task exists: none of its messages is missed
            try:
                future = client.submit(
                    run_on_worker,
                    self._recipe,
                    request,
                    self._topic,
                    key,
                    pure=False,  # a retried trial with the same params must run again
                    key=key,
                )
            except Exception as exc:  # noqa: BLE001 - e.g. the client lost its scheduler and closed
                del self._streams[key]
                return Failed(self._task_error(exc, client))
            self._in_flight.add(future)
        future.add_done_callback(lambda _: stream.inbox.put(_DONE))
        settled = False
        try:
            outcome = self._follow(client, future, stream, reporter, request.trial_id)
            settled = True
        except NoWorkers:
            settled = True
            with contextlib.suppress(Exception):  # so it never starts should a worker come back
                client.cancel([future])
            outcome = self._no_workers_left()
        except Exception as exc:  # noqa: BLE001 - whatever Dask raises, the trial fails and the study goes on
            settled = True
            outcome = Failed(self._task_error(exc, client))
        finally:
            with self._lock:
                self._in_flight.discard(future)
                self._streams.pop(key, None)
            if not settled:  # Ctrl-C in this thread (one trial at a time): the trial must not run on
                self._tell_stop(client, [stream], wait=STOP_WAIT)
                with contextlib.suppress(Exception):
                    client.cancel([future])
        if stream.verdict is not None and not self._cancelled.is_set():
            return stream.verdict  # whatever the trial did after the pruner stopped it
        return outcome

    def _follow(self, client: Any, future: Any, stream: _TrialStream, reporter: Reporter, trial_id: str) -> Outcome:
        """Relay the trial's reports until its task ends, then its outcome; short waits, so a closed
        client or cancel() can never leave us hanging."""
        while True:
            try:
                message = stream.inbox.get(timeout=CANCEL_CHECK)
            except queue.Empty:
                if self._cancelled.is_set() or client.status in ("closing", "closed"):
                    raise CancelledError() from None
                if self._workers_gone(client):
                    raise NoWorkers() from None
                continue
            if message is _DONE:
                break
            self._take(client, stream, message, reporter)
        outcome, sent, tail, where = future.result()
        with self._lock:
            self.placements[trial_id] = where
        self._catch_up(client, stream, sent, tail, reporter)
        return outcome

    def _take(self, client: Any, stream: _TrialStream, message: list[Any], reporter: Reporter) -> None:
        """One message from the task: where it started, or a report."""
        if message[0] == "start":
            stream.address = message[2]
            if stream.verdict is not None:  # a rerun, elsewhere, of a trial already pruned
                self._tell_stop(client, [stream])
        elif message[0] == "reports":
            _, _, first, reports = message
            for seq, (name, value, step) in enumerate(reports, first):
                self._relay(client, stream, (seq, name, value, step), reporter)

    def _relay(
        self, client: Any, stream: _TrialStream, report: Numbered, reporter: Reporter, live: bool = True
    ) -> None:
        """Hand one report to the runner's reporter (the bus, the pruner); stop the trial if it says so."""
        seq, name, value, step = report
        if seq < stream.next_seq or stream.verdict is not None:
            return  # relayed already (a rerun reports its steps again), or made after the pruner's verdict
        stream.next_seq = seq + 1
        reporter.report(name, value, step)
        if step is not None and reporter.should_prune():
            stream.verdict = Pruned(step, f"pruned at step {step}")
            if live:
                self._tell_stop(client, [stream])

    def _catch_up(self, client: Any, stream: _TrialStream, sent: int, tail: list[Numbered], reporter: Reporter) -> None:
        """After the task's result: reports still in flight, then those only the returned tail holds."""
        deadline = time.monotonic() + TAIL_WAIT
        while stream.next_seq < sent and stream.verdict is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                message = stream.inbox.get(timeout=left)
            except queue.Empty:
                break
            if message is not _DONE:
                self._take(client, stream, message, reporter)
        for report in tail:
            self._relay(client, stream, tuple(report), reporter, live=False)  # type: ignore[arg-type]

    def _tell_stop(self, client: Any, streams: list[_TrialStream], wait: float = 0.0) -> None:
        """Flag these trials to stop on their workers (on all workers when one's is not known yet).

        In a thread of its own: a worker that is slow to answer must not hold up relaying or
        the interrupt; `wait` seconds at most for it.
        """
        new = [stream for stream in streams if stream.address not in stream.told]
        if not new:
            return
        targets = {stream.address for stream in new}
        workers = None if None in targets else sorted(address for address in targets if address is not None)
        for stream in new:
            stream.told.add(stream.address)
        thread = threading.Thread(
            target=_stop_remote,
            args=(client, [stream.key for stream in new], workers),
            name="somatize-dask-stop",
            daemon=True,
        )
        thread.start()
        if wait:
            thread.join(wait)

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
        """Stop every running trial on its worker and cancel the queued tasks; the waiting `run`
        calls return promptly.

        Dask cannot interrupt a running task, so each trial is told to stop (a shell
        trial's process group is ended, `trial.should_prune()` turns true); a Python
        function that never asks runs on there until it ends, its result discarded.
        """
        with self._lock:
            self._cancelled.set()
            futures = list(self._in_flight)
            streams = list(self._streams.values())
            client = self._client
        if client is not None and futures:
            self._tell_stop(client, streams, wait=STOP_WAIT)
            with contextlib.suppress(Exception):  # a lost client: the waits end on their own
                client.cancel(futures)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
