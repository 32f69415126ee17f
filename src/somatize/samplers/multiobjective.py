"""Bayesian search of a Pareto front: one GP per objective, log expected hypervolume improvement (issue 17).

With two or more objectives, `MultiObjectiveSampler` keeps one surrogate per
objective: the primary one is its own (it is a `BayesianSampler`), the others
are `BayesianSampler`s told the same trials but never asked. So every
objective gets what the single-objective search has: its own loss sign
(directions respected), standardisation (normalisation: objectives of any
units weigh alike), the fitted noise, the hyperparameter schedule, failures
and constraint violations told as the worst loss, pruned trials told at their
last report; but not the log1p warp of the values (WARP_OBJECTIVES). The initial design, conditional spaces,
parameter constraints and resume come from `BayesianSampler` unchanged; only
the proposal after the initial design (`_suggest`) is replaced.

The proposal maximises the logarithm of the expected hypervolume
improvement (EHVI) over the front, computed exactly: the region the front
does not dominate is cut into boxes (`nondominated_boxes`), and under
independent Gaussian predictions a box's expected contribution is a product
of one-dimensional terms with a closed form (`_log_box_terms`). Everything
happens in the models' units, the objectives' own up to a scale and shift
per objective, which change EHVI only by a constant factor.

Why EHVI rather than ParEGO's random Chebyshev scalarisations: a
scalarisation improves one point of the front per trial, chosen by a random
weight, and its single GP must fit a max() of objectives with kinks; EHVI
scores every way a point can grow the front and keeps each objective's model
smooth. (The choice is by that reasoning: ParEGO was not built here to be
measured against it.) EHVI's cost is the box count, about n for 2 objectives
and n²/2 for 3 (n the front's size), small next to the GP fits at these
sizes; benchmarks/multiobjective.py measures both the fronts and the time.

Trials in flight: each GP is conditioned on its own prediction at the
pending points (Kriging believer, as bayesian.py does for one objective), and
the predicted vectors join the front, so no hypervolume is expected where a
pending trial already stands.

An objective's floor (`objective_floors`): when trials that differ in the
other objectives tie at an objective's best value, that value is a bound the
objective does not pass (a model at its smallest size, f1 = x0 at x0 = 0), and
the boxes stop there instead of at -inf. A Gaussian model cannot know a bound:
at the floor it still gives half its probability to values below it, and the
box beyond the front's end in that objective spans every other objective up
to the reference, so a point at the floor with the others poor bought the
whole width of the others with a sliver of improvement no trial can make (on
ZDT1, seed 1, 33 of trials 11-59 went there, 1 with the floors; on DTLZ2 the
corners, where two objectives are 0, drew trials the same way).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import log_ndtr, logsumexp

from ..space import SearchSpace
from ..study import Objective, Trial
from .acquisition import ACQ_POINTS, AcquisitionSearch, Posterior, _log_h, climb
from .bayesian import BayesianSampler

# The reference point, in each model's units: a worst value per objective plus this
# fraction of the observed range, so that stretching the front's ends counts a
# little (BoTorch's and Optuna's GP samplers also place it just past the nadir).
REFERENCE_MARGIN = 0.1
# The worst value: the front's nadir (as there), but never inside the box of the
# "typical trial", the upper quartile in each objective of the initial design's
# values (`_reference`). The nadir alone moves with the front: when the first
# good trials sit at one end, the reference closes in on that end and only points
# just past it can add volume, so the front stays there (ZDT1 seed 0 ended with
# all 22 front points at f1 <= 0.08, hypervolume 113.1 of 120.7; ZDT2 half the
# seeds at 110-112). The box does not move: it is a property of the problem (what
# random trials reach), not of the search so far. Median hypervolume after 60
# trials, seeds 0-9, nadir against this, with warped models (BENCHMARKS.md, follow-up): ZDT1 114.7 / 118.5, ZDT2
# 116.0 / 120.3, tree 2.588 / 2.599, DTLZ2-3 0.235 / unchanged (its nadir lies
# outside the box). Tried and left out: the box alone as the reference on the
# nearly-exploiting steps (EXPLOIT_EVERY), which stops extremes that are best at
# one objective and poor at the others (DTLZ2's x0 at a bound) from stretching the
# region where improvement counts: DTLZ2-3 0.346, but tree 2.540 (below Optuna's
# samplers) and ZDT1 117.6; the box alone at every step, or a quantile of all the
# trials' values (which follows the trials and collapsed ZDT2 onto f1 = 0).
# That reference is the one of the nearly-exploiting steps (EXPLOIT_EVERY); the
# others take, where it is worse, the worst value of all the trials (as Optuna's
# GP sampler), so that the front's ends count however far they lie: on ZDT1 the
# box ended at f1 = 0.64 while the front runs to f1 = 1, and the front stopped
# short of it (seed 1: its last point at f1 = 0.41, hypervolume 116.9 of 120.7).
# Without the floors (`objective_floors`) that far reference made the tail below
# a floor worth more (third round: DTLZ2-3 0.29, 0.32, 0.37 against 0.46, 0.35,
# 0.48, seeds 0-2). With both, median hypervolume after 60 trials, seeds 0-9, before
# / after (BENCHMARKS.md, fourth round): ZDT1 118.45 / 120.60, ZDT2 116.52 / 120.32,
# DTLZ2-3 0.434 / 0.456, tree 2.601 / 2.581; the far reference at every step, floors
# kept, gave DTLZ2-3 0.37, 0.27, 0.52 and tree 2.57, 2.61, 2.55 (seeds 0-2).
REFERENCE_QUANTILE = 0.75
# Whether each objective's model is fitted to warped values (bayesian.WARP_Y: log1p((y - best) / spread),
# made for one objective spanning orders of magnitude) or, as here, to the values as they are
# (standardised), so that EHVI's volume is the objectives' own up to a scale per objective. Chosen by
# measurement: median hypervolume after 60 trials, seeds 0-9, warped / not (BENCHMARKS.md, third round):
# DTLZ2-3 0.235 / 0.434, ZDT1 118.50 / 118.45, tree 2.599 / 2.601, but ZDT2 120.30 / 116.52 (on seed 1,
# trials 11-54 all sat at f1 = 0, f1's lower bound, where the f1 model's tail below its best buys the
# whole range of f2 up to the reference; still above Optuna's samplers, 110.0). Not the units of the
# volume alone: warped models with EHVI taken in the objectives' units (each posterior mapped
# back by the warp's inverse and slope) gave DTLZ2-3 0.24, 0.34, 0.25 (seeds 0-2); nor the fit: the
# warp chosen per objective by evidence (bayesian._choose_warp, as under noise) took it for all three
# DTLZ2 objectives, 0.16, 0.35, 0.29.
WARP_OBJECTIVES = False
# Candidates scattered around each point of the front, at this spread (in the
# unit cube), beside ACQ_POINTS uniform ones: the front grows next to itself,
# and a uniform draw seldom lands close enough in many dimensions.
NEAR_FRONT = 16
NEAR_SPREAD = 0.05
NEAR_LIMIT = 512
# Every EXPLOIT_EVERY-th proposal maximises EHVI with the posterior deviations
# scaled by EXPLOIT_STD: nearly the hypervolume improvement of the predicted
# means, with log EHVI's smooth slope towards improvement where there is none.
# EHVI is a product of one improvement term per objective, so its appetite for
# uncertainty compounds with each objective: with 3 objectives (DTLZ2, 6
# variables) plain EHVI spent most trials at the corners of the space, where
# every model is uncertain, and its front stayed far from the true one.
# With warped models (before the third round), hypervolume after 60 trials, seed 0
# (seed 1): DTLZ2 3-obj 0.20 plain, 0.29 alternating; ZDT1 120.18 (118.37) plain, 117.45 (120.65) alternating; ZDT2
# 114.0 alternating. Scaling the deviations by 0.3 at every trial instead left
# DTLZ2 at 0.20: the full EHVI steps are needed too.
EXPLOIT_EVERY = 2
EXPLOIT_STD = 0.1
# Values of an objective within this fraction of its observed range of its best
# tie with it (`objective_floors`): a bound reached through rounding
# (cos(pi/2) = 6e-17 in DTLZ2) is the bound. Set by that reasoning, not tuned.
FLOOR_TOLERANCE = 1e-9
# With 4 or more objectives the boxes number about n^(m-1): the front is
# thinned to at most this many boxes (the acquisition is then approximate).
MAX_BOXES = 4000
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

# The log probability that a point is feasible, multiplied into the acquisition (added to its log):
# rows of transformed points, and whether gradients are wanted -> (log p per row, gradient rows × columns or None).
LogFeasibility = Callable[[np.ndarray, bool], tuple[np.ndarray, "np.ndarray | None"]]


def nondominated(points: np.ndarray) -> np.ndarray:
    """The rows of `points` (to minimise) that no other row dominates; duplicates kept once."""
    points = np.unique(np.asarray(points, dtype=float), axis=0)
    if len(points) < 2:
        return points
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        others = points[keep]
        dominated = np.all(others <= p, axis=1) & np.any(others < p, axis=1)
        keep[i] = not dominated.any()
    return points[keep]


def nondominated_boxes(front: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners of disjoint boxes that tile the region below `reference` that no row of
    `front` dominates (to minimise). Lower corners may be -inf.

    By slabs of the last objective: between two consecutive values of it, the
    dominated part is what the points at or below the slab dominate in the
    other objectives, so each slab is the same problem one dimension down.
    """
    reference = np.asarray(reference, dtype=float)
    front = np.asarray(front, dtype=float).reshape(-1, len(reference))
    return _boxes(nondominated(front[np.all(front < reference, axis=1)]), reference)


def _boxes(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(reference) == 1:
        upper = min(float(points[:, 0].min()), reference[0]) if len(points) else reference[0]
        return np.array([[-np.inf]]), np.array([[upper]])
    cuts = [-np.inf, *np.unique(points[:, -1]).tolist(), float(reference[-1])]
    lowers, uppers = [], []
    for low, high in itertools.pairwise(cuts):
        if high <= low:
            continue
        below = points[points[:, -1] <= low][:, :-1]
        sub_low, sub_high = _boxes(nondominated(below) if len(below) else below, reference[:-1])
        lowers.append(np.hstack([sub_low, np.full((len(sub_low), 1), low)]))
        uppers.append(np.hstack([sub_high, np.full((len(sub_high), 1), high)]))
    return np.vstack(lowers), np.vstack(uppers)


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - e^x) for x < 0, accurate at both ends (Mächler's rule)."""
    x = np.minimum(x, -1e-300)
    with np.errstate(divide="ignore"):  # np.where evaluates both branches; the one taken is finite
        return np.where(x > -math.log(2), np.log(-np.expm1(x)), np.log1p(-np.exp(-np.abs(x))))


def _log_box_terms(lower: np.ndarray, upper: np.ndarray, mean: np.ndarray, std: np.ndarray, gradients: bool) -> Any:
    """log E[max(0, u - max(l, Y))] for Y ~ N(mean, std²), per point, box and objective.

    With a = (l - μ)/σ, b = (u - μ)/σ and h(z) = φ(z) + zΦ(z), the expectation
    is σ(h(b) - h(a)); its derivatives are -(Φ(b) - Φ(a)) in μ and φ(b) - φ(a)
    in σ. Shapes: mean, std (points × objectives); lower, upper (boxes ×
    objectives); result points × boxes × objectives.
    """
    mu, sd = mean[:, None, :], std[:, None, :]
    a = np.clip((lower[None] - mu) / sd, -1e6, 1e6)
    b = np.clip((upper[None] - mu) / sd, -1e6, 1e6)
    log_hb = _log_h(b)
    log_diff = log_hb + _log1mexp(_log_h(a) - log_hb)  # log(h(b) - h(a))
    value = np.log(sd) + log_diff
    if not gradients:
        return value
    with np.errstate(over="ignore", invalid="ignore"):
        ratio_mean = -(np.exp(log_ndtr(b) - log_diff) - np.exp(log_ndtr(a) - log_diff)) / sd
        ratio_std = (np.exp(-0.5 * b * b - _LOG_SQRT_2PI - log_diff) - np.exp(-0.5 * a * a - _LOG_SQRT_2PI - log_diff)) / sd
    # Overflow only where a box is too thin to resolve in floating point; its weight in the sum is then nil.
    return value, _finite(ratio_mean), _finite(ratio_std)


def _finite(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def objective_floors(values: np.ndarray) -> np.ndarray:
    """Per objective (column of `values`, to minimise), its best value when two trials that differ in
    some objective tie at it (FLOOR_TOLERANCE), else -inf (module docstring).

    Trials equal in every objective do not count: they are the same outcome reached twice (two
    hyperparameter sets that build the same tree), not evidence of a bound."""
    values = np.asarray(values, dtype=float)
    floors = np.full(values.shape[1], -np.inf)
    if not len(values):
        return floors
    best = values.min(axis=0)
    span = values.max(axis=0) - best
    for k in range(values.shape[1]):
        at_best = values[np.abs(values[:, k] - best[k]) <= FLOOR_TOLERANCE * span[k]]
        if len(np.unique(at_best, axis=0)) >= 2:
            floors[k] = best[k]
    return floors


def floored_boxes(lower: np.ndarray, upper: np.ndarray, floors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes cut off below `floors` (per objective), the empty ones dropped; all of them, uncut, when
    none is left (a trial at every objective's floor at once: the front cannot grow, and any proposal will do)."""
    floored = np.maximum(lower, floors)
    keep = np.all(upper > floored, axis=1)
    return (floored[keep], upper[keep]) if keep.any() else (lower, upper)


class LogEHVI:
    """log expected hypervolume improvement over the boxes of a front, for independent posteriors
    (one per objective), times the probability of feasibility when one is given."""

    def __init__(self, posteriors: list[Posterior], lower: np.ndarray, upper: np.ndarray,
                 log_feasibility: LogFeasibility | None = None, std_scale: float = 1.0):
        self.posteriors, self.lower, self.upper = posteriors, lower, upper
        self.std_scale = std_scale
        self.log_feasibility = log_feasibility
        self.has_gradients = all(p.has_gradients for p in posteriors)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        predictions = [p(X) for p in self.posteriors]
        mean = np.column_stack([m for m, _ in predictions])
        std = np.maximum(self.std_scale * np.column_stack([s for _, s in predictions]), 1e-12)
        terms = _log_box_terms(self.lower, self.upper, mean, std, gradients=False)
        value = logsumexp(terms.sum(axis=2), axis=1)
        if self.log_feasibility is not None:
            value = value + self.log_feasibility(X, False)[0]
        return value

    def value_and_gradient(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values and their gradients (rows × columns) at the rows of X."""
        predictions = [p.gradients(X) for p in self.posteriors]
        mean = np.column_stack([g[0] for g in predictions])
        std = np.maximum(self.std_scale * np.column_stack([g[1] for g in predictions]), 1e-12)
        terms, d_mean, d_std = _log_box_terms(self.lower, self.upper, mean, std, gradients=True)
        d_std = d_std * self.std_scale
        per_box = terms.sum(axis=2)  # points × boxes
        value = logsumexp(per_box, axis=1)
        weights = np.exp(per_box - value[:, None])  # each box's share of the improvement
        grad = np.zeros_like(X, dtype=float)
        for d, (_, _, dmean, dstd) in enumerate(predictions):
            grad += np.sum(weights * d_mean[:, :, d], axis=1)[:, None] * dmean
            grad += np.sum(weights * d_std[:, :, d], axis=1)[:, None] * dstd
        if self.log_feasibility is not None:
            log_p, d_log_p = self.log_feasibility(X, True)
            value = value + log_p
            if d_log_p is not None:
                grad = grad + d_log_p
        return value, grad


class FrontSearch(AcquisitionSearch):
    """AcquisitionSearch's scheme (uniform candidates, L-BFGS-B from the best, a sweep of the discrete
    dimensions) for an acquisition over several posteriors, with extra candidates near the front."""

    def maximise(self, acquisition: LogEHVI, near: np.ndarray) -> np.ndarray:
        """The transformed point of highest acquisition found; `near` are the front's transformed points."""
        seed = int(self.rng.integers(2**31 - 1))
        candidates = self.space.transform(self.space.rvs(n_samples=ACQ_POINTS, random_state=seed))
        if len(near):
            centres = near[self.rng.integers(len(near), size=min(NEAR_LIMIT, NEAR_FRONT * len(near)))]
            scattered = np.clip(centres + NEAR_SPREAD * self.rng.standard_normal(centres.shape), 0.0, 1.0)
            candidates = np.vstack([candidates, self.space.transform(self.space.inverse_transform(scattered))])
        values = acquisition(candidates)
        starts = candidates[self._starts(values, with_incumbent=False)]
        xs = self._sweep(acquisition, self._climb(acquisition, starts))
        return xs[int(np.argmax(acquisition(xs)))]

    def _climb(self, acquisition: LogEHVI, starts: np.ndarray) -> np.ndarray:
        """L-BFGS-B from each start over the continuous columns (one search per start, as in `_local`)."""
        cols = self._columns
        if not cols or not acquisition.has_gradients:
            return starts
        return climb(acquisition.value_and_gradient, acquisition, starts, cols)


class MultiObjectiveSampler(BayesianSampler):
    """Bayesian search of the Pareto front of two or more objectives (module docstring).

    `recommend` stays the primary objective's (bayesian.py), as `best_trial` does.
    """

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], n_trials: int | None,
                 seed: int | None = None, **options: Any):
        if len(objectives) < 2:
            raise ValueError("a multi-objective search needs two or more objectives")
        super().__init__(space, objectives[0], n_trials, seed, **options)
        self.objectives = tuple(objectives)
        # The other objectives' surrogates: told every trial, never asked to propose.
        others = {k: v for k, v in options.items() if k != "outcome_constraints"}  # modelled once, here
        self._others = [BayesianSampler(space, o, n_trials, seed, **others) for o in objectives[1:]]
        for model in (self, *self._others):
            model.warp_values = WARP_OBJECTIVES
        # Per value told: False for a trial marked infeasible (metric constraints), kept off the front.
        self._feasible: list[bool] = []
        self._front_search = FrontSearch(self._opt.space, self.rng) if self._opt is not None else None

    def log_feasibility(self) -> LogFeasibility | None:
        """The probability of feasibility to multiply into the acquisition, when one is modelled.

        With constraints on metrics, the model of feasibility (samplers/feasibility.py) fitted to
        every told point's margins; its log probability is added to the log EHVI."""
        if self._feasibility is None:
            return None
        self._feasibility.fit(self._opt.space.transform(self._opt.Xi), self._margins)
        return self._feasibility.log_pof

    # Learning ---------------------------------------------------------------------

    def tell(self, trial: Trial) -> None:
        told = len(self._raw)
        super().tell(trial)
        for model in self._others:
            model.tell(trial)
        if len(self._raw) > told:
            self._feasible.append(getattr(trial, "feasible", True) is not False)

    def _tell_penalty(self, point: list[Any]) -> None:
        super()._tell_penalty(point)
        for model in self._others:
            model._tell_penalty(point)
        self._feasible.append(False)

    # Proposing --------------------------------------------------------------------

    def _suggest(self, pending: list[list[Any]]) -> list[Any]:
        """The point of highest log EHVI over the front of the evaluated (and pending) points."""
        space = self._opt.space
        models = [self, *self._others]
        posteriors, vectors = [], []
        rows = self._front_rows()
        P = space.transform(pending) if pending else None
        fantasies = []
        for model in models:
            fitted = model._fitted()
            X = space.transform(model._opt.Xi)
            y = np.asarray(model._opt.yi, dtype=float)
            # With noise modelled the front is of posterior means, which a lucky draw does not set.
            values = np.asarray(fitted.predict(X[rows]), dtype=float) if self._noisy else y[rows]
            if P is not None:
                guess = np.asarray(fitted.predict(P), dtype=float)
                fitted = model._conditioned(fitted, np.vstack([X, P]), np.concatenate([y, guess]), len(X))
                fantasies.append(guess)
            posteriors.append(Posterior(fitted))
            vectors.append(values)
        observed = np.column_stack(vectors)
        front = np.vstack([observed, np.column_stack(fantasies)]) if fantasies else observed
        # Counted with the pending points, so that trials proposed together alternate too.
        exploit = (len(self._raw) + len(pending)) % EXPLOIT_EVERY == EXPLOIT_EVERY - 1
        reference = self._reference(observed if len(observed) else front, exploit)
        lower, upper = self._thinned_boxes(front, reference)
        lower, upper = floored_boxes(lower, upper, objective_floors(observed))
        acquisition = LogEHVI(posteriors, lower, upper, self.log_feasibility(), EXPLOIT_STD if exploit else 1.0)
        on_front = self._on_front(observed)
        near = space.transform([self._opt.Xi[i] for i in np.flatnonzero(rows)[on_front]]) if on_front.any() else []
        assert self._front_search is not None
        point = self._front_search.maximise(acquisition, np.asarray(near, dtype=float).reshape(-1, space.transformed_n_dims))
        return space.inverse_transform(point[None])[0]

    def _front_rows(self) -> np.ndarray:
        """A mask of the values told that may stand on the front: completed, a value for every
        objective, not marked infeasible."""
        models = [self, *self._others]
        return np.array([
            all(m._numbers[i] is not None for m in models) and self._feasible[i] for i in range(len(self._raw))
        ], dtype=bool)

    @staticmethod
    def _on_front(vectors: np.ndarray) -> np.ndarray:
        if not len(vectors):
            return np.zeros(0, dtype=bool)
        front = nondominated(vectors)
        return np.array([any(np.array_equal(v, f) for f in front) for v in vectors], dtype=bool)

    def _reference(self, vectors: np.ndarray, exploit: bool = True) -> np.ndarray:
        """Just past a worst value in each objective (REFERENCE_MARGIN of the observed range): the front's,
        or the upper quartile of the initial design's values (REFERENCE_QUANTILE) where that is worse;
        on the steps that do not exploit, the worst of all the values where that is worse still.
        `vectors` are the told values in order, the initial design first."""
        if not len(vectors):
            return np.ones(len(self.objectives))
        typical = np.quantile(vectors[: self._n_initial], REFERENCE_QUANTILE, axis=0)
        worst = np.maximum(nondominated(vectors).max(axis=0), typical)
        if not exploit:
            worst = np.maximum(worst, vectors.max(axis=0))
        span = vectors.max(axis=0) - vectors.min(axis=0)
        return worst + REFERENCE_MARGIN * np.where(span > 0, span, 1.0)

    def _thinned_boxes(self, front: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        front = nondominated(front[np.all(front < reference, axis=1)]) if len(front) else front
        while True:
            lower, upper = nondominated_boxes(front, reference)
            if len(lower) <= MAX_BOXES or len(front) <= 2:
                return lower, upper
            front = front[self.rng.permutation(len(front))[: int(len(front) * 0.8)]]

