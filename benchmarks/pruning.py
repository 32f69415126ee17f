"""Pruning on a synthetic learning-curve workload: steps executed and best value.

    python benchmarks/pruning.py [--trials 30] [--steps 30] [--seeds 10]

Each trial is a training run of `steps` epochs whose validation loss decays
from a start level towards a final loss that depends on the learning rate and
the weight decay; curves cross (a fast learner can end worse) and carry a
little noise. The same random-search trials run without pruning, with the
median rule and with successive halving; the script prints the steps executed
and the best final loss, each relative to the unpruned run (median over seeds).
Targets: at least 2x fewer steps, best value within 2%.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

PRUNERS = {
    "none": None,
    "median": {"type": "median", "warmup_steps": 5, "min_trials": 5},
    "successive_halving": {"type": "successive_halving", "min_resource": 5, "reduction_factor": 3},
}


def curve(params: dict, step: int, noise: random.Random) -> float:
    """Validation loss after `step` epochs: exponential decay to a final loss.

    Larger learning rates converge faster (time constant 2 epochs at lr=1, 10 at
    lr=1e-4) while the final loss is lowest near lr=1e-2, so early leaders are
    not always the final winners.
    """
    lr, decay = params["lr"], params["weight_decay"]
    final = 0.2 + (math.log10(lr) + 2.0) ** 2 * 0.15 + abs(math.log10(decay) + 4.0) * 0.05
    tau = 2.0 - 2.0 * math.log10(lr)
    return final + 1.5 * math.exp(-step / tau) + noise.gauss(0.0, 0.01)


class Workload:
    """An executor running the synthetic curves, counting the epochs it executes."""

    def __init__(self, steps: int):
        self.steps = steps
        self.executed = 0

    def run(self, request, reporter):
        from somatize.errors import TrialPruned
        from somatize.executors.base import Completed

        noise = random.Random(request.trial_seed)
        for step in range(1, self.steps + 1):
            self.executed += 1
            reporter.report("loss", curve(request.params, step, noise), step)
            if reporter.should_prune():
                raise TrialPruned(step=step)
        return Completed()

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def run(pruning: dict | None, seed: int, trials: int, steps: int) -> tuple[int, float]:
    from somatize import FloatDimension, Objective, SearchSpace, Study, StudyRunner, make_sampler
    from somatize.pruners import make_pruner

    space = SearchSpace(
        (FloatDimension("lr", 1e-4, 1.0, scale="log"), FloatDimension("weight_decay", 1e-6, 1e-2, scale="log"))
    )
    strategy = {"type": "random", "n_trials": trials}
    # reduce: last - a trial's value is where its curve ended, as a real training run's would be.
    study = Study("curves", space, [Objective("loss", reduce="last")], strategy)
    workload = Workload(steps)
    sampler = make_sampler(strategy, space, study.primary, seed)
    StudyRunner(study, sampler, workload, seed=seed, pruner=make_pruner(pruning, study.primary)).run()
    best = min(t.values["loss"] for t in study.completed())
    return workload.executed, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.trials} trials x {args.steps} steps, random search, median over {args.seeds} seeds")
    baseline = {seed: run(None, seed, args.trials, args.steps) for seed in range(args.seeds)}
    for name, pruning in PRUNERS.items():
        results = {seed: run(pruning, seed, args.trials, args.steps) for seed in range(args.seeds)}
        steps = statistics.median(results[s][0] for s in results)
        fewer = statistics.median(baseline[s][0] / results[s][0] for s in results)
        gap = statistics.median((results[s][1] - baseline[s][1]) / baseline[s][1] * 100 for s in results)
        worst = max((results[s][1] - baseline[s][1]) / baseline[s][1] * 100 for s in results)
        best = statistics.median(results[s][1] for s in results)
        print(
            f"{name:<20} steps {steps:6.0f}  ({fewer:4.2f}x fewer)   best loss {best:.4f}  "
            f"(+{gap:.2f}% vs unpruned, worst seed +{worst:.2f}%)"
        )


if __name__ == "__main__":
    main()
