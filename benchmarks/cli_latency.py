"""Command-line latency and shell-executor overhead.

    python benchmarks/cli_latency.py [--repeat 15] [--trials 200]

1. Median wall time of `somatize validate` on an example study and of
   `somatize best` on a 1,000-trial results file (and of `optuna best-trial`
   on the same trials, when optuna is installed).
2. Shell-executor cost per trial against a bare `sh -c` spawn loop running
   the same command, as a ratio.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_big_results(path: Path, trials: int) -> None:
    from somatize import FloatDimension, IntDimension, MetricRecord, Objective, SearchSpace, Study, Trial, TrialState
    from somatize.storage.results import write_results

    rng = random.Random(0)
    space = SearchSpace((FloatDimension("lr", 1e-4, 0.1, scale="log"), IntDimension("layers", 1, 8)))
    study = Study("big", space, [Objective("loss")], {"type": "random", "n_trials": trials})
    for n in range(trials):
        value = rng.random()
        study.trials.append(
            Trial(n, {"lr": rng.uniform(1e-4, 0.1), "layers": rng.randint(1, 8)}, TrialState.COMPLETED,
                  [MetricRecord("loss", value)], {"loss": value}, time.time(), 10)
        )
    study.status = "completed"
    write_results(study, path)


def optuna_best_trial(workdir: Path, trials: int, repeat: int) -> float | None:
    if shutil.which("optuna") is None:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    study = optuna.create_study(study_name="big", storage=storage)
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 0.1, log=True) * t.suggest_int("layers", 1, 8), trials)
    return median_wall(["optuna", "best-trial", "--study-name", "big", "--storage", storage], repeat)


def shell_overhead(workdir: Path, trials: int) -> tuple[float, float]:
    study = workdir / "shell.yaml"
    study.write_text(
        "name: shell\nseed: 1\nsearch_space:\n  x: {type: float, low: 0, high: 1}\n"
        f"strategy: {{type: random, n_trials: {trials}}}\n"
        "objective: {metric: y, direction: minimize}\nexecutor: {command: 'echo y={x}'}\n"
    )
    # In-process, so interpreter start-up is not counted against the executor.
    from somatize.assemble import build_executor, build_study, stop_conditions
    from somatize.runner import StudyRunner
    from somatize.samplers import make_sampler
    from somatize.studyfile import load_study

    config = load_study(str(study))
    runner_study = build_study(config)
    sampler = make_sampler(config.strategy, config.space, config.primary, config.seed)
    runner = StudyRunner(runner_study, sampler, build_executor(config), None, stop_conditions(config), config.seed)
    started = time.perf_counter()
    runner.run()
    somatize_per_trial = (time.perf_counter() - started) / trials
    assert len(runner_study.completed()) == trials

    started = time.perf_counter()
    for i in range(trials):
        subprocess.run(["sh", "-c", f"echo y={i / trials}"], stdout=subprocess.PIPE, check=True)
    bare_per_trial = (time.perf_counter() - started) / trials
    return somatize_per_trial, bare_per_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--trials", type=int, default=200, help="trials for the shell-overhead loop")
    args = parser.parse_args()
    somatize = shutil.which("somatize") or sys.exit("somatize is not on PATH: pip install -e . first")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        big = workdir / "big.json"
        write_big_results(big, 1000)
        validate = median_wall([somatize, "validate", str(ROOT / "studies" / "branin.yaml")], args.repeat)
        best = median_wall([somatize, "best", str(big)], args.repeat)
        bare_python = median_wall([sys.executable, "-c", "pass"], args.repeat)
        print(f"python -c pass (floor):             {bare_python * 1000:7.0f} ms")
        print(f"somatize validate studies/branin:   {validate * 1000:7.0f} ms (median of {args.repeat})")
        print(f"somatize best (1,000 trials):       {best * 1000:7.0f} ms")
        optuna = optuna_best_trial(workdir, 1000, args.repeat)
        if optuna is None:
            print("optuna best-trial: optuna not installed")
        else:
            print(f"optuna best-trial (1,000 trials):   {optuna * 1000:7.0f} ms  ({optuna / best:.1f}x somatize best)")
        ours, bare = shell_overhead(workdir, args.trials)
        print(f"shell executor per trial:           {ours * 1000:7.2f} ms")
        print(f"bare sh -c spawn per trial:         {bare * 1000:7.2f} ms  (ratio {ours / bare:.2f})")


if __name__ == "__main__":
    main()
