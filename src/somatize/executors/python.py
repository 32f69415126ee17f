"""Run a trial by calling a Python function in this process (SPEC §3).

The target is `pkg.mod:fn` or `pkg.mod.fn`. The study file's directory goes
to the front of sys.path, so `train:objective` finds `train.py` next to the
YAML. The function is imported at the first trial, not when the executor is
built, so `somatize validate` never runs user code.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import operator
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import TrialPruned
from ..study import MetricRecord
from .artifacts import OutputRouting, make_trial_dir
from .base import Completed, Executor, Failed, Outcome, Reporter, TrialRequest, failure, interrupts_the_study

_TRIAL_DIR = "SOMATIZE_TRIAL_DIR"  # TrialRequest.environment's name for the trial's directory


class HeldEnvironment:
    """os.environ holds the running trial's directory and devices, for what reads them there (CUDA at its
    first use, child processes): each trial sets its own values, and `close` (the executor's, at the end of
    the run) puts the variables back as they were before the first. Between two trials the variables keep the
    last trial's values, where a context manager per trial restored them only for the next trial to set them
    again: with the output capture entered and left per trial, 65,900 instructions a trial against 18,500 held
    (valgrind; BENCHMARKS.md "A different shape of trial", issue 18). One trial at a time per process:
    in-process trials run one by one, workers each run their own."""

    __slots__ = ("_before",)

    def __init__(self) -> None:
        self._before: dict[str, str | None] = {}  # each variable set, as it was before the first trial set it

    def set(self, env: Mapping[str, str]) -> None:
        environ, before = os.environ, self._before
        for name, value in env.items():
            if name not in before:
                before[name] = environ.get(name)
            environ[name] = value
        if len(before) != len(env):  # an earlier trial's variable that this one has not: as it was
            for name in [name for name in before if name not in env]:
                self._put_back(name, before.pop(name))

    def set_directory(self, trial_dir: str) -> None:
        """`set({"SOMATIZE_TRIAL_DIR": trial_dir})` for a trial with no devices, as the trials before it: the
        one variable set, without the mapping or the loops (a quick function's trial, issue 18)."""
        if len(self._before) == 1 and _TRIAL_DIR in self._before:
            os.environ[_TRIAL_DIR] = trial_dir
        else:
            self.set({_TRIAL_DIR: trial_dir})

    def close(self) -> None:
        before, self._before = self._before, {}
        for name, value in before.items():
            self._put_back(name, value)

    @staticmethod
    def _put_back(name: str, value: str | None) -> None:
        if value is None:
            os.environ.pop(name, None)  # the trial may have removed it itself
        else:
            os.environ[name] = value


class FunctionLoadError(ImportError):
    """The objective function cannot be imported; every trial fails with this message."""


def as_metric_value(value: Any) -> float | None:
    """A returned or reported value as a float; numpy scalars and tensors via __float__."""
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        return None  # True is not a metric, and str has no __float__ anyway
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        return float("inf") if value > 0 else float("-inf")
    except (TypeError, ValueError):  # e.g. a multi-element array
        return None


def metric_records(values: Mapping[Any, Any], step: int | None = None) -> list[MetricRecord]:
    """A record per numeric member of a mapping; other members (strings, lists) are skipped."""
    records = []
    for name, raw in values.items():
        value = as_metric_value(raw)
        if value is not None:
            records.append(MetricRecord(str(name), value, step))
    return records


class TrialHandle:
    """The `trial` argument of an objective `fn(params, trial)`."""

    def __init__(self, request: TrialRequest, reporter: Reporter, primary: str):
        self.id = request.trial_id
        self.number = request.number
        self.params = dict(request.params)
        self.seed = request.trial_seed
        self.study = request.study_name
        self._dir = None if request.trial_dir is None else Path(request.trial_dir)
        self._dir_made = False
        self.slot = request.slot
        self.gpus = request.gpus
        self.last_step: int | None = None
        self._reporter = reporter
        self._primary = primary

    @property
    def dir(self) -> Path | None:
        """The trial's own directory, for its artifacts; reading it makes it (None: the results go to stdout).

        It is made here, not when the trial starts, so that a function that
        neither prints nor writes files costs no directory (artifacts.py).
        """
        if self._dir is not None and not self._dir_made:
            make_trial_dir(self._dir)
            self._dir_made = True
        return self._dir

    def report(self, value: float | Mapping[str, float], step: int | None = None) -> None:
        """Report intermediate (with `step`) or final metrics; a bare number is the primary metric."""
        step = None if step is None else operator.index(step)  # numpy ints too, never floats
        if isinstance(value, Mapping):
            records = metric_records(value, step)
        else:
            number = as_metric_value(value)
            if number is None:
                raise TypeError(f"trial.report() takes a number or a mapping of numbers, not {type(value).__name__}")
            records = [MetricRecord(self._primary, number, step)]
        for record in records:
            self._reporter.report(record.name, record.value, record.step)
        if step is not None:
            self.last_step = step

    def should_prune(self) -> bool:
        """True when the pruner wants this trial stopped; then raise somatize.TrialPruned."""
        return self._reporter.should_prune()

    def __repr__(self) -> str:
        return f"TrialHandle(id={self.id!r}, params={self.params!r})"


def split_target(target: str) -> tuple[str, str]:
    """`pkg.mod:fn` or `pkg.mod.fn` as (module, attribute path)."""
    module, sep, attr = target.partition(":")
    if not sep:
        module, _, attr = target.rpartition(".")
    if not module or not attr:
        raise FunctionLoadError(f"function {target!r} must look like 'module:function' or 'module.function'")
    return module, attr


def _where(exc: BaseException) -> str:
    """file:line where an import-time error was raised, for the failure message."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


def import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise FunctionLoadError(f"cannot import module {name!r}: {exc}") from None
    except SyntaxError as exc:
        raise FunctionLoadError(f"cannot import module {name!r}: SyntaxError: {exc}") from None
    except SystemExit as exc:
        raise FunctionLoadError(
            f"cannot import module {name!r}: it called sys.exit({exc.code!r}){_where(exc)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any error in user code at import time fails the trials
        raise FunctionLoadError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}{_where(exc)}") from None


def resolve_attribute(module: Any, path: str) -> Any:
    value = module
    for part in path.split("."):
        if not hasattr(value, part):
            names = [n for n in dir(value) if not n.startswith("_")]
            hint = difflib.get_close_matches(part, names, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise FunctionLoadError(f"module {module.__name__!r} has no attribute {path!r}{suffix}")
        value = getattr(value, part)
    return value


def wants_trial(fn: Callable[..., Any]) -> bool:
    """Whether fn takes a second positional argument; raises when it cannot take params."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: call with params only
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise FunctionLoadError(f"{getattr(fn, '__qualname__', fn)!r} must take (params) or (params, trial)")
    return len(positional) >= 2


class FunctionExecutor(Executor):
    """Calls `fn(params)` or `fn(params, trial)` and turns its return value into metrics."""

    def __init__(self, target: str, objectives_metrics: list[str], base_dir: Path, capture: bool = True):
        self.target = target
        self.capture = capture  # keep what the function prints in its trial directory (workers do it themselves)
        self.primary = objectives_metrics[0]
        self.metrics = list(objectives_metrics)
        self.base_dir = Path(base_dir)
        self._lock = threading.Lock()
        self._function: Callable[..., Any] | None = None
        self._wants_trial = False
        self._load_error: str | None = None  # kept so every trial fails alike, without re-importing
        # For the whole run, not per trial: only what names the trial changes at each (issue 18).
        self._environment = HeldEnvironment()
        self._output = OutputRouting()  # what the function prints, into its trial's directory too

    def close(self) -> None:
        """The streams and the environment as they were before the first trial."""
        self._output.close()
        self._environment.close()

    def run(self, request: TrialRequest, reporter: Reporter) -> Outcome:
        fn = self._function  # loaded: no lock to take on every trial
        try:
            if fn is None:
                fn = self._load()
        except FunctionLoadError as exc:
            # Expected and the same for every trial: the message says it all, no traceback.
            return Failed(str(exc))
        params = dict(request.params)
        handle = TrialHandle(request, reporter, self.primary) if self._wants_trial else None
        if request.slot is None and request.gpus is None and request.trial_dir is not None:
            self._environment.set_directory(request.trial_dir)  # what environment() would hold, the common case
        else:
            self._environment.set(request.environment())
        routed = None if request.trial_dir is None or not self.capture else self._output.begin(request.trial_dir)
        try:
            try:
                result = fn(params) if handle is None else fn(params, handle)
            finally:
                if routed is not None:
                    self._output.end(routed)
        except TrialPruned as exc:
            if exc.step is None and handle is not None:  # record where it stopped when the objective did not say
                exc.step = handle.last_step
            raise
        except (SystemExit, KeyboardInterrupt) as exc:
            # sys.exit() or a KeyboardInterrupt of the objective's own fails its trial, not the study.
            if interrupts_the_study(exc):
                raise
            return failure(exc)
        if type(result) is float:  # _outcome's first case here: one call fewer for the commonest return value
            return Completed([MetricRecord(self.primary, result)])
        return self._outcome(result)

    def _load(self) -> Callable[..., Any]:
        with self._lock:
            if self._function is None and self._load_error is None:
                try:
                    function, self._wants_trial = self._import()
                    self._function = function  # last: run() reads it without the lock
                except FunctionLoadError as exc:
                    self._load_error = str(exc)
            if self._load_error is not None:
                raise FunctionLoadError(self._load_error)  # a fresh exception: no growing traceback
            assert self._function is not None
            return self._function

    def _import(self) -> tuple[Callable[..., Any], bool]:
        module_name, attr = split_target(self.target)
        directory = str(self.base_dir.resolve())
        if sys.path[:1] != [directory]:
            sys.path.insert(0, directory)
        importlib.invalidate_caches()  # the study directory may have gained files since startup
        fn = resolve_attribute(import_module(module_name), attr)
        if not callable(fn):
            raise FunctionLoadError(f"{self.target!r} is a {type(fn).__name__}, not a function")
        return fn, wants_trial(fn)

    def _outcome(self, result: Any) -> Outcome:
        if type(result) is float:  # the common case, first: a plain number needs none of the checks below
            return Completed([MetricRecord(self.primary, result)])
        if result is None:  # metrics came through trial.report()
            return Completed([])
        if isinstance(result, Mapping):
            return Completed(metric_records(result))
        value = as_metric_value(result)
        if value is None:
            raise TypeError(
                f"objective {self.target!r} returned {type(result).__name__}; expected a number, "
                "a mapping of metric names to numbers, or None after trial.report()"
            )
        return Completed([MetricRecord(self.primary, value)])
