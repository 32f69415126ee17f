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


def joint_draws(mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator, draws: int = IDENTIFY_DRAWS) -> Any:
    """Draws (rows × draws) from the joint normal (mean, cov) of the noise-free objective at the contenders,
    in the GP's units; None when the covariance cannot be factorised."""
    root = _root(cov)
    return None if root is None else mean[:, None] + root @ rng.standard_normal((len(mean), draws))


def _root(cov: np.ndarray) -> np.ndarray | None:
    # The jitter of bayesian._expected_best: 1e-10 of the average variance.
    jitter = 1e-10 * max(float(np.trace(cov)) / len(cov), 1e-12)
    try:
        return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
    except np.linalg.LinAlgError:
        return None


def best_shares(draws: np.ndarray) -> np.ndarray:
    """Each contender's share of the joint draws (rows × draws) in which it is the best."""
    return np.bincount(np.argmin(draws, axis=0), minlength=len(draws)) / draws.shape[1]


def identification_gain(
    mean: np.ndarray, cov: np.ndarray, noise: np.ndarray, shares: np.ndarray, observations: int,
    rng: np.random.Generator,
) -> float:  # fmt: skip
    """What `observations` more evaluations, shared among the contenders in the proportions `shares`, are
    expected to lower the best posterior mean among the contenders by (the GP's units; `noise`: each
    contender's observation noise variance there).

    The knowledge gradient of a batch (Frazier, Powell and Dayanik 2009, for many steps): after the
    observations the posterior means are m + W z, z standard normal, W Wᵀ = Σ_{·A} (Σ_AA + N)⁻¹ Σ_{A·},
    the part of the contenders' covariance the observations at A resolve (N their noise over the counts),
    and the gain is min m - E[min(m + W z)]: nothing where the noise is too large against the contenders'
    gaps for the observations to change which is best, much where a few looks settle it. The shares are
    each contender's posterior probability of being the best, the allocation Thompson sampling makes."""
    index = np.flatnonzero(shares > 0)
    if len(index) == 0:
        return 0.0
    counts = max(observations, 1) * shares[index]
    joint = cov[np.ix_(index, index)] + np.diag(noise[index] / counts)
    root = _root(joint)
    if root is None:
        return 0.0
    from scipy.linalg import solve_triangular

    W = solve_triangular(root, cov[index, :], lower=True).T  # contenders × observed
    after = mean[:, None] + W @ rng.standard_normal((len(index), IDENTIFY_DRAWS))
    return float(np.min(mean) - np.mean(np.min(after, axis=0)))


def expected_improvement(model: Any, X: np.ndarray, best: float) -> float:
    """The highest expected improvement on `best` among the rows of X (a loss; the GP's units)."""
    mean, sd = Posterior(model)(np.atleast_2d(X))
    sd = np.maximum(sd, 1e-300)
    return float(np.max(sd * np.exp(_log_h((best - mean) / sd))))


def worth_identifying(gain: float, remaining: int, improvement: float) -> bool:
    """Whether a trial should go to telling the evaluated points apart: what identification over the
    `remaining` trials is expected to gain, shared over them, above the expected improvement a new point
    offers."""
    return remaining >= 1 and math.isfinite(gain) and gain / remaining > improvement


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
