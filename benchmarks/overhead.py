"""Per-trial framework cost: a trivial Python objective, random sampler, 4 mixed dimensions.

    python benchmarks/overhead.py [--trials 10000]

Runs the same study through somatize's package API (in memory, with the
journal that `somatize run` keeps, and with an `--events` log) and, when optuna is
installed, through Optuna's in-memory RandomSampler in the same process, and
prints µs per trial and the ratio.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    plain = somatize_us_per_trial(args.trials, None)
    durable = somatize_us_per_trial(args.trials, "journal")
    with_log = somatize_us_per_trial(args.trials, "events")
    print(f"trials: {args.trials}")
    print(f"somatize, in memory:        {plain:8.1f} µs/trial")
    print(f"somatize, with journal:     {durable:8.1f} µs/trial")
    print(f"somatize, with event log:   {with_log:8.1f} µs/trial")
    reference = optuna_us_per_trial(args.trials)
    if reference is None:
        print("optuna: not installed (pip install optuna) - no side-by-side figure")
    else:
        print(f"optuna, in memory (Random): {reference:8.1f} µs/trial")
        print(f"ratio optuna / somatize:    {reference / plain:8.1f}x")


if __name__ == "__main__":
    main()
