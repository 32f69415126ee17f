"""Multi-objective search: hypervolume after 60 trials against Optuna's samplers (issue 17).

    pip install -e '.[bench]'   # and torch (a CPU build) for Optuna's GPSampler
    nice -n 19 python benchmarks/multiobjective.py --seeds 10 [--cache mo.json] > tables.md
    nice -n 19 python benchmarks/multiobjective.py --part latency

Part `hypervolume`: each sampler runs each problem for `--trials` (60)
evaluations per seed 0..N-1; the score is the hypervolume of the front of all
60 evaluations against the problem's fixed reference point (computed with
somatize.hypervolume, i.e. moocore), and the size of that front. The tables
give the median and interquartile range over seeds, the median front size,
and how often somatize's Bayesian front beat each peer's in seed pairs.
Samplers: somatize `bayesian` (default options) and `random` through the
package API and its study loop; Optuna NSGA-II, TPE (multivariate, the
default since Optuna 5) and GPSampler (log-EHVI; needs torch) with their
defaults. A missing library is skipped. Runs are cached in `--cache` (JSON),
so an interrupted benchmark resumes, and a sampler can be rerun alone
(`--samplers somatize-bayesian --fresh somatize-bayesian`); `--start` and
`--include` split the seeds across runs (`--samplers ''` prints the tables of
what is cached).

Part `latency`: the time of one suggestion with 2 objectives (ZDT1) after a
history of N random trials, median and worst of `--repeats`.

Both parts run on one thread, with the same arithmetic on any x86-64 machine (arithmetic.py).

Problems (objectives minimised; reference points are BoTorch's for the
ZDT and DTLZ families, fixed before any run):
- zdt1, zdt2, zdt3: 8 variables in [0, 1]; convex, concave and disconnected fronts; reference (11, 11).
- dtlz2: 6 variables, 2 objectives; concave quarter circle; reference (1.1, 1.1).
- dtlz2-3: 6 variables, 3 objectives; reference (1.1, 1.1, 1.1).
- tree: a real trade-off on scikit-learn's bundled digits data: 3-fold CV
  error of a decision tree against its number of leaves (log10), over
  max_depth, min_samples_leaf (log), max_features, ccp_alpha (log) and the
  split criterion; reference (1.0, 4.0), no downloads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arithmetic import fixed_arithmetic

HERE = Path(__file__).resolve().parent
SAMPLERS = ("somatize-bayesian", "somatize-random", "optuna-nsga2", "optuna-tpe", "optuna-gp")


@dataclass(frozen=True)
class Problem:
    name: str
    space: dict[str, Any]
    objectives: tuple[str, ...]
    reference: tuple[float, ...]
    evaluate: Callable[[dict[str, Any]], tuple[float, ...]]
    note: str


def _unit_space(n: int) -> dict[str, Any]:
    return {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(n)}


def _xs(params: dict[str, Any]) -> list[float]:
    return [params[f"x{i}"] for i in range(len(params))]


def zdt(kind: int) -> Callable[[dict[str, Any]], tuple[float, ...]]:
    def evaluate(params: dict[str, Any]) -> tuple[float, ...]:
        x = _xs(params)
        f1 = x[0]
        g = 1.0 + 9.0 * sum(x[1:]) / (len(x) - 1)
        if kind == 1:
            h = 1.0 - math.sqrt(f1 / g)
        elif kind == 2:
            h = 1.0 - (f1 / g) ** 2
        else:
            h = 1.0 - math.sqrt(f1 / g) - (f1 / g) * math.sin(10 * math.pi * f1)
        return f1, g * h

    return evaluate


def dtlz2(m: int) -> Callable[[dict[str, Any]], tuple[float, ...]]:
    def evaluate(params: dict[str, Any]) -> tuple[float, ...]:
        x = _xs(params)
        g = sum((v - 0.5) ** 2 for v in x[m - 1 :])
        out = []
        for i in range(m):
            f = 1.0 + g
            for v in x[: m - 1 - i]:
                f *= math.cos(v * math.pi / 2)
            if i > 0:
                f *= math.sin(x[m - 1 - i] * math.pi / 2)
            out.append(f)
        return tuple(out)

    return evaluate


_DIGITS: Any = None


def tree(params: dict[str, Any]) -> tuple[float, ...]:
    global _DIGITS
    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    if _DIGITS is None:
        _DIGITS = load_digits(return_X_y=True)
    X, y = _DIGITS
    model = DecisionTreeClassifier(
        max_depth=params["max_depth"], min_samples_leaf=params["min_samples_leaf"],
        max_features=params["max_features"], ccp_alpha=params["ccp_alpha"], criterion=params["criterion"],
        random_state=0,
    )  # fmt: skip
    error = 1.0 - float(cross_val_score(model, X, y, cv=3).mean())
    leaves = model.fit(X, y).get_n_leaves()
    return error, math.log10(leaves)


PROBLEMS = {
    p.name: p
    for p in [
        Problem("zdt1", _unit_space(8), ("f1", "f2"), (11.0, 11.0), zdt(1), "convex front"),
        Problem("zdt2", _unit_space(8), ("f1", "f2"), (11.0, 11.0), zdt(2), "concave front"),
        Problem("zdt3", _unit_space(8), ("f1", "f2"), (11.0, 11.0), zdt(3), "disconnected front"),
        Problem("dtlz2", _unit_space(6), ("f1", "f2"), (1.1, 1.1), dtlz2(2), "concave, 2 objectives"),
        Problem("dtlz2-3", _unit_space(6), ("f1", "f2", "f3"), (1.1, 1.1, 1.1), dtlz2(3), "concave, 3 objectives"),
        Problem(
            "tree",
            {
                "max_depth": {"type": "int", "low": 1, "high": 20},
                "min_samples_leaf": {"type": "int", "low": 1, "high": 64, "scale": "log"},
                "max_features": {"type": "float", "low": 0.1, "high": 1.0},
                "ccp_alpha": {"type": "float", "low": 1e-5, "high": 0.05, "scale": "log"},
                "criterion": {"type": "categorical", "choices": ["gini", "entropy"]},
            },
            ("error", "log10_leaves"), (1.0, 4.0), tree, "digits: CV error against tree size",
        ),
    ]
}


# One run: the objective vectors in evaluation order ------------------------------------


class InProcess:
    """A somatize executor calling the problem in this process."""

    def __init__(self, problem: Problem):
        self.problem = problem

    def run(self, request, reporter):
        from somatize.executors.base import Completed
        from somatize.study import MetricRecord

        values = self.problem.evaluate(dict(request.params))
        return Completed([MetricRecord(name, v) for name, v in zip(self.problem.objectives, values)])

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_somatize(problem: Problem, seed: int, trials: int, kind: str) -> list[list[float]]:
    from somatize import Objective, SearchSpace, Study, StudyRunner, make_sampler

    space = SearchSpace.from_spec(problem.space)
    strategy = {"type": kind, "n_trials": trials}
    objectives = [Objective(name) for name in problem.objectives]
    study = Study(problem.name, space, objectives, strategy)
    StudyRunner(study, make_sampler(strategy, space, objectives, seed), InProcess(problem), seed=seed).run()
    done = sorted(study.completed(), key=lambda t: t.number)
    return [[t.values[name] for name in problem.objectives] for t in done]


def run_optuna(problem: Problem, seed: int, trials: int, kind: str) -> list[list[float]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }[kind]()

    def objective(trial) -> tuple[float, ...]:
        params = {}
        for name, dim in problem.space.items():
            if dim["type"] == "categorical":
                params[name] = trial.suggest_categorical(name, dim["choices"])
            elif dim["type"] == "int":
                params[name] = trial.suggest_int(name, dim["low"], dim["high"], log=dim.get("scale") == "log")
            else:
                params[name] = trial.suggest_float(name, dim["low"], dim["high"], log=dim.get("scale") == "log")
        return problem.evaluate(params)

    study = optuna.create_study(sampler=sampler, directions=["minimize"] * len(problem.objectives))
    study.optimize(objective, n_trials=trials)
    return [list(t.values) for t in study.trials if t.values is not None]


def available(sampler: str) -> bool:
    try:
        if sampler.startswith("optuna"):
            import optuna  # noqa: F401
        if sampler == "optuna-gp":
            import torch  # noqa: F401
    except ImportError:
        return False
    return True


def one_run(problem: Problem, sampler: str, seed: int, trials: int) -> dict[str, Any]:
    from somatize.hypervolume import hypervolume

    started = time.perf_counter()
    library, kind = sampler.split("-", 1)
    vectors = (run_somatize if library == "somatize" else run_optuna)(problem, seed, trials, kind)
    seconds = time.perf_counter() - started
    front = _front(vectors)
    inside = [v for v in front if all(a < r for a, r in zip(v, problem.reference))]
    return {"hv": hypervolume(vectors, problem.reference), "front": len(front), "front_inside": len(inside),
            "seconds": seconds, "n": len(vectors)}


def _front(vectors: list[list[float]]) -> list[list[float]]:
    unique = [list(v) for v in {tuple(v) for v in vectors}]
    return [v for v in unique if not any(all(a <= b for a, b in zip(w, v)) and w != v for w in unique)]


# Tables -------------------------------------------------------------------------


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def tables(cache: dict[str, Any], problems: list[str], samplers: list[str], seeds: int) -> str:
    out = []
    summary = ["| problem | " + " | ".join(samplers) + " |", "|---|" + "---|" * len(samplers)]
    for name in problems:
        problem = PROBLEMS[name]
        out += [f"### {name} ({problem.note}; {len(problem.space)} variables, reference {problem.reference})", "",
                ("| sampler | n | median HV | IQR | median front size (inside the reference) | s/run | "
                 "bayesian wins (seed pairs) |"), "|---|---|---|---|---|---|---|"]
        ours = [cache[_key(name, "somatize-bayesian", s)]["hv"] for s in range(seeds)
                if _key(name, "somatize-bayesian", s) in cache]
        row = []
        for sampler in samplers:
            runs = [cache[_key(name, sampler, s)] for s in range(seeds) if _key(name, sampler, s) in cache]
            if not runs:
                row.append("–")
                continue
            hvs = [r["hv"] for r in runs]
            low, mid, high = _quartiles(hvs)
            fronts = statistics.median(r["front"] for r in runs)
            inside = statistics.median(r["front_inside"] for r in runs)
            secs = statistics.median(r["seconds"] for r in runs)
            wins = ""
            if sampler != "somatize-bayesian" and ours:
                beat = sum((a > b) + 0.5 * (a == b) for a in ours for b in hvs) / (len(ours) * len(hvs))
                wins = f"{100 * beat:.0f}%"
            out.append(f"| {sampler} | {len(runs)} | {mid:.4f} | {low:.4f} – {high:.4f} | {fronts:g} ({inside:g}) | {secs:.1f} "
                       f"| {wins} |")
            row.append(f"{mid:.4f}")
        out.append("")
        summary.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(out + ["### Summary: median hypervolume after the trials", ""] + summary) + "\n"


def _key(problem: str, sampler: str, seed: int) -> str:
    return f"{problem}/{sampler}/{seed}"


def hypervolume_part(args: argparse.Namespace) -> None:
    cache_path = Path(args.cache)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for other in filter(None, args.include.split(",")):  # runs made elsewhere (another --cache, --start)
        cache = {**json.loads(Path(other).read_text()), **cache}
    problems = args.problems.split(",")
    samplers = [s for s in filter(None, args.samplers.split(",")) if available(s) or print(f"skipped {s}", file=sys.stderr)]
    # Seed by seed over every problem and sampler, so that a benchmark stopped early has as many seeds of each.
    for seed in range(args.start, args.start + args.seeds):
        for name in problems:
            for sampler in samplers:
                key = _key(name, sampler, seed)
                if key in cache and not (args.fresh and sampler in args.fresh.split(",")):
                    continue
                cache[key] = one_run(PROBLEMS[name], sampler, seed, args.trials)
                print(f"{key}: hv {cache[key]['hv']:.4f} front {cache[key]['front']} "
                      f"{cache[key]['seconds']:.1f}s (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
                cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    shown = [s for s in SAMPLERS if any(k.split("/")[1] == s for k in cache)]
    print(tables(cache, problems, shown, args.start + args.seeds))


def latency_part(args: argparse.Namespace) -> None:
    import random

    from somatize import MetricRecord, Objective, SearchSpace, Trial, TrialState, make_sampler

    problem = PROBLEMS["zdt1"]
    space = SearchSpace.from_spec(problem.space)
    objectives = [Objective(name) for name in problem.objectives]
    rng = random.Random(0)
    # CPU seconds beside wall seconds: on a shared machine the wall time counts the other processes too.
    print("| history N | median s | worst s | median CPU s | worst CPU s |\n|---|---|---|---|---|")
    for n in [int(h) for h in args.histories.split(",")]:
        sampler = make_sampler({"type": "bayesian", "n_trials": None}, space, objectives, 0)
        told = 0

        def tell(params: dict[str, Any], sampler: Any = sampler) -> None:
            nonlocal told
            values = problem.evaluate(params)
            records = [MetricRecord(name, v) for name, v in zip(problem.objectives, values)]
            sampler.tell(Trial(told, params, TrialState.COMPLETED, records, dict(zip(problem.objectives, values))))
            told += 1

        while told < n:
            tell(space.from_unit([rng.random() for _ in range(len(space))]))
        times, cpu = [], []
        for _ in range(args.repeats):
            started, started_cpu = time.perf_counter(), time.process_time()
            params = sampler.propose(told)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            tell(params)
        print(f"| {n} to {n + args.repeats - 1} | {statistics.median(times):.3f} | {max(times):.3f} "
              f"| {statistics.median(cpu):.3f} | {max(cpu):.3f} |")


def main() -> None:
    sys.path.insert(0, str(HERE.parent / "src"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("hypervolume", "latency"), default="hypervolume")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--start", type=int, default=0, help="first seed (to split a benchmark across runs)")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--cache", default=str(HERE / "multiobjective.json"))
    parser.add_argument("--include", default="", help="other caches to merge into the tables (comma-separated)")
    parser.add_argument("--fresh", default="", help="samplers to rerun even when cached (comma-separated)")
    parser.add_argument("--histories", default="20,50,100,200")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    fixed_arithmetic()
    print(f"<!-- {platform.platform()}, Python {platform.python_version()}, load {os.getloadavg()} -->",
          file=sys.stderr)
    (hypervolume_part if args.part == "hypervolume" else latency_part)(args)


if __name__ == "__main__":
    main()
