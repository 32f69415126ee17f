"""The executor interface: run one trial, report metrics, return an outcome."""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from ..study import MetricRecord


@dataclass(frozen=True)
class TrialRequest:
    """What an executor needs to know about the trial it runs."""

    trial_id: str
    number: int
    params: Mapping[str, Any]
    trial_seed: int
    study_name: str


@dataclass(frozen=True)
class Completed:
    """The trial ran to its end; `metrics` are final records not yet reported."""

    metrics: list[MetricRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Pruned:
    step: int | None = None
    reason: str = "pruned"


@dataclass(frozen=True)
class Failed:
    """An expected failure (non-zero exit, timeout); unexpected ones are exceptions."""

    error: str


Outcome = Union[Completed, Pruned, Failed]


def traceback_tail(exc: BaseException, lines: int = 6) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().splitlines()
    return "\n".join(text[-lines:])


def failure(exc: BaseException) -> Failed:
    """An exception raised by user code, as a failed outcome: its message and where it came from."""
    return Failed(f"{type(exc).__name__}: {exc}\n{traceback_tail(exc)}")


class Reporter(Protocol):
    """The runner's side of a running trial: where intermediate metrics go."""

    def report(self, name: str, value: float, step: int | None = None) -> None: ...

    def should_prune(self) -> bool: ...


class Executor(ABC):
    @abstractmethod
    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        """Run one trial to an outcome; may raise, which fails the trial."""

    def cancel(self) -> None:
        """Stop every running trial soon (study interrupted); their outcomes are discarded.

        Called from another thread than the ones running trials. In-process
        functions cannot be stopped from outside and finish on their own.
        """

    def close(self) -> None:
        """Release resources held across trials."""
