"""The end of a noisy study with a known budget (samplers/identify.py): evaluated points run again to tell
the best of them apart, and nothing of it where the budget is unknown or the objective repeats exactly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from somatize import FloatDimension, Objective, SearchSpace, Trial, TrialState, make_sampler
from somatize.cli import app

UNIT = SearchSpace((FloatDimension("x", 0.0, 1.0), FloatDimension("y", 0.0, 1.0)))


def bowl(p: dict[str, Any]) -> float:
    return (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2


def drive(fn: Any, n_trials: int, budget: int | None, **options: Any) -> list[Trial]:
    """`n_trials` proposals of a Bayesian sampler (5 initial) told `fn`, the sampler told the study's
    length `budget` (None: open-ended, as an ask/tell study may be)."""
    strategy = {"type": "bayesian", "n_initial": 5, **options}
    if budget is not None:
        strategy["n_trials"] = budget
    sampler = make_sampler(strategy, UNIT, Objective("loss"), 0)
    trials: list[Trial] = []
    for number in range(n_trials):
        params = sampler.propose(number)
        assert params is not None
        trials.append(Trial(number, params, TrialState.COMPLETED, values={"loss": fn(params, number)}))
        sampler.tell(trials[-1])
    return trials


def repeated(trials: list[Trial]) -> list[int]:
    """The numbers of the trials whose parameters an earlier trial already had."""
    seen: set[tuple] = set()
    again = []
    for trial in trials:
        key = UNIT.key(trial.params)
        if key in seen:
            again.append(trial.number)
        seen.add(key)
    return again


def noisy_bowl(sd: float) -> Any:
    def loss(p: dict[str, Any], number: int) -> float:
        return bowl(p) + sd * float(np.random.default_rng(number).normal())

    return loss


def test_the_last_trials_of_a_noisy_study_run_its_best_points_again() -> None:
    trials = drive(noisy_bowl(0.2), 24, 24)
    again = repeated(trials)
    assert again[0] == 5  # noise: auto's check of the noise, right after the initial design
    assert len(again) > 1, again  # and at the end, evaluated points run again
    # What runs again is a good point, not an arbitrary one: better than most of the space.
    grid = np.linspace(0.0, 1.0, 51)
    typical = float(np.median([bowl({"x": x, "y": y}) for x in grid for y in grid]))
    assert all(bowl(trials[n].params) < typical / 2 for n in again[1:])


def test_an_open_ended_noisy_study_proposes_as_before_and_never_repeats_at_the_end() -> None:
    budgeted = drive(noisy_bowl(0.2), 24, 24)
    open_ended = drive(noisy_bowl(0.2), 24, None)
    assert repeated(open_ended) == [5]
    # Until the end phase begins, the budgeted study's trials are the open-ended one's, point for point.
    first = repeated(budgeted)[1]
    assert [t.params for t in budgeted[:first]] == [t.params for t in open_ended[:first]]


@pytest.mark.parametrize("noise", ["auto", "none"])
def test_a_repeatable_objective_never_enters_the_end_phase(noise: str) -> None:
    trials = drive(lambda p, number: bowl(p) + 0.05 * math.sin(30 * p["x"]), 20, 20, noise=noise)
    assert repeated(trials) == ([5] if noise == "auto" else [])


NOISY_OBJECTIVE = """\
import random


def noisy(params, trial):
    return (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2 + 0.2 * random.Random(trial.number).gauss(0, 1)
"""

NOISY_STUDY = """\
name: noisy
seed: 5
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  y: {type: float, low: 0.0, high: 1.0}
strategy: {type: bayesian, n_trials: 24, n_initial: 6}
objective: {metric: loss}
executor: {function: objective:noisy}
"""


def test_with_trials_in_flight_the_repeats_are_trials_like_any_other(tmp_path: Path) -> None:
    (tmp_path / "objective.py").write_text(NOISY_OBJECTIVE, encoding="utf-8")
    (tmp_path / "study.yaml").write_text(NOISY_STUDY, encoding="utf-8")
    command = [sys.executable, "-m", "somatize", "run", "study.yaml", "-q", "-j", "2", "-o", "out.json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    trials = data["trials"]
    assert len(trials) == 24 and all(t["state"] == "completed" for t in trials)
    assert len({t["id"] for t in trials}) == 24  # every repeat a trial of its own
    keys = [json.dumps(t["params"], sort_keys=True) for t in trials]
    assert len(keys) - len(set(keys)) > 1  # noise: auto's check, and the end of the budget
    best, recommended = data["best_trial"], data["recommended_trial"]
    assert best["value"] == min(t["values"]["loss"] for t in trials)
    by_id = {t["id"]: t for t in trials}
    assert recommended["params"] == by_id[recommended["id"]]["params"]
    assert recommended["value"] == by_id[recommended["id"]]["values"]["loss"]
    shown = CliRunner().invoke(app, ["best", str(tmp_path / "out.json"), "--format", "json"])
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == recommended["id"]
