"""somatize against Optuna, hyperopt and scikit-optimize: sample efficiency, per-trial cost, CLI and suggestion latency.

    pip install -e '.[bench]'   # and torch (a CPU build) for Optuna's GPSampler
    python benchmarks/compare.py --workers 2 [--json raw.json] > tables.md

Parts (all by default; `--part efficiency,latency` picks some):
- efficiency: simple regret (best value found - known minimum) after 20 and
  50 evaluations on the problems of benchmarks/functions.py, median and
  interquartile range over seeds 0..N-1, and wall seconds per run. Samplers:
  somatize `bayesian` (default options, or --somatize-options) and `random`
  through the package API; Optuna TPE, univariate and multivariate (the
  default since Optuna 5), and GPSampler; hyperopt TPE; scikit-optimize `gp_minimize` with its defaults.
  Every library gets the same space, log-scale dimensions as log-scale.
- overhead: per-trial framework cost, from benchmarks/overhead.py.
- cli: start-up latency and shell-executor cost, from benchmarks/cli_latency.py.
- latency: Bayesian suggestion latency against history length, from benchmarks/latency.py.

To compare a variant of somatize's Bayesian settings with a full run, without
rerunning the peers:

    python benchmarks/compare.py --part efficiency --json full.json          # once
    python benchmarks/compare.py --part efficiency --samplers somatize-bayesian \\
        --somatize-options '{"acquisition": "EI"}' --label EI --include full.json

A peer whose library is missing is skipped with one line. Every measurement
runs on one thread, so `--workers 2` jobs share a 2-core machine fairly.
Tables go to stdout as Markdown, progress to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from arithmetic import fixed_environment
from functions import PROBLEMS, Problem

HERE = Path(__file__).resolve().parent
PARTS = ("efficiency", "overhead", "cli", "latency")
SAMPLERS = (
    "somatize-bayesian",
    "somatize-random",
    "optuna-tpe-univariate",
    "optuna-tpe-multivariate",
    "optuna-gp",
    "hyperopt-tpe",
    "skopt-gp",
)
# Modules each sampler needs; the first that fails to import is the reason it is skipped.
NEEDS = {
    "optuna-tpe-univariate": ("optuna",),
    "optuna-tpe-multivariate": ("optuna",),
    "optuna-gp": ("optuna", "torch", "scipy"),
    "hyperopt-tpe": ("hyperopt",),
    "skopt-gp": ("skopt",),
}
VERSIONS = ("somatize", "optuna", "hyperopt", "scikit-optimize", "scikit-learn", "torch", "scipy", "numpy")
EARLY = 20  # the regret is also reported after this many evaluations


def log_scale(dim: dict[str, Any]) -> bool:
    return dim.get("scale") == "log"


def check_plain(space: dict[str, Any]) -> None:
    """Peers are given float/int (linear or log) and categorical dimensions; refuse what they would not see."""
    for name, dim in space.items():
        extra = set(dim) - {"type", "low", "high", "scale", "choices"}
        if extra:
            raise ValueError(f"{name}: {', '.join(sorted(extra))} not mapped to the peer libraries")


def typed(params: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """Plain Python values, as the objective is written for (peers hand back numpy scalars or floats for ints)."""
    out = {}
    for name, dim in space.items():
        value = params[name]
        if dim["type"] == "int":
            value = round(float(value))
        elif dim["type"] == "float":
            value = float(value)
        out[name] = value
    return out


# One run per sampler: the objective values in evaluation order -----------------------


class InProcess:
    """A somatize executor calling the objective in this process (the shape of parallel.py's `Branin`)."""

    def __init__(self, problem: Problem):
        self.problem = problem

    def run(self, request, reporter):
        from somatize.executors.base import Completed
        from somatize.study import MetricRecord

        return Completed([MetricRecord("value", self.problem.objective(dict(request.params)))])

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_somatize(problem: Problem, seed: int, evals: int, strategy: dict[str, Any]) -> list[float]:
    from somatize import Objective, SearchSpace, Study, StudyRunner, make_sampler

    space = SearchSpace.from_spec(problem.space)
    strategy = {**strategy, "n_trials": evals}
    study = Study(problem.name, space, [Objective("value")], strategy)
    sampler = make_sampler(strategy, space, Objective("value"), seed)
    StudyRunner(study, sampler, InProcess(problem), seed=seed).run()
    return [t.values["value"] for t in sorted(study.trials, key=lambda t: t.number)]


def run_optuna(problem: Problem, seed: int, evals: int, kind: str) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = {
        # Explicit both ways: Optuna 5 made multivariate the default for one objective.
        "tpe-univariate": lambda: optuna.samplers.TPESampler(multivariate=False, seed=seed),
        "tpe-multivariate": lambda: optuna.samplers.TPESampler(multivariate=True, seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }[kind]()

    def objective(trial) -> float:
        params = {}
        for name, dim in problem.space.items():
            if dim["type"] == "categorical":
                params[name] = trial.suggest_categorical(name, dim["choices"])
            elif dim["type"] == "int":
                params[name] = trial.suggest_int(name, dim["low"], dim["high"], log=log_scale(dim))
            else:
                params[name] = trial.suggest_float(name, dim["low"], dim["high"], log=log_scale(dim))
        return problem.objective(params)

    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=evals)
    return [t.value for t in study.trials]


def run_hyperopt(problem: Problem, seed: int, evals: int) -> list[float]:
    import math

    import numpy as np
    from hyperopt import Trials, fmin, hp, tpe

    space = {}
    for name, dim in problem.space.items():
        if dim["type"] == "categorical":
            space[name] = hp.choice(name, dim["choices"])
        elif dim["type"] == "int" and log_scale(dim):
            space[name] = hp.qloguniform(name, math.log(dim["low"]), math.log(dim["high"]), 1)
        elif dim["type"] == "int":
            space[name] = hp.uniformint(name, dim["low"], dim["high"])
        elif log_scale(dim):
            space[name] = hp.loguniform(name, math.log(dim["low"]), math.log(dim["high"]))
        else:
            space[name] = hp.uniform(name, dim["low"], dim["high"])
    trials = Trials()
    fmin(
        lambda params: problem.objective(typed(params, problem.space)),
        space, algo=tpe.suggest, max_evals=evals, trials=trials,
        rstate=np.random.default_rng(seed), show_progressbar=False,
    )  # fmt: skip
    return [float(v) for v in trials.losses()]


def run_skopt(problem: Problem, seed: int, evals: int) -> list[float]:
    from skopt import gp_minimize
    from skopt.space import Categorical, Integer, Real

    names, dims = list(problem.space), []
    for dim in problem.space.values():
        prior = "log-uniform" if log_scale(dim) else "uniform"
        if dim["type"] == "categorical":
            dims.append(Categorical(dim["choices"]))
        elif dim["type"] == "int":
            dims.append(Integer(dim["low"], dim["high"], prior=prior))
        else:
            dims.append(Real(dim["low"], dim["high"], prior=prior))
    result = gp_minimize(
        lambda x: problem.objective(typed(dict(zip(names, x)), problem.space)), dims, n_calls=evals, random_state=seed
    )
    return [float(v) for v in result.func_vals]


def run_job(problem_name: str, sampler: str, seed: int, evals: int, options: dict[str, Any]) -> dict[str, Any]:
    """One (problem, sampler, seed) run; top level so a process pool can call it."""
    problem = PROBLEMS[problem_name]
    check_plain(problem.space)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Repeated-point and experimental-feature warnings, thousands of them, say nothing here.
        warnings.simplefilter("ignore")
        if sampler == "somatize-bayesian":
            values = run_somatize(problem, seed, evals, {"type": "bayesian", **options})
        elif sampler == "somatize-random":
            values = run_somatize(problem, seed, evals, {"type": "random"})
        elif sampler.startswith("optuna-"):
            values = run_optuna(problem, seed, evals, sampler.removeprefix("optuna-"))
        elif sampler == "hyperopt-tpe":
            values = run_hyperopt(problem, seed, evals)
        elif sampler == "skopt-gp":
            values = run_skopt(problem, seed, evals)
        else:
            raise ValueError(f"unknown sampler {sampler!r}")
    seconds = time.perf_counter() - started
    return {"problem": problem_name, "sampler": sampler, "seed": seed, "values": values, "seconds": seconds}


def missing(sampler: str) -> str | None:
    """Why a sampler cannot run here, or None."""
    for module in NEEDS.get(sampler, ()):
        try:
            __import__(module)
        except ImportError as error:
            hint = "pip install torch (a CPU build is enough)" if module == "torch" else "pip install -e '.[bench]'"
            return f"{error}; {hint}"
    if sampler == "optuna-gp":
        import optuna

        if not hasattr(optuna.samplers, "GPSampler"):
            return f"optuna {optuna.__version__} has no GPSampler"
    return None


def load_somatize() -> None:
    """Import somatize's Bayesian sampler now: src/ may be edited while a long run goes on, and
    every process should run the version that `environment()` described at the start."""
    import somatize.samplers.bayesian  # noqa: F401


def limit_threads() -> None:
    """One thread per process (two workers on two cores, and wall times that do not depend on --workers), and
    the same arithmetic on any x86-64 machine (arithmetic.py); set before this process or a worker loads numpy."""
    os.environ.update(fixed_environment())


# Part (a): sample efficiency ----------------------------------------------------------


def efficiency(args: argparse.Namespace) -> list[dict[str, Any]]:
    samplers, skipped = [], []
    for sampler in args.samplers:
        reason = missing(sampler)
        if reason:
            skipped.append(f"{sampler}: skipped ({reason})")
        else:
            samplers.append(sampler)
    # Seed by seed, so that the time left shown while running is a fair estimate.
    jobs = [
        (problem, sampler, seed, args.evals, args.somatize_options)
        for seed in range(max(args.seeds, *args.sampler_seeds.values(), 0))
        for problem in args.problems
        for sampler in samplers
        if seed < args.sampler_seeds.get(sampler, args.seeds)
    ]
    label = f"somatize-bayesian[{args.label}]" if args.label else "somatize-bayesian"
    results = []
    started = time.perf_counter()
    for done, result in enumerate(_run_all(jobs, args.workers), 1):
        if result["sampler"] == "somatize-bayesian":
            result["sampler"] = label
        result["options"] = args.somatize_options if result["sampler"] == label else {}
        results.append(result)
        regret = min(result["values"]) - PROBLEMS[result["problem"]].minimum
        elapsed = time.perf_counter() - started
        print(
            f"[{done}/{len(jobs)} {elapsed:5.0f} s, ~{elapsed / done * (len(jobs) - done):4.0f} s left] "
            f"{result['problem']} {result['sampler']} seed {result['seed']}: regret {regret:.3g}, "
            f"{result['seconds']:.1f} s",
            file=sys.stderr,
        )
    for path in args.include:
        results += json.loads(Path(path).read_text())["efficiency"]
    print(efficiency_tables(results, args.evals))
    for line in skipped:
        print(f"\n{line}")
    return results


def _run_all(jobs: list[tuple], workers: int):
    if workers <= 1:
        for job in jobs:
            yield run_job(*job)
        return
    # spawn, not fork: the parent has imported torch and optuna to check they are there.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=load_somatize) as pool:
        futures = [pool.submit(run_job, *job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def regret_after(result: dict[str, Any], evals: int) -> float:
    return min(result["values"][:evals]) - PROBLEMS[result["problem"]].minimum


def median_iqr(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3g}"
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{q2:.3g} [{q1:.3g}, {q3:.3g}]"


def efficiency_tables(results: list[dict[str, Any]], evals: int) -> str:
    checkpoints = sorted({min(EARLY, evals), evals})
    problems = [p for p in PROBLEMS if any(r["problem"] == p for r in results)]
    # In SAMPLERS order, a labelled somatize-bayesian next to the plain one.
    samplers = sorted(dict.fromkeys(r["sampler"] for r in results), key=lambda s: SAMPLERS.index(s.split("[")[0]))
    out = [
        (
            "Simple regret (best value found - known minimum): median [interquartile range] over seeds; "
            f"wall seconds per {evals}-evaluation run (median)."
        )
    ]
    median_final: dict[tuple[str, str], float] = {}
    for problem in problems:
        out += [
            f"\n### {problem} (minimum {PROBLEMS[problem].minimum:.6g}, {len(PROBLEMS[problem].space)} dimensions)\n",
            "| sampler | seeds | " + " | ".join(f"regret @{k}" for k in checkpoints) + " | s/run |",
            "|---|---:|" + "---|" * len(checkpoints) + "---:|",
        ]
        for sampler in samplers:
            runs = [r for r in results if r["problem"] == problem and r["sampler"] == sampler]
            if not runs:
                continue
            cells = [median_iqr([regret_after(r, k) for r in runs]) for k in checkpoints]
            median_final[problem, sampler] = statistics.median(regret_after(r, evals) for r in runs)
            seconds = statistics.median(r["seconds"] for r in runs)
            out.append(f"| {sampler} | {len(runs)} | " + " | ".join(cells) + f" | {seconds:.2f} |")
    # Ranks of the medians make problems with regrets of different scales comparable.
    out += [
        f"\n### Summary: median regret @{evals}, and rank among the samplers (1 = best)\n",
        "| sampler | " + " | ".join(problems) + " | mean rank |",
        "|---|" + "---:|" * (len(problems) + 1),
    ]
    rank = {}
    for problem in problems:
        ordered = sorted((s for s in samplers if (problem, s) in median_final), key=lambda s: median_final[problem, s])
        rank.update({(problem, sampler): n for n, sampler in enumerate(ordered, 1)})
    for sampler in samplers:
        cells = [
            f"{median_final[p, sampler]:.3g} ({rank[p, sampler]})" if (p, sampler) in rank else "-" for p in problems
        ]
        ranks = [rank[p, sampler] for p in problems if (p, sampler) in rank]
        mean_rank = f"{statistics.mean(ranks):.1f}" if ranks else "-"
        out.append(f"| {sampler} | " + " | ".join(cells) + f" | {mean_rank} |")
    return "\n".join(out)


# Parts (b)-(d): reused from the single-purpose benchmarks ---------------------------------


def overhead_part(quick: bool) -> dict[str, float]:
    import overhead

    trials, repeats = (2000, 3) if quick else (10_000, 5)
    variants = {"somatize, in memory": None, "somatize, with journal": "journal", "somatize, with event log": "events"}
    runs: dict[str, list[float]] = {name: [] for name in [*variants, "optuna, in memory (RandomSampler)"]}
    for repeat in range(repeats):  # interleaved, as overhead.py does, so drifting load hits every variant alike
        print(f"overhead: repeat {repeat + 1}/{repeats}", file=sys.stderr)
        for name, subscriber in variants.items():
            runs[name].append(overhead.somatize_us_per_trial(trials, subscriber))
        reference = overhead.optuna_us_per_trial(trials)
        if reference is not None:
            runs["optuna, in memory (RandomSampler)"].append(reference)
    medians = {name: statistics.median(values) for name, values in runs.items() if values}
    print(f"Per-trial framework cost: trivial objective, random sampler, {trials} trials, median of {repeats} runs.\n")
    print("| variant | µs/trial (median) | min |\n|---|---:|---:|")
    for name, values in runs.items():
        if values:
            print(f"| {name} | {medians[name]:.1f} | {min(values):.1f} |")
    if "optuna, in memory (RandomSampler)" not in medians:
        print("\noptuna: skipped (not installed) - no side-by-side figure")
    return medians


def cli_part(quick: bool) -> dict[str, float]:
    import cli_latency

    somatize = shutil.which("somatize")
    if somatize is None:
        print("CLI latency: skipped (somatize is not on PATH: pip install -e .)")
        return {}
    repeat, shell_trials = (5, 50) if quick else (15, 200)
    print("cli: timing start-up and the shell executor", file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        big = workdir / "big.json"
        cli_latency.write_big_results(big, 1000)
        ms = {
            "python -c pass (floor)": cli_latency.median_wall([sys.executable, "-c", "pass"], repeat),
            "somatize validate studies/branin.yaml": cli_latency.median_wall(
                [somatize, "validate", str(HERE.parent / "studies" / "branin.yaml")], repeat
            ),
            "somatize best (1,000 trials)": cli_latency.median_wall([somatize, "best", str(big)], repeat),
        }
        optuna_best = cli_latency.optuna_best_trial(workdir, 1000, repeat)
        if optuna_best is not None:
            ms["optuna best-trial (1,000 trials, SQLite)"] = optuna_best
        ours, bare = cli_latency.shell_overhead(workdir, shell_trials)
    ms = {name: seconds * 1000 for name, seconds in ms.items()}
    ms["shell executor, per trial"] = ours * 1000
    ms["bare `sh -c` spawn, per trial"] = bare * 1000
    print(f"Command-line latency (median of {repeat}) and shell-executor cost ({shell_trials} trials), ms.\n")
    print("| what | ms |\n|---|---:|")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} |" if value < 10 else f"| {name} | {value:.0f} |")
    if optuna_best is None:
        print("\noptuna best-trial: skipped (optuna not installed)")
    return ms


def latency_part(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    import latency

    # 20 cycles, so that the mean includes the suggestions that search the GP's
    # hyperparameters (every 10th at N = 100), not only the median.
    histories, repeats = [10, 50, 100, 200], 4 if quick else 20
    print("latency: timing suggestions on hartmann6", file=sys.stderr)
    result = latency.measure("hartmann6", histories, repeats, options)
    print(latency.markdown(result, "hartmann6", histories, repeats))
    return result


# Environment and command line ----------------------------------------------------------


def environment() -> str:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=HERE, capture_output=True, text=True, check=False).stdout.strip()

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    memory = next(
        (int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal")), float("nan"),
    ) if Path("/proc/meminfo").exists() else float("nan")  # fmt: skip
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", str(HERE.parent / "src")):
        diff = hashlib.sha1(git("diff", "HEAD", "--", str(HERE.parent / "src")).encode()).hexdigest()[:10]
        commit += f" with uncommitted changes under src/ (sha1 of `git diff HEAD -- src` {diff})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    packages = ", ".join(f"{p} {version(p)}" for p in VERSIONS)
    return "\n".join(
        [
            f"- command: `python benchmarks/compare.py {' '.join(sys.argv[1:])}`",
            f"- somatize at git commit {commit}",
            f"- machine: {os.cpu_count()} cores, {cpu}, {memory:.0f} GiB RAM, load average {load:.1f} at start",
            f"- Python {platform.python_version()}; {packages}",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="run every part (the default)")
    parser.add_argument("--part", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--seeds", type=int, help="seeds per problem and sampler (default 10; 3 with --quick)")
    parser.add_argument("--evals", type=int, default=50, help="evaluations per run")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated")
    parser.add_argument("--sampler-seeds", default="", help="fewer seeds for slow peers, e.g. optuna-gp=5,skopt-gp=5")
    parser.add_argument("--quick", action="store_true", help="3 seeds and shorter timings, for development")
    parser.add_argument("--workers", type=int, default=2, help="processes for the efficiency runs (at most 2 here)")
    parser.add_argument("--somatize-options", default="{}", help="JSON merged into the bayesian strategy mapping")
    parser.add_argument("--label", default="", help="names the somatize-bayesian row, e.g. the options tried")
    parser.add_argument("--json", help="write raw per-seed results here")
    parser.add_argument("--include", action="append", default=[], help="add the runs of an earlier --json file")
    args = parser.parse_args(argv)
    args.parts = list(PARTS) if args.all else [p.strip() for p in args.part.split(",") if p.strip()]
    args.problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    args.sampler_seeds = {k: int(v) for k, v in (item.split("=") for item in args.sampler_seeds.split(",") if item)}
    args.somatize_options = json.loads(args.somatize_options)
    args.seeds = args.seeds if args.seeds is not None else 3 if args.quick else 10
    for kind, given, known in (("part", args.parts, PARTS), ("problem", args.problems, PROBLEMS),
                               ("sampler", [*args.samplers, *args.sampler_seeds], SAMPLERS)):  # fmt: skip
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {kind} {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def main() -> None:
    args = parse_args()
    limit_threads()
    load_somatize()
    started = time.perf_counter()
    print("## Environment\n")
    print(environment())
    raw: dict[str, Any] = {"argv": sys.argv[1:], "somatize_options": args.somatize_options}
    titles = {
        "efficiency": "Sample efficiency",
        "overhead": "Per-trial framework cost",
        "cli": "Command-line latency",
        "latency": "Bayesian suggestion latency",
    }
    for part in args.parts:
        print(f"\n## {titles[part]}\n", flush=True)
        part_started = time.perf_counter()
        if part == "efficiency":
            raw["efficiency"] = efficiency(args)
        elif part == "overhead":
            raw["overhead"] = overhead_part(args.quick)
        elif part == "cli":
            raw["cli"] = cli_part(args.quick)
        else:
            raw["latency"] = latency_part(args.quick, args.somatize_options)
        print(f"{part}: {time.perf_counter() - part_started:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    print(f"\n_Total wall time: {total / 60:.1f} min._")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
