"""Observation noise in the Bayesian sampler's Gaussian process (`strategy.noise`, SPEC §9).

`noise: auto` fits the noise as a hyperparameter of the GP, `none` keeps the
GP nearly noise-free (the behaviour before noise was modelled), and a number
fixes it: the standard deviation of repeated evaluations at one point, in the
objective's own units.

The sampler fits its GP to warped values w = log1p((y - best) / spread)
(bayesian.WARP_Y), which squeeze large losses together. A noise that is the
same everywhere in the objective's units is then larger, in the GP's units,
near the best than far from it: by the warp's slope, exp(-w) / spread. So the
noise term here is one level (the noise variance at the best value, in the
GP's normalised units) times a weight per observation, exp(-2w). That keeps
the fitted level one number in the objective's units (`sd_in_objective_units`)
and lets a fixed `noise:` mean what it says wherever a value lies.

The kernel term itself (`ObservationNoise`) is in bayesian.py, the one home
of skopt, whose kernel classes it extends.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

AUTO = "auto"
NONE = "none"
FIXED = "fixed"
# Bounds of the fitted noise level (variance at the best value, in units of the
# normalised values' variance). The floor lets a noise-free objective stay
# (nearly) noise-free; the ceiling is noise three times the values' spread.
NOISE_FLOOR = 1e-10
NOISE_CEILING = 10.0
# Where the first fit's search starts; the restarts draw from the whole range.
NOISE_START = 1e-4
# Prior on the noise level: Gamma(1.1, 30), Optuna's GP sampler's, whose mean
# (0.037) is a noise of about a fifth of the values' spread, and whose density
# stays nearly flat down to the floor, so that the likelihood decides.
NOISE_PRIOR_SHAPE = 1.1
NOISE_PRIOR_RATE = 30.0
# Noise given to a fantasised (pending) observation under the Kriging believer:
# none, so its uncertainty collapses and parallel proposals spread out.
PENDING_NOISE = 1e-8


def parse_noise(value: Any) -> tuple[str, float]:
    """(mode, sd): ("auto", nan), ("none", 0.0) or ("fixed", sd > 0); ValueError for anything else."""
    if isinstance(value, str) and value in (AUTO, NONE):
        return value, (math.nan if value == AUTO else 0.0)
    if not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return (NONE, 0.0) if value == 0 else (FIXED, float(value))
    raise ValueError(f"noise must be auto, none or a non-negative number (a standard deviation), got {value!r}")


def noise_log_prior(log_level: float) -> tuple[float, float]:
    """-log prior of the noise level (up to a constant) and its derivative, in log coordinates."""
    level = math.exp(log_level)
    shape, rate = NOISE_PRIOR_SHAPE, NOISE_PRIOR_RATE
    return -(shape - 1.0) * log_level + rate * level, -(shape - 1.0) + rate * level


def weights(warped: np.ndarray) -> np.ndarray:
    """Each observation's noise variance relative to one at the best value: the warp's slope squared."""
    return np.exp(-2.0 * np.asarray(warped, dtype=float))


def level_for_sd(sd: float, spread: float, values_std: float) -> float:
    """The normalised noise level at the best value for a noise `sd` in the objective's units."""
    return max((sd / (spread * values_std)) ** 2, NOISE_FLOOR)


def sd_in_objective_units(level: float, spread: float, values_std: float) -> float:
    """The inverse of `level_for_sd`."""
    return math.sqrt(max(level, 0.0)) * spread * values_std
