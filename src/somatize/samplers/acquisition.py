"""Acquisition functions over a fitted surrogate, and their maximisation in batches.

skopt's own acquisition search asks the model about one point at a time (its
L-BFGS runs call `predict` for a single row, and the GP's `predict` then does
an O(n²) einsum per call): about 14,000 calls per 50-trial study, most of a
suggestion's time. Here every step asks about all its points at once:

1. `ACQ_POINTS` random points of the space, plus the best point evaluated so
   far (with constraints on metrics, and points scattered around it:
   feasibility.near_incumbent), scored in one batch;
2. L-BFGS-B from the best of them, the incumbent and a few drawn with
   probability growing with their acquisition value, over the real and
   integer columns, with exact gradients of the GP's mean and deviation;
3. a coordinate sweep over the integer and categorical dimensions, which the
   continuous search only relaxes, one batch per dimension.

The scheme (2,048 candidates, a handful of local searches including one from
the incumbent, log EI) follows Optuna's GP sampler, which benchmarks/compare.py
measures against.

All work happens in skopt's transformed space (every column in [0, 1]).
Acquisition values are "higher is better"; expected improvement and
probability of improvement are taken as logarithms, which keeps their
gradients alive far from the incumbent where the plain values underflow to 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg.lapack import dtrtrs
from scipy.optimize import minimize
from scipy.special import erfcx, log_ndtr

if TYPE_CHECKING:
    from .feasibility import FeasibilityModel

# Exploration margin of EI and PI, in the surrogate's units. skopt's default
# 0.01 is large next to the differences the warped values have near the best
# (bayesian.WARP_Y): median Branin regret after 50 trials (6 seeds) fell from
# 0.0046 to 0.00034 without it, in a comparison made before the other changes. KAPPA is skopt's width of LCB.
XI = 0.0
KAPPA = 1.96
# Random candidates scored per suggestion, and local searches started from them.
ACQ_POINTS = 2048
LOCAL_STARTS = 5
LOCAL_ITERATIONS = 50
LOCAL_GTOL = 1e-4
# Kernel rows computed exactly (see Posterior._kernel); larger batches use a matrix product.
EXACT_ROWS = 64
# Mixture searches (AcquisitionSearch._local_mixture): the share of the mixture's EI above which its leading part
# stands for it at the best end point, so that the mixture's own climb is skipped; 1 - bayesian.MIXTURE_FLOOR, the
# weight below which a whole variant is left out.
LEADING_SHARE = 0.95
# Numbers (rows × observations × columns) of one block of the additive kernel in Posterior._kernel: 256 KB,
# within a core's cache; blocks of 64-128 rows at 60 × 6 were the fastest, 1.9-2.3x one block of 2,049.
ADDITIVE_BLOCK = 32768
# Integer dimensions with at most this many values are swept whole; wider
# ones try the neighbours within NEIGHBOURS of the current value.
SWEEP_ALL = 32
NEIGHBOURS = 2
# skopt's learning rate for the gp_hedge portfolio.
HEDGE_ETA = 1.0
KINDS = ("EI", "PI", "LCB")

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_h(z: np.ndarray) -> np.ndarray:
    """log(φ(z) + z·Φ(z)), the log of expected improvement per unit of σ, stable for any z."""
    z = np.clip(z, -1e6, None)
    near = z > -1.0
    if near.all():  # (as below without the masks: a local search's single point, near its incumbent)
        return np.log(np.exp(-0.5 * z * z - _LOG_SQRT_2PI) + z * np.exp(log_ndtr(z)))
    out = np.empty_like(z)
    zn = z[near]
    out[near] = np.log(np.exp(-0.5 * zn * zn - _LOG_SQRT_2PI) + zn * np.exp(log_ndtr(zn)))
    # Far below: Φ(z) = φ(z)·√(π/2)·erfcx(-z/√2), so φ + zΦ = φ·(1 + z·√(π/2)·erfcx(-z/√2)).
    zf = z[~near]
    out[~near] = -0.5 * zf * zf - _LOG_SQRT_2PI + np.log1p(zf * math.sqrt(math.pi / 2) * erfcx(-zf / math.sqrt(2)))
    return out


def transform(space: Any, X: Any) -> np.ndarray:
    """skopt's `space.transform(X)` (X: rows of points of the space), without its loop over every
    element of X, which asked `space.n_dims` once per element: 2,048 rows of 3 reals took 1.75 ms,
    0.57 ms this way. The same column lists go through the same dimension transforms."""
    return _side_by_side([dim.transform([row[j] for row in X]) for j, dim in enumerate(space.dimensions)], len(X))


def random_points(space: Any, n: int, seed: int) -> np.ndarray:
    """`transform(space, space.rvs(n_samples=n, random_state=seed))` for a space without a constraint:
    the same draws from the same generator, dimension by dimension, each column transformed as it was
    drawn instead of transposed into rows and gathered back: 2,048 points of a 4-dimension mixed space
    took 11.4 ms, 6.8 ms this way."""
    assert space.constraint is None, "skopt filters the draws of a constrained space"
    rng = np.random.RandomState(seed)  # skopt's check_random_state for an int seed
    return _side_by_side([dim.transform(dim.rvs(n_samples=n, random_state=rng)) for dim in space.dimensions], n)


def _side_by_side(columns: list[Any], rows: int) -> np.ndarray:
    """Each dimension's transformed values (a dimension may take several columns) as one rows × columns array."""
    return np.hstack([np.asarray(c).reshape((rows, -1)) for c in columns])


def _solve_triangular(L: np.ndarray, B: np.ndarray, lower: bool) -> np.ndarray:
    """scipy.linalg.solve_triangular(L, B, lower=lower, check_finite=False) for float64 arrays, as the
    same LAPACK call without the wrappers (batching, array-API and input checks) that cost more than
    the solve at a few dozen rows: 7,000 calls a 60-trial run. Like scipy, a C-ordered L is handed
    to trtrs transposed (it reads Fortran order), the transposed system solved."""
    if L.flags.f_contiguous:
        x, info = dtrtrs(L, B, lower=lower)
    else:
        x, info = dtrtrs(L.T, B, lower=not lower, trans=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular solve failed (LAPACK trtrs info {info})")
    return x


def acquisition(kind: str, mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """The acquisition value (higher is better) of predictions `mean`, `std` of a loss whose best is `best`."""
    return acquisition_and_gradient(kind, mean, std, best)[0]


def acquisition_and_gradient(
    kind: str, mean: np.ndarray, std: np.ndarray, best: float, dmean: Any = None, dstd: Any = None
) -> tuple[np.ndarray, Any]:
    """Acquisition values and, given the predictions' gradients (rows × columns), theirs."""
    std = np.maximum(std, 1e-12)
    if kind == "LCB":
        value = -(mean - KAPPA * std)
        return value, None if dmean is None else -(dmean - KAPPA * dstd)
    z = (best - XI - mean) / std
    if kind == "PI":
        value = log_ndtr(z)
        # d log Φ(z)/dz = φ(z)/Φ(z)
        slope = np.exp(-0.5 * z * z - _LOG_SQRT_2PI - value)
    elif kind == "EI":
        log_h = _log_h(z)
        value = np.log(std) + log_h
        # d log h(z)/dz = Φ(z)/h(z), as h' = Φ
        slope = np.exp(log_ndtr(z) - log_h)
    else:
        raise ValueError(f"unknown acquisition {kind!r}")
    if dmean is None:
        return value, None
    dz = (-dmean - z[:, None] * dstd) / std[:, None]
    grad = slope[:, None] * dz
    if kind == "EI":
        grad = grad + dstd / std[:, None]
    return value, grad


def _matern52(kernel: Any) -> tuple[float, np.ndarray] | None:
    """(amplitude, length scales) of a fitted skopt kernel amplitude × Matern 5/2 (+ white), else None."""
    # scikit-learn's classes, which skopt's kernels subclass (house rule 2: only bayesian.py imports skopt).
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, Product, Sum, WhiteKernel

    if isinstance(kernel, Sum) and isinstance(kernel.k2, WhiteKernel):
        kernel = kernel.k1
    if isinstance(kernel, Product) and isinstance(kernel.k1, ConstantKernel):
        shape = kernel.k2
        if isinstance(shape, Matern) and shape.nu == 2.5:
            return float(kernel.k1.constant_value), np.asarray(shape.length_scale, dtype=float)
    return None


def _without_zero_noise(kernel: Any) -> Any:
    """A fitted kernel without the white-noise term skopt's GP sets to 0 for predictions (a Sum's k2):
    the term adds exact zeros to k(x, X), its diagonal and its gradient, at the cost of a call to each
    (a third of the additive kernel's gradient calls in the local search)."""
    from sklearn.gaussian_process.kernels import Sum, WhiteKernel

    if isinstance(kernel, Sum) and isinstance(kernel.k2, WhiteKernel) and kernel.k2.noise_level == 0.0:
        return kernel.k1
    return kernel


def _additive_matern(kernel: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(amplitudes, length scales) of a fitted bayesian.AdditiveMatern (+ white), else None; known by its
    parameters, as only bayesian.py may import the module of skopt's kernels it extends."""
    from sklearn.gaussian_process.kernels import Sum, WhiteKernel

    if isinstance(kernel, Sum) and isinstance(kernel.k2, WhiteKernel):
        kernel = kernel.k1
    if type(kernel).__name__ == "AdditiveMatern":
        scales = np.atleast_1d(np.asarray(kernel.length_scales, dtype=float))
        return np.atleast_1d(np.asarray(kernel.amplitudes, dtype=float)), scales
    return None


class Posterior:
    """Mean and standard deviation of a fitted surrogate, for many points per call.

    For skopt's GP the variance is computed with one triangular solve instead
    of its per-row einsum, which at 200 observations and 2,000 points took
    tens of milliseconds per call; and `gradients` gives both gradients for
    many points at once (skopt's for one). Other surrogates (trees) use their
    own `predict` and have no gradients.

    Tried and left out (issue 18): L⁻¹ computed once per model, so that the
    solves become matrix products. It agreed with the solve to 1e-11, but at
    1,000 trials (a 200-row fit set, bayesian.FIT_ROWS) the suggestion's CPU
    time did not move measurably (about 100 ms either way on the loaded
    2-core machine), while the rounding changed every seeded trajectory from
    the first model-based trial on: regret at 200 trials, 10 seeds, moved
    both ways by up to 8x (Rosenbrock-4 median 0.022 to 0.17, Branin 3.2e-8
    to 1.7e-8), so with it, "no worse than before" could not be shown.
    """

    def __init__(self, model: Any):
        self.model = model
        self.has_gradients = all(hasattr(model, a) for a in ("kernel_", "X_train_", "alpha_", "L_", "y_train_std_"))
        self._matern = _matern52(model.kernel_) if self.has_gradients else None
        self._shape = _without_zero_noise(model.kernel_) if self.has_gradients else None
        # The observed points over the length scales, and their squared norms: the same at every call.
        if self._matern is not None:
            self._scaled = model.X_train_ / self._matern[1]
            self._norms = np.sum(self._scaled * self._scaled, 1)
        self._additive = _additive_matern(model.kernel_) if self.has_gradients and self._matern is None else None

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_gradients:
            mean, std = self.model.predict(X, return_std=True)
            return np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        mean, std, _ = self._predict(X)
        return mean, std

    def _predict(self, X: np.ndarray, K: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.model
        K = self._kernel(X) if K is None else K
        mean = K @ m.alpha_ * m.y_train_std_ + m.y_train_mean_
        # Through the Cholesky factor, not K⁻¹: near observed points the
        # variance is a small difference of large terms, and K⁻¹ of a nearly
        # noise-free GP is too ill-conditioned to resolve it.
        v = _solve_triangular(m.L_, K.T, lower=True)
        if self._matern is not None:
            prior = self._matern[0]  # Matern: k(x, x) = amplitude
        elif self._additive is not None:
            prior = float(np.sum(self._additive[0]))  # the sum of the amplitudes
        else:
            prior = self._shape.diag(X)
        var = np.maximum(prior - np.einsum("ij,ij->j", v, v), 0.0)
        return mean, np.sqrt(var) * m.y_train_std_, v

    def gradients(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean, std and their gradients (rows × columns) at the rows of X."""
        m = self.model
        if self._additive is not None:  # k and dk/dx share |x - x'| and its exponentials
            K, dK = self._additive_kernel_and_gradient(X)
            mean, std, v = self._predict(X, K)
        else:
            mean, std, v = self._predict(X)
            dK = self._kernel_gradient(X)  # rows × observations × columns
        dmean = np.einsum("bnd,n->bd", dK, np.ravel(m.alpha_)) * m.y_train_std_
        # var = k(x,x) - kᵀK⁻¹k, so dvar = -2 (K⁻¹k)ᵀ dk (k(x,x) is constant for a stationary kernel).
        w = _solve_triangular(m.L_.T, v, lower=False)
        dvar = -2.0 * np.einsum("nb,bnd->bd", w, dK) * m.y_train_std_**2
        dstd = dvar / (2.0 * np.maximum(std, 1e-12))[:, None]
        return mean, std, dmean, dstd

    def acquisitions(self, kinds: tuple[str, ...], best: float, X: np.ndarray) -> list[np.ndarray]:
        """Each acquisition of `kinds` at the rows of X, from one prediction."""
        mean, std = self(X)
        return [acquisition(kind, mean, std, best) for kind in kinds]

    def acquisition_and_gradient(self, kind: str, best: float, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std, dmean, dstd = self.gradients(X)
        return acquisition_and_gradient(kind, mean, std, best, dmean, dstd)

    def _kernel(self, X: np.ndarray) -> np.ndarray:
        """k(X, observed points): for amplitude × Matern 5/2 computed here, as
        scikit-learn's kernel objects cost more to call than the arithmetic
        when a local search asks about one point at a time."""
        if self._additive is not None:
            # AdditiveMatern's own arithmetic, without its wrappers (the white term adds zeros).
            # In place, with s = √5r: (1 + s + s²/3)e^{-s}, in blocks of rows of about ADDITIVE_BLOCK
            # numbers, which stay in the cache. Of 2,049 rows (the candidates) against 60 points in 6-D,
            # 10 ms of CPU per call instead of 20-24 as one block, and 33-36 ms of wall as written before;
            # it agreed to 1e-15.
            amplitudes, scales = self._additive
            train = self.model.X_train_
            K = np.empty((len(X), len(train)))
            factor = math.sqrt(5) / scales
            step = max(1, ADDITIVE_BLOCK // max(train.size, 1))
            for start in range(0, len(X), step):
                s = X[start : start + step, None, :] - train[None, :, :]
                np.abs(s, out=s)
                s *= factor
                decay = np.exp(-s)
                poly = s * s
                poly *= 1.0 / 3.0
                poly += s
                poly += 1.0
                poly *= decay
                np.matmul(poly, amplitudes, out=K[start : start + step])
            return K
        if self._matern is None:
            return self._shape(X, self.model.X_train_)
        amplitude, scales = self._matern
        a, b = X / scales, self._scaled
        if len(X) > EXACT_ROWS:
            # |a - b|² as |a|² + |b|² - 2a·b: one matrix product instead of a
            # rows × observations × columns array, at the cost of precision for
            # points nearly on top of each other (which only local searches ask about).
            squared = np.maximum(np.sum(a * a, 1)[:, None] + self._norms[None, :] - 2.0 * a @ b.T, 0.0)
        else:
            squared = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        r = np.sqrt(5.0 * squared)
        return amplitude * (1.0 + r + r * r / 3.0) * np.exp(-r)

    def _additive_kernel_and_gradient(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_kernel` and `_kernel_gradient` of AdditiveMatern from one |x - x'| and one exponential, the
        same arithmetic as theirs; a local search asks for both at every step, for one row."""
        amplitudes, scales = self._additive
        diff = X[:, None, :] - self.model.X_train_[None, :, :]
        r = np.abs(diff) / scales
        decay = np.exp(-math.sqrt(5) * r)
        K = ((1.0 + math.sqrt(5) * r + 5.0 * r * r / 3.0) * decay) @ amplitudes
        return K, -(5.0 / 3.0) * amplitudes * (1.0 + math.sqrt(5) * r) * decay * diff / scales**2

    def _kernel_gradient(self, X: np.ndarray) -> np.ndarray:
        train = self.model.X_train_
        if self._additive is not None:  # AdditiveMatern.gradient_x for every row at once
            amplitudes, scales = self._additive
            diff = X[:, None, :] - train[None, :, :]
            r = np.abs(diff) / scales
            return -(5.0 / 3.0) * amplitudes * (1.0 + math.sqrt(5) * r) * np.exp(-math.sqrt(5) * r) * diff / scales**2
        if self._matern is None:  # any other kernel: skopt's, one row at a time
            return np.stack([self._shape.gradient_x(x, train) for x in X])
        amplitude, scales = self._matern
        scaled = (X[:, None, :] - train[None, :, :]) / scales
        r = np.sqrt(np.sum(scaled**2, axis=-1))
        # k = a(1 + √5r + 5r²/3)e^{-√5r}, so dk/dx = -(5a/3)(1 + √5r)e^{-√5r} (x - x')/l².
        factor = -(5.0 * amplitude / 3.0) * (1.0 + math.sqrt(5) * r) * np.exp(-math.sqrt(5) * r)
        return factor[..., None] * scaled / scales


def _warped_acquisition(
    kind: str, mean: np.ndarray, std: np.ndarray, best: float, warp: tuple[float, float],
    dmean: Any = None, dstd: Any = None,
) -> tuple[np.ndarray, Any]:
    """`acquisition_and_gradient` for a GP of warped values w = log1p((y - low) / spread), whose
    prediction (`mean`, `std`, of w) is Gaussian in w, taken on the loss y = low + spread·expm1(w) and
    against a `best` in y's units: exact, as y is a shifted log-normal.

    EI: with K = best - low + spread, L = log(K / spread) and d = (L - m) / s, E[max(best - y, 0)] =
    K·Φ(d) - F·Φ(d - s), F = spread·exp(m + s²/2) (the price of a put on a log-normal). With
    a = log Φ(d) and b = s²/2 - s·d + log Φ(d - s) (so F·Φ(d - s) = K·e^b), log EI = log K + a +
    log(1 - e^(b-a)), which stays finite where both terms underflow; d log EI / dm = -e^(b-a) / (1 -
    e^(b-a)) and d log EI / ds = (φ(d)/Φ(d) - s·e^(b-a)) / (1 - e^(b-a)). PI is log Φ(d); LCB the
    KAPPA-lower quantile low + spread·expm1(m - KAPPA·s), which a monotone warp keeps."""
    low, spread = warp
    std = np.maximum(std, 1e-12)
    if kind == "LCB":
        scale = spread * np.exp(mean - KAPPA * std)
        value = -(low - spread + scale)
        return value, None if dmean is None else -scale[:, None] * (dmean - KAPPA * dstd)
    room = best - XI - low + spread
    if room <= 0:  # below the warp's floor: nothing can improve on it
        nothing = np.full(len(mean), -np.inf)
        return nothing, None if dmean is None else np.zeros_like(dmean)
    d = (math.log(room / spread) - mean) / std
    a = log_ndtr(d)
    ratio = np.exp(-0.5 * d * d - _LOG_SQRT_2PI - a)  # φ(d) / Φ(d)
    if kind == "PI":
        value = a
        by_mean, by_std = -ratio / std, -ratio * d / std
    elif kind == "EI":
        gap = np.minimum(0.5 * std * std - std * d + log_ndtr(d - std) - a, -1e-300)
        rest = -np.expm1(gap)  # 1 - e^(b-a)
        value = math.log(room) + a + np.log(rest)
        by_mean, by_std = -np.exp(gap) / rest, (ratio - std * np.exp(gap)) / rest
    else:
        raise ValueError(f"unknown acquisition {kind!r}")
    if dmean is None:
        return value, None
    return value, by_mean[:, None] * dmean + by_std[:, None] * dstd


class Mixture:
    """A weighted mixture of fitted GPs of the same loss, some of them fitted to warped values:
    what the Bayesian sampler searches under noise when the data support several of its surrogates
    (bayesian.MODEL_AVERAGING).

    Each part is (weight, fitted GP, warp): the warp (low, spread) says the GP models w =
    log1p((y - low) / spread) of the loss y, None that it models y itself. Everything the mixture
    gives is in y's units, the one scale its parts share. The acquisitions are a mixture's: the joint
    law of the objective is Σ_k w_k p_k, so expected improvement and probability of improvement
    are Σ_k w_k EI_k and Σ_k w_k PI_k (each part's on the log-normal of its warp,
    `_warped_acquisition`), taken as logarithms by log-sum-exp. The bar to improve on is each
    part's own (`expected_best`, a sequence with one bar a part): under noise it is the best
    noise-free value at the evaluated points, which is itself uncertain and differs between the
    parts, and improvement is on it under the same part's law, as noisy EI has it (Letham et al.
    2019). With one bar for all, a point in flight (Kriging believer: each part conditioned on its
    own prediction there) kept the EI of every part that predicts it below the common bar, and
    four parallel proposals landed within 0.003 of one another (tests/test_noise.py). LCB, a
    quantile, has no such sum: the weighted sum of the parts' lower bounds stands in for it.
    """

    def __init__(self, parts: list[tuple[float, Any, tuple[float, float] | None]]):
        weights = np.array([w for w, _, _ in parts], dtype=float)
        self.weights = weights / weights.sum()
        self.models = [model for _, model, _ in parts]
        self.warps = [warp for _, _, warp in parts]
        self.posteriors = [Posterior(model) for model in self.models]
        self.has_gradients = all(p.has_gradients for p in self.posteriors)

    def _combine(self, kind: str, values: list[np.ndarray], grads: list[Any]) -> tuple[np.ndarray, Any]:
        if kind == "LCB":
            value = sum(w * v for w, v in zip(self.weights, values))
            grad = None if grads[0] is None else sum(w * g for w, g in zip(self.weights, grads))
            return np.asarray(value), grad
        logs = np.log(self.weights)[:, None] + np.vstack(values)
        top = np.max(logs, axis=0)
        safe = np.where(np.isfinite(top), top, 0.0)
        shares = np.exp(logs - safe)
        total = shares.sum(axis=0)
        with np.errstate(divide="ignore"):
            value = safe + np.log(total)
        if grads[0] is None:
            return value, None
        shares = shares / np.where(total > 0, total, 1.0)  # each part's share of the mixture's EI (PI)
        return value, sum(s[:, None] * g for s, g in zip(shares, grads))

    def _part(self, k: int, kind: str, best: Any, mean: Any, std: Any, dmean: Any = None, dstd: Any = None) -> Any:
        warp, bar = self.warps[k], float(best[k])
        if warp is None:
            return acquisition_and_gradient(kind, mean, std, bar, dmean, dstd)
        return _warped_acquisition(kind, mean, std, bar, warp, dmean, dstd)

    def acquisitions(self, kinds: tuple[str, ...], best: Any, X: np.ndarray) -> list[np.ndarray]:
        """As Posterior's, `best` holding one bar a part (`expected_best`)."""
        predictions = [p(X) for p in self.posteriors]
        out = []
        for kind in kinds:
            values = [self._part(k, kind, best, *predictions[k])[0] for k in range(len(self.posteriors))]
            out.append(self._combine(kind, values, [None] * len(values))[0])
        return out

    def acquisition_and_gradient(self, kind: str, best: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._part(k, kind, best, *p.gradients(X)) for k, p in enumerate(self.posteriors)]
        return self._combine(kind, [v for v, _ in parts], [g for _, g in parts])

    def leading(self, kind: str, best: Any, X: np.ndarray) -> np.ndarray:
        """The part carrying the largest share of the mixture's acquisition at each row of X: the largest
        w_k EI_k (w_k PI_k); for LCB, a weighted sum, the heaviest part."""
        if kind == "LCB":
            return np.full(len(X), int(np.argmax(self.weights)))
        values = [self._part(k, kind, best, *p(X))[0] for k, p in enumerate(self.posteriors)]
        return np.argmax(np.log(self.weights)[:, None] + np.vstack(values), axis=0)

    def share(self, kind: str, best: Any, X: np.ndarray) -> float:
        """The smallest, over the rows of X, of the leading part's share of the mixture's EI (PI) there;
        1 for LCB, whose weighted sum has no shares."""
        if kind == "LCB":
            return 1.0
        values = [self._part(k, kind, best, *p(X))[0] for k, p in enumerate(self.posteriors)]
        logs = np.log(self.weights)[:, None] + np.vstack(values)
        top = np.max(logs, axis=0)
        if not np.all(np.isfinite(top)):
            return 0.0
        return float(np.min(1.0 / np.sum(np.exp(logs - top), axis=0)))

    def part(self, k: int) -> "_Part":
        """Part k alone, asked as the mixture is (its own bar of `best`), its weight left out."""
        return _Part(self, k)

    def _loss_moments(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each part's mean and sd at the rows of X in the loss's units, the warp linearised at the mean
        (as the sampler reports a single GP's), parts × rows."""
        means, sds = [], []
        for posterior, warp in zip(self.posteriors, self.warps):
            mean, sd = posterior(X)
            if warp is not None:
                low, spread = warp
                mean, sd = low + spread * np.expm1(mean), spread * np.exp(mean) * sd
            means.append(mean)
            sds.append(sd)
        return np.vstack(means), np.vstack(sds)

    def moments(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mixture's mean and sd at the rows of X, in the loss's units."""
        means, sds = self._loss_moments(X)
        w = self.weights[:, None]
        mean = np.sum(w * means, axis=0)
        return mean, np.sqrt(np.maximum(np.sum(w * (sds**2 + means**2), axis=0) - mean**2, 0.0))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.moments(X)[0]

    def expected_best(self, X: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Each part's E[min over the rows of X of the noise-free loss], in the loss's units: from joint
        draws of its posterior (columns of `normal`, standard normal, shared by the parts) mapped
        through its warp."""
        bars = []
        for model, warp in zip(self.models, self.warps):
            mean, cov = model.predict(X, return_cov=True)
            mean = np.asarray(mean, dtype=float)
            try:
                jitter = 1e-10 * max(float(np.trace(cov)) / len(X), 1e-12)
                draws = mean[:, None] + np.linalg.cholesky(cov + jitter * np.eye(len(X))) @ normal
            except np.linalg.LinAlgError:
                draws = mean[:, None] + 0.0 * normal
            if warp is not None:
                draws = warp[0] + warp[1] * np.expm1(draws)
            bars.append(float(np.mean(draws.min(axis=0))))
        return np.array(bars)


class _Part:
    """One part of a Mixture with the Mixture's interface (`Mixture.part`), for a local search on it."""

    def __init__(self, mixture: Mixture, k: int):
        self.mixture, self.k = mixture, k
        self.has_gradients = mixture.posteriors[k].has_gradients

    def acquisitions(self, kinds: tuple[str, ...], best: Any, X: np.ndarray) -> list[np.ndarray]:
        prediction = self.mixture.posteriors[self.k](X)
        return [self.mixture._part(self.k, kind, best, *prediction)[0] for kind in kinds]

    def acquisition_and_gradient(self, kind: str, best: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.mixture._part(self.k, kind, best, *self.mixture.posteriors[self.k].gradients(X))


class AcquisitionSearch:
    """Finds the points of a skopt `Space` where acquisition functions are highest."""

    def __init__(self, space: Any, rng: np.random.Generator):
        self.space = space
        self.rng = rng
        # Constraints on metrics (feasibility.py): set for each `best` call, None without them.
        self._feasibility: FeasibilityModel | None = None
        # Transformed columns the local search moves (real and integer axes, relaxed),
        # and the dimensions the coordinate sweep then settles (integer, categorical).
        self._columns: list[int] = []
        self._discrete: list[int] = []
        self._offsets: list[int] = []  # each dimension's first transformed column
        column = 0
        for index, dim in enumerate(space.dimensions):
            self._offsets.append(column)
            kind = type(dim).__name__
            if kind in ("Real", "Integer") and dim.transformed_size == 1:
                self._columns.append(column)
            if kind != "Real":
                self._discrete.append(index)
            column += dim.transformed_size

    def best(
        self, model: Any, kinds: tuple[str, ...], best: Any, incumbent: np.ndarray | None,
        feasibility: FeasibilityModel | None = None, refine: bool = True,
        allowed: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """For each acquisition kind, the transformed point of highest value found; `refine` runs
        `_polish` after the discrete sweep. `model` is a fitted surrogate or a Mixture, `best` the
        value to improve on (for a Mixture one a part).

        `allowed` (rows -> a boolean per row) excludes points the caller may not propose: where the
        highest point found is one, the answer is the highest allowed point among those found and the
        random candidates (`_allowed_best`).

        With a `feasibility` model every acquisition is weighted by the
        probability of feasibility (feasibility.with_feasibility); `best` None
        (no feasible trial yet) then searches for the most probably feasible point.
        """
        self._feasibility = feasibility
        posterior = model if isinstance(model, Mixture) else Posterior(model)
        seed = int(self.rng.integers(2**31 - 1))
        candidates = random_points(self.space, ACQ_POINTS, seed)
        if feasibility is not None and incumbent is not None:
            from .feasibility import near_incumbent

            near = near_incumbent(incumbent, self.rng)  # snapped onto the space, as the sweep does
            candidates = np.vstack([candidates, transform(self.space, self.space.inverse_transform(near))])
        if incumbent is not None:
            candidates = np.vstack([candidates, incumbent])
        # One prediction for every kind: 2,048 rows against every observation.
        scores = [np.zeros(len(candidates))] * len(kinds)
        if best is not None:
            scores = posterior.acquisitions(kinds, best, candidates)
        log_pof = None if feasibility is None else feasibility.log_pof(candidates)[0]
        found = []
        for kind, values in zip(kinds, scores):
            if log_pof is not None:
                values = values + log_pof  # feasibility.with_feasibility, computed once for the candidates
            starts = candidates[self._starts(values, incumbent is not None)]
            xs = self._local(posterior, kind, best, starts)
            xs = self._sweep(lambda X, kind=kind: self._value(posterior, kind, best, X), xs)
            if refine:
                xs = np.vstack([self._polish(posterior, kind, best, xs), starts])
            found_values = self._value(posterior, kind, best, xs)
            top = xs[int(np.argmax(found_values))]
            if allowed is not None and not allowed(top[None])[0]:
                top = _allowed_best(np.vstack([xs, candidates]), np.concatenate([found_values, values]), allowed, top)
            found.append(top)
        return found

    def _polish(self, posterior: Posterior | Mixture, kind: str, best: Any, xs: np.ndarray) -> np.ndarray:
        """L-BFGS-B again over the real columns alone, from the swept points, the integer and categorical
        dimensions held at the values the sweep settled.

        The local search relaxes integer columns with the real ones, so the real coordinates it finds
        are best for a fractional integer (layers 5.3); the sweep then rounds the integer and leaves
        the reals where they were, off the optimum for the integer it chose. The starts (points of the
        space) are kept beside the polished points, so a proposal is never worse than its best start.
        On the mixed function (benchmarks/functions.py), seed 7 at trial 36, before: the proposal's log
        EI -12.5, the incumbent's -11.4, the fine maximum's -10.1 (BENCHMARKS.md, fourth round of issue 16).
        The Bayesian sampler asks for it for a noise-free GP only: under noise it moved the noisy-CV SVM's
        median regret from 0.00461 to 0.00477 (seeds 0-9, worse on 5, better on 1), past Optuna TPE's.
        """
        reals = [self._offsets[i] for i, dim in enumerate(self.space.dimensions) if type(dim).__name__ == "Real"]
        if not self._discrete or not reals or not posterior.has_gradients:
            return xs
        return climb(
            lambda X: self._value_and_gradient(posterior, kind, best, X),
            lambda X: self._value(posterior, kind, best, X), xs, reals,
        )  # fmt: skip

    def _value(self, posterior: Posterior | Mixture, kind: str, best: Any, X: np.ndarray) -> np.ndarray:
        """The acquisition at the rows of X, weighted by the probability of feasibility when modelled."""
        value = None if best is None else posterior.acquisitions((kind,), best, X)[0]
        if self._feasibility is None:
            assert value is not None, "no value to improve on needs a feasibility model"
            return value
        from .feasibility import with_feasibility

        return with_feasibility(self._feasibility, X, value)[0]

    def _value_and_gradient(
        self, posterior: Posterior | Mixture, kind: str, best: Any, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if best is None:
            value, grad = np.zeros(len(x)), np.zeros_like(x)
        else:
            value, grad = posterior.acquisition_and_gradient(kind, best, x)
        if self._feasibility is None:
            return value, grad
        from .feasibility import with_feasibility

        weighted, weighted_grad = with_feasibility(self._feasibility, x, value, grad)
        assert weighted_grad is not None
        return weighted, weighted_grad

    def _starts(self, values: np.ndarray, with_incumbent: bool) -> np.ndarray:
        """Indices of the local searches' starts: the best candidate, the incumbent,
        and others drawn with probability ∝ exp(value - best value)."""
        top = int(np.argmax(values))
        chosen = {top}
        if with_incumbent:
            chosen.add(len(values) - 1)
        weights = np.exp(values - values[top])
        weights[list(chosen)] = 0.0
        weights[~np.isfinite(weights)] = 0.0
        room = min(LOCAL_STARTS - len(chosen), int(np.count_nonzero(weights)))
        if room > 0:
            chosen.update(self.rng.choice(len(values), size=room, replace=False, p=weights / weights.sum()).tolist())
        return np.array(sorted(chosen))

    def _local(self, posterior: Posterior | Mixture, kind: str, best: Any, starts: np.ndarray) -> np.ndarray:
        """L-BFGS-B from each start over the continuous columns, with exact gradients.

        One search per start: run jointly on the sum (which is separable), a
        start next to an observed point, where the acquisition is steep, set
        the step sizes for all of them and the others barely moved.
        """
        cols = self._columns
        if not cols or not posterior.has_gradients:
            return starts
        if isinstance(posterior, Mixture):
            return self._local_mixture(posterior, kind, best, starts)
        return climb(
            lambda X: self._value_and_gradient(posterior, kind, best, X),
            lambda X: self._value(posterior, kind, best, X), starts, cols,
        )  # fmt: skip

    def _local_mixture(self, mixture: Mixture, kind: str, best: Any, starts: np.ndarray) -> np.ndarray:
        """`_local` for a Mixture: each start climbs on the part that carries the largest share of the
        mixture's acquisition there (`Mixture.leading`), alone; the end points are scored with the
        mixture, and the best of them climbs once more on the mixture itself.

        Near a start where one part's w_k EI_k dominates, the mixture's log EI and its gradient are
        that part's plus a constant, so the part's climb follows the mixture's at one part's cost;
        where parts share the EI, the last climb on the whole mixture moves the best end point to the
        mixture's own maximum. Climbing every start on the mixture cost each step a prediction and
        gradient of every part: with two to four parts, 1.3-1.7x main's CPU time per Styblinski-6 run
        (BENCHMARKS.md, eighth round of issue 16, averaging the variants). The last climb is left out
        where the leading part carries LEADING_SHARE of the mixture's acquisition at the best end point."""
        cols = self._columns
        leading = mixture.leading(kind, best, starts)
        found = starts.copy()
        for k in np.unique(leading):
            part = mixture.part(int(k))
            rows = np.flatnonzero(leading == k)
            found[rows] = climb(
                lambda X, part=part: self._value_and_gradient(part, kind, best, X),
                lambda X, part=part: self._value(part, kind, best, X), starts[rows], cols,
            )  # fmt: skip
        values, before = self._value(mixture, kind, best, found), self._value(mixture, kind, best, starts)
        worse = values < before  # a part's climb can lower the mixture's value: the start is kept
        found[worse], values[worse] = starts[worse], before[worse]
        top = int(np.argmax(values))
        if mixture.share(kind, best, found[top : top + 1]) >= LEADING_SHARE:
            return found  # the mixture's log acquisition is the part's within -log(LEADING_SHARE) there
        found[top] = climb(
            lambda X: self._value_and_gradient(mixture, kind, best, X),
            lambda X: self._value(mixture, kind, best, X), found[top : top + 1], cols,
        )[0]  # fmt: skip
        return found

    def _sweep(self, value: Callable[[np.ndarray], np.ndarray], xs: np.ndarray) -> np.ndarray:
        """Snap every point onto the space, then settle each integer and categorical dimension in turn
        at its best `value` (the acquisition of rows in the unit cube), the others held; twice over.
        Shared by the single- and the multi-objective searches."""
        xs = np.asarray(transform(self.space, self.space.inverse_transform(xs)), dtype=float)
        for _ in range(2 if self._discrete else 0):
            before = xs.copy()
            for d in self._discrete:
                xs = self._settle(value, xs, d)
            if np.array_equal(before, xs):
                break
        return xs

    def _settle(self, value: Callable[[np.ndarray], np.ndarray], xs: np.ndarray, d: int) -> np.ndarray:
        """Every row with dimension `d` set to its best value, in one batch."""
        dim = self.space.dimensions[d]
        cols = slice(self._offsets[d], self._offsets[d] + dim.transformed_size)
        rows = len(xs)
        if type(dim).__name__ == "Categorical" or int(dim.high) - int(dim.low) < SWEEP_ALL:
            options = np.array([self._values(dim)] * rows)
        else:
            # Wide integers: the neighbours of the current value (repeats at the bounds are harmless).
            current = np.asarray(dim.inverse_transform(xs[:, cols].reshape(rows, -1).squeeze(-1)), dtype=int)
            offsets = np.arange(-NEIGHBOURS, NEIGHBOURS + 1)
            options = np.clip(current[:, None] + offsets, int(dim.low), int(dim.high))
        width = options.shape[1]
        encoded = np.asarray(dim.transform(list(options.ravel())), dtype=float).reshape(rows, width, -1)
        batch = np.repeat(xs[:, None, :], width, axis=1)
        batch[:, :, cols] = encoded
        values = value(batch.reshape(rows * width, -1)).reshape(rows, width)
        return batch[np.arange(rows), np.argmax(values, axis=1)]

    @staticmethod
    def _values(dim: Any) -> list[Any]:
        if type(dim).__name__ == "Categorical":
            return list(dim.categories)
        return list(range(int(dim.low), int(dim.high) + 1))


def _allowed_best(
    rows: np.ndarray, values: np.ndarray, allowed: Callable[[np.ndarray], np.ndarray], fallback: np.ndarray
) -> np.ndarray:
    """The row of highest value that `allowed` admits; `fallback` when it admits none."""
    admitted = allowed(rows)
    if not admitted.any():
        return fallback
    return rows[int(np.argmax(np.where(admitted, values, -np.inf)))]


def climb(
    value_and_gradient: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    value: Callable[[np.ndarray], np.ndarray], starts: np.ndarray, cols: list[int],
) -> np.ndarray:
    """L-BFGS-B from each start (rows in the unit cube) over the columns `cols`, maximising an
    acquisition given with its exact gradient; a start the search made worse is kept (it cannot,
    but rounding can). A non-finite value (a log acquisition far from anything) reads as the worst."""

    def negative(free: np.ndarray, start: np.ndarray) -> tuple[float, np.ndarray]:
        x = start.copy()
        x[cols] = free
        got, grad = value_and_gradient(x[None])
        if not np.isfinite(got[0]):
            return 1e300, np.zeros(len(cols))
        return -float(got[0]), -grad[0, cols]

    found = starts.copy()
    for row, start in enumerate(starts):
        result = minimize(
            negative, start[cols], args=(start,), jac=True, method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * len(cols), options={"maxiter": LOCAL_ITERATIONS, "gtol": LOCAL_GTOL},
        )  # fmt: skip
        found[row, cols] = np.clip(result.x, 0.0, 1.0)
    return np.where((value(found) >= value(starts))[:, None], found, starts)


class Hedge:
    """skopt's gp_hedge portfolio: each arm (an acquisition, or a prior mean in
    `BayesianSampler._exact_proposal`) proposes a point, and one is picked with
    probability ∝ exp(η·gain), where an arm's gain is minus the summed model
    predictions at the points it proposed."""

    def __init__(self, rng: np.random.Generator, arms: int = len(KINDS)):
        self.rng = rng
        self.gains = np.zeros(arms)
        self._proposed: np.ndarray | None = None

    def update(self, posterior_mean: Any) -> None:
        """Credit the last proposals with the refitted model's predictions there."""
        if self._proposed is not None:
            self.gains -= posterior_mean(self._proposed)
            self._proposed = None

    def choose(self, proposals: list[np.ndarray]) -> np.ndarray:
        self._proposed = np.vstack(proposals)
        logits = HEDGE_ETA * (self.gains - self.gains.max())
        probs = np.exp(logits) / np.exp(logits).sum()
        return proposals[int(self.rng.choice(len(proposals), p=probs))]
