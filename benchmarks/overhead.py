"""Per-trial framework cost: a trivial Python objective, random sampler, 4 mixed dimensions.

    python benchmarks/overhead.py [--trials 10000]

Runs the same study through somatize's package API (in memory, with the
journal that `somatize run` keeps, and with an `--events` log) and, when optuna is
installed, through Optuna's in-memory RandomSampler in the same process, and
prints µs per trial (median of a few interleaved runs) and the ratio.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def objective(params: dict) -> float:
    return params["lr"] * params["layers"] + (params["act"] == "relu")


def somatize_us_per_trial(trials: int, subscriber: str | None) -> float:
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
    from somatize.executors.python import FunctionExecutor
    from somatize.storage.eventlog import EventLog
    from somatize.storage.journal import Journal

    space = SearchSpace(
        (
            FloatDimension("lr", 1e-5, 1e-1, scale="log"),
            FloatDimension("dropout", 0.0, 0.5),
            IntDimension("layers", 1, 8),
            CategoricalDimension("act", ("relu", "tanh", "gelu")),
        )
    )
    strategy = {"type": "random", "n_trials": trials}
    study = Study("overhead", space, [Objective("value")], strategy)
    bus = EventBus()
    scratch = tempfile.TemporaryDirectory()
    if subscriber == "events":
        bus.subscribe(EventLog(io.StringIO()))
    elif subscriber == "journal":
        journal = Journal(Path(scratch.name) / "overhead.journal.jsonl")
        journal.begin(study)
        bus.subscribe(journal)
    runner = StudyRunner(
        study,
        make_sampler(strategy, space, study.primary, 0),
        FunctionExecutor("overhead:objective", ["value"], HERE),
        bus,
        StopConditions(max_consecutive_failures=None),
        0,
    )
    started = time.perf_counter()
    runner.run()
    elapsed = time.perf_counter() - started
    assert len(study.completed()) == trials, "every trial should complete"
    scratch.cleanup()
    return elapsed / trials * 1e6


def optuna_us_per_trial(trials: int) -> float | None:
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def optuna_objective(trial) -> float:
        params = {
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "layers": trial.suggest_int("layers", 1, 8),
            "act": trial.suggest_categorical("act", ["relu", "tanh", "gelu"]),
        }
        return objective(params)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    started = time.perf_counter()
    study.optimize(optuna_objective, n_trials=trials)
    return (time.perf_counter() - started) / trials * 1e6


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant; the median is shown")
    args = parser.parse_args()
    variants = {"in memory": None, "with journal": "journal", "with event log": "events"}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    runs["optuna"] = []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every variant alike
        for name, subscriber in variants.items():
            runs[name].append(somatize_us_per_trial(args.trials, subscriber))
        reference = optuna_us_per_trial(args.trials)
        if reference is not None:
            runs["optuna"].append(reference)
    print(f"trials: {args.trials}, median of {args.repeats} runs (min in brackets)")
    for name in variants:
        print(f"somatize, {name + ':':<20} {median(runs[name]):8.1f} µs/trial  ({min(runs[name]):.1f})")
    if not runs["optuna"]:
        print("optuna: not installed (pip install optuna) - no side-by-side figure")
        return
    reference, plain = median(runs["optuna"]), median(runs["in memory"])
    print(f"optuna, in memory (Random):    {reference:8.1f} µs/trial  ({min(runs['optuna']):.1f})")
    print(f"ratio optuna / somatize:       {reference / plain:8.1f}x")


if __name__ == "__main__":
    main()
