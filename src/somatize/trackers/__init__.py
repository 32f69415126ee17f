"""Experiment trackers: bus subscribers that copy trials to an outside tracking service.

Each tracker lives in its own module, the only home of its library, imported only
when tracking is on (`from .mlflow import MlflowTracker`).
"""

from __future__ import annotations

import re

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: C:\runs is a path


def is_path(tracking_uri: str) -> bool:
    """A tracking URI without a scheme: a directory, which MLflow takes as a file store."""
    return not _SCHEME.match(tracking_uri)
