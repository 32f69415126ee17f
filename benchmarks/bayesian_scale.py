"""Bayesian suggestion latency on a long history, and resuming a long Bayesian study (issue 18).

    python benchmarks/bayesian_scale.py [--parts api,optuna,cli,finite] [--histories 100,500,1000]
        [--cycles 30] [--optuna-seconds 120] [--before SRC] [--dir DIR]

Parts (all by default):
- api: one sampler through the public API (make_sampler, tell, propose) is
  told N-1 finished trials of Hartmann6 at random points, then runs `cycles`
  cycles of "a result arrives, the next parameters are asked for"; the
  suggestion (propose) is timed, wall and CPU. The first suggestion at each N
  is shown apart: it fits the GP to the history that arrived since the last
  one and searches its hyperparameters. The history grows by one per cycle.
- optuna: Optuna's GPSampler the same way (N-1 trials added, then cycles of
  tell + ask), with at most `optuna-seconds` in all: at N = 1,000 one of its
  suggestions takes seconds, so later N get fewer cycles (at least one).
- cli: a real `somatize run` of a 1,000-trial Bayesian study of Hartmann6 (a
  Python function, microseconds a trial), with `--events`: the time between
  two trials starting is what a suggestion costs end to end (the runner,
  journal and results writes included). Then `--resume` of that study with
  `--n-trials 1003`, timed as a whole (interpreter start, reading the
  journal, re-telling 1,000 trials, the first fit, three trials).
- finite: a Bayesian study of a finite space (40 x 25 = 1,000 points) run
  to exhaustion through the API, seconds per 100 trials: it should stay flat.

`--before SRC` repeats api and the resume of the same 1,000-trial study with
another source tree (e.g. `git archive <commit> src | tar -x -C /tmp/old`,
then `--before /tmp/old/src`), in a subprocess, for a before/after in one run.
Every process runs with one BLAS thread (the sampler limits itself too), on the machine's own kernels: this
script times suggestions, it does not compare trajectories (arithmetic.py fixes those for the others).
Run it under `nice` on a shared machine and note `uptime`: CPU time is shown
beside wall time because on a loaded machine the wall time is mostly waiting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE))

from functions import PROBLEMS

PARTS = ("api", "optuna", "cli", "finite")  # and "resume" alone, with --dir of an earlier run
PROBLEM = PROBLEMS["hartmann6"]
CLI_TRIALS = 1000
RESUME_EXTRA = 3


def threads_one() -> dict[str, str]:
    return {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def random_history(count: int, seed: int = 0) -> list[dict[str, Any]]:
    from somatize import SearchSpace

    space = SearchSpace.from_spec(PROBLEM.space)
    rng = random.Random(seed)
    return [space.from_unit([rng.random() for _ in range(len(space))]) for _ in range(count)]


def summary(seconds: list[float]) -> dict[str, float]:
    """median, p95 and max in ms."""
    ms = sorted(s * 1e3 for s in seconds)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
    return {"median": statistics.median(ms), "p95": p95, "max": ms[-1], "count": len(ms)}


# api ------------------------------------------------------------------------------------------


def api_part(histories: list[int], cycles: int) -> dict[str, Any]:
    from somatize import MetricRecord, Objective, SearchSpace, Trial, TrialState, make_sampler

    space = SearchSpace.from_spec(PROBLEM.space)
    sampler = make_sampler({"type": "bayesian", "n_trials": None}, space, Objective("value"), 0)
    history = random_history(max(histories))
    told = 0

    def tell(params: dict[str, Any]) -> None:
        nonlocal told
        value = PROBLEM.objective(params)
        sampler.tell(Trial(told, params, TrialState.COMPLETED, [MetricRecord("value", value)], {"value": value}))
        told += 1

    out: dict[str, Any] = {}
    for n in histories:
        while told < n - 1:
            tell(history[told])
        arrived = history[told]
        wall, cpu = [], []
        for _ in range(cycles + 1):
            tell(arrived)
            started, started_cpu = time.perf_counter(), time.process_time()
            arrived = sampler.propose(told)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        tell(arrived)
        out[str(n)] = {
            "first_ms": wall[0] * 1e3,
            "first_cpu_ms": cpu[0] * 1e3,
            "wall": summary(wall[1:]),
            "cpu": summary(cpu[1:]),
        }
        print(f"api N={n}: first {wall[0] * 1e3:.0f} ms, then {out[str(n)]['wall']}", file=sys.stderr, flush=True)
    return out


# optuna ---------------------------------------------------------------------------------------


def optuna_part(histories: list[int], cycles: int, budget: float) -> dict[str, Any]:
    try:
        import optuna
        import torch  # noqa: F401
    except ImportError as error:
        return {"skipped": str(error)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # experimental-feature warnings
    distributions = {
        name: optuna.distributions.FloatDistribution(dim["low"], dim["high"]) for name, dim in PROBLEM.space.items()
    }
    study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0))
    history = random_history(max(histories))

    def finished(params: dict[str, Any]) -> Any:
        return optuna.trial.create_trial(params=params, distributions=distributions, value=PROBLEM.objective(params))

    deadline = time.perf_counter() + budget
    out: dict[str, Any] = {}
    for n in histories:
        study.add_trials([finished(p) for p in history[len(study.trials) : n - 1]])
        study.add_trial(finished(history[n - 1]))
        wall, cpu = [], []
        while len(wall) < cycles and (not wall or time.perf_counter() < deadline):
            started, started_cpu = time.perf_counter(), time.process_time()
            trial = study.ask(distributions)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            study.tell(trial, PROBLEM.objective(trial.params))
        out[str(n)] = {"wall": summary(wall), "cpu": summary(cpu)}
        print(f"optuna N={n}: {out[str(n)]['wall']}", file=sys.stderr, flush=True)
    return out


# cli and resume -------------------------------------------------------------------------------

STUDY = """\
name: scale
seed: 3
search_space: {space}
strategy: {{type: bayesian, n_trials: {trials}}}
objective: {{metric: value, direction: minimize}}
executor: {{function: "functions:hartmann6"}}
"""


def somatize(where: Path, src: Path, *argv: str) -> tuple[float, float]:
    """Run `somatize ARGV` in `where` with `src` first on the path; (wall, CPU) seconds."""
    env = {**os.environ, **threads_one(), "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "somatize", *argv], cwd=where, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return time.perf_counter() - started, cpu


def trial_gaps(events: Path) -> list[tuple[int, float]]:
    """(trial number, seconds since the previous trial started), from an --events file."""
    starts = []
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "trial_started":
            starts.append((event["number"], datetime.fromisoformat(event["time"]).timestamp()))
    return [(number, at - before) for (_, before), (number, at) in itertools.pairwise(starts)]


def cli_part(where: Path) -> dict[str, Any]:
    (where / "study.yaml").write_text(STUDY.format(space=json.dumps(PROBLEM.space), trials=CLI_TRIALS))
    total, cpu = somatize(where, SRC, "run", "study.yaml", "-o", "r.json", "-q", "--events", "events.jsonl")
    gaps = trial_gaps(where / "events.jsonl")
    out: dict[str, Any] = {"run_s": total, "run_cpu_s": cpu}
    for low, high in ((90, 110), (490, 510), (980, 1000)) if CLI_TRIALS == 1000 else ((1, CLI_TRIALS),):
        out[f"{low}-{high}"] = summary([g for number, g in gaps if low <= number < high])
    slowest = max(gaps, key=lambda g: g[1])
    out["slowest"] = {"trial": slowest[0], "ms": slowest[1] * 1e3}
    out["over_2s"] = sum(1 for _, g in gaps if g > 2.0)
    shutil.copy(where / "r.json", where / "r1000.json")  # the study before any resume, for --before
    print(f"cli: {out}", file=sys.stderr, flush=True)
    return out


def resume_part(where: Path, src: Path, label: str) -> dict[str, Any]:
    """`--resume` of the 1,000-trial study (a fresh copy of it) with RESUME_EXTRA more trials."""
    run = where / f"resume-{label}"
    run.mkdir(exist_ok=True)
    shutil.copy(where / "study.yaml", run / "study.yaml")
    shutil.copy(where / "r1000.json", run / "r.json")
    argv = ["run", "study.yaml", "-o", "r.json", "-q", "--resume", "--events", "events.jsonl"]
    seconds, cpu = somatize(run, src, *argv, "--n-trials", str(CLI_TRIALS + RESUME_EXTRA))
    trials = json.loads((run / "r.json").read_text())["trials"]
    numbers = sorted(t["number"] for t in trials)
    # Distinct but for `noise: auto`'s one deliberate repeat (the best initial point evaluated again, SPEC §2's
    # exception): repeats past that one would be a resume that forgot what it had proposed.
    keys = {json.dumps(t["params"], sort_keys=True) for t in trials}
    out = {
        "wall_s": seconds,
        "cpu_s": cpu,
        "trials": len(trials),
        "numbers_ok": numbers == list(range(CLI_TRIALS + RESUME_EXTRA)),
        "distinct": len(trials) - len(keys) <= 1,
        "gaps_ms": [g * 1e3 for _, g in trial_gaps(run / "events.jsonl")],
    }
    print(f"resume [{label}]: {out}", file=sys.stderr, flush=True)
    return out


# finite ---------------------------------------------------------------------------------------


def finite_part(block: int = 100) -> dict[str, Any]:
    from somatize import IntDimension, MetricRecord, Objective, SearchSpace, Trial, TrialState, make_sampler

    space = SearchSpace((IntDimension("x", 0, 39), IntDimension("y", 0, 24)))
    sampler = make_sampler({"type": "bayesian", "n_trials": None}, space, Objective("v"), 0)
    blocks, number = [], 0
    started, cpu = time.perf_counter(), time.process_time()
    while (params := sampler.propose(number)) is not None:
        value = (params["x"] - 13.3) ** 2 + (params["y"] - 6.2) ** 2
        sampler.tell(Trial(number, params, TrialState.COMPLETED, [MetricRecord("v", value)], {"v": value}))
        number += 1
        if number % block == 0:
            blocks.append({"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu})
            print(f"finite: trials {number - block}-{number - 1}: {blocks[-1]}", file=sys.stderr, flush=True)
            started, cpu = time.perf_counter(), time.process_time()
    print(f"finite: {number} trials, {blocks}", file=sys.stderr, flush=True)
    return {"trials": number, "size": space.cardinality(), "blocks": blocks}


# output ---------------------------------------------------------------------------------------


def cell(s: dict[str, float]) -> str:
    return f"{s['median']:.0f} / {s['p95']:.0f} / {s['max']:.0f}"


def markdown(result: dict[str, Any]) -> str:
    lines = []
    api, before = result.get("api"), result.get("before", {}).get("api")
    if api:
        ns = list(api)
        count = api[ns[0]]["wall"]["count"]
        lines += [
            (
                f"Suggestion latency through the API (Hartmann6, 6 dims), ms: median / p95 / max of {count} "
                "suggestions after the first, CPU median in brackets; the first at each N (the fit with a "
                "hyperparameter search) apart."
            ),
            "",
            "| sampler | " + " | ".join(f"N = {n}" for n in ns) + " | first suggestion at each N |",
            "|---|" + "---:|" * (len(ns) + 1),
        ]
        for label, part in (("somatize", api), ("somatize before", before), ("optuna-gp", result.get("optuna"))):
            if not part or "skipped" in part:
                continue
            cells = [f"{cell(part[n]['wall'])} ({part[n]['cpu']['median']:.0f})" for n in ns if n in part]
            first = ", ".join(
                f"{part[n]['first_ms']:.0f} ({part[n]['first_cpu_ms']:.0f})"
                for n in ns
                if "first_ms" in part.get(n, {})
            )
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {first or '-'} |")
    cli = result.get("cli")
    if cli:
        windows = [k for k in cli if "-" in k]
        lines += [
            "",
            (
                f"`somatize run`, {CLI_TRIALS} trials of Hartmann6 (function executor): time between two trials "
                f"starting, ms, median / p95 / max; whole run {cli['run_s']:.0f} s ({cli['run_cpu_s']:.0f} s CPU); "
                f"slowest trial {cli['slowest']['trial']} ({cli['slowest']['ms']:.0f} ms); "
                f"{cli['over_2s']} gaps over 2 s."
            ),
            "",
            "| trials | " + " | ".join(windows) + " |",
            "|---|" + "---:|" * len(windows),
            "| somatize | " + " | ".join(cell(cli[k]) for k in windows) + " |",
        ]
    resumes = {"somatize": result.get("resume"), "somatize before": result.get("before", {}).get("resume")}
    if any(resumes.values()):
        lines += [
            "",
            f"`somatize run --resume` of that {CLI_TRIALS}-trial study, +{RESUME_EXTRA} trials:",
            "",
            "| code | wall s | CPU s | trials | numbers 0..N-1, no repeat but noise: auto's one | gaps between trial starts, ms |",
            "|---|---:|---:|---:|---|---|",
        ]
        for label, r in resumes.items():
            if r:
                ok = "yes" if r["numbers_ok"] and r["distinct"] else "NO"
                gaps = ", ".join(f"{g:.0f}" for g in r["gaps_ms"])
                lines.append(f"| {label} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['trials']} | {ok} | {gaps} |")
    finite = result.get("finite")
    if finite:
        blocks = " ".join(f"{b['wall_s']:.1f} ({b['cpu_s']:.1f})" for b in finite["blocks"])
        lines += [
            "",
            (
                f"Finite space of {finite['size']} points run to exhaustion ({finite['trials']} trials), "
                f"wall (CPU) seconds per 100 trials: {blocks}"
            ),
        ]
    return "\n".join(lines)


def main() -> None:
    global CLI_TRIALS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--histories", default="100,500,1000")
    parser.add_argument("--cycles", type=int, default=30, help="timed suggestions per N")
    parser.add_argument("--optuna-seconds", type=float, default=120.0, help="Optuna's whole budget")
    parser.add_argument("--before", type=Path, help="another src tree, for api and resume")
    parser.add_argument("--cli-trials", type=int, default=CLI_TRIALS, help="length of the CLI study (smoke tests)")
    parser.add_argument("--dir", type=Path, help="where the CLI study runs (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    os.environ.update(threads_one())
    CLI_TRIALS = args.cli_trials
    parts = [p for p in args.parts.split(",") if p]
    if "resume" in parts and "cli" not in parts and not (args.dir and (args.dir / "r1000.json").exists()):
        parser.error("--parts resume needs --dir of an earlier run with the cli part")
    histories = [int(n) for n in args.histories.split(",")]
    where = args.dir or Path(tempfile.mkdtemp(prefix="bayesian-scale-"))
    where.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"uptime_start": os.getloadavg()}
    if "api" in parts:
        result["api"] = api_part(histories, args.cycles)
    if "optuna" in parts:
        result["optuna"] = optuna_part(histories, args.cycles, args.optuna_seconds)
    if "cli" in parts:
        result["cli"] = cli_part(where)
    if "cli" in parts or "resume" in parts:  # resume alone: again on the study an earlier run left in --dir
        result["resume"] = resume_part(where, SRC, "after")
    if "finite" in parts:
        result["finite"] = finite_part()
    if args.before:
        result["before"] = {}
        if "api" in parts:
            raw = where / "before-api.json"
            env = {**os.environ, "PYTHONPATH": str(args.before)}
            argv = [sys.executable, __file__, "--parts", "api", "--histories", args.histories,
                    "--cycles", str(args.cycles), "--json", str(raw), "--dir", str(where)]  # fmt: skip
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
            result["before"]["api"] = json.loads(raw.read_text())["api"]
        if (where / "r1000.json").exists():
            result["before"]["resume"] = resume_part(where, args.before, "before")
    result["uptime_end"] = os.getloadavg()
    print(markdown(result))
    print(f"\nload average (1, 5, 15 min): {result['uptime_start']} at the start, {result['uptime_end']} at the end")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
