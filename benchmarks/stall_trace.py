"""Why the trial loop stalls during a periodic results write: each gap split, and the writer's steps beside it.

    python benchmarks/stall_trace.py [--trials 100000] [--objectives 1|2] [--src TREE]

The study of `scale.py --part stall` (the package API, with the journal, the periodic results writer
and the frozen history attached as `somatize run` has them). Each gap between two finished trials is
split into the loop thread's CPU time, its wait for a core (the run queue: /proc/self/task/TID/schedstat)
and the rest, "blocked": the loop asleep, waiting for the GIL or in a system call that sleeps. On a
loaded machine the run queue swamps every gap; "blocked" is what another thread of the process (or the
file system) takes from the loop, so it is the figure that tells what the results writer costs it. The
writer's steps (each write, its writes and copies, fsync, rename) are timed, wall and thread CPU, and
the gaps that were blocked longest are printed with the steps and collections that overlap them.
`--src TREE`: another source tree (`git archive <commit> src | tar -x -C /tmp/old`, then /tmp/old/src).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

TRIVIAL = "def objective(p):\n    return {'value': p['x'] + p['y'], 'other': p['x'] - p['y']}\n"
WRITER = "somatize-results-write"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--objectives", type=int, choices=(1, 2), default=1)
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src))
    from somatize import (
        CategoricalDimension,
        EventBus,
        FloatDimension,
        IntDimension,
        Objective,
        SearchSpace,
        StopConditions,
        Study,
        StudyRunner,
        make_sampler,
    )
    from somatize.events import FINISHED_TRIAL_EVENTS
    from somatize.executors.python import FunctionExecutor
    from somatize.history import FrozenHistory
    from somatize.storage import results
    from somatize.storage.journal import Journal
    from somatize.storage.results import PeriodicResults, TrialLines

    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    steps: list[tuple[int, int, int, str]] = []  # the writer's: start, end, its CPU time, what

    def timed(owner: object, name: str, label: str, writer_only: bool = False) -> None:
        original = getattr(owner, name, None)
        if original is None:  # not in this tree
            return

        def step(*a, **k):
            if writer_only and threading.current_thread().name != WRITER:
                return original(*a, **k)
            start, used = clock(), cpu()
            try:
                return original(*a, **k)
            finally:
                steps.append((start, clock(), cpu() - used, label))

        setattr(owner, name, step)

    timed(PeriodicResults, "_write_snapshot", "WRITE")
    timed(results, "write_all", "write", writer_only=True)
    timed(results, "write_buffers", "writev")
    timed(results, "copy_range", "copy")
    timed(os, "fsync", "fsync", writer_only=True)
    timed(os, "replace", "replace", writer_only=True)

    space = SearchSpace((FloatDimension("x", 0.0, 1.0), FloatDimension("y", 0.0, 1.0),
                         CategoricalDimension("act", ("relu", "tanh", "gelu")), IntDimension("layers", 1, 8)))
    strategy = {"type": "random", "n_trials": args.trials}
    metrics = ["value", "other"][: args.objectives]
    study = Study("stall", space, [Objective(m) for m in metrics], strategy)
    finishes: list[tuple[int, int, int]] = []  # wall, loop CPU, loop run-queue wait (ns)
    collections: list[tuple[int, int, int]] = []
    began = [0]

    def timing(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = clock()
        else:
            collections.append((began[0], clock(), info["generation"]))

    schedstat: list[int] = []

    def finished(event) -> None:
        if not schedstat:
            schedstat.append(os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY))
        finishes.append((clock(), cpu(), int(os.pread(schedstat[0], 100, 0).split()[1])))

    finished.events = FINISHED_TRIAL_EVENTS
    scratch = Path(tempfile.mkdtemp())
    try:
        (scratch / "trivial.py").write_text(TRIVIAL)
        encoded = TrialLines()
        journal = Journal(scratch / "r.journal.jsonl")
        journal.begin(study, encoded)
        periodic = PeriodicResults(study, scratch / "r.json", lines=encoded)
        bus = EventBus()
        frozen = FrozenHistory()
        for subscriber in (journal, periodic, frozen, finished):
            bus.subscribe(subscriber)
        load = os.getloadavg()[0]
        gc.callbacks.append(timing)
        runner = StudyRunner(study, make_sampler(strategy, space, study.primary, 1),
                             FunctionExecutor("trivial:objective", metrics, scratch), bus,
                             StopConditions(max_consecutive_failures=None), 1)
        try:
            runner.run()
        finally:
            gc.callbacks.remove(timing)
            frozen.close()
        periodic.write_final(study)
        journal.close()
    finally:
        shutil.rmtree(scratch)
    report(args, load, steps, finishes, collections)


def report(args, load: float, steps, finishes, collections) -> None:
    writes = [(a, b) for a, b, _, what in steps if what == "WRITE"]
    # Not the first trial's gap: it imports the objective.
    gaps = [(b[0] - a[0], b[1] - a[1], b[2] - a[2], a[0], b[0]) for a, b in itertools.pairwise(finishes[1:])]

    def during(gap) -> bool:
        return any(start < gap[4] and gap[3] < end for start, end in writes)

    print(f"{args.src}: {args.trials:,} trials, {args.objectives} objective(s), {len(writes)} periodic writes, "
          f"load {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print("  writes (ms):", " ".join(f"{(b - a) / 1e6:.0f}" for a, b in writes))
    for name, chosen in (("no write", [g for g in gaps if not during(g)]), ("writing", [g for g in gaps if during(g)])):
        if not chosen:
            continue
        wall = sorted(g[0] for g in chosen)
        blocked = sorted(g[0] - g[1] - g[2] for g in chosen)
        p99 = int(len(chosen) * 0.99)
        print(f"  {name:8s} {len(chosen):6d} gaps: longest {wall[-1] / 1e6:6.2f} ms (p99 {wall[p99] / 1e6:5.2f}); "
              f"loop CPU at most {max(g[1] for g in chosen) / 1e6:5.2f}, run queue at most "
              f"{max(g[2] for g in chosen) / 1e6:6.2f}, blocked at most {blocked[-1] / 1e6:6.2f} ms "
              f"(p99 {blocked[p99] / 1e6:5.2f})")
    start = finishes[0][0]
    for wall, used, queued, a, b in sorted((g for g in gaps if during(g)), key=lambda g: g[1] + g[2] - g[0])[:5]:
        overlapping = [f"{what} {(max(s, a) - a) / 1e6:.1f}..{(min(e, b) - a) / 1e6:.1f} (of {(e - s) / 1e6:.1f}, "
                       f"CPU {c / 1e6:.1f})" for s, e, c, what in steps if what != "WRITE" and s < b and a < e
                       and e - s > 500_000]
        overlapping += [f"gen{g} collection {(s - a) / 1e6:.1f}..{(e - a) / 1e6:.1f}" for s, e, g in collections
                        if s < b and a < e]
        print(f"  - blocked {(wall - used - queued) / 1e6:.2f} ms of a {wall / 1e6:.2f} ms gap (CPU {used / 1e6:.2f}, "
              f"run queue {queued / 1e6:.2f}) at {(a - start) / 1e9:.2f} s: {'; '.join(overlapping) or '-'}")
    totals: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for s, e, c, what in steps:
        totals[what].append((e - s, c))
    for what, values in totals.items():
        print(f"  {what:8s} {len(values):5d} calls: wall {sum(v for v, _ in values) / 1e6:8.1f} ms (longest "
              f"{max(v for v, _ in values) / 1e6:6.1f}), thread CPU {sum(c for _, c in values) / 1e6:7.1f} ms")


if __name__ == "__main__":
    main()
