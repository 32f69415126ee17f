"""Cost at scale: 1k / 10k / 100k-trial studies, their results files, and finite spaces that fill up.

    python benchmarks/scale.py [--part run|stall|read|finite|all] [--sizes 1000,10000,100000] [--dir DIR]
                               [--src TREE] [--before TREE] [--pairs N]

Parts (issue 18):
  run     `somatize run` (random, a trivial Python function, durability: power) as a real subprocess:
          µs per trial, wall and CPU (rusage of the child: user + system, every thread), start-up
          (measured with one trial) left out, and peak RSS, beside an Optuna in-memory script
          (RandomSampler) of the same study in the same run; `--before TREE` adds another source
          tree's somatize (the code before a change), size by size in the same run. `--pairs N`:
          instead, at each size, N pairs run one after the other (somatize, Optuna, Optuna, somatize, ...),
          each pair's ratio and the median of the pairs, in wall and CPU time, so both sides of a ratio
          see the machine as it was during that pair (its speed drifts by up to 2x within minutes).
  stall   the trial loop through the package API with the journal, the periodic results writer and
          the frozen history attached, as `somatize run` has them: the longest and the 99th-percentile
          gap between two finished trials, while a results write was under way and not, and the
          longest full collection of the garbage collector (gc.callbacks).
  read    on the largest size's results file: `best`, `show --limit 10`, `show` (every row, a table;
          time to its first row, total, peak RSS), `report` (time, RSS, page size), `run --resume` +10
          (with and without -q; also its CPU time).
  finite  random and grid search over a finite space filled up to its last point (3k and 30k points).
Every figure is one run of a real `somatize` process (peak RSS from wait4). The Bayesian part is
benchmarks/bayesian_scale.py. Run it under `nice -n 19` on an idle machine; it prints the load.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

STUDY = """\
name: scale
seed: 1
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  y: {type: float, low: 0.0, high: 1.0}
  act: [relu, tanh, gelu]
  layers: {type: int, low: 1, high: 8}
strategy: {type: random, n_trials: 10}
objective: {metric: value}
executor: {function: "trivial:objective"}
durability: power
"""

FINITE = """\
name: finite
seed: 1
search_space:
  a: {{type: int, low: 0, high: {high}}}
  b: {{type: int, low: 0, high: 99}}
strategy: {strategy}
objective: {{metric: value}}
executor: {{function: "trivial:objective_ab"}}
"""

TRIVIAL = """\
def objective(params):
    return params["x"] * params["y"]


def objective_ab(params):
    return params["a"] + params["b"]
"""

OPTUNA = """\
import sys, time
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    y = trial.suggest_float("y", 0.0, 1.0)
    trial.suggest_categorical("act", ["relu", "tanh", "gelu"])
    trial.suggest_int("layers", 1, 8)
    return x * y


study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
study.optimize(objective, n_trials=int(sys.argv[1]))
"""


def timed(argv: list[str], where: Path, stdout: int | None = subprocess.DEVNULL) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process."""
    seconds, rss, _ = timed_cpu(argv, where, stdout)
    return seconds, rss


def timed_cpu(
    argv: list[str], where: Path, stdout: int | None = subprocess.DEVNULL, src: Path | None = None
) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) and CPU seconds (user + system, all its threads: rusage) of one process."""
    env = {**os.environ, "PYTHONPATH": str(src or SRC)}
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=where, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode() if process.stderr else ""
    if process.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}): {error[-500:]}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def somatize(*args: object) -> list[str]:
    return [sys.executable, "-m", "somatize", *map(str, args)]


def part_run(where: Path, sizes: list[int], before: Path | None = None) -> list[str]:
    """somatize against Optuna; with `before` (another source tree) that tree's somatize too, size by size in
    the same run, so both see the same load."""
    head = "| trials | somatize µs/trial | CPU µs/trial | peak RSS |"
    rule = "|---:|---:|---:|---:|"
    if before is not None:
        head += " before µs/trial | before CPU µs/trial |"
        rule += "---:|---:|"
    head += " Optuna in memory µs/trial | CPU µs/trial | Optuna peak RSS | Optuna / somatize | (CPU) |"
    rule += "---:|---:|---:|---:|---:|"
    rows = [head, rule]

    def start_up(argv: list[str], src: Path | None = None) -> tuple[float, float]:
        # Start-up (imports, the study file, the first trial) is left out: the fastest of three one-trial
        # runs, for wall time and for CPU time (rusage of the child) alike.
        ones = [timed_cpu(argv, where, src=src) for _ in range(3)]
        return min(o[0] for o in ones), min(o[2] for o in ones)

    def per_trial(argv: list[str], size: int, base: tuple[float, float], src: Path | None = None):
        seconds, rss, cpu = timed_cpu(argv, where, src=src)
        return (seconds - base[0]) / (size - 1) * 1e6, (cpu - base[1]) / (size - 1) * 1e6, rss

    def ours(size: int) -> list[str]:
        return somatize("run", "study.yaml", "-o", f"r{size}.json", "-q", "--n-trials", size)

    ours_base = start_up(ours(1)[:-1] + ["1"])
    old_base = None if before is None else start_up(ours(1)[:-1] + ["1"], before)
    theirs_base = start_up([sys.executable, "optuna_study.py", "1"])
    for size in sizes:
        wall, cpu, rss = per_trial(ours(size), size, ours_base)
        row = f"| {size:,} | {wall:.1f} | {cpu:.1f} | {rss:.0f} MiB |"
        if before is not None:
            old_wall, old_cpu, _ = per_trial(ours(size), size, old_base, before)
            row += f" {old_wall:.1f} | {old_cpu:.1f} |"
        theirs, theirs_cpu, theirs_rss = per_trial([sys.executable, "optuna_study.py", str(size)], size, theirs_base)
        row += (f" {theirs:.1f} | {theirs_cpu:.1f} | {theirs_rss:.0f} MiB | {theirs / wall:.1f}x | "
                f"{theirs_cpu / cpu:.1f}x |")
        rows.append(row)
    return rows


def part_run_pairs(where: Path, sizes: list[int], pairs: int) -> list[str]:
    """somatize against Optuna in alternation: each pair one run of either, one right after the other."""
    rows = [("| trials | pair | somatize µs/trial | CPU µs/trial | Optuna in memory µs/trial | CPU µs/trial | "
             "Optuna / somatize | (CPU) |"), "|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ours(size: int) -> list[str]:
        return somatize("run", "study.yaml", "-o", f"r{size}.json", "-q", "--n-trials", size)

    def theirs(size: int) -> list[str]:
        return [sys.executable, "optuna_study.py", str(size)]

    # Start-up as in part_run, the fastest of three one-trial runs of each, taken in alternation too.
    ones: dict[str, list[tuple[float, float, float]]] = {"ours": [], "theirs": []}
    for _ in range(3):
        ones["ours"].append(timed_cpu(ours(1), where))
        ones["theirs"].append(timed_cpu(theirs(1), where))
    base = {side: (min(o[0] for o in runs), min(o[2] for o in runs)) for side, runs in ones.items()}

    def per_trial(argv: list[str], size: int, side: str) -> tuple[float, float]:
        seconds, _, cpu = timed_cpu(argv, where)
        return (seconds - base[side][0]) / (size - 1) * 1e6, (cpu - base[side][1]) / (size - 1) * 1e6

    summary = []
    for size in sizes:
        walls, cpus = [], []
        for pair in range(1, pairs + 1):
            # Which side runs first alternates too (ABBA): a machine speeding up or slowing down over a pair
            # favours neither side across two pairs.
            if pair % 2:
                wall, cpu = per_trial(ours(size), size, "ours")
                their_wall, their_cpu = per_trial(theirs(size), size, "theirs")
            else:
                their_wall, their_cpu = per_trial(theirs(size), size, "theirs")
                wall, cpu = per_trial(ours(size), size, "ours")
            walls.append(their_wall / wall)
            cpus.append(their_cpu / cpu)
            rows.append(f"| {size:,} | {pair} | {wall:.1f} | {cpu:.1f} | {their_wall:.1f} | {their_cpu:.1f} | "
                        f"{walls[-1]:.1f}x | {cpus[-1]:.1f}x |")
        summary.append(f"{size:,} trials, median of {pairs} pairs: Optuna / somatize {statistics.median(walls):.2f}x "
                       f"wall, {statistics.median(cpus):.2f}x CPU (pairs from {min(cpus):.2f}x to "
                       f"{max(cpus):.2f}x CPU)")
    return [*rows, "", *summary]


def part_stall(sizes: list[int]) -> list[str]:
    sys.path.insert(0, str(SRC))
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
    from somatize.storage.journal import Journal
    from somatize.storage.results import PeriodicResults, TrialLines

    try:  # as `somatize run` has it since issue 18's per-trial work; not in older trees (--src)
        from somatize.history import FrozenHistory
    except ImportError:
        FrozenHistory = None

    rows = [("| trials | periodic writes | longest gap, no write under way | p99 | longest gap during a write | p99 | "
             "median gap | longest full collection |"),
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        space = SearchSpace((FloatDimension("x", 0.0, 1.0), FloatDimension("y", 0.0, 1.0),
                             CategoricalDimension("act", ("relu", "tanh", "gelu")), IntDimension("layers", 1, 8)))
        strategy = {"type": "random", "n_trials": size}
        study = Study("stall", space, [Objective("value")], strategy)
        with tempfile.TemporaryDirectory() as scratch:
            Path(scratch, "trivial.py").write_text(TRIVIAL)
            # As `somatize run` sets them up: the journal and the results writer share each trial's JSON.
            encoded = TrialLines()
            journal = Journal(Path(scratch) / "r.journal.jsonl")
            journal.begin(study, encoded)
            periodic = PeriodicResults(study, Path(scratch) / "r.json", lines=encoded)
            gaps: list[float] = []
            during: list[float] = []
            outside: list[float] = []
            writes = [0]
            last = [time.perf_counter()]
            was_writing = [False]

            def clock(event, periodic=periodic, gaps=gaps, during=during, outside=outside, writes=writes,
                      last=last, was_writing=was_writing) -> None:
                if isinstance(event, FINISHED_TRIAL_EVENTS):
                    now = time.perf_counter()
                    gap = now - last[0]
                    if event.trial.number > 0:  # not the first: it imports the objective
                        gaps.append(gap)
                    # `writing` since the write thread is kept for the run; a thread per write before (--src)
                    writing = periodic.writing if hasattr(periodic, "writing") else periodic._writer is not None
                    if writing or was_writing[0]:
                        during.append(gap)
                    elif event.trial.number > 0:
                        outside.append(gap)
                    if writing and not was_writing[0]:
                        writes[0] += 1
                    was_writing[0] = writing
                    last[0] = now

            clock.events = FINISHED_TRIAL_EVENTS  # what it reads (a bus that routes events takes it)
            collections: list[float] = []
            started = [0.0]

            def timing(phase, info, started=started, collections=collections) -> None:
                if info["generation"] == 2:
                    if phase == "start":
                        started[0] = time.perf_counter()
                    else:
                        collections.append(time.perf_counter() - started[0])

            bus = EventBus()
            bus.subscribe(journal)
            bus.subscribe(periodic)
            if FrozenHistory is not None:
                frozen = FrozenHistory()
                bus.subscribe(frozen)
            bus.subscribe(clock)
            gc.callbacks.append(timing)
            runner = StudyRunner(study, make_sampler(strategy, space, study.primary, 1),
                                 FunctionExecutor("trivial:objective", ["value"], Path(scratch)), bus,
                                 StopConditions(max_consecutive_failures=None), 1)
            try:
                runner.run()
            finally:
                gc.callbacks.remove(timing)
                if FrozenHistory is not None:
                    frozen.close()
            periodic.write_final(study)
            journal.close()
        gaps.sort()
        outside.sort()
        during.sort()
        rows.append(f"| {size:,} | {writes[0]} | {outside[-1] * 1e3:.2f} ms | {_p99(outside) * 1e3:.2f} ms | "
                    f"{(during[-1] * 1e3 if during else 0):.2f} ms | {_p99(during) * 1e3:.2f} ms | "
                    f"{gaps[len(gaps) // 2] * 1e6:.0f} µs | {max(collections, default=0) * 1e3:.1f} ms |")
    return rows


def _p99(values: list[float]) -> float:
    """The 99th percentile of sorted values (0 for none)."""
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0


def first_row_seconds(argv: list[str], where: Path, rows_before: int = 2) -> tuple[float, float, float]:
    """Seconds to the first data row of `show` (after the header lines), the total, and peak RSS (MiB)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    for _ in range(rows_before + 1):
        process.stdout.readline()
    first = time.perf_counter() - started
    with open(os.devnull, "wb") as sink:
        drain = threading.Thread(target=shutil.copyfileobj, args=(process.stdout, sink))
        drain.start()
        _, _, usage = os.wait4(process.pid, 0)
        drain.join()
    return first, time.perf_counter() - started, usage.ru_maxrss / 1024


def part_read(where: Path, size: int) -> list[str]:
    results = f"r{size}.json"
    if not (where / results).exists():
        timed(somatize("run", "study.yaml", "-o", results, "-q", "--n-trials", size), where)
    rows = [f"On the {size:,}-trial results file ({(where / results).stat().st_size / 2**20:.0f} MB):", "",
            "| command | seconds | peak RSS | note |", "|---|---:|---:|---|"]
    for label, args in (("best", ["best", results]), ("show --limit 10", ["show", results, "--limit", "10"])):
        seconds, rss = timed(somatize(*args), where)
        rows.append(f"| `somatize {label}` | {seconds:.2f} | {rss:.0f} MiB | |")
    first, total, rss = first_row_seconds(somatize("show", results), where)
    rows.append(f"| `somatize show` (every row, table) | {total:.2f} | {rss:.0f} MiB | first row after {first:.2f} s |")
    first, total, rss = first_row_seconds(somatize("show", results, "-f", "csv"), where, rows_before=0)
    rows.append(f"| `somatize show -f csv` | {total:.2f} | {rss:.0f} MiB | first row after {first:.2f} s |")
    seconds, rss = timed(somatize("report", results, "-o", "report.html"), where)
    page = (where / "report.html").stat().st_size / 2**20
    rows.append(f"| `somatize report` | {seconds:.2f} | {rss:.0f} MiB | page {page:.1f} MB |")
    for quiet in (["-q"], []):  # -q: no summary of the top trials at the end (which sorts them all)
        shutil.copy(where / results, where / "resumed.json")
        seconds, rss, cpu = timed_cpu(somatize("run", "study.yaml", "-o", "resumed.json", *quiet, "--n-trials",
                                               size + 10, "--resume"), where)
        rows.append(f"| `somatize run --resume{' -q' if quiet else ''}`, +10 trials | {seconds:.2f} | {rss:.0f} MiB "
                    f"| {cpu:.2f} s of CPU |")
    return rows


def part_finite(where: Path) -> list[str]:
    rows = ["| strategy | points (= trials) | seconds | µs/trial |", "|---|---:|---:|---:|"]
    for kind in ("random", "grid"):
        for points in (3_000, 30_000):
            strategy = (f"{{type: random, n_trials: {points}}}" if kind == "random"
                        else "{type: grid, points_per_dim: 1000}")
            (where / "finite.yaml").write_text(FINITE.format(high=points // 100 - 1, strategy=strategy))
            seconds, _ = timed(somatize("run", "finite.yaml", "-o", "finite.json", "-q", "--set",
                                        "durability=power"), where)
            rows.append(f"| {kind} | {points:,} | {seconds:.2f} | {seconds / points * 1e6:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("run", "stall", "read", "finite", "all"), default="all")
    parser.add_argument("--sizes", default="1000,10000,100000", help="study sizes, comma-separated")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temp dir)")
    parser.add_argument("--src", type=Path, default=None,
                        help="another source tree to measure (e.g. the code before issue 18: "
                             "`git archive <commit> src | tar -x -C /tmp/old`, then --src /tmp/old/src)")
    parser.add_argument("--before", type=Path, default=None,
                        help="--part run: also this source tree's somatize, size by size in the same run")
    parser.add_argument("--pairs", type=int, default=None,
                        help="--part run: N pairs at each size, somatize and Optuna in alternation, each pair's "
                             "ratio and their median (instead of one run of each)")
    args = parser.parse_args()
    if args.src is not None:
        global SRC
        SRC = args.src.resolve()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        where = Path(scratch)
        (where / "study.yaml").write_text(STUDY)
        (where / "trivial.py").write_text(TRIVIAL)
        (where / "optuna_study.py").write_text(OPTUNA)
        before = os.getloadavg()
        out: list[str] = []
        if args.part in ("run", "all"):
            if args.pairs:
                rows = part_run_pairs(where, sizes, args.pairs)
            else:
                rows = part_run(where, sizes, args.before)
            out += ["### somatize run against Optuna in memory", "", *rows, ""]
        if args.part in ("read", "all"):
            out += ["### Reading a large results file", "", *part_read(where, max(sizes)), ""]
        if args.part in ("finite", "all"):
            out += ["### Finite spaces filled up", "", *part_finite(where), ""]
        if args.part in ("stall", "all"):  # last: in this process, whose memory later children would inherit
            out += ["### The trial loop during periodic results writes", "", *part_stall(sizes), ""]
        after = os.getloadavg()
    print(f"python benchmarks/scale.py --part {args.part} --sizes {args.sizes}"
          + ("" if args.src is None else f" --src {args.src}") + ("" if args.before is None else f" --before {args.before}")
          + ("" if not args.pairs else f" --pairs {args.pairs}"))
    print(f"load average {before[0]:.2f} before, {after[0]:.2f} after; {os.cpu_count()} cores\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
