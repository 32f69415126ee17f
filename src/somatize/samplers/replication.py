"""Whether a noisy study should evaluate a point again: the knowledge gradient over the evaluated points.

Under noise the answer of a study is the evaluated point the model rates best
(bayesian.BayesianSampler.recommend), and the next trial can serve it in two
ways: a new point (the acquisition's proposal), which may become the answer,
or an evaluated point once more, which sharpens the model's belief about the
candidates it has. The knowledge gradient (Frazier, Powell and Dayanik, "The
knowledge-gradient policy for correlated normal beliefs", INFORMS J. Computing
2009) prices both alike: the expected decrease, after the observation, of the
best posterior mean over the points that can be recommended. It needs no
constant of its own: a far-off proposal with a wide posterior is worth more
than a repeat early on, and a repeat of a lucky incumbent worth more once the
neighbourhood is known and its value stands only on a single noisy draw.
A noise-free point is worth nothing to repeat (its value is known), so a
deterministic objective never repeats by this rule.

This module holds the arithmetic; bayesian.py asks it with the GP's joint
posterior at the evaluated points and the proposal.
"""

from __future__ import annotations

import numpy as np

# Gauss-Hermite nodes for the expectation over the one standard normal an observation adds. The
# integrand (the minimum of lines in z) is piecewise linear; with 48 nodes the expectation of the
# minimum of 60 random lines agreed with 10^6 Monte Carlo draws to 1e-3 of its spread.
QUADRATURE_NODES = 48


def knowledge_gradient(
    mean: np.ndarray, cov: np.ndarray, noise: np.ndarray, recommendable: np.ndarray, z: float = 0.0
) -> np.ndarray:
    """Each point's knowledge gradient (in the units of `mean`, for a loss: larger is more worth evaluating).

    `mean` (m,) and `cov` (m × m) are the posterior of the objective at m points,
    `noise` (m,) the variance of one observation at each, `recommendable` (m,) which
    of them may be recommended now (the evaluated ones). A point is rated by its
    posterior quantile mean + z·sd (z = 0: the mean; the sampler recommends by the
    quantile of bayesian.RECOMMEND_Z). Observing point c moves each mean to
    mean + s_c·Z, Z ~ N(0, 1), with s_c = cov[:, c] / √(cov[c, c] + noise[c]), and
    shrinks each variance to var − s_c², whatever Z; after it, c may be recommended
    too. Its value is the best quantile over the recommendable points now, less the
    expected best over them and c after the observation.
    """
    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    recommendable = np.asarray(recommendable, dtype=bool)
    if not recommendable.any():
        raise ValueError("knowledge_gradient needs at least one recommendable point")
    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
    weights = weights / weights.sum()  # probabilists' Hermite: a standard normal's expectation
    var = np.maximum(np.diag(cov), 0.0)
    spread = np.sqrt(np.maximum(var + np.asarray(noise, dtype=float), 1e-300))
    shifts = cov / spread[None, :]  # column c: how each point's mean moves per unit of Z when c is observed
    now = float((mean + z * np.sqrt(var))[recommendable].min())
    values = np.empty(len(mean))
    for c in range(len(mean)):
        members = recommendable.copy()
        members[c] = True
        slope = shifts[members, c]
        after = mean[members] + z * np.sqrt(np.maximum(var[members] - slope**2, 0.0))
        lines = after[:, None] + slope[:, None] * nodes[None, :]
        values[c] = now - float(lines.min(axis=0) @ weights)
    return values
