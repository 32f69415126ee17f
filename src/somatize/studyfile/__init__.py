"""Study file -> validated StudyConfig: YAML with positions, schema checks, --set overrides."""

from __future__ import annotations

from .config import ExecutorConfig, StudyConfig
from .describe import caveats, describe, planned_trials
from .loader import load_study

__all__ = ["ExecutorConfig", "StudyConfig", "caveats", "describe", "load_study", "planned_trials"]
