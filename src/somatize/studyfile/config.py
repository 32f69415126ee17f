"""The validated form of a study file: what the loader produces and the CLI consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constraints import Constraint
from ..executors.artifacts import KeepPolicy
from ..executors.slots import Slot
from ..space import SearchSpace
from ..study import Objective

# Seconds a Dask cluster may have no worker before its waiting trials fail and the study stops: long
# enough for a nanny or a batch system to bring workers back, short of a run that seems to hang.
CLUSTER_WORKER_TIMEOUT = 60.0

# `durability:` what a finished trial survives. power: the journal is fsynced at most a second after a
# trial finishes (a power loss loses at most that second's trials); process: flushed only (survives a
# kill of somatize, not a power loss or an operating-system crash), for trials of microseconds.
DURABILITY = ("power", "process")


@dataclass(frozen=True)
class ExecutorConfig:
    """Exactly one of `command` (str: shell string, list: argv) and `function` is set."""

    command: str | list[str] | None = None
    function: str | None = None
    timeout: float | None = None  # seconds per trial
    workdir: Path = Path(".")  # absolute, resolved against the study file's directory
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    path: str  # as shown in messages: the file path given, or "<stdin>"
    base_dir: Path  # the study file's directory (cwd for stdin); importable for functions
    name: str
    space: SearchSpace
    strategy: dict[str, Any]  # canonical: {"type": ..., "n_trials": ..., other options}
    objectives: list[Objective]
    executor: ExecutorConfig
    seed: int | None = None
    target: tuple[str, float] | None = None
    parallel: int = 1
    retries: int = 0
    max_failures: int | None = None
    max_consecutive_failures: int | None = 5
    timeout: float | None = None  # whole-study seconds ("2h" etc. already converted)
    output: Path | None = None  # from `output:`, resolved against base_dir; None = CLI default
    pruning: dict[str, Any] | None = None
    cluster: str | None = None
    cluster_worker_timeout: float | None = CLUSTER_WORKER_TIMEOUT  # None: wait for workers forever
    mlflow: dict[str, str] | None = None  # {tracking_uri?, experiment?}: log trials to MLflow
    durability: str = "power"  # one of DURABILITY
    trial_dirs: KeepPolicy = field(default_factory=KeepPolicy)  # which trial directories are kept
    slots: tuple[Slot, ...] = ()  # from resources: one per running trial; () = none declared
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # parameter sets run first, in order
    spec: dict[str, Any] = field(default_factory=dict)  # normalised plain data of the whole file
    metrics: tuple[str, ...] = ()  # `metrics:` recorded, usable in constraints, not optimised (SPEC §9)
    # The constraints that name a metric, judged after each trial; those on parameters only are in `space`.
    outcome_constraints: tuple[Constraint, ...] = ()
    # Where some values were written, for checks made after loading (studyfile/probe.py):
    # dotted key -> "FILE:LINE:COL" or "--set KEY".
    locations: dict[str, str] = field(default_factory=dict)

    @property
    def primary(self) -> Objective:
        return self.objectives[0]
