"""What streaming a trial's reports costs on a Dask cluster, and how fast a pruned trial stops there.

    python benchmarks/dask_reports.py [--reports 20000] [--repeats 3] [--prunes 10]

Starts a `dask scheduler` and one one-thread `dask worker` on 127.0.0.1 and
runs Python-function trials through the DaskExecutor directly (no study loop):
- per-trial time of a trial that reports nothing (dispatch overhead);
- time of a trial that makes `--reports` reports as fast as it can, all of
  which reach the client's reporter (the report stream's throughput);
- pruning latency: a trial reports one step every 10 ms and the client's
  reporter prunes it at step 5; the time from that verdict to `run` returning
  (the worker told, the trial's should_prune() true, its task ended).
Medians; run it under `nice -n 19` and note the load average.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBJECTIVES = """
import time

from somatize import TrialPruned


def quiet(params):
    return {"value": 1.0}


def chatty(params, trial):
    for step in range(params["reports"]):
        trial.report(float(step), step=step)
    return {"value": -1.0}


def slow(params, trial):
    for step in range(1000):
        trial.report(float(step), step=step)
        if trial.should_prune():
            raise TrialPruned()
        time.sleep(0.01)
    return {"value": 0.0}
"""


class Reporter:
    """Counts reports; prunes at `prune_at` and notes when."""

    def __init__(self, prune_at: int | None = None):
        self.count = 0
        self.prune_at = prune_at
        self.verdict_at: float | None = None
        self.returned_at = 0.0

    def report(self, name: str, value: float, step: int | None = None) -> None:
        self.count += 1
        if self.prune_at is not None and step == self.prune_at and self.verdict_at is None:
            self.verdict_at = time.perf_counter()

    def should_prune(self) -> bool:
        return self.verdict_at is not None


def start_cluster(root: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    scheduler_file = root / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(scheduler_file)],
            **quiet,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--host", "127.0.0.1", "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard", "--memory-limit", "0", "--scheduler-file", str(scheduler_file)],
            **quiet,
        ),
    ]
    deadline = time.monotonic() + 60
    while True:
        try:
            address = str(json.loads(scheduler_file.read_text())["address"])
            break
        except (FileNotFoundError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise SystemExit("the scheduler did not start") from None
            time.sleep(0.1)
    import distributed

    with distributed.Client(address, set_as_default=False) as client:
        client.wait_for_workers(1, timeout=60)
    return address, processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prunes", type=int, default=10)
    args = parser.parse_args()

    from somatize.executors.base import TrialRequest
    from somatize.executors.dask import DaskExecutor
    from somatize.executors.python import FunctionExecutor

    root = Path(tempfile.mkdtemp(prefix="somatize-dask-bench-"))
    (root / "bench_objectives.py").write_text(OBJECTIVES)
    address, processes = start_cluster(root)
    try:

        def timed(target: str, params: dict, repeats: int, prune_at: int | None = None) -> list[tuple[float, Reporter]]:
            """(seconds `run` took, its reporter) per trial; `run` returned at reporter.returned_at."""
            executor = DaskExecutor(address, functools.partial(FunctionExecutor, target, ["value"], root))
            try:
                executor.run(TrialRequest("warm", 0, {"reports": 0}, 1, "bench"), Reporter())  # imports the module
                out = []
                for number in range(1, repeats + 1):
                    reporter = Reporter(prune_at)
                    started = time.perf_counter()
                    executor.run(TrialRequest(f"t{number}", number, params, 1, "bench"), reporter)
                    reporter.returned_at = time.perf_counter()
                    out.append((reporter.returned_at - started, reporter))
                return out
            finally:
                executor.close()

        quiet_runs = timed("bench_objectives:quiet", {}, 50)
        print(f"dispatch: {statistics.median(t for t, _ in quiet_runs) * 1000:.1f} ms per trial (median of 50)")
        chatty = timed("bench_objectives:chatty", {"reports": args.reports}, args.repeats)
        seen = sorted({reporter.count for _, reporter in chatty})
        print(f"{args.reports} reports: {statistics.median(t for t, _ in chatty):.3f} s per trial "
              f"(median of {args.repeats}; reports seen {seen})")
        pruned = timed("bench_objectives:slow", {}, args.prunes, prune_at=5)
        latency = [r.returned_at - r.verdict_at for _, r in pruned if r.verdict_at is not None]
        print(f"pruned at step 5: run returned {statistics.median(latency) * 1000:.0f} ms after the verdict "
              f"(median of {args.prunes}; the trial makes a step every 10 ms)")
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait()
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
