"""Probability of feasibility under constraints on metrics (SPEC §9), for model-based acquisitions.

A constraint on a metric (`latency_ms <= 50`) is known only after a trial,
so the Bayesian strategy models it: one Gaussian process per constraint on
its *margin* (constraints.Constraint.margin: b - a for `a <= b`, positive
inside), and the probability that a point is feasible is the product over
constraints of Φ(mean / sd) of those GPs (Gardner et al. 2014, "Bayesian
optimization with inequality constraints"). The constraints are modelled as
independent, as there. Each GP's prior mean is a trend chosen by the evidence
(TRENDS), so that a margin is extrapolated beyond the points told.

`with_feasibility` is the one place where it meets an acquisition: it adds
log PoF (and its gradient) to a log-acquisition value, which is the
acquisition multiplied by the probability of feasibility. Before any feasible
trial exists, a caller passes zeros for the acquisition, so the search
maximises the probability of feasibility alone. Any acquisition in log form
(log EI, log PI here; a log hypervolume improvement of a multi-objective
search) can go through it.

All work happens in skopt's transformed space (every column in [0, 1]), as in
acquisition.py; the GPs are scikit-learn's, fitted on standardised margins.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import log_ndtr

from .acquisition import Posterior

# The margin GP's noise term (of the standardised margins): a latency measured twice
# differs, a model's size does not, so it is fitted between these bounds.
NOISE_BOUNDS = (1e-6, 1.0)
# Length scales in the unit cube, as bayesian.py's objective GP.
LENGTH_SCALE_BOUNDS = (0.01, 100.0)
# Hyperparameter searches from a random start, besides the last fitted values, at every fit.
# Measured (benchmarks/constrained.py, seeds 0-9, 60 trials): with the restart only at the first
# fit, as the objective GP does, a suggestion at 60 trials took 0.21 s instead of 0.32 s, but
# Hartmann6 with x0 + ... + x5 <= 1.5 ended at median regret 0.177 instead of 0.063 (5 of 10
# seeds worse, none better), while Townsend's went from 0.032 to 0.0067: the restart was kept.
RESTARTS = 1
# The margin's prior mean (universal kriging): a constant, a plane or a quadratic in the unit
# cube, whichever has the highest log marginal likelihood less ½·log n per coefficient (BIC). A
# GP with a constant mean reverts, far from the points told, to their mean: mostly feasible points
# once the search has found the feasible region, so the edges of the space look feasible until
# tried. A latency or a model's size grows with the parameters that set it (a plane); a feasible
# region inside the space (a disk, a cardioid) is a bowl. PoF's log loss at 3,000 random points,
# at the 40-trial histories of seeds 0-4 (in brackets: near the boundary, |margin| < 0.1 sd), a
# constant mean against the chosen one: Townsend 0.126 / 0.090 (0.650 / 0.554), Branin in a disk
# 0.011 / 0.000 (0.138 / 0.005), Hartmann6 with x0 + ... + x5 <= 1.5 0.004 / 0.000 (0.232 /
# 0.006), Gardner 0.186 / 0.192 (0.787 / 0.798; a product of cosines). A plane alone: Hartmann6
# 0.000, the others as the constant; a warp of the margins, sign(m)·log1p(|m| / median |m|),
# was worse near every boundary (overall too, but on Townsend: Branin 0.094, Hartmann6 0.072).
# In benchmarks/constrained.py (60 trials, seeds 0-19) median regret went from 0.0013 to 0.0006 on
# Townsend (runs in its local optimum: 5 of 20 to 1) and from 0.275 to 0.14 on Hartmann6-l1; Gardner
# and Branin stayed at 1e-10 / 1e-6 (before the worst-value prior mean of bayesian.py's noise-free
# GP was merged; with it, seeds 0-9: Townsend 0.00133, Hartmann6-l1 0.0677).
# A trend is tried once there are TREND_ROWS_PER_COEFFICIENT points per coefficient: a least-squares
# fit through fewer says little about the trend, and BIC's penalty is then no guide.
TRENDS = ("constant", "plane", "quadratic")
TREND_ROWS_PER_COEFFICIENT = 2
# The trend is chosen again (every admissible one fitted) once the margins told have grown by this
# fraction since the last choice, as bayesian.RESEARCH_AFTER schedules the objective GP's search;
# in between only the chosen trend's GP is fitted.
RECHOOSE_AFTER = 0.1
# What a search of a GP's log-hyperparameters is: called as scikit-learn's `optimizer` is, built
# for a number of length scales. bayesian.py passes its own, with the objective GP's priors.
HyperparameterSearch = Callable[[int], Callable[..., Any]]
# Candidates of the acquisition search scattered around the best feasible point (`near_incumbent`),
# beside the uniform ones, each at its own spread drawn log-uniformly in NEAR_SPREADS (in the unit
# cube): from a step that refines the point to one that crosses a basin. Set once, not tuned (as many
# as multiobjective.NEAR_LIMIT). Measured (benchmarks/constrained.py, 60 trials, seeds 0-19): Hartmann6
# with x0 + ... + x5 <= 1.5, median regret 0.0677 before, 0.0076 with them (seeds 0-9: 0.0677 to
# 0.00029; 10-19: 0.078 to 0.078); 13 of 20 runs in the optimum's basin (regret below 0.02), 9 before.
# CPU per 60-trial run unchanged (median 7.5 s before, 7.1 s after). Not kept (BENCHMARKS.md, fourth
# round): candidates also on the predicted boundary between feasible and infeasible points told (median
# 0.0695 over the 20 seeds), or also around every feasible point told (seeds 2, 16, 17 unchanged, 12 worse).
NEAR_POINTS = 512
NEAR_SPREADS = (1e-3, 0.3)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class _Standardised:
    """What Posterior reads of a fitted GP, with the margins' standardisation made explicit
    (scikit-learn keeps its own private), so mean and sd come back in margin units."""

    def __init__(self, gp: Any, mean: float, std: float, alpha: np.ndarray | None = None):
        self.kernel_ = gp.kernel_
        self.X_train_ = gp.X_train_
        self.alpha_ = gp.alpha_ if alpha is None else alpha
        self.L_ = gp.L_
        self.y_train_mean_ = mean
        self.y_train_std_ = std


def _design(X: np.ndarray, trend: str) -> np.ndarray:
    """The regressors of a margin's trend at the rows of X, about the cube's centre."""
    u = X - 0.5
    columns = [np.ones((len(X), 1))]
    if trend in ("plane", "quadratic"):
        columns.append(u)
    if trend == "quadratic":
        i, k = np.triu_indices(X.shape[1])
        columns.append(u[:, i] * u[:, k])
    return np.hstack(columns)


def _design_gradient(X: np.ndarray, trend: str) -> np.ndarray:
    """The regressors' gradients at the rows of X: rows × regressors × columns."""
    rows, n = X.shape
    u = X - 0.5
    slopes = [np.zeros((rows, 1, n))]
    if trend in ("plane", "quadratic"):
        slopes.append(np.broadcast_to(np.eye(n), (rows, n, n)))
    if trend == "quadratic":
        i, k = np.triu_indices(n)
        d = np.zeros((rows, len(i), n))
        d[:, np.arange(len(i)), i] += u[:, k]
        d[:, np.arange(len(i)), k] += u[:, i]
        slopes.append(d)
    return np.concatenate(slopes, axis=1)


def _coefficients(n: int, trend: str) -> int:
    return {"constant": 1, "plane": n + 1, "quadratic": 1 + n + n * (n + 1) // 2}[trend]


class _Trended:
    """A margin's posterior: its trend (in margin units) plus the GP's posterior of what the trend leaves."""

    def __init__(self, posterior: Posterior, trend: str, coefficients: np.ndarray, std: float):
        self.posterior = posterior
        self.has_gradients = posterior.has_gradients
        self.trend = trend
        self._coefficients = np.asarray(coefficients, dtype=float) * std

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.posterior(X)
        return mean + _design(X, self.trend) @ self._coefficients, std

    def gradients(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mean, std, dmean, dstd = self.posterior.gradients(X)
        slope = np.einsum("rpc,p->rc", _design_gradient(X, self.trend), self._coefficients)
        return mean + _design(X, self.trend) @ self._coefficients, std, dmean + slope, dstd


class FeasibilityModel:
    """One GP per constraint on its margin; `log_pof` is log P(every constraint holds) at points.

    `fit` takes the transformed points told so far and, per point, the margin
    of each constraint (None where unknown: a failed trial, a proposal that
    never ran). A constraint with no known margin yet counts as certain to hold.
    """

    def __init__(self, n_constraints: int, seed: int | None = None, search: HyperparameterSearch | None = None):
        self.n_constraints = n_constraints
        self.seed = seed
        # Without priors, maximum likelihood on a few margins picks length scales far below the
        # data's spacing and the model sees only its mean (PoF flat): the caller's search has them.
        self.search = search
        self._posteriors: list[_Trended | None] = [None] * n_constraints
        self._kernels: dict[tuple[int, str], Any] = {}  # last fitted per constraint and trend: the next search's start
        self._trends: list[str | None] = [None] * n_constraints  # each constraint's chosen trend
        self._chosen_at = [0] * n_constraints  # margins told at that choice
        self._fitted_rows = -1

    def fit(self, X: np.ndarray, margins: Sequence[Sequence[float | None] | None]) -> None:
        if len(margins) == self._fitted_rows:
            return
        X = np.asarray(X, dtype=float)
        for j in range(self.n_constraints):
            rows = [i for i, m in enumerate(margins) if m is not None and m[j] is not None]
            if not rows:
                self._posteriors[j] = None
                continue
            y = np.array([margins[i][j] for i in rows], dtype=float)  # type: ignore[index]
            self._posteriors[j] = self._fit_one(j, X[rows], y)
        self._fitted_rows = len(margins)

    def _fit_one(self, j: int, X: np.ndarray, y: np.ndarray) -> _Trended:
        """The margin GP of constraint j, with the trend of best evidence (TRENDS)."""
        from scipy.linalg import cho_solve

        mean = float(np.mean(y))
        std = float(np.std(y))
        if not math.isfinite(std) or std <= 0:
            # One point, or every margin alike: the spread of a margin is unknown, so take its own size.
            std = max(abs(mean), 1.0)
        z = (y - mean) / std
        rows, n = X.shape
        chosen = self._trends[j]
        if chosen is None or rows - self._chosen_at[j] >= RECHOOSE_AFTER * rows:
            admissible = [t for t in TRENDS
                          if t == "constant" or rows >= TREND_ROWS_PER_COEFFICIENT * _coefficients(n, t)]
            self._chosen_at[j] = rows
        else:
            admissible = [chosen]
        fits = []
        for trend in admissible:
            size = _coefficients(n, trend)
            F = _design(X, trend)
            # The GP's hyperparameters are searched on what the trend fitted by least squares leaves.
            coefficients = np.linalg.lstsq(F, z, rcond=None)[0] if trend != "constant" else np.zeros(1)
            gp = self._fit_gp((j, trend), X, z - F @ coefficients)
            evidence = float(gp.log_marginal_likelihood_value_) - 0.5 * size * math.log(rows)
            fits.append((evidence, -size, trend, gp, F))
        _, _, trend, gp, F = max(fits, key=lambda f: (f[0], f[1]))  # a tie: the fewer coefficients
        self._trends[j] = trend
        if trend == "constant":
            return _Trended(Posterior(_Standardised(gp, mean, std)), trend, np.zeros(1), std)
        # The trend again by generalised least squares under the fitted covariance: the points
        # clustered where the search went weigh as the little they tell about it.
        KF = cho_solve((gp.L_, True), F)
        gram = F.T @ KF
        gram += 1e-9 * np.trace(gram) / len(gram) * np.eye(len(gram))  # one-hot columns repeat the intercept
        coefficients = np.linalg.solve(gram, KF.T @ z)
        alpha = cho_solve((gp.L_, True), z - F @ coefficients)
        return _Trended(Posterior(_Standardised(gp, mean, std, alpha)), trend, coefficients, std)

    def _fit_gp(self, key: tuple[int, str], X: np.ndarray, z: np.ndarray) -> Any:
        """A GP fitted to standardised values z, its search started from the last fit under `key`."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        kernel = self._kernels.get(key)
        if kernel is None:
            n = X.shape[1]
            kernel = ConstantKernel(1.0, (0.01, 1000.0)) * Matern(
                np.ones(n), [LENGTH_SCALE_BOUNDS] * n, nu=2.5
            ) + WhiteKernel(1e-3, NOISE_BOUNDS)
        optimizer: Any = "fmin_l_bfgs_b" if self.search is None else self.search(X.shape[1])
        gp = GaussianProcessRegressor(
            kernel=kernel, normalize_y=False, n_restarts_optimizer=RESTARTS, random_state=self.seed, optimizer=optimizer
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X, z)
        self._kernels[key] = gp.kernel_
        return gp

    @property
    def fitted(self) -> bool:
        return any(p is not None for p in self._posteriors)

    def log_pof(self, X: np.ndarray, gradient: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """log P(feasible) at the rows of X, and its gradient (rows × columns) when asked and available."""
        X = np.asarray(X, dtype=float)
        total = np.zeros(len(X))
        grad = np.zeros_like(X) if gradient else None
        for posterior in self._posteriors:
            if posterior is None:
                continue
            if gradient and posterior.has_gradients:
                mean, std, dmean, dstd = posterior.gradients(X)
            else:
                (mean, std), dmean, dstd = posterior(X), None, None
            std = np.maximum(std, 1e-12)
            z = mean / std
            value = log_ndtr(z)
            total += value
            if grad is not None and dmean is not None:
                # d log Φ(z) = φ(z)/Φ(z) dz, z = m/s, dz = (dm - z ds)/s
                slope = np.exp(-0.5 * z * z - _LOG_SQRT_2PI - value)
                grad += slope[:, None] * (dmean - z[:, None] * dstd) / std[:, None]
        return total, grad

    def probability(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self.log_pof(X)[0])


def near_incumbent(incumbent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Candidates for the acquisition search around the best feasible point (rows in the unit cube).

    A constrained optimum usually lies on the boundary of the feasible region,
    often where it meets faces of the box, and the best point found creeps
    along it. Among uniform candidates few are feasible where the region is
    small (Hartmann6 with x0 + ... + x5 <= 1.5: 1.6% of the cube, some 30 of
    2,048), and the incumbent itself is a dead start for a noise-free GP (no
    deviation there, log EI -inf and no gradient), so the search could not
    leave a corner it had reached. Points scattered around the incumbent at many
    spreads give the local searches starts on the boundary next to it.
    """
    low, high = NEAR_SPREADS
    spreads = np.exp(rng.uniform(math.log(low), math.log(high), size=(NEAR_POINTS, 1)))
    return np.clip(incumbent + spreads * rng.standard_normal((NEAR_POINTS, len(incumbent))), 0.0, 1.0)


def with_feasibility(
    model: FeasibilityModel | None, X: np.ndarray, log_value: np.ndarray | None, grad: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """An acquisition weighted by the probability of feasibility: log a(x) + log PoF(x).

    `log_value` is the acquisition's logarithm at the rows of X (log EI, log
    PI; for a non-log acquisition such as LCB the sum is a penalty of -log PoF
    in its units), with `grad` its gradient when the caller wants one back.
    None for `log_value` (no feasible trial yet) leaves PoF alone to maximise.
    Without a model (no constraint on metrics) the acquisition is returned as it is.
    """
    if log_value is None:
        log_value = np.zeros(len(X))
        grad = None if grad is None else np.zeros_like(grad)
    if model is None or not model.fitted:
        return log_value, grad
    log_pof, dlog_pof = model.log_pof(X, gradient=grad is not None)
    if grad is not None and dlog_pof is not None:
        grad = grad + dlog_pof
    return log_value + log_pof, grad
