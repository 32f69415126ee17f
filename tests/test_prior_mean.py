"""The prior mean of a noise-free Bayesian search (bayesian.BayesianSampler._exact_proposal), through the package API."""

from __future__ import annotations

import math
from typing import Any

import pytest

from somatize import (
    CategoricalDimension,
    FloatDimension,
    IntDimension,
    MetricRecord,
    Objective,
    SearchSpace,
    Study,
    StudyRunner,
    make_sampler,
)
from somatize.executors.base import Completed, Executor, Outcome, Reporter, TrialRequest
from somatize.samplers import bayesian

# A real model's kind of space: a fraction, a log-scale integer (min_samples_leaf 1..32), a choice.
TREES = SearchSpace(
    (FloatDimension("x", 0.0, 1.0), IntDimension("k", 1, 32, scale="log"), CategoricalDimension("c", ("a", "b")))
)
PLANE = SearchSpace((FloatDimension("x", -5.0, 10.0), FloatDimension("y", 0.0, 15.0)))


def corner(p: dict[str, Any]) -> float:
    """A broad bowl in the middle (minimum 0), and the best values (-0.29) in a narrow basin at the
    bounds x = 1, k = 1 with choice b: where few trials of a search around the bowl come."""
    u, v = p["x"], math.log2(p["k"]) / 5
    bowl = 0.5 * ((u - 0.35) ** 2 + (v - 0.45) ** 2) + (0.03 if p["c"] == "a" else 0.0)
    basin = 0.6 * math.exp(-((1 - u) ** 2 + v**2) / 0.04) * (1.0 if p["c"] == "b" else 0.2)
    return bowl - basin


def branin(p: dict[str, Any]) -> float:
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (p["y"] - b * p["x"] ** 2 + c * p["x"] - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(p["x"]) + 10


class Evaluate(Executor):
    def __init__(self, fn: Any):
        self.fn = fn

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        return Completed([MetricRecord("loss", self.fn(dict(request.params)))])


def run_study(space: SearchSpace, fn: Any, n_trials: int, seed: int) -> Study:
    strategy = {"type": "bayesian", "n_trials": n_trials}
    study = Study("bo", space, [Objective("loss")], strategy)
    sampler = make_sampler(strategy, space, study.primary, seed)
    return StudyRunner(study, sampler, Evaluate(fn), seed=seed).run()


def best_loss(study: Study) -> float:
    return min(t.values["loss"] for t in study.trials if t.values)


@pytest.mark.parametrize("seed", [1, 6])
def test_a_best_region_at_the_bounds_of_integer_and_choice_is_found(seed: int) -> None:
    # With the prior mean at the worst value alone, these two runs (30 trials, the objective exact, so
    # `noise: auto` turns noise-free after its repeat) never left the bowl: best 0.0, the basin untried.
    study = run_study(TREES, corner, 30, seed)
    assert best_loss(study) < -0.2


def test_a_continuous_box_proposes_as_with_the_worst_value_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The portfolio is for spaces with an integer or categorical dimension: on Branin the trials are
    # the same, value for value, with it switched off.
    with_portfolio = [t.params for t in sorted(run_study(PLANE, branin, 16, 3).trials, key=lambda t: t.number)]
    monkeypatch.setattr(bayesian, "MEAN_HEDGE", False)
    without = [t.params for t in sorted(run_study(PLANE, branin, 16, 3).trials, key=lambda t: t.number)]
    assert with_portfolio == without
