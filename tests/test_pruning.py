"""Pruners and early stopping, for Python and shell trials."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from somatize import FloatDimension, Objective, SearchSpace, StopConditions, Study, StudyRunner, make_sampler
from somatize.errors import TrialPruned
from somatize.executors.base import Completed, Executor
from somatize.pruners import make_pruner
from somatize.study import MetricRecord, Trial, TrialState


def feed(pruner, number: int, values: list[float], first_step: int = 1) -> list[str | None]:
    pruner.start(number)
    return [pruner.report(number, step, v) for step, v in enumerate(values, start=first_step)]


def finished(number: int, values: list[float], state=TrialState.COMPLETED) -> Trial:
    records = [MetricRecord("loss", v, step) for step, v in enumerate(values, start=1)]
    return Trial(number, {"x": 0.1}, state, records, {"loss": min(values)})


def test_median_waits_for_warmup_and_min_trials_then_prunes_the_worse_half():
    pruner = make_pruner({"type": "median", "warmup_steps": 2, "min_trials": 3}, Objective("loss"))
    for number, level in enumerate([1.0, 2.0, 3.0]):
        assert feed(pruner, number, [level] * 4) == [None] * 4  # fewer than 3 other trials so far
        pruner.finish(finished(number, [level] * 4))
    decisions = feed(pruner, 3, [9.0, 9.0, 9.0])
    assert decisions[0] is None  # step 1 is inside the warmup
    assert decisions[1] == "above median of 3 trials at step 2 (9 vs 2)"
    assert feed(pruner, 4, [1.5, 1.5, 1.5]) == [None, None, None]  # better than the median


def test_median_interval_and_maximize_wording():
    pruner = make_pruner({"type": "median", "min_trials": 1, "interval": 2}, Objective("acc", "maximize"))
    feed(pruner, 0, [0.9, 0.9, 0.9, 0.9], first_step=0)
    decisions = feed(pruner, 1, [0.1, 0.1, 0.1, 0.1], first_step=0)
    assert decisions[0] == "below median of 1 trials at step 0 (0.1 vs 0.9)"
    pruner.start(1)  # a retry starts over
    assert pruner.report(1, 1, 0.1) is None  # step 1 is not on the interval


def test_median_uses_the_best_value_so_far_of_each_trial():
    pruner = make_pruner({"type": "median", "min_trials": 1}, Objective("loss"))
    feed(pruner, 0, [1.0, 5.0])  # best so far at step 2 is still 1.0
    assert feed(pruner, 1, [0.5, 3.0]) == [None, None]  # its best so far (0.5) beats 1.0


def test_successive_halving_promotes_only_the_top_fraction_at_each_rung():
    pruner = make_pruner(
        {"type": "successive_halving", "min_resource": 1, "reduction_factor": 2}, Objective("loss")
    )
    assert [pruner.rung_step(k) for k in range(4)] == [1, 2, 4, 8]
    assert feed(pruner, 0, [5.0, 4.0, 3.0, 2.0]) == [None] * 4  # alone at every rung: the best
    first = feed(pruner, 1, [6.0])[0]  # two values at rung 0, keep the best 1: 5.0
    assert first == "not in the best 1 of 2 trials at rung 0 (step 1): 6, needed 5"
    assert feed(pruner, 2, [4.5, 3.5])[1] is None  # better than trial 0 at both rungs
    # Rung 0 now holds 5, 6, 4.5 and 7: the best 4 // 2 = 2 go on.
    assert feed(pruner, 3, [7.0])[0] == "not in the best 2 of 4 trials at rung 0 (step 1): 7, needed 5"


def test_successive_halving_threshold_counts_every_value_at_the_rung():
    pruner = make_pruner(
        {"type": "successive_halving", "min_resource": 2, "reduction_factor": 2, "min_early_stopping_rate": 1},
        Objective("loss"),
    )
    assert pruner.rung_step(0) == 4
    for number, value in enumerate([1.0, 2.0, 3.0]):
        feed(pruner, number, [value] * 4)  # steps 1-4: only step 4 is a rung
    # Rung 0 holds 1, 2, 3 and now 2.5: the best 4 // 2 = 2 go on (1 and 2).
    decisions = feed(pruner, 3, [2.5] * 4)
    assert decisions[:3] == [None, None, None]
    assert decisions[3] == "not in the best 2 of 4 trials at rung 0 (step 4): 2.5, needed 2"


def test_a_failed_trials_curve_is_forgotten():
    pruner = make_pruner({"type": "median", "min_trials": 1}, Objective("loss"))
    feed(pruner, 0, [0.1])
    pruner.finish(finished(0, [0.1], TrialState.FAILED))
    assert feed(pruner, 1, [5.0]) == [None]  # no other trial counts


class Curves(Executor):
    """Trials whose loss falls from 3 + final towards final = x over `steps` reports."""

    def __init__(self, steps: int = 10):
        self.steps = steps
        self.executed = 0

    def run(self, request, reporter):
        final = request.params["x"]
        for step in range(1, self.steps + 1):
            self.executed += 1
            reporter.report("loss", final + 3 * math.exp(-step / 3), step)
            if reporter.should_prune():
                raise TrialPruned(step=step)
        return Completed()


def run_curves(pruning, n_trials=20, parallel=1, history=()):
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    strategy = {"type": "random", "n_trials": n_trials}
    study = Study("curves", space, [Objective("loss")], strategy)
    study.trials = list(history)
    executor = Curves()
    pruner = make_pruner(pruning, study.primary)
    sampler = make_sampler(strategy, space, study.primary, 5)
    StudyRunner(study, sampler, executor, None, StopConditions(), 5, parallel, pruner).run()
    return study, executor


@pytest.mark.parametrize("parallel", [1, 3])
def test_runner_prunes_and_records_step_and_reason(parallel):
    study, executor = run_curves({"type": "median", "warmup_steps": 2, "min_trials": 3}, parallel=parallel)
    pruned = [t for t in study.trials if t.state is TrialState.PRUNED]
    assert pruned and executor.executed < 20 * 10
    for trial in pruned:
        assert trial.reason.startswith("above median of ") and trial.reason.split(" at step ")[1].startswith(
            str(trial.pruned_step)
        )
        assert trial.values["loss"] == min(r.value for r in trial.metrics)
    best = study.best_trial()
    assert best.state is TrialState.COMPLETED
    # The best trial by its final value was never pruned: its curve beat the median everywhere.
    assert best.params["x"] == min(t.params["x"] for t in study.trials)


def test_resumed_history_feeds_the_pruner():
    history, _ = run_curves(None, n_trials=4)
    assert all(t.state is TrialState.COMPLETED for t in history.trials)
    study, executor = run_curves(
        {"type": "median", "min_trials": 4}, n_trials=5, history=[Trial.from_dict(t.to_dict()) for t in history.trials]
    )
    # Only the four resumed trials can satisfy min_trials for the fifth.
    fifth = study.trials[4]
    worse = fifth.params["x"] > statistics.median(t.params["x"] for t in history.trials)
    assert (fifth.state is TrialState.PRUNED) == worse
    assert executor.executed <= 10


# Command line ------------------------------------------------------------------------------

SHELL = """\
name: shellprune
seed: 3
search_space:
  x: {{type: float, low: 0.0, high: 1.0}}
strategy: {{type: random, n_trials: 8}}
objective: {{metric: loss, direction: minimize}}
pruning: {pruning}
parallel: {parallel}
executor:
  command: {command}
"""

# Each step takes 0.1 s; a pruned trial must stop long before its 12 steps.
CURVE = (
    "for s in 1 2 3 4 5 6 7 8 9 10 11 12; do echo \"{{\\\"step\\\": $s, \\\"loss\\\": "
    "$(awk \"BEGIN {{ print {x} + 3 * exp(-$s / 3) }}\")}}\"; sleep 0.1; done"
)


@pytest.mark.parametrize(
    ("pruning", "parallel"),
    [
        ({"type": "median", "warmup_steps": 1, "min_trials": 2}, 1),
        ({"type": "successive_halving", "min_resource": 2, "reduction_factor": 2}, 2),
    ],
)
def test_shell_trials_are_pruned_and_their_process_groups_end(tmp_path: Path, pruning, parallel):
    (tmp_path / "s.yaml").write_text(
        SHELL.format(pruning=json.dumps(pruning), parallel=parallel, command=json.dumps(CURVE))
    )
    started = time.monotonic()
    done = subprocess.run(
        ["somatize", "run", "s.yaml", "-o", "r.json", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, [t["state"] for t in trials]
    for trial in pruned:
        steps = [m["step"] for m in trial["metrics"]]
        assert trial["pruned_step"] == steps[-1] < 12
        assert trial["duration_ms"] < 1000  # stopped at once, not after 12 steps
        assert "at step" in trial["reason"] or "at rung" in trial["reason"]
    assert time.monotonic() - started < 60
    shown = subprocess.run(
        ["somatize", "show", "r.json", "--state", "pruned"], cwd=tmp_path, capture_output=True, text=True
    )
    assert shown.returncode == 0 and shown.stdout.count("pruned") >= len(pruned)


FUNCTION = """\
import math, somatize

def fit(params, trial):
    for step in range(1, 11):
        trial.report({"loss": params["x"] + 3 * math.exp(-step / 3)}, step=step)
        if trial.should_prune():
            raise somatize.TrialPruned()
    return None
"""


@pytest.mark.parametrize(
    ("jobs", "pruning", "reason"),
    [
        ("1", "{type: median, warmup_steps: 2, min_trials: 3}", "above median of"),
        ("2", "{type: median, warmup_steps: 2, min_trials: 3}", "above median of"),
        ("1", "{type: successive_halving, min_resource: 2, reduction_factor: 2}", "not in the best"),
        ("2", "{type: successive_halving, min_resource: 2, reduction_factor: 2}", "not in the best"),
    ],
)
def test_python_trials_are_pruned_in_process_and_in_workers(tmp_path: Path, jobs, pruning, reason):
    (tmp_path / "fit.py").write_text(FUNCTION)
    (tmp_path / "f.yaml").write_text(
        "name: f\nseed: 2\nsearch_space:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        "strategy: {type: random, n_trials: 12}\nobjective: {metric: loss}\n"
        f"pruning: {pruning}\nexecutor:\n  function: fit:fit\n"
    )
    done = subprocess.run(
        ["somatize", "run", "f.yaml", "-j", jobs, "-o", "r.json", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned
    assert all(t["reason"].startswith(reason) and t["pruned_step"] >= 2 for t in pruned)
    assert all(len(t["metrics"]) == t["pruned_step"] for t in pruned)


def test_validate_shows_the_pruner_and_parallelism(tmp_path: Path):
    from typer.testing import CliRunner

    from somatize.cli import app

    (tmp_path / "s.yaml").write_text(
        SHELL.format(pruning="{type: successive_halving, min_resource: 2}", parallel=3, command="echo loss={x}")
    )
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 0, result.output
    assert "pruning: successive_halving (min_resource=2)" in result.output
    assert "parallel: 3 trials at once" in result.output
