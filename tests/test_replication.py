"""Replication under noise decided by the knowledge gradient (samplers/replication.py), with noisy EI's search."""

from __future__ import annotations

from typing import Any

import numpy as np

from somatize import FloatDimension, Objective, SearchSpace, Trial, TrialState, make_sampler

UNIT = SearchSpace((FloatDimension("x", 0.0, 1.0), FloatDimension("y", 0.0, 1.0)))


def drive(fn: Any, n_trials: int, **options: Any) -> list[Trial]:
    strategy = {"type": "bayesian", "n_trials": n_trials, "n_initial": 5, **options}
    sampler = make_sampler(strategy, UNIT, Objective("loss"), 0)
    trials: list[Trial] = []
    for number in range(n_trials):
        params = sampler.propose(number)
        assert params is not None
        trials.append(Trial(number, params, TrialState.COMPLETED, values={"loss": fn(params)}))
        sampler.tell(trials[-1])
    return trials


def repeats(trials: list[Trial]) -> list[int]:
    seen: set[tuple] = set()
    again = []
    for trial in trials:
        key = UNIT.key(trial.params)
        if key in seen:
            again.append(trial.number)
        seen.add(key)
    return again


def test_a_noisy_study_evaluates_a_good_point_again_beyond_the_noise_check() -> None:
    rng = np.random.default_rng(3)

    def bowl(p: dict[str, Any]) -> float:
        return (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2

    trials = drive(lambda p: bowl(p) + 0.1 * rng.normal(), 20)
    again = repeats(trials)
    assert again[0] == 5  # noise: auto's one repeat of the best initial point
    assert len(again) >= 2  # and at least one the knowledge gradient chose
    # What is repeated is a good point (a recommendation's contender): better than a random point on average.
    uniform = np.random.default_rng(1).random((10_000, 2))
    average = float(np.mean([bowl({"x": x, "y": y}) for x, y in uniform]))
    assert all(bowl(trials[n].params) < average for n in again[1:])


def test_a_noise_free_objective_is_not_repeated_by_the_knowledge_gradient() -> None:
    trials = drive(lambda p: (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2, 14)
    assert repeats(trials) == [5]  # only noise: auto's check, which finds no noise


def test_knowledge_gradient_against_monte_carlo() -> None:
    from somatize.samplers.replication import knowledge_gradient

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    cov = a @ a.T + 0.1 * np.eye(4)
    mean = rng.normal(size=4)
    noise = np.full(4, 0.5)
    recommendable = np.array([True, True, True, False])
    kg = knowledge_gradient(mean, cov, noise, recommendable)
    draws = rng.standard_normal(400_000)
    for c in range(4):
        members = recommendable.copy()
        members[c] = True
        shift = cov[:, c] / np.sqrt(cov[c, c] + noise[c])
        after = (mean[members, None] + shift[members, None] * draws[None, :]).min(axis=0)
        assert abs(kg[c] - (mean[recommendable].min() - after.mean())) < 0.01
    # A point observed without noise at a known value (no variance) is worth nothing to observe again.
    cov[0, :] = cov[:, 0] = 0.0
    assert knowledge_gradient(mean, cov, np.zeros(4), recommendable)[0] == 0.0
