"""From a validated StudyConfig to the runtime objects the runner needs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from .executors.base import Executor
from .executors.processes import thread_limits
from .space import SearchSpace
from .studyfile.config import StudyConfig
from .study import Study

if TYPE_CHECKING:
    from .runner import StopConditions


def build_study(config: StudyConfig) -> Study:
    return Study(
        name=config.name,
        space=config.space,
        objectives=list(config.objectives),
        strategy=dict(config.strategy),
        spec=dict(config.spec),
        metrics=tuple(config.metrics),
        outcome_constraints=tuple(config.outcome_constraints),
    )


def build_executor(config: StudyConfig) -> Executor:
    """The executor for the study's trials, local or on a Dask cluster."""
    if config.cluster:
        from .executors.dask import DaskExecutor

        return DaskExecutor(
            config.cluster, executor_recipe(config, jobs=1), worker_timeout=config.cluster_worker_timeout
        )
    return executor_recipe(config, jobs=config.parallel)()


def function_runs_here(config: StudyConfig) -> bool:
    """Whether a `function:` executor calls the function in this process (see executor_recipe)."""
    spec = config.executor
    return spec.function is not None and not config.cluster and config.parallel == 1 and spec.timeout is None


def executor_recipe(config: StudyConfig, jobs: int) -> Callable[[], Executor]:
    """A picklable way to build the local executor (a Dask worker builds its own from it)."""
    metrics = [*(o.metric for o in config.objectives), *config.metrics]  # names `name=value` lines may carry
    spec = config.executor
    env = {**thread_limits(jobs, spec.env), **spec.env}
    if spec.function is not None:
        if jobs > 1 or spec.timeout is not None:  # only a process can run in parallel or be stopped
            from .executors.workers import WorkerPoolExecutor

            return partial(WorkerPoolExecutor, spec.function, metrics, config.base_dir, jobs, spec.timeout, env)
        from .executors.python import FunctionExecutor

        return partial(FunctionExecutor, spec.function, metrics, config.base_dir)
    from .executors.shell import ShellExecutor

    assert spec.command is not None
    return partial(ShellExecutor, spec.command, metrics, spec.workdir, env, spec.timeout)


def stop_conditions(config: StudyConfig) -> StopConditions:
    from .runner import StopConditions  # here: `ask` builds a study with this module, and never runs one

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
    params = {d.name: d.default if d.default is not None else d.from_unit(0.5) for d in space}
    return space.with_constants(space.active(params))
