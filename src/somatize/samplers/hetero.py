"""Observation noise whose level varies over the search space: a log-linear noise shape (issue 16).

The Bayesian sampler's noise term is one level for the whole space (times the
warp's weights, noise.py). Real tuning objectives are often noisier in one
region than another: the log loss of extra trees on wine, re-split at every
trial, has a standard deviation of 0.04-0.08 across splits with one-sample
leaves and no bootstrap (a fold whose near-pure leaves put probability ~0 on a
true class), and 0.012-0.016 a step away in min_samples_leaf or with
bootstrap (BENCHMARKS.md, sixth round of issue 16). With one level for all,
a lucky draw in the noisy region looks as trustworthy as one elsewhere.

`NoiseShape` lets the log of the noise variance vary linearly with the GP's
(unit-cube) inputs, as a noise term of a few parameters rather than a second
GP (the most-likely heteroscedastic GP of Kersting et al. 2007 fits a GP to
log squared residuals; with a few dozen trials that second model is mostly
noise itself):

    noise variance at x = level · weight(x) · exp(βᵀ(x - centre)),

`weight` the warp's (noise.py) and `centre` the point `noise: auto` repeated,
so that `level` stays the noise there, which is what the repeats measure
(bayesian._noise_evidence bounds it). `fit` estimates (level, β) by maximum
marginal likelihood with the fitted GP's signal covariance held, and returns a
shape only where a likelihood-ratio test against β = 0 (χ² with one degree of
freedom per varying column, at the 5% level) rejects a constant noise; so a
study whose noise is the same everywhere (additive Gaussian noise) keeps the
model it had.

numpy and scipy only: the GP itself is bayesian.py's (skopt's), which applies
the shape as per-row weights of its noise term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import noise as obs_noise

# The shape is kept where twice the log-likelihood it gains passes the 95% point of χ² with one degree of
# freedom per varying column: the conventional 5% level, as the lattice offsets use (not tuned).
SHAPE_LEVEL = 0.95
# Prior on each slope β_j: Normal(0, 2²), weak: one prior sd lets the noise variance change by a factor
# e² ≈ 7.4 from the centre to a face of the unit cube. It keeps a slope finite where the data leave it
# unbounded (every point on one side noise-free).
SLOPE_PRIOR_SD = 2.0
# Bounds of a slope, so that no factor over the unit cube over- or underflows.
SLOPE_BOUND = 20.0


@dataclass(frozen=True)
class NoiseShape:
    """exp(βᵀ(x - centre)): each row's noise variance relative to the noise at `centre`."""

    centre: np.ndarray
    slopes: np.ndarray
    statistic: float  # twice the log-likelihood gained over a constant noise (the test's statistic)

    def factors(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        return np.exp(np.clip((X - self.centre) @ self.slopes, -50.0, 50.0))


def _negative_loo(
    residuals: np.ndarray, signal: np.ndarray, base: np.ndarray, Z: np.ndarray, theta: np.ndarray
) -> tuple[float, np.ndarray]:
    """-Σ log N(residual_i; 0, signal_i + noise_i), noise = exp(theta[0]) · base · exp(Z theta[1:]), and its
    gradient in theta."""
    noise = math.exp(theta[0]) * base * np.exp(np.clip(Z @ theta[1:], -50.0, 50.0))
    total = np.maximum(signal + noise, 1e-300)
    value = 0.5 * float(np.sum(np.log(total) + residuals**2 / total))
    per_row = 0.5 * (1.0 - residuals**2 / total) * noise / total  # d value / d log noise_i
    return value, np.concatenate([[per_row.sum()], Z.T @ per_row])


def loo(L: np.ndarray, alpha: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each training value's leave-one-out residual and the variance of the noise-free prediction there,
    from a fitted GP's Cholesky factor `L` and weights `alpha` and its per-row `noise` (normalised units;
    Rasmussen & Williams 2006 §5.4.2)."""
    from scipy.linalg import solve_triangular

    inverse = solve_triangular(L, np.eye(len(L)), lower=True, check_finite=False)
    precision = np.sum(inverse**2, axis=0)  # the diagonal of K⁻¹
    residuals = np.ravel(alpha) / precision
    return residuals, np.maximum(1.0 / precision - noise, 0.0)


def fit(
    residuals: np.ndarray, signal: np.ndarray, base: np.ndarray, level: float, X: np.ndarray, centre: np.ndarray
) -> NoiseShape | None:
    """The noise shape that best explains a constant-noise GP's leave-one-out residuals, or None where a
    constant noise explains them as well (the likelihood-ratio test of SHAPE_LEVEL on their density).

    The marginal likelihood with the GP's signal held cannot show it: a GP fitted with one noise level
    explains each large value in the noisy region as structure (a short bump of its own), and what is left
    for the noise is alike everywhere. Its leave-one-out residual there is large, as the bump rests on that
    one value. So the shape is fitted to the leave-one-out predictive density (Sundararajan and Keerthi
    2001), with the prediction's own variance `signal` held and the noise `level` · `base` · shape at each
    row (`X`, unit cube; the shape is 1 at `centre`); the caller then refits the GP with it and keeps it
    only if the marginal likelihood agrees.
    """
    from scipy.optimize import minimize

    varying = np.flatnonzero(np.ptp(X, axis=0) > 0) if len(X) else np.empty(0, dtype=int)
    if len(varying) == 0 or len(residuals) <= len(varying) + 2:
        return None
    Z = X[:, varying] - centre[varying]
    log_bounds = (math.log(obs_noise.NOISE_FLOOR), math.log(obs_noise.NOISE_CEILING))
    start = min(max(math.log(max(level, obs_noise.NOISE_FLOOR)), log_bounds[0]), log_bounds[1])
    zeros = np.zeros(len(varying))

    def constant(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = _negative_loo(residuals, signal, base, Z, np.concatenate([theta, zeros]))
        return value, grad[:1]

    def shaped(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = _negative_loo(residuals, signal, base, Z, theta)
        slopes = theta[1:]
        grad = grad.copy()
        grad[1:] += slopes / SLOPE_PRIOR_SD**2
        return value + 0.5 * float(np.sum(slopes**2)) / SLOPE_PRIOR_SD**2, grad

    flat = minimize(constant, [start], jac=True, method="L-BFGS-B", bounds=[log_bounds])
    bounds = [log_bounds] + [(-SLOPE_BOUND, SLOPE_BOUND)] * len(varying)
    sloped = minimize(shaped, np.concatenate([flat.x, zeros]), jac=True, method="L-BFGS-B", bounds=bounds)
    if not (math.isfinite(flat.fun) and math.isfinite(sloped.fun)):
        return None
    gained = 2.0 * (float(flat.fun) - _negative_loo(residuals, signal, base, Z, sloped.x)[0])
    if gained <= critical(len(varying)):
        return None
    slopes = np.zeros(X.shape[1])
    slopes[varying] = sloped.x[1:]
    return NoiseShape(np.asarray(centre, dtype=float), slopes, gained)


def critical(slopes: int) -> float:
    """The likelihood-ratio statistic a shape of `slopes` free slopes must pass (SHAPE_LEVEL)."""
    from scipy.stats import chi2

    return float(chi2.ppf(SHAPE_LEVEL, slopes))
