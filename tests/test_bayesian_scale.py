"""The Bayesian sampler on a long history (issue 18): a bounded fit set, bounded hyperparameter
searches, and finite spaces run to exhaustion without re-listing them.

The limits are set small here (a few dozen rows) so that the mechanisms are exercised in seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from somatize import (
    FloatDimension,
    IntDimension,
    MetricRecord,
    Objective,
    SearchSpace,
    Study,
    StudyRunner,
    Trial,
    TrialState,
    make_sampler,
)
from somatize.cli import app
from somatize.executors.base import Completed, Executor, Outcome, Reporter, TrialRequest
from somatize.samplers import bayesian
from somatize.samplers.subset import fit_rows

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

PLANE = SearchSpace((FloatDimension("x", -5.0, 10.0), FloatDimension("y", 0.0, 15.0)))


def quadratic(p: dict[str, Any]) -> float:
    return (p["x"] - 2.3) ** 2 + (p["y"] - 7.1) ** 2


class Evaluate(Executor):
    def __init__(self, fn: Any):
        self.fn = fn

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        return Completed([MetricRecord("loss", float(self.fn(dict(request.params))))])


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit set of 24 rows, the cold fit's restarts on 8."""
    monkeypatch.setattr(bayesian, "FIT_ROWS", 24)
    monkeypatch.setattr(bayesian, "COLD_ROWS", 8)


def random_history(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [PLANE.from_unit([rng.random(), rng.random()]) for _ in range(count)]


def told_sampler(history: list[dict[str, Any]], seed: int = 0, **options: Any) -> Any:
    """A Bayesian sampler told `history` as finished trials, as `--resume` replays them."""
    sampler = make_sampler({"type": "bayesian", "n_trials": None, **options}, PLANE, Objective("loss"), seed)
    for number, params in enumerate(history):
        value = quadratic(params)
        sampler.tell(Trial(number, params, TrialState.COMPLETED, [MetricRecord("loss", value)], {"loss": value}))
    return sampler


# The fit set ------------------------------------------------------------------------------------


def test_fit_rows_keeps_every_row_up_to_the_limit() -> None:
    rng = np.random.default_rng(0)
    assert fit_rows(rng.random((30, 3)), rng.random(30), 30).tolist() == list(range(30))


def test_fit_rows_is_bounded_and_keeps_the_best_half_with_the_incumbent() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.random((500, 4)), rng.random(500)
    rows = fit_rows(X, y, 100)
    assert len(rows) == len(set(rows.tolist())) == 100
    assert int(np.argmin(y)) in rows
    assert set(np.argsort(y)[:50].tolist()) <= set(rows.tolist())


def test_fit_rows_spreads_the_rest_over_regions_the_best_points_leave_out() -> None:
    rng = np.random.default_rng(2)
    # The good values all lie in one corner; the rest of the square holds the bad ones.
    X = np.vstack([0.2 * rng.random((300, 2)), rng.random((300, 2))])
    y = np.concatenate([rng.random(300), 10.0 + rng.random(300)])
    chosen = X[fit_rows(X, y, 40)]
    farthest = max(float(np.min(np.linalg.norm(chosen - x, axis=1))) for x in X)
    best_only = X[np.argsort(y)[:40]]
    farthest_best_only = max(float(np.min(np.linalg.norm(best_only - x, axis=1))) for x in X)
    assert farthest < 0.35 < farthest_best_only  # 20 spread-out points leave no hole wider than that


def test_fit_rows_breaks_ties_to_the_earlier_observation_and_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    X, y = rng.random((50, 2)), np.ones(50)
    rows = fit_rows(X, y, 10)
    assert 0 in rows  # every value ties: the first observation is the incumbent
    assert fit_rows(X, y, 10).tolist() == rows.tolist()


# The sampler on a long history --------------------------------------------------------------------


def test_past_the_limit_the_gp_is_fitted_to_a_bounded_set_that_holds_the_best_trial(small_limits: None) -> None:
    history = random_history(80)
    sampler = told_sampler(history, noise="none")
    params = sampler.propose(80)
    assert PLANE.contains(params)
    assert PLANE.key(params) not in {PLANE.key(p) for p in history}
    model = sampler._model
    assert len(model.X_train_) == bayesian.FIT_ROWS
    best = min(history, key=quadratic)
    best_row = np.asarray(sampler._opt.space.transform([sampler._to_point(best)]), dtype=float)[0]
    assert np.any(np.all(np.isclose(model.X_train_, best_row), axis=1))


def test_two_samplers_told_the_same_long_history_propose_the_same_point(small_limits: None) -> None:
    history = random_history(60, seed=5)
    assert told_sampler(history, seed=4).propose(60) == told_sampler(history, seed=4).propose(60)


def test_a_study_on_a_bounded_fit_set_still_converges(small_limits: None) -> None:
    strategy = {"type": "bayesian", "n_trials": 45, "n_initial": 6}
    study = Study("long", PLANE, [Objective("loss")], strategy)
    sampler = make_sampler(strategy, PLANE, study.primary, 0)
    StudyRunner(study, sampler, Evaluate(quadratic), seed=0).run()
    assert len(sampler._model.X_train_) == bayesian.FIT_ROWS
    assert min(t.values["loss"] for t in study.completed()) < 0.01  # random search: about 1 at 45 trials


def test_every_hyperparameter_search_stops_at_its_budget(small_limits: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bayesian, "FIT_EVALUATIONS", 3)
    counts: list[int] = []
    search = bayesian._HyperparameterSearch.__call__

    def counting(self: Any, objective: Any, theta: np.ndarray, bounds: np.ndarray) -> Any:
        calls = [0]

        def counted(log_theta: np.ndarray) -> Any:
            calls[0] += 1
            return objective(log_theta)

        try:
            return search(self, counted, theta, bounds)
        finally:
            counts.append(calls[0])

    monkeypatch.setattr(bayesian._HyperparameterSearch, "__call__", counting)
    sampler = told_sampler(random_history(60, seed=6))
    for number in range(60, 64):
        params = sampler.propose(number)
        value = quadratic(params)
        sampler.tell(Trial(number, params, TrialState.COMPLETED, [MetricRecord("loss", value)], {"loss": value}))
    assert counts
    # L-BFGS-B checks its budget once per iteration, so one line search (at most 20 steps) may run over.
    assert max(counts) <= 3 + 20 + 1


def test_a_long_bayesian_study_resumes_with_a_valid_continuation(small_limits: None, tmp_path: Path) -> None:
    (tmp_path / "objective.py").write_text("def objective(p):\n    return (p['x'] - 0.3) ** 2 + (p['y'] - 0.6) ** 2\n")
    study = tmp_path / "study.yaml"
    study.write_text(
        "name: long\nseed: 2\nsearch_space:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        "  y: {type: float, low: 0.0, high: 1.0}\n"
        "strategy: {type: bayesian, n_trials: 40, n_initial: 5}\n"
        "objective: {metric: v}\nexecutor: {function: objective:objective}\n"
    )
    out = tmp_path / "r.json"
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(study), "-o", str(out), "-q"]).exit_code == 0
    resumed = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "46", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    trials = json.loads(out.read_text())["trials"]
    assert [t["number"] for t in trials] == list(range(46))
    keys = [json.dumps(t["params"], sort_keys=True) for t in trials]
    assert len(keys) - len(set(keys)) <= 1  # at most noise: auto's one deliberate repeat (bayesian.py `_replicate`)
    assert all(t["state"] == "completed" for t in trials)


# Finite spaces ---------------------------------------------------------------------------------------


def test_a_finite_space_runs_to_exhaustion_listing_its_points_at_most_once(
    small_limits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = SearchSpace((IntDimension("x", 0, 19), IntDimension("y", 0, 19)))
    listed = []
    enumerate_space = SearchSpace.enumerate

    def counting(self: SearchSpace, *args: Any) -> Any:
        listed.append(1)
        return enumerate_space(self, *args)

    monkeypatch.setattr(SearchSpace, "enumerate", counting)
    sampler = make_sampler({"type": "bayesian", "n_trials": None}, space, Objective("loss"), 0)
    points = list(enumerate_space(space))
    random.Random(8).shuffle(points)
    # All but six points told, as a resumed study would: random draws now nearly always land on seen ones.
    for number, params in enumerate(points[:-6]):
        value = float((params["x"] - 3) ** 2 + (params["y"] - 5) ** 2)
        sampler.tell(Trial(number, params, TrialState.COMPLETED, [MetricRecord("loss", value)], {"loss": value}))
    proposed: list[dict[str, Any]] = []
    number = len(points) - 6
    while (params := sampler.propose(number)) is not None:
        proposed.append(params)
        sampler.tell(Trial(number, params, TrialState.COMPLETED, values={"loss": 1.0}))
        number += 1
    assert sorted(space.key(p) for p in proposed) == sorted(space.key(p) for p in points[-6:])
    assert len(listed) <= 1
