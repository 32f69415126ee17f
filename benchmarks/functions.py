"""Test functions with known optima, for the sample-efficiency benchmarks.

Each `Problem` has a somatize search space (as a study-file mapping), the
objective to minimise over a params dict, and its known minimum, so simple
regret = best value found - minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Problem:
    name: str
    space: dict[str, Any]  # as in a study file's search_space
    objective: Callable[[dict[str, Any]], float]
    minimum: float


def branin(p: dict[str, Any]) -> float:
    x, y = p["x"], p["y"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


_H6_ALPHA = (1.0, 1.2, 3.0, 3.2)
_H6_A = (
    (10, 3, 17, 3.5, 1.7, 8),
    (0.05, 10, 17, 0.1, 8, 14),
    (3, 3.5, 1.7, 10, 17, 8),
    (17, 8, 0.05, 10, 0.1, 14),
)
_H6_P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)


def hartmann6(p: dict[str, Any]) -> float:
    x = [p[f"x{i}"] for i in range(6)]
    total = 0.0
    for alpha, a, q in zip(_H6_ALPHA, _H6_A, _H6_P):
        total += alpha * math.exp(-sum(a[j] * (x[j] - q[j]) ** 2 for j in range(6)))
    return -total


def rosenbrock4(p: dict[str, Any]) -> float:
    x = [p[f"x{i}"] for i in range(4)]
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3))


def ackley5(p: dict[str, Any]) -> float:
    x = [p[f"x{i}"] for i in range(5)]
    n = len(x)
    first = -20 * math.exp(-0.2 * math.sqrt(sum(v * v for v in x) / n))
    second = -math.exp(sum(math.cos(2 * math.pi * v) for v in x) / n)
    return first + second + 20 + math.e


_KERNEL_COST = {"linear": 0.6, "poly": 0.25, "rbf": 0.0, "sigmoid": 0.9}


def mixed(p: dict[str, Any]) -> float:
    """A smooth float, a log-scale float, an int and a categorical; minimum 0 at
    lr=1e-2.5, dropout=0.2, layers=5, kernel=rbf."""
    lr_term = (math.log10(p["lr"]) + 2.5) ** 2 * 0.5
    dropout_term = (p["dropout"] - 0.2) ** 2 * 4
    layers_term = 0.05 * (p["layers"] - 5) ** 2
    return lr_term + dropout_term + layers_term + _KERNEL_COST[p["kernel"]]


def _box(names: list[str], low: float, high: float) -> dict[str, Any]:
    return {name: {"type": "float", "low": low, "high": high} for name in names}


PROBLEMS = {
    "branin": Problem(
        "branin", {"x": {"type": "float", "low": -5.0, "high": 10.0}, "y": {"type": "float", "low": 0.0, "high": 15.0}},
        branin, 0.397887357729738,
    ),
    "hartmann6": Problem("hartmann6", _box([f"x{i}" for i in range(6)], 0.0, 1.0), hartmann6, -3.322368011415515),
    "rosenbrock4": Problem("rosenbrock4", _box([f"x{i}" for i in range(4)], -5.0, 10.0), rosenbrock4, 0.0),
    "ackley5": Problem("ackley5", _box([f"x{i}" for i in range(5)], -32.768, 32.768), ackley5, 0.0),
    "mixed": Problem(
        "mixed",
        {
            "lr": {"type": "float", "low": 1e-5, "high": 1.0, "scale": "log"},
            "dropout": {"type": "float", "low": 0.0, "high": 0.6},
            "layers": {"type": "int", "low": 1, "high": 10},
            "kernel": {"type": "categorical", "choices": ["linear", "poly", "rbf", "sigmoid"]},
        },
        mixed, 0.0,
    ),
}  # fmt: skip
