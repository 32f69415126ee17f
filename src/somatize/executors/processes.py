"""What every executor that starts processes shares: signalling process groups,
the registry of live trial groups, and thread caps for parallel trials."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Mapping

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
