"""From a validated StudyConfig to the runtime objects the runner needs."""

from __future__ import annotations

from typing import Any

from .executors.base import Executor
from .runner import StopConditions
from .space import SearchSpace
from .spec.config import StudyConfig
from .study import Study


def build_study(config: StudyConfig) -> Study:
    return Study(
        name=config.name,
        space=config.space,
        objectives=list(config.objectives),
        strategy=dict(config.strategy),
        spec=dict(config.spec),
    )


def build_executor(config: StudyConfig) -> Executor:
    metrics = [o.metric for o in config.objectives]
    spec = config.executor
    if spec.function is not None:
        from .executors.python import FunctionExecutor

        return FunctionExecutor(spec.function, metrics, config.base_dir)
    from .executors.shell import ShellExecutor

    assert spec.command is not None
    return ShellExecutor(spec.command, metrics, spec.workdir, spec.env, spec.timeout)


def stop_conditions(config: StudyConfig) -> StopConditions:
    target_metric, target_value = config.target if config.target else (None, None)
    return StopConditions(
        target_metric=target_metric,
        target_value=target_value,
        max_failures=config.max_failures,
        max_consecutive_failures=config.max_consecutive_failures,
        timeout=config.timeout,
        retries=config.retries,
    )


def sample_params(space: SearchSpace) -> dict[str, Any]:
    """A representative parameter set: each default, else the middle of the dimension."""
    return space.with_constants(
        {d.name: d.default if d.default is not None else d.from_unit(0.5) for d in space}
    )
