"""Per-trial cost of `somatize run` with the journal fsynced (durability: power) or only flushed (process).

    python benchmarks/durability.py [--trials 10000] [--repeats 3] [--before SRC] [--dir DIR]

Runs a random study of a trivial Python function as a real `somatize run`
subprocess, `--trials` trials and one trial, and prints the difference per
trial (so start-up is left out), median of interleaved repeats. `--before SRC`
adds the same run with another source tree on PYTHONPATH (e.g. the code before
group commit: `git archive <commit> src | tar -x -C /tmp/old`, then
`--before /tmp/old/src`). Run it in `--dir` on the disk you care about: on a
tmpfs an fsync costs nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median_high as median  # the middle run, as overhead.py takes it

SRC = Path(__file__).resolve().parent.parent / "src"

STUDY = """\
name: durability
seed: 1
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  y: {type: float, low: 0.0, high: 1.0}
strategy: {type: random, n_trials: 10}
objective: {metric: value}
executor: {function: "trivial:objective"}
"""


def run_seconds(where: Path, src: Path, trials: int, durability: str | None) -> float:
    for stale in where.glob("r.*"):
        stale.unlink()
    argv = [sys.executable, "-m", "somatize", "run", "study.yaml", "-o", "r.json", "-q", "--n-trials", str(trials)]
    if durability is not None:
        argv += ["--set", f"durability={durability}"]
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    subprocess.run(argv, cwd=where, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def fsync_ms(where: Path, count: int = 20) -> float:
    """One append of a journal-sized line then fsync, as the journal's thread does: median ms."""
    fd = os.open(where / "probe.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b'{"trial": {"number": 1, "params": {"x": 0.5}}}\n' * 10)
            started = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1e3)
    finally:
        os.close(fd)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another source tree to compare (no durability key there)")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the results and journal go")
    args = parser.parse_args()
    variants: dict[str, tuple[Path, str | None]] = {"power": (SRC, "power"), "process": (SRC, "process")}
    if args.before is not None:
        variants["before (flush, no fsync)"] = (args.before.resolve(), None)
    runs: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        where = Path(scratch)
        (where / "study.yaml").write_text(STUDY)
        (where / "trivial.py").write_text("def objective(params):\n    return params['x'] * params['y']\n")
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits every variant alike
            for name, (src, durability) in variants.items():
                whole = run_seconds(where, src, args.trials, durability)
                start_up = run_seconds(where, src, 1, durability)
                runs[name].append((whole - start_up) / (args.trials - 1) * 1e6)
        one_fsync = fsync_ms(where)
    load = os.getloadavg()
    print(f"trials: {args.trials}, median of {args.repeats} runs (min in brackets), load {load[0]:.2f} {load[1]:.2f}")
    for name, values in runs.items():
        print(f"durability {name + ':':<26} {median(values):7.1f} µs/trial  ({min(values):.1f})")
    print(f"one fsync of a journal here: {one_fsync:.2f} ms (what each trial would wait with an fsync per trial)")


if __name__ == "__main__":
    main()
