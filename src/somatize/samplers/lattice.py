"""Roughness from one lattice value to the next, as signal: a kernel term for finite spaces (issue 16).

In a finite space `noise: auto` cannot repeat a point (SPEC §2), and a Gaussian
process with a smooth kernel and a noise term then has only one way to explain
an objective that jumps from one allowed integer to the next (k-NN's number of
neighbours on a fixed split: 0.5273 at 14, 0.5324 at 15, 0.5280 at 16): as
observation noise. The noise it fits is the size of the jumps, and under noise
the recommendation is the evaluated point of lowest posterior 90% quantile, so
a deterministic objective's best point is smoothed away as a lucky draw.

`LatticeOffsets` gives the model a second way: each combination of the
integer (lattice) dimensions has its own offset from the smooth trend, the
same for every point at that combination whatever its other (categorical)
choices:

    k(x, x') = a · 1[x_L = x'_L],

L the lattice columns. At points that share no lattice combination this term
is white noise, and the data cannot tell it from observation noise (the two
have the same prior, and bayesian._tested_offsets keeps the term only where a
likelihood-ratio test rejects its absence). Where evaluated
points share a lattice combination and differ in a categorical, the data can:
a deterministic objective's jump is there in both (k-NN: 14 neighbours and
p = 3 give 0.5273 with uniform and 0.5298 with distance weights, where 15
gives 0.5324 and 0.5337), an observation noise is drawn afresh for each. So
the fitted noise goes to what the data say it is, and the offsets carry the
rest. The offset is shared whole: a version that let it vary along the
categorical columns, with length scales of its own, could take them short
and become white noise again, and then ate a true noise (BENCHMARKS.md, fifth
round of issue 16).

The kernel is numpy on scikit-learn's kernel interface (skopt's GP takes any
scikit-learn kernel; `gradient_x` is the one method skopt adds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from .introspection import Introspected

# Two transformed lattice values are the same value within this distance (the
# transform of one integer is the same float every time; a relaxed column of
# the acquisition's local search is a fraction, and then shares nothing).
SAME_VALUE = 1e-9


class LatticeOffsets(Introspected, Kernel):
    """a · 1[x_L = x'_L]: one offset per combination of the lattice columns `lattice` (indices in
    skopt's transformed space), shared by the points at it."""

    def __init__(self, amplitude: float = 1e-4, lattice: tuple[int, ...] = (), amplitude_bounds: Any = (1e-10, 10.0)):
        self.amplitude = amplitude
        self.lattice = lattice
        self.amplitude_bounds = amplitude_bounds

    @property
    def hyperparameter_amplitude(self) -> Hyperparameter:
        return Hyperparameter("amplitude", "numeric", self.amplitude_bounds)

    def same(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """1 where a row of X and a row of Y share their lattice combination, else 0 (rows × rows)."""
        lattice = list(self.lattice)
        return np.all(np.abs(X[:, None, lattice] - Y[None, :, lattice]) <= SAME_VALUE, axis=-1).astype(float)

    def __call__(self, X: Any, Y: Any = None, eval_gradient: bool = False) -> Any:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if Y is not None and eval_gradient:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        Y = X if Y is None else np.atleast_2d(np.asarray(Y, dtype=float))
        K = self.amplitude * self.same(X, Y)
        if not eval_gradient:
            return K
        if self.hyperparameter_amplitude.fixed:
            return K, np.empty((len(X), len(X), 0))
        return K, K[..., None]  # d K / d log a = K

    def diag(self, X: Any) -> np.ndarray:
        return np.full(len(X), float(self.amplitude))

    def is_stationary(self) -> bool:
        return True

    def gradient_x(self, x: Any, X_train: Any) -> np.ndarray:
        """d k(x, X_train) / dx: zero (the term is constant but at the lattice values themselves)."""
        return np.zeros((len(X_train), len(np.asarray(x))))
