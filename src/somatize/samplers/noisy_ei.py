"""Noisy expected improvement: EI averaged over joint posterior draws of the evaluated points.

Under observation noise nobody knows the best value so far, so plain EI has no
bar to improve on. Letham, Karrer, Ottoni and Bakshy ("Constrained Bayesian
optimization with noisy experiments", Bayesian Analysis 2019) integrate that
uncertainty out: draw the noise-free values f_j at the evaluated points from
the GP's joint posterior; in draw j the incumbent is min f_j, and the
objective at a candidate x, given f(X) = f_j, is normal with

    mean  m(x) + Σ(x, X) Σ(X, X)⁻¹ (f_j - m(X))
    var   σ²(x) - Σ(x, X) Σ(X, X)⁻¹ Σ(X, x)

(Σ the posterior covariance), so its EI is the closed form against min f_j.
The acquisition is the average of those EIs over the draws. Conditioning the
posterior (rather than the prior) on f(X) is the same thing when X holds every
observation (the observations depend on x only through f(X)) and stays right
for a subset of them (the feasible points, with constraints on metrics).

With the draws written f_j = m(X) + C z_j (C C' = Σ(X, X)), the conditional
mean is m(x) + wᵀz_j and the variance σ²(x) - |w|², where w = C⁻¹ Σ(X, x) is
one matrix product with k(x, X_train) per candidate (`G` below): the fantasies
are the factorisation reused, not refitted GPs. The draws z_j are scrambled
Sobol' points mapped to normals, fixed for one suggestion, so the acquisition
is smooth in x and deterministic for a seed, and L-BFGS-B gets exact
gradients. Unlike EI against one plug-in bar, it knows that a point whose
value the draws pin down (next to evaluated points) cannot improve on the
draws' own best, while a point of real uncertainty can.

Everything is in the GP's normalised units internally (its `L_`, `alpha_`),
and the values returned are log NEI in the surrogate's units, as acquisition.py's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.linalg import cholesky, solve_triangular
from scipy.special import erfcx, log_ndtr, ndtri

from .acquisition import _LOG_SQRT_2PI, Posterior, _log_h

# Joint draws of the evaluated points' noise-free values per suggestion (a power of 2, for Sobol'
# balance). BoTorch's qNEI uses 128-512 Monte Carlo draws for a q-batch integral; here the integral
# over the candidate itself is in closed form, only the incumbent's uncertainty is sampled.
NEI_DRAWS = 128
# Relative jitter added to the posterior covariance at the evaluated points before its Cholesky
# factor: repeats and fantasies (told as nearly exact) make it singular. Raised by 100x until it factors.
NEI_JITTER = 1e-10


class NoisyEI:
    """log NEI at rows of skopt's transformed space, for a fitted GP and the rows `base` (indices into
    its training rows) whose noise-free values set each draw's incumbent."""

    def __init__(self, posterior: Posterior, base: np.ndarray, rng: np.random.Generator, draws: int = NEI_DRAWS):
        from scipy.stats import qmc

        self.posterior = posterior
        model = posterior.model
        train = np.asarray(model.X_train_, dtype=float)
        base = np.asarray(base, dtype=int)
        n, s = len(train), len(base)
        k_base = posterior._kernel(train[base])  # k(X_base, X_train), s × n, normalised units
        v = solve_triangular(model.L_, k_base.T, lower=True, check_finite=False)  # L⁻¹ k(X_train, X_base)
        prior = np.asarray(model.kernel_.diag(train[base]), dtype=float)
        cov = k_base[:, base] - v.T @ v
        cov = 0.5 * (cov + cov.T)
        np.fill_diagonal(cov, np.maximum(np.diag(cov), 0.0))
        scale = max(float(np.mean(prior)), 1e-300)
        root = None
        for attempt in range(5):
            try:
                root = cholesky(cov + NEI_JITTER * 100.0**attempt * scale * np.eye(s), lower=True)
                break
            except np.linalg.LinAlgError:
                continue
        if root is None:
            raise np.linalg.LinAlgError("the posterior covariance at the evaluated points does not factor")
        # w(x) = C⁻¹ Σ(X_base, x) = C⁻¹ (E_base - Vᵀ L⁻¹) k(X_train, x) = G k(X_train, x).
        select = np.zeros((s, n))
        select[np.arange(s), base] = 1.0
        inverse = solve_triangular(model.L_, np.eye(n), lower=True, check_finite=False)
        self._G = solve_triangular(root, select - v.T @ inverse, lower=True, check_finite=False)
        sobol = qmc.Sobol(s, scramble=True, seed=int(rng.integers(2**63 - 1)))  # `seed`: scipy 1.10 has no `rng`
        z = ndtri(np.clip(sobol.random(draws), 1e-12, 1 - 1e-12)).T  # s × draws
        mean_base = k_base @ np.ravel(model.alpha_)  # normalised
        self._std = float(np.ravel(model.y_train_std_)[0])
        self._offset = float(np.ravel(model.y_train_mean_)[0])
        # Each draw's incumbent, in the surrogate's units.
        self.incumbents = (mean_base[:, None] + root @ z).min(axis=0) * self._std + self._offset
        self._H = z.T @ self._G  # draws × n: wᵀz_j = (H k)_j
        self._log_draws = math.log(draws)

    def value(self, X: np.ndarray, prediction: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """log NEI at the rows of X; `prediction` is `Posterior.with_kernel(X)` where the caller has it
        (the sweep of the candidates, whose posterior was computed for the other acquisitions)."""
        mean, std, k = self.posterior.with_kernel(X) if prediction is None else prediction
        return self._log_nei(mean, std, k)[0]

    def value_and_gradient(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log NEI at the rows of X and its gradient (rows × columns)."""
        mean, std, dmean, dstd, k, dk = self.posterior.gradients_with_kernel(X)  # dk: rows × n × columns
        value, (z, s, log_terms, w, log_h, log_cdf) = self._log_nei(mean, std, k, with_cdf=True)
        # s² = std² - std_y² |w|², so ds = (std·dstd - std_y² wᵀdw) / s.
        dw = np.einsum("bnd,sn->bsd", dk, self._G)
        ds = (std[:, None] * dstd - self._std**2 * np.einsum("bs,bsd->bd", w, dw)) / s[:, None]
        ds = np.where((s > 1e-12)[:, None], ds, 0.0)
        dm = dmean[:, None, :] + self._std * np.einsum("bnd,jn->bjd", dk, self._H)  # rows × draws × columns
        slope = np.exp(log_cdf - log_h)  # d log h(z)/dz, as in acquisition_and_gradient
        dz = (-dm - z[:, :, None] * ds[:, None, :]) / s[:, None, None]
        term_grad = slope[:, :, None] * dz + (ds / s[:, None])[:, None, :]
        weights = np.exp(log_terms - (value + self._log_draws)[:, None])
        return value, np.einsum("bj,bjd->bd", weights, term_grad)

    def _log_nei(
        self, mean: np.ndarray, std: np.ndarray, k: np.ndarray, with_cdf: bool = False
    ) -> tuple[np.ndarray, Any]:
        w = k @ self._G.T  # rows × base
        s = np.sqrt(np.maximum(std**2 - self._std**2 * np.sum(w * w, axis=1), 0.0))
        s = np.maximum(s, 1e-12)
        m = mean[:, None] + self._std * (k @ self._H.T)  # rows × draws
        z = (self.incumbents[None, :] - m) / s[:, None]
        if not with_cdf:
            log_terms = np.log(s)[:, None] + _log_h(z)
            return _log_mean_exp(log_terms), (z, s, log_terms, w)
        log_h, log_cdf = _log_h_and_cdf(z)
        log_terms = np.log(s)[:, None] + log_h
        return _log_mean_exp(log_terms), (z, s, log_terms, w, log_h, log_cdf)


def _log_h_and_cdf(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """acquisition._log_h(z) and log Φ(z) together, the same values as computing them apart: the gradient
    needs both, and computing log Φ twice (once inside _log_h) was a third of a noisy run's local search."""
    clipped = np.clip(z, -1e6, None)
    log_h, log_cdf = np.empty_like(z), np.empty_like(z)
    near = clipped > -1.0
    zn = clipped[near]
    log_cdf[near] = log_ndtr(zn)
    log_h[near] = np.log(np.exp(-0.5 * zn * zn - _LOG_SQRT_2PI) + zn * np.exp(log_cdf[near]))
    zf = clipped[~near]
    log_h[~near] = -0.5 * zf * zf - _LOG_SQRT_2PI + np.log1p(zf * math.sqrt(math.pi / 2) * erfcx(-zf / math.sqrt(2)))
    log_cdf[~near] = log_ndtr(z[~near])
    return log_h, log_cdf


def _log_mean_exp(terms: np.ndarray) -> np.ndarray:
    """log of the mean of exp(terms) along each row; scipy's logsumexp cost 1.4 ms a call in the local
    search's one-row calls, a quarter of a 60-trial run."""
    top = np.max(terms, axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.mean(np.exp(terms - top[:, None]), axis=1))


def noisy_ei(model: Any, base: np.ndarray, rng: np.random.Generator) -> NoisyEI | None:
    """NoisyEI for a fitted GP, or None where the posterior at the evaluated points does not factor."""
    try:
        return NoisyEI(Posterior(model), base, rng)
    except np.linalg.LinAlgError:
        return None


class QuantileImprovement:
    """log expected quantile improvement (Picheny, Ginsbourger, Richet and Caplin 2013, "Quantile-based
    optimization of noisy computer experiments with tunable precision", Technometrics): the expected
    decrease, below the lowest posterior `z`-quantile (mean + z sd) at the evaluated points, of the
    quantile at x once x is evaluated once more with noise variance `tau2`.

    After that observation the variance at x is s'² = s²τ²/(s² + τ²), and the quantile there is
    normal beforehand, with mean m + z s' and sd s²/√(s² + τ²): a closed-form EI. It is the
    acquisition whose target is the recommendation's own (bayesian.RECOMMEND_Z), so a point near the
    recommended one, whose quantile another evaluation would lower, keeps a value NEI denies it."""

    def __init__(self, posterior: Posterior, base: np.ndarray, z: float, tau2: float):
        from .acquisition import acquisition_and_gradient

        self._ei = acquisition_and_gradient
        self.posterior = posterior
        self._z, self._tau2 = z, max(tau2, 1e-300)
        train = np.asarray(posterior.model.X_train_, dtype=float)[np.asarray(base, dtype=int)]
        mean, std = posterior(train)
        self.bar = float(np.min(mean + z * std))

    def _transformed(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = std**2 + self._tau2
        return mean + self._z * std * np.sqrt(self._tau2 / total), std**2 / np.sqrt(total)

    def value(self, X: np.ndarray) -> np.ndarray:
        return self._ei("EI", *self._transformed(*self.posterior(X)), self.bar)[0]

    def value_and_gradient(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std, dmean, dstd = self.posterior.gradients(X)
        qmean, qstd = self._transformed(mean, std)
        total = std**2 + self._tau2
        # d(s τ / √(s² + τ²))/ds = τ³ / (s² + τ²)^{3/2}; d(s² / √(s² + τ²))/ds = s (s² + 2τ²) / (s² + τ²)^{3/2}.
        tau = math.sqrt(self._tau2)
        dqmean = dmean + (self._z * tau**3 / total**1.5)[:, None] * dstd
        dqstd = (std * (std**2 + 2 * self._tau2) / total**1.5)[:, None] * dstd
        value, grad = self._ei("EI", qmean, qstd, self.bar, dqmean, dqstd)
        return value, grad


def quantile_improvement(model: Any, base: np.ndarray, z: float) -> QuantileImprovement:
    """QuantileImprovement for a fitted GP under noise; the next observation's noise is the GP's fitted
    noise at the best value (its level, in the surrogate's units)."""
    std = float(np.ravel(model.y_train_std_)[0])
    return QuantileImprovement(Posterior(model), base, z, float(model.noise_ or 0.0) * std**2)
