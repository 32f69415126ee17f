"""Plain progress lines for a stderr that is not a terminal (SPEC §5).

One line per finished trial and one summary line, e.g.

    [3/20] trial_0002 completed f1=0.91 lr=0.01 layers=3 (1.2s) best=0.93
    [4/20] trial_0003 failed: exit status 1: CUDA out of memory (0.4s)
    [5/20] trial_0004 completed (attempt 2 of 3) f1=0.88 lr=0.02 layers=2 (2.5s) best=0.93
    study mlp-tuning completed: 20 trials (18 completed, 1 pruned, 1 failed); best trial_0007 f1=0.93

`PlainProgress` is an inline bus handler, so it runs in the runner's thread:
it does only string work and a write, and never raises.
"""

from __future__ import annotations

import math
from typing import IO, Any

from ..events import (
    BestUpdated,
    Event,
    StudyCompleted,
    StudyProgress,
    StudyStarted,
    TrialCompleted,
    TrialFailed,
    TrialPrunedEvent,
    TrialStarted,
)
from .formats import attempt_text, duration_text, first_line, interrupt_text, params_text, short_number

ERROR_WIDTH = 120


class PlainProgress:
    """Prints one line per finished trial and a summary line; nothing at all when quiet."""

    def __init__(self, stream: IO[str], quiet: bool = False):
        self.stream = stream
        self.quiet = quiet
        self.broken = False
        self.name = "study"
        self.objectives: tuple[str, ...] = ()
        self.total: int | None = None
        self.attempts = 1  # the most a trial gets: retries + 1
        self.finished = 0
        self.counts = {"completed": 0, "pruned": 0, "failed": 0}
        self.best_id: str | None = None
        self.best_value = math.nan
        self._started: dict[str, tuple[float, dict[str, Any]]] = {}
        # The runner publishes best_updated and study_progress *after* a trial's
        # finish event, so the line waits for them to show the new best.
        self._pending: tuple[str, str] | None = None

    def __call__(self, event: Event) -> None:
        if self.quiet or self.broken:
            return
        if isinstance(event, StudyStarted):
            self._on_study_started(event)
        elif isinstance(event, TrialStarted):
            self._started[event.trial_id] = (event.time, dict(event.params))
        elif isinstance(event, (TrialCompleted, TrialPrunedEvent, TrialFailed)):
            self._flush()
            self._on_trial_finished(event)
        elif isinstance(event, BestUpdated):
            self.best_id, self.best_value = event.trial_id, event.value
        elif isinstance(event, StudyProgress):
            self._on_progress(event)
        elif isinstance(event, StudyCompleted):
            self._flush()
            self._write(self._summary(event))

    # Event handlers --------------------------------------------------------------

    def _on_study_started(self, event: StudyStarted) -> None:
        self.name = event.study_name or self.name
        self.objectives = event.objectives
        self.total = event.total_trials
        self.finished = event.resumed_trials
        self.attempts = event.retries + 1

    def _on_trial_finished(self, event: TrialCompleted | TrialPrunedEvent | TrialFailed) -> None:
        self.finished += 1
        started, params = self._started.pop(event.trial_id, (None, {}))
        trial = event.trial
        if trial is not None:
            params = trial.params
        seconds = trial.duration_ms / 1000 if trial is not None and trial.duration_ms is not None else None
        if seconds is None and started is not None:
            seconds = max(0.0, event.time - started)
        attempts = trial.attempts if trial is not None else 1
        head = f"{self._position()} {event.trial_id} {self._outcome(event, params, attempts)}"
        tail = f" ({duration_text(seconds)})" if seconds is not None else ""
        self._pending = (event.trial_id, head + tail)

    def _on_progress(self, event: StudyProgress) -> None:
        if not math.isnan(event.best_value):
            self.best_value = event.best_value
        self.counts["pruned"], self.counts["failed"] = event.pruned, event.failed
        self.counts["completed"] = event.completed - event.pruned - event.failed
        self.total = event.total if event.total is not None else self.total
        self._flush()

    # Text ----------------------------------------------------------------------------

    def _position(self) -> str:
        return f"[{self.finished}/{self.total}]" if self.total else f"[{self.finished}]"

    def _outcome(
        self, event: TrialCompleted | TrialPrunedEvent | TrialFailed, params: dict[str, Any], attempts: int
    ) -> str:
        tries = attempt_text(attempts, self.attempts)
        if isinstance(event, TrialFailed):
            return f"failed{tries}: {first_line(event.error, ERROR_WIDTH) or 'unknown error'}"
        if isinstance(event, TrialPrunedEvent):
            step = "" if event.step is None else f" at step {event.step}"
            reason = f": {first_line(event.reason, ERROR_WIDTH)}" if event.reason else ""
            return f"pruned{step}{tries}{reason}"
        values = " ".join(f"{k}={short_number(v)}" for k, v in self._ordered(event.values))
        trial = event.trial
        infeasible = ""
        if trial is not None and trial.feasible is False:  # completed, but broke a constraint on metrics
            infeasible = f"(infeasible: {first_line('; '.join(trial.violated or []), ERROR_WIDTH)})"
        return " ".join(part for part in (f"completed{tries}", values, params_text(params), infeasible) if part)

    def interrupted(self) -> None:
        """The first Ctrl-C: say what the wait is for (called from the signal handler)."""
        self._write(interrupt_text(len(self._started)))

    def _ordered(self, values: dict[str, float]) -> list[tuple[str, float]]:
        # Objectives in their declared order, then any other reported value.
        names = [n for n in self.objectives if n in values] + [n for n in values if n not in self.objectives]
        return [(n, values[n]) for n in names]

    def _flush(self) -> None:
        if self._pending is None:
            return
        trial_id, line = self._pending
        self._pending = None
        if not math.isnan(self.best_value):
            marker = " (new best)" if trial_id == self.best_id else ""
            line += f" best={short_number(self.best_value)}{marker}"
        self._write(line)

    def _summary(self, event: StudyCompleted) -> str:
        plain = event.reason in ("", "n_trials", "exhausted", event.status)
        status = event.status if plain else f"{event.status} ({event.reason})"
        done = self.counts if sum(self.counts.values()) else None
        total = self.finished if done is None else sum(done.values())
        breakdown = "" if done is None else " (" + ", ".join(f"{n} {k}" for k, n in done.items()) + ")"
        line = f"study {self.name} {status}: {total} trials{breakdown}"
        best_id = event.best_trial_id or self.best_id
        if best_id is None:
            return line + "; no completed trial"
        metric = self.objectives[0] if self.objectives else "value"
        value = event.best_value if not math.isnan(event.best_value) else self.best_value
        return f"{line}; best {best_id} {metric}={short_number(value)}"

    def _write(self, line: str) -> None:
        if self.quiet or self.broken:
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError, RuntimeError):  # RuntimeError: a signal arrived mid-write (reentrant call)
            # A closed or broken stderr must not fail the study (handlers must not raise).
            self.broken = True
