"""somatize: a command-line hyperparameter optimizer.

The public API is re-exported here, lazily (PEP 562): `import somatize`
loads nothing until a name is used, so the command line starts fast and
nothing heavy (numpy, scikit-optimize, dask, rich) is ever imported by it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CategoricalDimension": "space",
    "FloatDimension": "space",
    "IntDimension": "space",
    "SearchSpace": "space",
    "Direction": "study",
    "MetricRecord": "study",
    "Objective": "study",
    "Study": "study",
    "Trial": "study",
    "TrialState": "study",
    "EventBus": "events",
    "StopConditions": "runner",
    "StudyRunner": "runner",
    "SomatizeError": "errors",
    "TrialPruned": "errors",
    "TrialHandle": "executors.python",
    "make_sampler": "samplers",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'somatize' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
