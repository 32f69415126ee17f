"""Parallel speed-up on sleep-bound trials, locally and through a Dask cluster.

    python benchmarks/parallel.py [--trials 40] [--no-dask] [--regret-seeds 5]

Trials sleep 0.2-0.5 s (a parameter of the study). For each setting it prints
the wall time, the speed-up over one job, and the dispatch overhead per trial:
(wall x slots - time spent sleeping) / trials. Local runs use jobs 1, 2 and 4
for a shell command and a Python function (worker processes); the cluster run
starts a `dask scheduler` and two `dask worker` processes on 127.0.0.1.

It also measures what parallel proposals cost the Bayesian strategy: median
simple regret on Branin after the same number of trials, sequential against
4 trials in flight (the Kriging believer).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """\
name: sleepy
seed: 3
search_space:
  seconds: {{type: float, low: 0.2, high: 0.5}}
strategy: {{type: random, n_trials: {trials}}}
objective: {{metric: slept, direction: minimize}}
executor:
{executor}
"""

SHELL = "  command: sleep {seconds}; echo slept={seconds}"
FUNCTION = "  function: sleepy:nap"
NAP = "import time\n\ndef nap(params):\n    time.sleep(params['seconds'])\n    return {'slept': params['seconds']}\n"


def run_study(directory: Path, executor: str, trials: int, jobs: int, cluster: str | None = None) -> tuple[float, float]:
    """Wall seconds and summed sleep seconds of one study."""
    from somatize import EventBus, StudyRunner, make_sampler
    from somatize.assemble import build_executor, build_study, stop_conditions
    from somatize.studyfile.loader import load_study

    path = directory / "sleepy.yaml"
    path.write_text(STUDY.format(trials=trials, executor=executor))
    overrides = [f"parallel={jobs}"] + ([f"cluster={cluster}"] if cluster else [])
    config = load_study(str(path), overrides)
    study = build_study(config)
    executor_ = build_executor(config)
    slots = jobs
    if cluster:
        executor_.connect()
        slots = executor_.worker_slots()
    sampler = make_sampler(config.strategy, config.space, config.primary, config.seed)
    runner = StudyRunner(study, sampler, executor_, EventBus(), stop_conditions(config), config.seed, slots)
    started = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - started
    assert len(study.completed()) == trials, [t.error for t in study.trials if t.error][:3]
    return wall, sum(t.params["seconds"] for t in study.trials)


def report(label: str, wall: float, slept: float, slots: int, trials: int, baseline: float | None) -> None:
    speedup = "" if baseline is None else f"speed-up {baseline / wall:4.2f}x"
    overhead = (wall * slots - slept) / trials * 1000
    print(f"{label:<28} wall {wall:6.2f} s   {speedup:<16} overhead {overhead:6.1f} ms/trial")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cluster(scratch: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], **quiet)
    ]
    for n in range(workers):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                 "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(scratch / f"w{n}")], **quiet)
        )
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(workers, timeout=60)
    return address, processes


def stop_cluster(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        os.killpg(process.pid, 15)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def branin(params: dict) -> float:
    x, y = params["x"], params["y"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


class Branin:
    """An in-process executor, safe to call from several threads."""

    def run(self, request, reporter):
        from somatize.executors.base import Completed
        from somatize.study import MetricRecord

        return Completed([MetricRecord("value", branin(dict(request.params)))])

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def bayesian_regret(seed: int, jobs: int, trials: int) -> float:
    from somatize import FloatDimension, Objective, SearchSpace, Study, StudyRunner, make_sampler

    space = SearchSpace((FloatDimension("x", -5.0, 10.0), FloatDimension("y", 0.0, 15.0)))
    strategy = {"type": "bayesian", "n_trials": trials, "n_initial": 8}
    study = Study("branin", space, [Objective("value")], strategy)
    StudyRunner(study, make_sampler(strategy, space, study.primary, seed), Branin(), seed=seed, parallel=jobs).run()
    return study.best_trial().values["value"] - 0.397887


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask cluster run")
    parser.add_argument("--regret-seeds", type=int, default=5, help="0 skips the Bayesian regret comparison")
    args = parser.parse_args()
    print(f"{args.trials} trials sleeping 0.2-0.5 s; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        (directory / "sleepy.py").write_text(NAP)
        for name, executor in (("shell", SHELL), ("function", FUNCTION)):
            baseline = None
            for jobs in (1, 2, 4):
                wall, slept = run_study(directory, executor, args.trials, jobs)
                report(f"{name}, jobs {jobs}", wall, slept, jobs, args.trials, baseline)
                baseline = baseline or wall
            if not args.no_dask:
                try:
                    address, processes = start_cluster(directory, 2)
                except ImportError:
                    print("dask: not installed (pip install 'somatize[dask]')")
                    args.no_dask = True
                    continue
                try:
                    wall, slept = run_study(directory, executor, args.trials, 1, cluster=address)
                    report(f"{name}, dask 2 workers", wall, slept, 2, args.trials, baseline)
                finally:
                    stop_cluster(processes)
    if args.regret_seeds:
        trials = 30
        for jobs in (1, 4):
            regrets = [bayesian_regret(seed, jobs, trials) for seed in range(args.regret_seeds)]
            print(
                f"bayesian on Branin, {trials} trials, jobs {jobs}: median regret {statistics.median(regrets):.4f} "
                f"(seeds {args.regret_seeds}; worst {max(regrets):.4f})"
            )


if __name__ == "__main__":
    main()
