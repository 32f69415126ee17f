"""The end of a noisy study with a known budget: telling the best evaluated points apart (issue 16).

Under noise the recommendation (bayesian.RECOMMEND_Z) is an evaluated point,
and with many good points each seen once the posterior cannot tell them
apart: on Styblinski-6 the recommendation was the 4.5th best of a run's 60
trials in the median (BENCHMARKS.md, fourth round of issue 16). When the
study's length is known, its last trials can be spent on that choice instead
of on new points that will be seen once and so cannot become a confident
recommendation.

Two decisions, both from the GP's joint posterior at the evaluated points:

- *Whether a trial identifies rather than searches* (`worth_identifying`).
  Perfect knowledge of the evaluated points would lower the recommendation's
  expected loss by the expected regret of the recommendation among them,
  E[f(rec) - min_j f(x_j)] (the expected opportunity cost of the selection
  literature). Spread over the R trials left, that is what each identifying
  trial can be credited with at most; a new point is credited with its
  expected improvement on the expected best evaluated value, the bar of the
  search's own EI. A trial identifies when the first exceeds the second. Early
  in a study R is large and the search's EI high, so the search runs as
  before; as the budget runs out, the identification's share grows. There is
  no tuned fraction: the phase begins (and ends again, should the contenders
  be resolved) where the two credits cross.
- *Which evaluated point to run again* (`top_two`): top-two Thompson sampling
  (Russo 2016, "Simple Bayesian algorithms for best arm identification"): a
  joint posterior draw names a leader; with probability 1/2 the leader runs,
  otherwise the best point of the first further draw whose best is another
  point (the challenger). β = 1/2 is Russo's default, within a factor 2 of the
  optimal allocation's rate whatever the optimal β is.

Both are taken in the GP's (warped) units: the warp is monotone, so which
point is best in a draw is the same in the objective's units.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .acquisition import Posterior, _log_h

# Joint posterior draws at the evaluated points for the expected regret of the recommendation, whose Monte
# Carlo error is then about sd / 16 of that regret's own spread: small beside the factor R it is divided by.
IDENTIFY_DRAWS = 256
# Top-two Thompson sampling's probability of running the leader (Russo 2016's default).
TOP_TWO_BETA = 0.5


def joint_draws(model: Any, X: np.ndarray, rng: np.random.Generator, draws: int = IDENTIFY_DRAWS) -> np.ndarray | None:
    """Draws of the noise-free objective at the rows of X from the GP's joint posterior (rows × draws), in
    the GP's units; None when the posterior covariance cannot be factorised."""
    mean, cov = model.predict(X, return_cov=True)
    mean = np.asarray(mean, dtype=float)
    # The jitter of bayesian._expected_best: 1e-10 of the average variance.
    jitter = 1e-10 * max(float(np.trace(cov)) / len(X), 1e-12)
    try:
        root = np.linalg.cholesky(cov + jitter * np.eye(len(X)))
    except np.linalg.LinAlgError:
        return None
    return mean[:, None] + root @ rng.standard_normal((len(X), draws))


def regret_of_choice(draws: np.ndarray, chosen: int) -> float:
    """E[f(chosen) - min_j f(x_j)] over joint draws (rows × draws): what perfect knowledge of the rows would
    save the choice of row `chosen`."""
    return float(np.mean(draws[chosen] - draws.min(axis=0)))


def expected_improvement(model: Any, X: np.ndarray, best: float) -> float:
    """The highest expected improvement on `best` among the rows of X (a loss; the GP's units)."""
    mean, sd = Posterior(model)(np.atleast_2d(X))
    sd = np.maximum(sd, 1e-300)
    return float(np.max(sd * np.exp(_log_h((best - mean) / sd))))


def worth_identifying(regret: float, remaining: int, improvement: float) -> bool:
    """Whether a trial should go to telling the evaluated points apart: the recommendation's expected regret
    among them, shared over the `remaining` trials, above the expected improvement a new point offers."""
    return remaining >= 1 and math.isfinite(regret) and regret / remaining > improvement


def top_two(draws: np.ndarray, rng: np.random.Generator, beta: float = TOP_TWO_BETA) -> int:
    """The row to evaluate again by top-two Thompson sampling over joint draws (rows × draws): the first
    draw's best row with probability `beta`, else the best row of the first later draw whose best differs
    (the leader again when no draw disagrees)."""
    best = np.argmin(draws, axis=0)
    leader = int(best[0])
    if rng.random() < beta:
        return leader
    challengers = best[1:][best[1:] != leader]
    return int(challengers[0]) if len(challengers) else leader
