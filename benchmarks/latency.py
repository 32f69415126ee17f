"""Bayesian suggestion latency against the length of the history.

    python benchmarks/latency.py [--problem hartmann6] [--histories 10,50,100,200] [--repeats 10]

For each history length N the sampler first learns N-1 finished trials at
random points, then runs `repeats` cycles of "a result arrives, the next
parameters are asked for", timing each cycle; the median and the mean are
shown (the mean counts the occasional costlier suggestion, such as somatize's
search of the GP's hyperparameters each time the history grew by 10%). That
cycle is what a user waits for between two trials. Both somatize and Optuna
fit their model when asked; the split tell + ask is shown where the tell is
not negligible. The history grows by one per cycle, so "N" means N to
N+repeats-1 trials.

Samplers: somatize `bayesian` (default options, or the ones given), Optuna's
GPSampler (needs torch and scipy) and TPESampler with its defaults
(multivariate since Optuna 5); missing ones are skipped.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from functions import PROBLEMS, Problem

SAMPLERS = ("somatize-bayesian", "optuna-gp", "optuna-tpe")

# (seconds to tell one result, seconds to ask for the next parameters), for one cycle.
Cycle = tuple[float, float]


def random_points(problem: Problem, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """The same random history for every sampler."""
    from somatize import SearchSpace

    space = SearchSpace.from_spec(problem.space)
    rng = random.Random(seed)
    return [space.from_unit([rng.random() for _ in range(len(space))]) for _ in range(count)]


def somatize_cycles(problem: Problem, histories: list[int], repeats: int, options: dict) -> dict[int, list[Cycle]]:
    from somatize import MetricRecord, Objective, SearchSpace, Trial, TrialState, make_sampler

    space = SearchSpace.from_spec(problem.space)
    sampler = make_sampler({"type": "bayesian", "n_trials": None, **options}, space, Objective("value"), 0)
    # Proposals told during the cycles count as history too, so some random points go unused.
    history = random_points(problem, max(histories) + repeats * len(histories))
    told = 0

    def tell(params: dict[str, Any]) -> None:
        nonlocal told
        value = problem.objective(params)
        sampler.tell(Trial(told, params, TrialState.COMPLETED, [MetricRecord("value", value)], {"value": value}))
        told += 1

    cycles: dict[int, list[Cycle]] = {}
    for n in histories:
        while told < n - 1:
            tell(history[told])
        arrived = history[told]  # the N-th result
        cycles[n] = []
        for _ in range(repeats):
            started = time.perf_counter()
            tell(arrived)
            told_at = time.perf_counter()
            arrived = sampler.propose(told)
            cycles[n].append((told_at - started, time.perf_counter() - told_at))
        tell(arrived)  # a proposal left pending would send later asks down the parallel (Kriging believer) path
    return cycles


def optuna_cycles(
    problem: Problem, histories: list[int], repeats: int, make: Callable[[], Any]
) -> dict[int, list[Cycle]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {}
    for name, dim in problem.space.items():
        if dim["type"] == "categorical":
            distributions[name] = optuna.distributions.CategoricalDistribution(dim["choices"])
        elif dim["type"] == "int":
            distributions[name] = optuna.distributions.IntDistribution(dim["low"], dim["high"], log=_log(dim))
        else:
            distributions[name] = optuna.distributions.FloatDistribution(dim["low"], dim["high"], log=_log(dim))
    study = optuna.create_study(sampler=make())
    history = random_points(problem, max(histories))

    def finished(params: dict[str, Any]) -> Any:
        return optuna.trial.create_trial(params=params, distributions=distributions, value=problem.objective(params))

    cycles: dict[int, list[Cycle]] = {}
    for n in histories:
        study.add_trials([finished(p) for p in history[len(study.trials) : n - 1]])
        cycles[n] = []
        arrived = None
        for _ in range(repeats):
            started = time.perf_counter()
            if arrived is None:
                study.add_trial(finished(history[n - 1]))
            else:
                study.tell(arrived, problem.objective(arrived.params))
            told_at = time.perf_counter()
            arrived = study.ask(distributions)  # samples every parameter, as suggest_* would
            cycles[n].append((told_at - started, time.perf_counter() - told_at))
        study.tell(arrived, problem.objective(arrived.params))
    return cycles


def _log(dim: dict[str, Any]) -> bool:
    return dim.get("scale") == "log"


def missing(sampler: str) -> str | None:
    """Why a sampler cannot run here, or None."""
    try:
        if sampler.startswith("optuna"):
            import optuna  # noqa: F401
        if sampler == "optuna-gp":
            import scipy  # noqa: F401
            import torch  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


def measure(problem_name: str, histories: list[int], repeats: int, options: dict, samplers=SAMPLERS) -> dict:
    """{sampler: {N: [(tell s, ask s), ...]}}, plus {sampler: reason} for the skipped ones."""
    problem = PROBLEMS[problem_name]
    measured, skipped = {}, {}
    for sampler in samplers:
        reason = missing(sampler)
        if reason:
            skipped[sampler] = reason
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
            if sampler == "somatize-bayesian":
                measured[sampler] = somatize_cycles(problem, histories, repeats, options)
            else:
                import optuna

                make = {
                    "optuna-gp": lambda: optuna.samplers.GPSampler(seed=0),
                    "optuna-tpe": lambda: optuna.samplers.TPESampler(seed=0),
                }[sampler]
                measured[sampler] = optuna_cycles(problem, histories, repeats, make)
    return {"measured": measured, "skipped": skipped}


def markdown(result: dict, problem_name: str, histories: list[int], repeats: int) -> str:
    lines = [
        (
            f"Suggestion latency on {problem_name}: tell one result + ask for the next parameters, "
            f"median (mean) of {repeats} cycles, ms."
        ),
        "",
        "| sampler | " + " | ".join(f"N = {n}" for n in histories) + " |",
        "|---|" + "---:|" * len(histories),
    ]
    for sampler, by_history in result["measured"].items():
        cells = []
        for n in histories:
            tell = statistics.median(c[0] for c in by_history[n]) * 1000
            ask = statistics.median(c[1] for c in by_history[n]) * 1000
            total = statistics.median(sum(c) for c in by_history[n]) * 1000
            mean = statistics.mean(sum(c) for c in by_history[n]) * 1000
            # Show where the time goes only where the model is fitted in tell.
            split = f", tell {tell:.0f} + ask {ask:.0f}" if tell >= 1 else ""
            cells.append(f"{total:.0f} ({mean:.0f}{split})")
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    lines += [f"\n{sampler}: skipped ({reason})" for sampler, reason in result["skipped"].items()]
    return "\n".join(lines)


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="hartmann6", choices=sorted(PROBLEMS))
    parser.add_argument("--histories", default="10,50,100,200", help="history lengths N, comma-separated")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--somatize-options", default="{}", help="JSON merged into the bayesian strategy")
    args = parser.parse_args()
    histories = [int(n) for n in args.histories.split(",")]
    result = measure(args.problem, histories, args.repeats, json.loads(args.somatize_options))
    print(markdown(result, args.problem, histories, args.repeats))


if __name__ == "__main__":
    main()
