"""The executor interface: run one trial, report metrics, return an outcome."""

from __future__ import annotations

import signal
import traceback
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from ..bounds import ERROR_CHARS, MetricLog, clip_text
from ..errors import StudyInterrupted
from ..study import MetricRecord


@dataclass(frozen=True, init=False)
class TrialRequest:
    """What an executor needs to know about the trial it runs."""

    trial_id: str
    number: int
    params: Mapping[str, Any]
    trial_seed: int
    study_name: str
    trial_dir: str | None = None  # absolute; the trial's own directory (artifacts.py), None: none
    slot: str | None = None  # the slot it runs on (slots.py), None: no resources declared
    gpus: str | None = None  # its devices, for CUDA_VISIBLE_DEVICES and {gpus}

    def __init__(
        self, trial_id: str, number: int, params: Mapping[str, Any], trial_seed: int, study_name: str,
        trial_dir: str | None = None, slot: str | None = None, gpus: str | None = None,
    ):  # fmt: skip
        # Frozen, but filled in one step: a frozen dataclass's own __init__ (an object.__setattr__ per field)
        # took 15,600 instructions, this 7,000 (valgrind; one is built for every trial, issue 18).
        self.__dict__.update(
            trial_id=trial_id, number=number, params=params, trial_seed=trial_seed, study_name=study_name,
            trial_dir=trial_dir, slot=slot, gpus=gpus,
        )  # fmt: skip

    def environment(self) -> dict[str, str]:
        """The variables that tell a trial its directory and devices (only those it has)."""
        env = {}
        if self.trial_dir is not None:
            env["SOMATIZE_TRIAL_DIR"] = self.trial_dir
        if self.slot is not None:
            env["SOMATIZE_SLOT"] = self.slot
        if self.gpus is not None:
            env["SOMATIZE_GPUS"] = self.gpus
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        return env


@dataclass(frozen=True, init=False)
class Completed:
    """The trial ran to its end; `metrics` are final records not yet reported.

    An executor that may read very many final records (a metrics file) keeps
    them in a bounded MetricLog; when that log had to thin them, `thinned` is
    the log (`metrics` its records), so the trial record can say what was cut.
    `unread` says, per declared metric, why a line naming it gave no value,
    and `notes` what output was not read at all (a metrics file that is a
    FIFO): the runner adds them to the error of a trial without its primary metric.
    """

    metrics: list[MetricRecord] = field(default_factory=list)
    unread: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    thinned: MetricLog | None = field(default=None, compare=False)

    def __init__(
        self, metrics: list[MetricRecord] | None = None, unread: Mapping[str, str] | None = None,
        notes: tuple[str, ...] = (), thinned: MetricLog | None = None,
    ):  # fmt: skip
        # In one step, as TrialRequest: every in-process trial makes one.
        self.__dict__.update(
            metrics=[] if metrics is None else metrics, unread={} if unread is None else unread, notes=notes,
            thinned=thinned,
        )  # fmt: skip


@dataclass(frozen=True)
class Pruned:
    step: int | None = None
    reason: str = "pruned"


@dataclass(frozen=True)
class Failed:
    """An expected failure (non-zero exit, timeout); unexpected ones are exceptions.

    `chars` is the error's length before the executor cut it (None: not cut).
    `stops_study`: the executor can run no more trials (a cluster left without
    workers), so the study stops rather than fail every trial left.
    """

    error: str
    chars: int | None = None
    stops_study: bool = False


Outcome = Union[Completed, Pruned, Failed]


def traceback_tail(exc: BaseException, lines: int = 6) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().splitlines()
    return "\n".join(text[-lines:])


def _frames_tail(exc: BaseException, lines: int) -> str:
    """The last traceback lines without the exception's message (for a message too long to repeat)."""
    text = "".join(traceback.format_tb(exc.__traceback__)).rstrip().splitlines()
    return "\n".join(text[-lines:])


def failure(exc: BaseException) -> Failed:
    """An exception raised by user code, as a failed outcome: its message and where it came from.

    A huge message (50 MB) is cut here, where it is raised: traceback text
    would repeat it, and a worker process would send it whole to the runner.
    """
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        return Failed(f"objective called sys.exit({code})\n{traceback_tail(exc)}")
    if isinstance(exc, KeyboardInterrupt):
        return Failed(f"objective raised KeyboardInterrupt\n{traceback_tail(exc)}")
    name, detail = type(exc).__name__, str(exc)  # str() of a one-string exception is that string, not a copy
    if len(detail) <= ERROR_CHARS:
        return Failed(f"{name}: {detail}\n{traceback_tail(exc)}")
    frames = _frames_tail(exc, 5)[-ERROR_CHARS // 4 :]
    clipped, cut = clip_text(detail, ERROR_CHARS - len(name) - len(frames) - 3)  # the whole within ERROR_CHARS
    text = f"{name}: {clipped}\n{frames}"
    return Failed(text, chars=len(text) + cut)


def interrupts_the_study(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt that came out of user code is somatize being interrupted.

    `somatize run`'s signal handler raises StudyInterrupted. Under Python's own
    SIGINT handler (the Python API) a real Ctrl-C is a plain KeyboardInterrupt,
    indistinguishable from one the objective raised, so it stops the study too.
    SystemExit is always the objective's own doing.
    """
    if isinstance(exc, StudyInterrupted):
        return True
    return isinstance(exc, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is signal.default_int_handler


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
