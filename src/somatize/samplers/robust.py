"""A Student-t observation model for the Bayesian sampler's GP under noise (issue 16, fifth round).

Real objectives' noise is often heavy-tailed: the cross-validated log loss of
a random forest on a new split comes back, now and then, many times further
from its expectation than the rest of its noise (BENCHMARKS.md: two trials at
0.309 and 0.320 where the five-split value is 0.126, 13 sds of the rest away).
Under a Gaussian likelihood such a value drags the posterior mean of its
neighbourhood and inflates the fitted noise, which flattens every difference
the model could otherwise tell apart.

The Student-t likelihood with ν degrees of freedom is a Gaussian scale
mixture: y_i ~ N(f(x_i), σ² / u_i) with u_i ~ Gamma(ν/2, ν/2). The E-step
gives each observation its expected precision scale E[u_i], and the M-step
is the ordinary weighted GP: observation i's noise variance is σ² / E[u_i],
which `ObservationNoise`'s per-row weights already carry. The weights are kept
between fits (`BayesianSampler._robust`) and updated after each one, so the
hyperparameter searches that the sampler runs anyway are the M-step over the
history; between searches the E-step and the conditioning on new weights (one
factorisation each) iterate to a fixed point. Two E-steps (MODE):

- "posterior", variational EM (Tipping and Lawrence 2005): with the GP's
  posterior over f at the told points (mean m_i, variance v_i),
  E[u_i] = (ν + 1) / (ν + ((y_i - m_i)² + v_i) / σ²), and ν by ECME (Liu
  and Rubin 1995: the t likelihood of those residuals maximised over ν);
- "cavity": the same posterior of u_i, by quadrature, but given what the
  other observations say about f(x_i) (its leave-one-out prediction, the
  cavity of expectation propagation), which a point the GP bends to fit cannot
  mask; ν by the leave-one-out predictive density.

Either way ν has the Gamma(2, 0.1) prior of Juárez and Steel (2010) (mode 10,
mean 20), under which Gaussian noise keeps weights near 1.

Only a GP with a noise term gets here (`noise: auto` once a repeat differed,
a finite space, a fixed `noise:`); a noise-free GP is untouched.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Prior on ν: Gamma(shape, rate), Juárez and Steel (2010), the default of the Stan prior-choice
# recommendations for a Student-t's degrees of freedom; bounds of its search. Past the upper bound the
# t is Gaussian to within a few percent of any weight.
NU_PRIOR_SHAPE = 2.0
NU_PRIOR_RATE = 0.1
NU_BOUNDS = (1.0, 100.0)
# E-step / conditioning rounds per fit, and the change of every log weight below which they stop.
EM_STEPS = 8
# Which residual the E-step reads: "cavity", each value against the others' prediction of it (leave-one-out,
# as expectation propagation's cavity; `cavities`, `e_step`, ν by leave-one-out density), or "posterior",
# against the posterior over f given every value itself (variational EM, Tipping and Lawrence 2005;
# `posterior_squares`, `posterior_e_step`, ν by ECME). Measured both ways (BENCHMARKS.md, fifth round of
# issue 16): neither was kept.
MODE = "cavity"
EM_TOLERANCE = 1e-3
# The integral over each observation's precision scale u is a trapezoid rule in log u. The Gamma(ν/2, ν/2)
# density of u has, in log u, a width of at least sqrt(2 / ν) = 0.14 at the largest ν; nodes 0.09 apart
# integrate such a smooth bump to far below the weights' tolerance. The low end reaches the precision scale
# of a residual 1,000 noise sds away.
_LOG_U = np.linspace(-14.0, 4.0, 201)


def cavities(model: Any, noise: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each told row's residual from its leave-one-out prediction of f, and that prediction's variance, over
    `noise` (its Gaussian noise variance before the robust weight, in the GP's normalised units): what the
    other observations say about f at the row (its cavity, in the terms of expectation propagation).

    With K the fit's training covariance (its noise variances noise / weights included; K⁻¹ is the
    GP's `K_inv_`) and α = K⁻¹y (`alpha_`), the prediction of y_i from the others has mean
    y_i - α_i / K⁻¹_ii and variance 1 / K⁻¹_ii (Rasmussen and Williams 2006, §5.4.2), of which
    noise_i / weights_i is the row's own noise.
    """
    precision = np.diag(model.K_inv_)
    residual = np.ravel(model.alpha_) / precision
    variance = np.maximum(1.0 / precision - noise / weights, 0.0)
    return residual**2 / noise, variance / noise


def _log_terms(squares: np.ndarray, spread: np.ndarray, nu: float) -> np.ndarray:
    """log [p(u | ν) u · N(r; 0, spread + 1/u)] on the log-u nodes, per row (rows × nodes), in noise units."""
    from scipy.special import gammaln

    u = np.exp(_LOG_U)
    half = nu / 2
    prior = half * math.log(half) - gammaln(half) + half * _LOG_U - half * u  # Gamma(ν/2, ν/2) in log u
    variance = spread[:, None] + 1.0 / u[None, :]
    return prior[None, :] - 0.5 * (np.log(2 * math.pi * variance) + squares[:, None] / variance)


def loo_log_density(squares: np.ndarray, spread: np.ndarray, nu: float) -> float:
    """Σ_i log p(y_i | the others) under the Student-t observation model with ν degrees of freedom."""
    from scipy.special import logsumexp

    step = float(_LOG_U[1] - _LOG_U[0])
    return float(np.sum(logsumexp(_log_terms(squares, spread, nu), axis=1) + math.log(step)))


def fit_nu(squares: np.ndarray, spread: np.ndarray) -> float:
    """The ν of highest leave-one-out predictive density (with the prior) for the cavities of `cavities`."""
    from scipy.optimize import minimize_scalar

    def negative(log_nu: float) -> float:
        nu = math.exp(log_nu)
        prior = (NU_PRIOR_SHAPE - 1) * log_nu - NU_PRIOR_RATE * nu + log_nu  # Gamma density in log ν
        return -(loo_log_density(squares, spread, nu) + prior)

    low, high = (math.log(b) for b in NU_BOUNDS)
    result = minimize_scalar(negative, bounds=(low, high), method="bounded", options={"xatol": 1e-2})
    return float(math.exp(result.x))


def e_step(squares: np.ndarray, spread: np.ndarray, nu: float) -> np.ndarray:
    """Each observation's expected precision scale E[u_i | y_i, the others], by the trapezoid rule in log u."""
    from scipy.special import softmax

    return softmax(_log_terms(squares, spread, nu), axis=1) @ np.exp(_LOG_U)


def posterior_squares(model: Any, noise: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """E[(y_i - f_i)²] / noise_i under the GP's posterior over f at each told row (variational EM's E-step).

    With D the fit's noise variances (noise / weights) and K⁻¹ the GP's `K_inv_`, α = K⁻¹y: the posterior
    over f at the told rows has y - m = Dα and variance D - D² diag(K⁻¹), so E[(y - f)²] = D²α² + D - D² diag(K⁻¹).
    """
    D = noise / weights
    alpha = np.ravel(model.alpha_)
    expected = D * D * alpha * alpha + D - D * D * np.diag(model.K_inv_)
    return np.maximum(expected, 0.0) / noise


def fit_nu_posterior(squares: np.ndarray) -> float:
    """ECME's ν step: the MAP ν of a unit-scale Student-t for residuals whose squares are `squares`."""
    from scipy.optimize import minimize_scalar
    from scipy.special import gammaln

    n = len(squares)

    def negative(log_nu: float) -> float:
        nu = math.exp(log_nu)
        likelihood = n * (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi))
        likelihood -= (nu + 1) / 2 * float(np.sum(np.log1p(squares / nu)))
        prior = (NU_PRIOR_SHAPE - 1) * log_nu - NU_PRIOR_RATE * nu + log_nu
        return -(likelihood + prior)

    low, high = (math.log(b) for b in NU_BOUNDS)
    result = minimize_scalar(negative, bounds=(low, high), method="bounded", options={"xatol": 1e-2})
    return float(math.exp(result.x))


def posterior_e_step(squares: np.ndarray, nu: float) -> np.ndarray:
    """E[u_i] = (ν + 1) / (ν + E[(y_i - f_i)²] / σ_i²), the E-step of variational EM."""
    return (nu + 1.0) / (nu + squares)
