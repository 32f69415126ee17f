"""Bayesian optimisation with scikit-optimize's surrogates (SPEC §2).

skopt's `Optimizer` keeps the history and draws the initial design; the
surrogate (skopt's GP by default) is fitted here, on a schedule, and the next
point is where acquisition.py's batched search finds the acquisition highest.

The only module that imports skopt (house rule 2). `make_sampler` imports it
lazily, so grid and random studies never load skopt or scikit-learn. Every
value skopt hands back is converted here to a plain Python int/float/str/bool
of the search space (house rule 8); nothing of skopt leaks out.

Each searched dimension becomes one skopt axis:
- float, linear or log: `Real` (log-uniform prior for log scale);
- float with step, int with step > 1: `Integer` over the lattice index k,
  mapped back by lattice arithmetic (a lattice is never listed);
- int: `Integer` (log-uniform prior for log scale);
- categorical: `Categorical` over choice indices, so `True`, `1` and `"1"`
  stay distinct and come back as the original objects (skopt would otherwise
  compare them by equality, and its LHS generator turns them into strings).
Dimensions with a single value are held fixed outside skopt, which rejects
`Integer(low, low)`.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from skopt import Optimizer
from skopt.learning import GradientBoostingQuantileRegressor
from skopt.space import Categorical, Integer, Real

from ..space import LOG, CategoricalDimension, Dimension, FloatDimension, IntDimension, SearchSpace, tidy
from ..study import Direction, Objective, Trial, TrialState
from .acquisition import KINDS, AcquisitionSearch, Hedge
from .base import Sampler

ESTIMATORS = ("GP", "RF", "ET", "GBRT")
ACQUISITIONS = ("gp_hedge", "EI", "PI", "LCB")
INITIAL_POINTS = ("random", "sobol", "lhs")

# Random draws tried before enumerating what is left of a finite space.
from .random import CONSTRAINED_REDRAWS, REDRAWS, pick_unseen  # noqa: E402 - grouped with the other limits

# Model proposals tried per trial before a random feasible point, when they violate constraints.
INFEASIBLE_ASKS = 3
# A fixed, tiny noise term (of the normalised variance) rather than a fitted
# one: skopt's fitted noise has a floor of 1e-5 that blurs the optimum of a
# noise-free objective, which hyperparameter objectives with fixed seeds are.
# Branin regret after 50 trials (median of 10 seeds): 5.5e-5 at 1e-6, 2.5e-6 at 1e-8.
GP_NOISE: Any = 1e-8
# Values told to the surrogate go through log1p((y - best) / spread) first: the
# order is kept, and an objective spanning orders of magnitude (a Rosenbrock
# valley, a diverging learning rate) no longer has its shape drowned by outliers.
# Rosenbrock-4 regret after 50 trials: 165 without, 5 with.
WARP_Y = True
# The GP's hyperparameters (amplitude, length scales) are searched with
# GP_RESTARTS restarts at the first fit; each later fit starts from the last
# fitted values with one local search (as Optuna's GP sampler does). With the
# priors of `_HyperparameterSearch`, regret after 50 trials was no worse than
# with full searches every 10 trials (median of 10 seeds: Hartmann6 0.030
# against 0.072, Ackley-5 3.7 against 4.1), at a fraction of the cost.
GP_RESTARTS = 2
FIT_GTOL = 1e-2
# The search is repeated once the history has grown by this fraction since the
# last one (every trial up to 10, every 10th at 100); in between, the last
# hyperparameters are conditioned on the new data, which costs one factorisation.
# Regret after 50 trials did not suffer (Hartmann6 0.002 against 0.0099 when
# searching at every trial, 10 seeds; the other four problems alike).
RESEARCH_AFTER = 0.1
# skopt warnings that are noise here: its model pointing at an evaluated point
# (we then take a random unseen one), and Sobol' balance when n_initial is not
# a power of two (users pick n_initial for their budget, not for Sobol').
_NOISE = ("The objective has been evaluated at point", "The balance properties of Sobol")


class _QuantileGBRT(GradientBoostingQuantileRegressor):
    """skopt's GBRT surrogate, repaired for current scikit-learn and numpy.

    scikit-optimize 0.10 lists `BaseEstimator` before `RegressorMixin`, so
    scikit-learn >= 1.6 tags it as no regressor and `Optimizer` refuses it
    ("has to be a regressor"); and its `predict(return_std=True)` calls
    `np.in1d`, which numpy 2.4 removed. Both are fixed here, not by patching
    skopt in place.
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        return tags

    def predict(self, X: Any, return_std: bool = False, return_quantiles: bool = False) -> Any:
        if return_quantiles or not return_std:
            return super().predict(X, return_std=False, return_quantiles=return_quantiles)
        by_quantile = dict(zip(self.quantiles, self.regressors_))
        if not {0.16, 0.5, 0.84} <= by_quantile.keys():
            raise ValueError("return_std needs the 0.16, 0.5 and 0.84 quantiles")
        low, mid, high = (by_quantile[q].predict(X) for q in (0.16, 0.5, 0.84))
        # Half the 16–84 % spread approximates one standard deviation.
        return mid, (high - low) / 2.0


def _gaussian_process(axes: list[_Axis], seed: int | None) -> Any:
    """skopt's GP surrogate as skopt builds it for "GP" (ARD Matern 5/2 times a constant,
    Hamming for all-categorical spaces), built here so its fitting can be scheduled."""
    from skopt.learning import GaussianProcessRegressor
    from skopt.learning.gaussian_process.kernels import ConstantKernel, HammingKernel, Matern
    from skopt.space import Space
    from skopt.utils import normalize_dimensions

    space = Space(normalize_dimensions([a.skopt_dim for a in axes]))
    n = space.transformed_n_dims
    if space.is_categorical:
        shape = HammingKernel(length_scale=np.ones(n))
    else:
        shape = Matern(length_scale=np.ones(n), length_scale_bounds=[(0.01, 100.0)] * n, nu=2.5)
    return GaussianProcessRegressor(
        kernel=ConstantKernel(1.0, (0.01, 1000.0)) * shape,
        normalize_y=True,
        noise=GP_NOISE,
        n_restarts_optimizer=GP_RESTARTS,
        optimizer=_HyperparameterSearch(n),
        random_state=seed,
    )


@dataclass(frozen=True)
class _HyperparameterSearch:
    """scikit-learn's L-BFGS-B search of a GP's log-hyperparameters, with priors.

    The log-hyperparameters are [amplitude, n_scales length scales] (the
    noise is fixed). Without priors, maximum likelihood on a few dozen points
    happily picks length scales far below the spacing of the data (or far
    above the space), and the model then either interpolates noise or sees a
    plane. The priors, Optuna's GP sampler's (the data are in the unit cube
    and the values standardised, as there), favour length scales and an
    amplitude near 1. Median regret after 50 trials, 6 seeds, without and
    with them: Branin 7e-5 and 3e-6, Ackley-5 10.4 and 7.1 (Hartmann6 0.09
    and 0.13: within its seed-to-seed spread).

    The search stops at a gradient of FIT_GTOL: scikit-learn's default (1e-5)
    spent most of a fit's likelihood evaluations on digits that do not move
    the proposals.
    """

    n_scales: int

    def __call__(self, objective: Callable, theta: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
        from scipy.optimize import minimize

        n = self.n_scales

        def posterior(log_theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = objective(log_theta)
            grad = np.array(grad, dtype=float)
            amplitude, scales = log_theta[0], log_theta[1 : n + 1]
            # -log prior, up to a constant. Length scale l: 0.1·(l² + 1/l²); amplitude a ~ Gamma(2, 1).
            value += float(np.sum(0.1 * (np.exp(2 * scales) + np.exp(-2 * scales))))
            grad[1 : n + 1] += 0.2 * (np.exp(2 * scales) - np.exp(-2 * scales))
            value += float(np.exp(amplitude) - amplitude)
            grad[0] += np.exp(amplitude) - 1.0
            return value, grad

        result = minimize(posterior, theta, jac=True, method="L-BFGS-B", bounds=bounds, options={"gtol": FIT_GTOL})
        return result.x, float(result.fun)


def _fitted_kernel(model: Any) -> Any:
    """The kernel a GP was fitted to, as the starting point of the next fit.

    skopt zeroes the fitted noise term for prediction; it is restored here,
    fixed at its value.
    """
    from sklearn.base import clone
    from skopt.learning.gaussian_process.gpr import _param_for_white_kernel_in_Sum
    from skopt.learning.gaussian_process.kernels import WhiteKernel

    kernel = clone(model.kernel_)
    present, name = _param_for_white_kernel_in_Sum(kernel)
    if present:
        kernel.set_params(**{name: WhiteKernel(noise_level=float(model.noise_ or 0.0), noise_level_bounds="fixed")})
    return kernel


def _is_gp(model: Any) -> bool:
    return hasattr(model, "kernel") and hasattr(model, "noise")


def _fit(model: Any, X: Any, y: Any) -> Any:
    with warnings.catch_warnings():
        # Length scales at their bounds: expected while the history is short.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def _estimator(name: str, seed: int | None, axes: list[_Axis]) -> Any:
    """skopt accepts RF/ET by name; GP is built here, GBRT needs the repaired class above."""
    if name == "GP":
        return _gaussian_process(axes, seed)
    if name != "GBRT":
        return name
    from sklearn.ensemble import GradientBoostingRegressor

    # Same configuration skopt would build for "GBRT".
    return _QuantileGBRT(base_estimator=GradientBoostingRegressor(n_estimators=30, loss="quantile"), random_state=seed)


@dataclass(frozen=True)
class _Axis:
    """One searched dimension as a skopt axis, with conversions both ways."""

    name: str
    skopt_dim: Any
    decode: Callable[[Any], Any]  # skopt value -> plain Python value of the dimension
    encode: Callable[[Any], Any]  # value of the dimension -> skopt value


def _lattice_axis(dim: FloatDimension | IntDimension) -> _Axis:
    """An index axis k in 0..K over the lattice low + k * step, by arithmetic: a lattice of
    10**12 values is never listed."""
    assert dim.step is not None
    low, step, last = dim.low, dim.step, (dim.cardinality() or 1) - 1
    is_float = isinstance(dim, FloatDimension)

    def decode(k: Any) -> Any:
        value = low + min(max(int(k), 0), last) * step
        return tidy(value) if is_float else value

    def encode(value: Any) -> int:
        # A float dimension may be given an int (1 for 1.0) or lattice noise: the nearest index.
        return min(max(round((value - low) / step), 0), last)

    return _Axis(dim.name, Integer(0, last), decode, encode)


def _axis(dim: Dimension) -> _Axis:
    if isinstance(dim, CategoricalDimension):
        choices = list(dim.choices)

        def encode_choice(value: Any) -> int:
            return next(i for i, c in enumerate(choices) if type(c) is type(value) and c == value)

        return _Axis(dim.name, Categorical(list(range(len(choices)))), lambda i: choices[int(i)], encode_choice)
    if isinstance(dim, FloatDimension):
        if dim.step is not None:
            return _lattice_axis(dim)
        low, high = float(dim.low), float(dim.high)
        prior = "log-uniform" if dim.scale == LOG else "uniform"
        return _Axis(dim.name, Real(low, high, prior=prior), lambda x: min(max(float(x), low), high), float)
    if dim.step != 1:
        return _lattice_axis(dim)
    prior = "log-uniform" if dim.scale == LOG else "uniform"
    low, high = dim.low, dim.high
    return _Axis(dim.name, Integer(low, high, prior=prior), lambda x: min(max(int(np.rint(x)), low), high), int)


_BLAS: Any = None


@contextmanager
def _quiet() -> Iterator[None]:
    """Around every skopt call: its noisy warnings off, and BLAS on one thread.

    The GP's matrices are at most a few hundred rows, where a second BLAS
    thread costs more than it gives: suggestions ran 3x faster single-threaded
    on a 2-core machine (and the trials may be using the cores).
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController  # installed with scikit-learn

        _BLAS = ThreadpoolController()
    with warnings.catch_warnings(), _BLAS.limit(limits=1, user_api="blas"):
        for message in _NOISE:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


class BayesianSampler(Sampler):
    """Model-based proposals from a skopt surrogate, after `n_initial` space-filling points.

    Failed trials are told as the worst loss observed so far (updated as worse
    ones arrive), so the model steers away from them instead of re-proposing
    them. Proposals not yet told are pending; later proposals come from the
    surrogate conditioned on its own prediction at each pending point (Kriging
    believer), so parallel trials never share a point.
    """

    def __init__(
        self,
        space: SearchSpace,
        objective: Objective,
        n_trials: int | None,
        seed: int | None = None,
        n_initial: int = 10,
        acquisition: str = "EI",
        estimator: str = "GP",
        initial_points: str = "random",
    ):
        super().__init__(space, objective, n_trials, seed)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {', '.join(ACQUISITIONS)}, got {acquisition!r}")
        if initial_points not in INITIAL_POINTS:
            raise ValueError(f"initial_points must be one of {', '.join(INITIAL_POINTS)}, got {initial_points!r}")
        if n_initial < 1:
            raise ValueError(f"n_initial must be at least 1, got {n_initial}")
        self.rng = np.random.default_rng(seed)
        # Sign that turns the primary objective into a loss to minimise.
        self._sign = -1.0 if objective.direction is Direction.MAXIMIZE else 1.0
        self._fixed = {d.name: d.values()[0] for d in space if d.cardinality() == 1}
        self._inactive = {d.name: d.default if d.default is not None else d.from_unit(0.5) for d in space}
        self._axes = [_axis(d) for d in space if d.cardinality() != 1]
        # Proposed but not yet told: space key -> skopt point.
        self._pending: dict[tuple, list[Any]] = {}
        # What was told, in order: the loss, or None for a failure (told as the worst loss).
        self._raw: list[float | None] = []
        self._losses: list[float] = []
        self._n_initial = n_initial
        self._kinds = KINDS if acquisition == "gp_hedge" else (acquisition,)
        self._hedge = Hedge(self.rng)
        self._opt: Any = None
        self._search: AcquisitionSearch | None = None
        # The surrogate fitted last, to the first `_model_told` values told.
        self._model: Any = None
        self._model_told = 0
        self._searched_at = 0  # values told when the GP's hyperparameters were last searched
        if self._axes:
            with _quiet():
                self._opt = self._optimizer(estimator, acquisition, initial_points, n_initial, seed)
            self._search = AcquisitionSearch(self._opt.space, self.rng)

    def _optimizer(
        self, estimator: str, acquisition: str, initial_points: str, n_initial: int, seed: int | None
    ) -> Any:
        return Optimizer(
            [a.skopt_dim for a in self._axes],
            base_estimator=_estimator(estimator, seed, self._axes),
            n_initial_points=n_initial,
            initial_point_generator=initial_points,
            acq_func=acquisition,
            # Never used: values are told with fit=False, and the surrogate is
            # fitted and searched here (`_suggest`).
            acq_optimizer="sampling",
            random_state=seed,
        )

    # Conversions at the boundary ------------------------------------------------

    def _to_params(self, point: list[Any]) -> dict[str, Any]:
        decoded = {a.name: a.decode(x) for a, x in zip(self._axes, point)}
        params = {d.name: self._fixed[d.name] if d.name in self._fixed else decoded[d.name] for d in self.space}
        if self.space.conditions:
            params = self.space.active(params)
        return self.space.with_constants(params)

    def _to_point(self, params: dict[str, Any]) -> list[Any] | None:
        """The skopt point of a parameter set, or None when it lies outside the space.

        Conditional spaces: the surrogate works on every dimension, so an
        inactive one is shown at a fixed value (its default, else the middle
        of its range). Points that differ only there look alike to the model,
        as they are alike to the objective.
        """
        if not self.space.contains(params):
            return None
        return [a.encode(params.get(a.name, self._inactive[a.name])) for a in self._axes]

    # Proposing --------------------------------------------------------------------

    def propose(self, number: int) -> dict[str, Any] | None:
        if self.exhausted():
            return None
        params = None
        for _ in range(INFEASIBLE_ASKS if self._opt is not None else 0):
            point = self._ask()
            params = self._to_params(point)
            if self.space.feasible(params):
                break
            # It violates a constraint: it never runs, and the model learns the region is bad.
            self._tell_penalty(self._to_point(params) or point)
            params = None
        if params is None or self.space.key(params) in self.seen:
            params = self._random_unseen()
            if params is None:
                return None
        key = self.space.key(params)
        self.seen.add(key)
        self._pending[key] = self._to_point(params) or []
        return params

    def _ask(self) -> list[Any]:
        pending = list(self._pending.values())
        with _quiet():
            if len(self._opt.yi) + len(pending) < self._n_initial:
                return self._initial_point(pending)
            return self._suggest(pending)

    def _initial_point(self, pending: list[list[Any]]) -> list[Any]:
        """The next point of skopt's initial design, past those still pending."""
        if not pending:
            return self._opt.ask()
        ahead = self._opt.copy(random_state=int(self.rng.integers(2**31 - 1)))
        ahead.tell(pending, [0.0] * len(pending), fit=False)
        return ahead.ask()

    def _suggest(self, pending: list[list[Any]]) -> list[Any]:
        """The surrogate's proposal: where the acquisition function is highest.

        With trials in flight, the surrogate is first conditioned on the value
        it predicts at each pending point (Kriging believer), with its
        hyperparameters kept, so its uncertainty there collapses and it looks
        elsewhere. Measured on Branin with 4 trials in flight
        (benchmarks/parallel.py), this kept regret at the sequential level
        where a constant lie (best or mean loss) did not.
        """
        space = self._opt.space
        model = self._fitted()
        X, y = space.transform(self._opt.Xi), np.asarray(self._opt.yi, dtype=float)
        if pending:
            P = space.transform(pending)
            model = self._conditioned(model, np.vstack([X, P]), np.concatenate([y, model.predict(P)]))
        assert self._search is not None
        proposals = self._search.best(model, self._kinds, float(y.min()), X[int(np.argmin(y))])
        point = self._hedge.choose(proposals) if len(proposals) > 1 else proposals[0]
        return space.inverse_transform(point[None])[0]

    def _random_unseen(self) -> dict[str, Any] | None:
        """A uniformly random feasible parameter set not proposed or told before."""
        space = self.space
        width = len(space)
        draws = REDRAWS if not space.constraints else CONSTRAINED_REDRAWS
        for _ in range(draws):
            params = space.from_unit(self.rng.random(width).tolist())
            if space.key(params) not in self.seen and space.feasible(params):
                return params
        return pick_unseen(self, self.rng, draws)

    # Learning ---------------------------------------------------------------------

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        if not trial.state.is_finished():
            return
        key = self.space.key(trial.params)
        point = self._pending.pop(key, None)
        if self._opt is None:
            return
        if point is None:  # history replayed on resume, or a trial proposed elsewhere
            point = self._to_point(trial.params)
            if point is None:
                return
        self._tell(point, self._loss(trial))

    def _tell(self, point: list[Any], loss: float | None) -> None:
        """Tell one point; None (a failure, a constraint violation) is told as the worst loss.

        The surrogate is fitted to all of skopt's `yi`, so every earlier value
        is rewritten at each tell: penalties follow the worst loss seen, and
        with WARP_Y all values go through log1p((y - best) / spread), which
        keeps their order but tames objectives that span orders of magnitude
        (Rosenbrock's valley), where a GP fitted to raw values sees nothing but
        the outliers.
        """
        if loss is not None:
            self._losses.append(loss)
        self._raw.append(loss)
        values = self._model_values()
        self._opt.yi[:] = values[:-1]
        self._opt.tell(point, values[-1], fit=False)

    def _model_values(self) -> list[float]:
        penalty = self._penalty()
        raw = [penalty if y is None else y for y in self._raw]
        if not WARP_Y or not self._losses:
            return raw
        best = min(self._losses)
        spread = statistics.median(self._losses) - best
        spread = spread if spread > 0 else 1.0
        return [math.log1p((y - best) / spread) for y in raw]

    def _fitted(self) -> Any:
        """The surrogate fitted to every value told so far (refitted only when one arrived).

        A GP's hyperparameters are searched from scratch at the first fit and
        from the previous fit's values after that, as the history grows (see
        GP_RESTARTS and RESEARCH_AFTER).
        """
        from sklearn.base import clone

        told = len(self._opt.yi)
        if self._model is not None and self._model_told == told:
            return self._model
        model = clone(self._opt.base_estimator_)
        if self._model is not None and _is_gp(model):
            model.set_params(kernel=_fitted_kernel(self._model), n_restarts_optimizer=0)
            if told - self._searched_at < RESEARCH_AFTER * told:
                model.set_params(optimizer=None)  # the last hyperparameters, conditioned on the new data
            else:
                self._searched_at = told
        model = _fit(model, self._opt.space.transform(self._opt.Xi), self._opt.yi)
        self._model, self._model_told = model, told
        if len(self._kinds) > 1:
            self._hedge.update(model.predict)
        return model

    @staticmethod
    def _conditioned(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
        """`model` refitted to (X, y) with its hyperparameters kept."""
        from sklearn.base import clone

        refit = clone(model)
        if _is_gp(model):
            refit.set_params(kernel=_fitted_kernel(model), optimizer=None)
        return _fit(refit, X, y)

    def _tell_penalty(self, point: list[Any]) -> None:
        """Tell a point with no usable value (failed, infeasible) as the worst loss so far."""
        self._tell(point, None)

    def _loss(self, trial: Trial) -> float | None:
        """The loss to tell for a finished trial, or None when it has no usable value."""
        metric = self.objective.metric
        value: float | None = None
        if trial.state is TrialState.COMPLETED:
            value = trial.values.get(metric)
            if value is None:
                value = self.objective.reduce_records(trial.metrics)
        elif trial.state is TrialState.PRUNED:
            reported = [r.value for r in trial.metrics if r.name == metric and math.isfinite(r.value)]
            value = reported[-1] if reported else None
        if value is None or not math.isfinite(value):
            return None
        return self._sign * float(value)

    def _penalty(self) -> float:
        # Before any genuine value the constant is arbitrary: every penalty is
        # raised to the worst real loss as soon as one arrives.
        return max(self._losses) if self._losses else 0.0
