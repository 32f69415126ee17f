"""The end of a noisy study with a known budget: telling the best evaluated points apart (issue 16).

Under noise the recommendation (bayesian.RECOMMEND_Z) is an evaluated point,
and with many good points each seen once the posterior cannot tell them
apart: on Styblinski-6 the recommendation was the 4.5th best of a run's 60
trials in the median (BENCHMARKS.md, fourth round of issue 16). When the
study's length is known, its last trials can be spent on that choice instead
of on new points that will be seen once and so cannot become a confident
recommendation.

Two decisions, both from the GP's joint posterior at the evaluated points:

- *Whether a trial identifies rather than searches* (`worth_identifying`):
  by the knowledge gradient of the trials left, R of them. Spent on the
  evaluated points (shared as Thompson sampling would share them, by each
  one's probability of being the best), they are expected to lower the best
  posterior mean among the evaluated points by G(R); a new point run now
  gains its own knowledge gradient, and the R - 1 after it G(R - 1). The
  trial identifies when G(R) - G(R - 1) is the larger. There is no tuned
  fraction: the phase begins (and ends again, should the contenders be
  resolved) where the two cross, which depends on the noise against the
  contenders' gaps and on how many trials are left.
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

from typing import Any

import numpy as np

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
    rng: np.random.Generator, recommendable: int | None = None,
) -> float:  # fmt: skip
    """What `observations` more evaluations, shared among the rows in the proportions `shares`, are
    expected to lower the best posterior mean among the recommendable rows by (the GP's units; `noise`:
    each row's observation noise variance there). The first `recommendable` rows (all by default) are
    the evaluated points; a row past them is a new point, recommendable once evaluated.

    The knowledge gradient of a batch (Frazier, Powell and Dayanik 2009, for many steps): after the
    observations the posterior means are m + W z, z standard normal, W Wᵀ = Σ_{·A} (Σ_AA + N)⁻¹ Σ_{A·},
    the part of the rows' covariance the observations at A resolve (N their noise over the counts),
    and the gain is min m - E[min(m + W z)]: nothing where the noise is too large against the
    contenders' gaps for the observations to change which is best, much where a few looks settle it."""
    k = len(mean) if recommendable is None else recommendable
    index = np.flatnonzero(shares > 0)
    if len(index) == 0 or observations < 1:
        return 0.0
    counts = observations * shares[index]
    joint = cov[np.ix_(index, index)] + np.diag(noise[index] / counts)
    root = _root(joint)
    if root is None:
        return 0.0
    from scipy.linalg import solve_triangular

    W = solve_triangular(root, cov[index, :], lower=True).T  # rows × observed
    after = mean[:, None] + W @ rng.standard_normal((len(index), IDENTIFY_DRAWS))
    return float(np.min(mean[:k]) - np.mean(np.min(after, axis=0)))


def worth_identifying(
    mean: np.ndarray, cov: np.ndarray, noise: np.ndarray, shares: np.ndarray, remaining: int, seed: Any
) -> bool:
    """Whether the trial should go to telling the evaluated points apart rather than to a new point, with
    `remaining` trials left (this one included). The rows are the evaluated points and, last, the new
    point the search proposes; `shares` (of the evaluated points) how identification would spread its
    trials.

    Spending every trial left on identification gains G(R); running the new point first gains its own
    knowledge gradient (one evaluation of it, then recommendable) and G(R - 1) from the rest. So this
    trial identifies when G(R) - G(R - 1), the last identifying trial's worth, exceeds the new point's.
    Each gain from the same normal draws (`seed`), so that their difference is not Monte Carlo noise."""
    n = len(mean) - 1
    evaluated = (mean[:n], cov[:n, :n], noise[:n], shares)

    def identify(trials: int) -> float:
        return identification_gain(*evaluated, trials, np.random.default_rng(seed))

    new = np.zeros(n + 1)
    new[n] = 1.0
    fresh = identification_gain(mean, cov, noise, new, 1, np.random.default_rng(seed), recommendable=n)
    return identify(remaining) - identify(remaining - 1) > fresh


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
