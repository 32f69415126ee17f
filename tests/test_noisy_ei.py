"""Noisy expected improvement (samplers/noisy_ei.py) against brute-force joint draws of a fitted noisy GP."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from somatize import FloatDimension, Objective, SearchSpace, Trial, TrialState, make_sampler
from somatize.samplers import bayesian
from somatize.samplers.acquisition import Posterior
from somatize.samplers.noisy_ei import NoisyEI

UNIT = SearchSpace((FloatDimension("x", 0.0, 1.0), FloatDimension("y", 0.0, 1.0)))
NEAR_BEST = np.array([[0.3, 0.6], [0.25, 0.55], [0.35, 0.7]])


def bowl(p: dict[str, Any]) -> float:
    return (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2


def noisy_model() -> Any:
    """The GP a Bayesian sampler fitted to 25 noisy values of a bowl (noise sd 0.05, fixed)."""
    rng = np.random.default_rng(0)
    points = [{"x": float(a), "y": float(b)} for a, b in rng.random((25, 2))]
    sampler = make_sampler({"type": "bayesian", "n_trials": 60, "n_initial": 5, "noise": 0.05}, UNIT, Objective("loss"), 0)
    for number, params in enumerate(points):
        sampler.tell(Trial(number, params, TrialState.COMPLETED, values={"loss": bowl(params) + 0.05 * rng.normal()}))
    with bayesian._quiet():
        return sampler._fitted()


def brute_force(model: Any, base: np.ndarray, x: np.ndarray, draws: int = 400_000) -> float:
    """log E[max(0, min f(X_base) - f(x))] from joint posterior draws of (f(X_base), f(x))."""
    rows = np.vstack([model.X_train_[base], x[None]])
    mean, cov = model.predict(rows, return_cov=True)
    root = np.linalg.cholesky(cov + 1e-10 * np.eye(len(rows)))
    f = mean[:, None] + root @ np.random.default_rng(2).standard_normal((len(rows), draws))
    return math.log(float(np.mean(np.maximum(f[:-1].min(axis=0) - f[-1], 0.0))))


@pytest.mark.parametrize("subset", [False, True])  # every evaluated point, or some (the feasible ones)
def test_noisy_ei_is_the_expected_improvement_on_the_best_of_joint_draws(subset: bool) -> None:
    model = noisy_model()
    n = len(model.X_train_)
    base = np.arange(0, n, 2) if subset else np.arange(n)
    nei = NoisyEI(Posterior(model), base, np.random.default_rng(1), draws=4096)
    for x in NEAR_BEST:
        assert nei.value(x[None])[0] == pytest.approx(brute_force(model, base, x), abs=0.03)


def test_noisy_ei_gradients_agree_with_finite_differences() -> None:
    model = noisy_model()
    nei = NoisyEI(Posterior(model), np.arange(len(model.X_train_)), np.random.default_rng(1))
    _, grad = nei.value_and_gradient(NEAR_BEST)
    step = 1e-6
    for column in range(2):
        up, down = NEAR_BEST.copy(), NEAR_BEST.copy()
        up[:, column] += step
        down[:, column] -= step
        numeric = (nei.value(up) - nei.value(down)) / (2 * step)
        assert grad[:, column] == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_an_evaluated_point_has_no_noisy_expected_improvement() -> None:
    # Its value in every draw is at or above that draw's best: nothing to gain from evaluating it again
    # (but for the jitter that lets the posterior at the evaluated points factor, NEI_JITTER).
    model = noisy_model()
    nei = NoisyEI(Posterior(model), np.arange(len(model.X_train_)), np.random.default_rng(1))
    assert np.all(nei.value(model.X_train_[:8]) < nei.value(NEAR_BEST).min() - 10)


def test_noise_free_studies_propose_what_they_did_without_noisy_ei(monkeypatch: pytest.MonkeyPatch) -> None:
    def proposals() -> list[dict[str, Any]]:
        sampler = make_sampler({"type": "bayesian", "n_trials": 16, "n_initial": 5}, UNIT, Objective("loss"), 3)
        got = []
        for number in range(16):
            params = sampler.propose(number)
            assert params is not None
            got.append(params)
            sampler.tell(Trial(number, params, TrialState.COMPLETED, values={"loss": bowl(params)}))
        return got

    with_nei = proposals()
    monkeypatch.setattr(bayesian, "NOISY_EI", False)
    assert proposals() == with_nei  # the repeat came back the same: noise-free, plain EI either way


def test_the_candidates_sweep_reuses_the_posterior_s_kernel_rows_for_the_same_values() -> None:
    # AcquisitionSearch.best computes the candidates' posterior once for every acquisition; noisy EI takes
    # the kernel rows that computation made (Posterior.with_kernel) instead of computing them again.
    model = noisy_model()
    posterior = Posterior(model)
    nei = NoisyEI(posterior, np.arange(len(model.X_train_)), np.random.default_rng(1))
    candidates = np.random.default_rng(4).random((300, 2))
    mean, std, kernel = posterior.with_kernel(candidates)
    alone_mean, alone_std = posterior(candidates)
    assert np.array_equal(mean, alone_mean) and np.array_equal(std, alone_std)
    assert np.array_equal(kernel, posterior._kernel(candidates))
    assert np.array_equal(nei.value(candidates, (mean, std, kernel)), nei.value(candidates))
    value, grad = nei.value_and_gradient(NEAR_BEST)
    assert np.array_equal(value, nei.value(NEAR_BEST))
    assert np.all(np.isfinite(grad))
