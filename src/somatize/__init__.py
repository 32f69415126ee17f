"""somatize: a command-line hyperparameter optimizer.

The public API is re-exported here. Nothing heavy (numpy, scikit-optimize,
dask, rich) is imported by `import somatize`.
"""

from __future__ import annotations

from .errors import SomatizeError, TrialPruned
from .events import EventBus
from .runner import StopConditions, StudyRunner
from .samplers import make_sampler
from .space import CategoricalDimension, FloatDimension, IntDimension, SearchSpace
from .study import Direction, MetricRecord, Objective, Study, Trial, TrialState

__version__ = "0.1.0"

__all__ = [
    "CategoricalDimension",
    "Direction",
    "EventBus",
    "FloatDimension",
    "IntDimension",
    "MetricRecord",
    "Objective",
    "SearchSpace",
    "SomatizeError",
    "StopConditions",
    "Study",
    "StudyRunner",
    "Trial",
    "TrialPruned",
    "TrialState",
    "__version__",
    "make_sampler",
]
