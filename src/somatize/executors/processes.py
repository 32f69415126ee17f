"""What every executor that starts processes shares: signalling process groups,
the registry of live trial groups, thread caps for parallel trials, and keeping
trial processes from outliving their trial or somatize."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

# Variables that size the BLAS/OpenMP thread pools of numpy, scikit-learn, torch...
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class LiveGroups:
    """Process groups of running trials, so a second Ctrl-C can kill them all at once."""

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._lock = threading.Lock()

    def add(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)

    def pids(self) -> set[int]:
        with self._lock:
            return set(self._groups)

    def kill_all(self) -> None:
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)


LIVE_GROUPS = LiveGroups()


def thread_limits(jobs: int, *user_envs: Mapping[str, str]) -> dict[str, str]:
    """Thread-pool caps for trial processes when `jobs` run at once.

    N trials each starting a pool as wide as the machine oversubscribe the
    cores (scikit-optimize ran about 5x slower with two 2-thread workers on 2
    cores). A variable the user set, in the environment or the study file, wins.
    """
    if jobs <= 1:
        return {}
    per_trial = str(max(1, (os.cpu_count() or 1) // jobs))
    taken = set(os.environ).union(*user_envs)
    return {name: per_trial for name in THREAD_VARIABLES if name not in taken}


# Keeping every trial process inside somatize's lifetime --------------------------------------------
#
# A trial's tree is its process group, but a child that calls setsid (or daemonizes) leaves the
# group, and every process outlives a `kill -9` of somatize. So `somatize run` (supervise()):
# - tags each process it starts through the environment, which children inherit, even across
#   setsid and exec: SOMATIZE_PROCESS_TAG=<run>/<trial or worker>;
# - becomes a child subreaper (Linux): a trial's orphaned descendants re-parent to somatize rather
#   than to init, so at the end of the trial they are somatize's own children, cheap to list, and
#   the tagged ones are ended (sweep());
# - starts a watchdog process (watchdog.py) that waits for somatize's end, however it comes
#   (kill -9 included), and then ends every process still carrying the run's tag.

PROCESS_TAG = "SOMATIZE_PROCESS_TAG"
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_SWEEP_ROUNDS = 20  # an escaped tree is ended a generation per round; deeper trees than this are pathological

# Held while a child is started and registered, and while unknown children are reaped: a trial
# process that exits at once must not be reaped by a sweep before its Popen is registered.
SPAWN_LOCK = threading.Lock()


class _Supervision:
    run_tag: str | None = None
    subreaper = False
    known: set[int] = set()  # our children that no sweep may touch (the watchdog)


# Outside `somatize run` (a trial on a Dask worker) there is no run tag and the process is no subreaper:
# a task tags the processes its thread starts (tagged_scope), and the sweep at the trial's end looks for
# them through /proc (_tagged_anywhere) rather than among its own children.
_SCOPE = threading.local()


def child_tag(name: str) -> str | None:
    """The tag for a process this run starts (None outside `somatize run` and a tagged_scope)."""
    if _Supervision.run_tag is not None:
        return f"{_Supervision.run_tag}/{name}"
    scope = getattr(_SCOPE, "tag", None)
    return None if scope is None else f"{scope}/{name}"


@contextlib.contextmanager
def tagged_scope(name: str) -> Iterator[None]:
    """Tag the processes started in this thread under `name` (unique to the task), so that those that
    leave their trial's process group (setsid) are found and ended with the trial (sweep)."""
    outer = os.environ.get(PROCESS_TAG)  # a worker started under a `somatize run`: its watchdog covers them too
    previous = getattr(_SCOPE, "tag", None)
    _SCOPE.tag = name if outer is None else f"{outer}/{name}"
    try:
        yield
    finally:
        _SCOPE.tag = previous


@contextlib.contextmanager
def supervise() -> Iterator[None]:
    """Make every process started inside end with its trial, and with somatize (see above)."""
    if _Supervision.run_tag is not None:  # nested: the outer one does it
        yield
        return
    import secrets

    previous = os.environ.get(PROCESS_TAG)
    # Under the tag of an outer run (somatize run as a trial of another): what an outer sweep or
    # watchdog looks for (its tag and tags below it) then covers this run's processes too.
    run_tag = secrets.token_hex(8) if previous is None else f"{previous}/{secrets.token_hex(8)}"
    watchdog = _start_watchdog(run_tag)
    subreaper = _set_child_subreaper(True)
    os.environ[PROCESS_TAG] = run_tag  # the fork server and its workers, and anything else started
    _Supervision.run_tag, _Supervision.subreaper = run_tag, subreaper
    try:
        yield
    finally:
        _Supervision.run_tag, _Supervision.subreaper = None, False
        if previous is None:
            os.environ.pop(PROCESS_TAG, None)
        else:
            os.environ[PROCESS_TAG] = previous
        if subreaper:
            _set_child_subreaper(False)
        if watchdog is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.close()  # its cue: end what is left of the run, then exit
            _Supervision.known.discard(watchdog.pid)


def _start_watchdog(run_tag: str) -> subprocess.Popen[bytes] | None:
    import subprocess
    import sys

    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "somatize.executors.watchdog", run_tag],
            stdin=subprocess.PIPE,  # somatize holds the only write end: EOF means somatize is gone
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a closed terminal's SIGHUP and Ctrl-C must not end it first
            env={k: v for k, v in os.environ.items() if k != PROCESS_TAG},  # untagged: no sweep ends it
        )
    except OSError:
        return None
    _Supervision.known.add(watchdog.pid)
    return watchdog


def _set_child_subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def sweep(tag: str | None, grace: float) -> None:
    """End the processes carrying `tag` that escaped their trial and re-parented to somatize.

    Called when the trial (or worker) is over: they get SIGTERM, SIGKILL after `grace` seconds,
    and are reaped; their own children re-parent to somatize in turn and go the same way. Also
    reaps the zombies of orphans from trial sessions. As a subreaper, they are found among this
    process's children; otherwise (a Dask worker) anywhere in /proc, and init reaps them.
    """
    if tag is None:
        return
    find = _escaped if _Supervision.subreaper else _tagged_anywhere
    stubborn = find(tag)
    if stubborn:
        _signal_all(stubborn, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while stubborn and time.monotonic() < deadline:
            time.sleep(0.02)
            stubborn = find(tag)
    for _ in range(_SWEEP_ROUNDS):
        if not stubborn:
            break
        _signal_all(stubborn, signal.SIGKILL)
        time.sleep(0.01)
        stubborn = find(tag)


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _escaped(tag: str) -> list[int]:
    """Our live children tagged `tag` (or below it), after reaping the zombies among our unknown children."""
    alive = []
    with SPAWN_LOCK:
        known = LIVE_GROUPS.pids() | _Supervision.known
        own_session = os.getsid(0)
        for pid in _children():
            if pid in known:
                continue
            state, session = _state_and_session(pid)
            if state == "Z":
                if session != own_session:  # an orphan of a trial session; ours (the fork server...) are left
                    with contextlib.suppress(ChildProcessError):
                        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
            elif state and tagged(_environ(pid), tag):
                alive.append(pid)
    return alive


def _tagged_anywhere(tag: str) -> list[int]:
    """The live processes of this machine tagged `tag` (or below it), but for trial main processes still
    registered; [] where there is no /proc. Environments of other users' processes are unreadable: skipped.

    A scan of 96 processes took 0.6 ms (2-core machine, load 5), once per trial on a worker and
    once per grace-period poll while an escaped process is ending: no cost worth caching against."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    me, known = os.getpid(), LIVE_GROUPS.pids()
    alive = []
    for entry in entries:
        if not entry.isdigit() or int(entry) in known or int(entry) == me:
            continue
        pid = int(entry)
        if tagged(_environ(pid), tag) and _state_and_session(pid)[0] not in ("", "Z"):
            alive.append(pid)
    return alive


def tagged(environ: bytes, tag: str) -> bool:
    """Whether a raw /proc/PID/environ holds the tag `tag` or one below it (`tag/...`)."""
    prefix = f"{PROCESS_TAG}=".encode()
    wanted = tag.encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            value = entry[len(prefix) :]
            return value == wanted or value.startswith(wanted + b"/")
    return False


def _children() -> list[int]:
    """This process's children, from every thread (each thread has its own list)."""
    pids: list[int] = []
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as handle:
                pids += map(int, handle.read().split())
        except OSError:  # the thread ended
            continue
    return pids


def _state_and_session(pid: int) -> tuple[str, int]:
    """The one-letter state and the session id from /proc/PID/stat; ("", 0) when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return "", 0
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ", comm may hold spaces
    return fields[0].decode(), int(fields[3])


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read()
    except OSError:
        return b""
