"""Constraints on metrics (issue 17, SPEC §9): best feasible value against Optuna with `constraints_func`.

    python benchmarks/constrained.py [--seeds 10] [--first-seed 0] [--evals 60] [--problems gardner,branin-disk,...]
        [--samplers somatize-bayesian,optuna-tpe,optuna-gp,somatize-random] [--json raw.json] > tables.md

Each problem is an objective to minimise and one metric `c` that a constraint
bounds (`c <= 0`), which is known only once the trial has run. somatize runs
the study through its own runner (the metric judged after each trial, the
Bayesian strategy modelling feasibility); Optuna's TPE (multivariate, its
default) and GP samplers get the same metric through `constraints_func`.
Reported: the median (and interquartile range) over seeds of the best
*feasible* value after `--evals` trials and after half of them (a run with
no feasible trial counts as +inf), the number of runs without one, the share
of feasible trials, and seconds per run; and, for somatize, whether any
study ever named an infeasible trial as best (it must not).

Problems:
- gardner: Gardner et al. (2014), "Bayesian optimization with inequality
  constraints", simulation 1: cos(2x)cos(y) + sin(x) subject to
  cos(x)cos(y) - sin(x)sin(y) <= 0.5 on [0, 6]²;
- branin-disk: Branin subject to (x - 2.5)² + (y - 7.5)² <= 50 (Gramacy and
  Lee's disk), which leaves one of Branin's three minima feasible;
- townsend: Townsend's function inside its cardioid-like region;
- hartmann6-l1: Hartmann6 subject to x0 + ... + x5 <= 1.5, which cuts off
  the unconstrained optimum (sum 2.07).

One process at a time, one thread each, with the same arithmetic on any x86-64 machine (arithmetic.py);
progress on stderr, Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arithmetic import fixed_arithmetic
from functions import branin, hartmann6


@dataclass(frozen=True)
class ConstrainedProblem:
    name: str
    space: dict[str, Any]  # as in a study file's search_space
    objective: Callable[[dict[str, Any]], float]
    constraint: Callable[[dict[str, Any]], float]  # the metric c; feasible when c <= 0
    minimum: float  # the best feasible value: SLSQP from the best of 3000 (2-D) or 400 (6-D) random starts


def _box(names: list[str], low: float, high: float) -> dict[str, Any]:
    return {name: {"type": "float", "low": low, "high": high} for name in names}


def gardner(p: dict[str, Any]) -> float:
    return math.cos(2 * p["x"]) * math.cos(p["y"]) + math.sin(p["x"])


def gardner_c(p: dict[str, Any]) -> float:
    return math.cos(p["x"]) * math.cos(p["y"]) - math.sin(p["x"]) * math.sin(p["y"]) - 0.5


def disk_c(p: dict[str, Any]) -> float:
    return (p["x"] - 2.5) ** 2 + (p["y"] - 7.5) ** 2 - 50.0


def townsend(p: dict[str, Any]) -> float:
    x, y = p["x"], p["y"]
    return -(math.cos((x - 0.1) * y) ** 2) - x * math.sin(3 * x + y)


def townsend_c(p: dict[str, Any]) -> float:
    x, y = p["x"], p["y"]
    t = math.atan2(x, y)
    r = 2 * math.cos(t) - 0.5 * math.cos(2 * t) - 0.25 * math.cos(3 * t) - 0.125 * math.cos(4 * t)
    return x * x + y * y - (r * r + (2 * math.sin(t)) ** 2)


def l1_c(p: dict[str, Any]) -> float:
    return sum(p[f"x{i}"] for i in range(6)) - 1.5


PROBLEMS = {
    "gardner": ConstrainedProblem("gardner", _box(["x", "y"], 0.0, 6.0), gardner, gardner_c, -2.0),
    "branin-disk": ConstrainedProblem(
        "branin-disk",
        {"x": {"type": "float", "low": -5.0, "high": 10.0}, "y": {"type": "float", "low": 0.0, "high": 15.0}},
        branin, disk_c, 0.397887357729738,
    ),
    "townsend": ConstrainedProblem(
        "townsend",
        {"x": {"type": "float", "low": -2.25, "high": 2.5}, "y": {"type": "float", "low": -2.5, "high": 1.75}},
        townsend, townsend_c, -2.0239883623270116,
    ),
    "hartmann6-l1": ConstrainedProblem(
        "hartmann6-l1", _box([f"x{i}" for i in range(6)], 0.0, 1.0), hartmann6, l1_c, -2.5951082937160486
    ),
}  # fmt: skip
SAMPLERS = ("somatize-bayesian", "optuna-tpe", "optuna-gp", "somatize-random")


# One run: (value, constraint metric) per trial in evaluation order ---------------------------


class InProcess:
    """A somatize executor that calls the problem here and reports the objective and the metric `c`."""

    def __init__(self, problem: ConstrainedProblem):
        self.problem = problem

    def run(self, request, reporter):
        from somatize.executors.base import Completed
        from somatize.study import MetricRecord

        params = dict(request.params)
        return Completed(
            [MetricRecord("value", self.problem.objective(params)), MetricRecord("c", self.problem.constraint(params))]
        )

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_somatize(
    problem: ConstrainedProblem, seed: int, evals: int, kind: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    from somatize import Objective, SearchSpace, Study, StudyRunner, make_sampler
    from somatize.constraints import parse_constraint

    space = SearchSpace.from_spec(problem.space)
    constraint = parse_constraint("c <= 0", space.names, ["c"])
    strategy = {"type": kind, "n_trials": evals, **(options if kind == "bayesian" and options else {})}
    study = Study(
        problem.name, space, [Objective("value")], strategy, metrics=("c",), outcome_constraints=(constraint,)
    )
    sampler = make_sampler(strategy, space, Objective("value"), seed, [constraint])
    StudyRunner(study, sampler, InProcess(problem), seed=seed).run()
    trials = sorted(study.trials, key=lambda t: t.number)
    best = study.best_trial()
    return {
        "values": [t.values["value"] for t in trials],
        "feasible": [bool(t.feasible) for t in trials],
        "best_is_feasible": best is None or bool(best.feasible),
    }


def run_optuna(problem: ConstrainedProblem, seed: int, evals: int, kind: str) -> dict[str, Any]:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna 5 deprecates constraints_func for Trial.set_constraint; both reach the same samplers' code.
    warnings.filterwarnings("ignore", message=".*constraints_func.*", category=FutureWarning)

    def constraints(trial) -> list[float]:
        return [trial.user_attrs["c"]]

    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constraints_func=constraints),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, constraints_func=constraints),
    }[kind]()

    def objective(trial) -> float:
        params = {name: trial.suggest_float(name, d["low"], d["high"]) for name, d in problem.space.items()}
        trial.set_user_attr("c", problem.constraint(params))
        return problem.objective(params)

    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=evals)
    return {
        "values": [t.value for t in study.trials],
        "feasible": [t.user_attrs["c"] <= 0 for t in study.trials],
        "best_is_feasible": True,
    }


def run_one(
    problem: str, sampler: str, seed: int, evals: int, options: dict[str, Any] | None = None, label: str = ""
) -> dict[str, Any]:
    started = time.process_time()
    clock = time.perf_counter()
    library, kind = sampler.split("-", 1)
    if library == "somatize":
        found = run_somatize(PROBLEMS[problem], seed, evals, kind, options)
    else:
        found = run_optuna(PROBLEMS[problem], seed, evals, kind)
    return {
        "problem": problem, "sampler": sampler + (f" ({label})" if label else ""), "seed": seed, **found,
        "seconds": time.perf_counter() - clock, "cpu_seconds": time.process_time() - started,
    }  # fmt: skip


# Tables -------------------------------------------------------------------------------------


def best_feasible(result: dict[str, Any], evals: int) -> float:
    found = [v for v, ok in zip(result["values"][:evals], result["feasible"][:evals]) if ok and math.isfinite(v)]
    return min(found) if found else math.inf


def median_iqr(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3g}" if values else ""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    median = statistics.median(values)
    return f"{median:.3g} ({q1:.3g} – {q3:.3g})"


def tables(results: list[dict[str, Any]], evals: int) -> str:
    problems = list(dict.fromkeys(r["problem"] for r in results))
    samplers = list(dict.fromkeys(r["sampler"] for r in results))
    seeds = len({r["seed"] for r in results})
    early = evals // 2
    lines = [
        (
            "Regret of the best feasible value (best feasible value - the constrained minimum), median and "
            f"interquartile range over {seeds} seeds; lower is better.\n"
        ),
        (
            f"| problem (minimum) | sampler | regret after {early} | regret after {evals} "
            "| runs without a feasible trial | feasible trials | s per run |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for problem in problems:
        for sampler in samplers:
            runs = [r for r in results if r["problem"] == problem and r["sampler"] == sampler]
            if not runs:
                continue
            share = statistics.mean(statistics.mean(r["feasible"]) for r in runs)
            none = sum(best_feasible(r, evals) == math.inf for r in runs)
            seconds = statistics.median(r["seconds"] for r in runs)
            minimum = PROBLEMS[problem].minimum
            regrets = [[best_feasible(r, n) - minimum for r in runs] for n in (early, evals)]
            lines.append(
                f"| {problem} ({minimum:.6g}) | {sampler} | {median_iqr(regrets[0])} | {median_iqr(regrets[1])} "
                f"| {none} of {len(runs)} | {share:.0%} | {seconds:.1f} |"
            )
    bad = [r for r in results if not r["best_is_feasible"]]
    lines.append("")
    lines.append(f"Runs in which somatize named an infeasible trial as best: {len(bad)}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="Seeds first-seed .. first-seed + seeds - 1.")
    parser.add_argument("--evals", type=int, default=60)
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--somatize-options", default="{}", help="Bayesian options for somatize, as JSON.")
    parser.add_argument("--label", default="", help="A name for this variant of somatize's options, in the tables.")
    parser.add_argument("--json", help="Also write the raw results here (and read them back with --include).")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        help="Raw results of an earlier run to add; runs already in them are not repeated (a stopped run continues).",
    )
    args = parser.parse_args()
    fixed_arithmetic()
    import somatize.samplers.bayesian  # noqa: F401 - the version described below, even if src/ changes meanwhile

    results: list[dict[str, Any]] = []
    for path in args.include:
        results += json.loads(Path(path).read_text())["results"]
    done = {(r["problem"], r["sampler"], r["seed"]) for r in results}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for problem in args.problems.split(","):
            for sampler in args.samplers.split(","):
                name = sampler + (f" ({args.label})" if args.label and sampler.startswith("somatize") else "")
                if (problem, name, seed) in done:
                    continue
                options = json.loads(args.somatize_options)
                label = args.label if sampler.startswith("somatize") else ""
                result = run_one(problem, sampler, seed, args.evals, options, label)
                results.append(result)
                print(
                    f"{problem} {sampler} seed {seed}: {best_feasible(result, args.evals):.4g} "
                    f"in {result['seconds']:.1f}s",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
                if args.json:
                    Path(args.json).write_text(json.dumps({"results": results}))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    sys.stdout.write(tables(results, args.evals))


if __name__ == "__main__":
    main()
