"""`noise: auto` in a finite space, where no point may be repeated (SPEC §2): roughness from one allowed
integer to the next, seen alike by points that share it, is modelled as signal (samplers/lattice.py);
an observation noise is still fitted as noise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from somatize import CategoricalDimension, IntDimension, Objective, SearchSpace, Trial, TrialState, make_sampler

# A k-NN-like space: a log-scale integer and a binary choice whose effect is small.
SPACE = SearchSpace((IntDimension("k", 1, 100, scale="log"), CategoricalDimension("c", ("a", "b"))))
ROUGHNESS = 0.004  # the sd of the jumps from one k to the next, about what a fixed-split k-NN shows
JUMPS = np.random.default_rng(7).normal(0.0, ROUGHNESS, 101)


def trend(params: dict[str, Any]) -> float:
    return 0.5 + 0.3 * math.log(params["k"] / 16) ** 2 + (0.002 if params["c"] == "b" else 0.0)


def history(seed: int) -> list[dict[str, Any]]:
    """What a search of this space evaluates: a dozen points spread over it and both choices at ten
    values of k near the best one."""
    rng = np.random.default_rng(seed)
    points = [{"k": int(k), "c": str(rng.choice(["a", "b"]))} for k in rng.choice(np.arange(1, 101), 12, False)]
    return points + [{"k": int(k), "c": c} for k in rng.choice(np.arange(10, 26), 10, False) for c in ("a", "b")]


def told(points: list[dict[str, Any]], values: list[float]) -> Any:
    sampler = make_sampler({"type": "bayesian", "n_trials": 60}, SPACE, Objective("loss"), 0)
    for number, (params, value) in enumerate(zip(points, values)):
        sampler.tell(Trial(number, params, TrialState.COMPLETED, values={"loss": value}))
    return sampler


@pytest.mark.parametrize("seed", [4, 7])
def test_a_deterministic_objective_rough_between_integers_is_not_fitted_as_noise(seed: int) -> None:
    # Before: a noise of 0.0029 and 0.0027 fitted to an exact objective, and with seed 7 a recommendation
    # 0.0027 worse than the best trial evaluated; now 2e-5 and 1e-5, and the best trial.
    points = history(seed)
    values = [trend(p) + JUMPS[p["k"]] for p in points]
    sampler = told(points, values)
    recommendation = sampler.recommend()
    assert sampler.noise_sd() < 0.25 * ROUGHNESS
    assert values[recommendation.number] == min(values)


@pytest.mark.parametrize("seed", [4, 7])
def test_an_observation_noise_in_a_finite_space_is_still_fitted_as_noise(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    points = history(seed)
    sampler = told(points, [trend(p) + ROUGHNESS * rng.normal() for p in points])
    sampler.recommend()
    assert 0.5 * ROUGHNESS < sampler.noise_sd() < 1.5 * ROUGHNESS


def test_offsets_that_the_data_do_not_need_leave_a_noisy_recommendation_alone() -> None:
    # Few trials share their k (four pairs), so the offsets and the noise explain the data almost alike.
    # Kept whatever the data say, the offsets took the noise of a lucky draw for signal and the
    # recommendation was 0.0032 above the best trend among the trials (0.8 noise sd); with the test of
    # their absence they are dropped here, and the recommendation is at the best.
    rng = np.random.default_rng(209)
    points = history(9)
    points = points[:12] + points[12::2] + points[13:20:2]
    values = [trend(p) + ROUGHNESS * rng.normal() for p in points]
    recommendation = told(points, values).recommend()
    assert trend(points[recommendation.number]) - min(map(trend, points)) < 0.5 * ROUGHNESS
