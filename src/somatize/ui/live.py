"""The live table on a terminal's stderr (SPEC §5), a queue subscriber of the bus.

Three parts, so each can be tested without a terminal:
- `LiveModel` is the display's own state, changed only by `apply(event)`;
- `render(model)` and `summary(model)` turn a model into rich renderables;
- `LiveTable` owns the thread that drains the subscription into the model and
  redraws a rich `Live` a few times a second.

The runner never waits for the display: events reach it through a bounded
`Subscription`, and events lost to a slow terminal are shown as missed.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..events import (
    BestUpdated,
    Event,
    StudyCompleted,
    StudyProgress,
    StudyStarted,
    Subscription,
    TrialCompleted,
    TrialFailed,
    TrialMetric,
    TrialPrunedEvent,
    TrialStarted,
)
from ..study import TrialState
from .formats import attempt_text, duration_text, first_line, interrupt_text, params_text, short_number

RECENT_ROWS = 500  # finished rows kept for the table; it shows as many as the terminal is tall
TOP_TRIALS = 5
REASON_WIDTH = 300  # characters of an error's first line kept; the column shows what fits
HEAD_LINES = 3  # title, progress and best lines above the table, one line each
TABLE_HEAD_LINES = 2  # the header row and its rule
BAR_WIDTH = 30
STATE_STYLES = {
    TrialState.RUNNING: "cyan",
    TrialState.COMPLETED: "green",
    TrialState.PRUNED: "yellow",
    TrialState.FAILED: "red",
}


@dataclass
class TrialRow:
    """What the display knows of one trial."""

    trial_id: str
    number: int = -1
    params: dict[str, Any] = field(default_factory=dict)
    state: TrialState = TrialState.RUNNING
    started: float | None = None
    values: dict[str, float] = field(default_factory=dict)  # latest metrics while running, final after
    step: int | None = None
    duration_ms: int | None = None
    reason: str = ""
    attempt: int = 1  # the attempt that finished it
    slot: str | None = None  # the devices or slot it holds (resources:)
    feasible: bool | None = None  # False: completed, but broke a constraint on metrics (never best)

    def seconds(self, now: float) -> float | None:
        if self.duration_ms is not None:
            return self.duration_ms / 1000
        return None if self.started is None else max(0.0, now - self.started)


@dataclass
class LiveModel:
    """The live display's state, built from bus events alone."""

    name: str = ""
    strategy: str = ""
    total: int | None = None
    objectives: tuple[str, ...] = ()
    started_at: float | None = None
    finished_at: float | None = None
    resumed: int = 0
    attempts: int = 1  # the most a trial gets: retries + 1
    finished: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    infeasible: int = 0  # completed trials that broke a constraint on metrics
    best_id: str | None = None
    best_value: float = math.nan
    best_params: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    stop_reason: str = ""
    missed: int = 0
    directions: tuple[str, ...] = ()
    running: dict[str, TrialRow] = field(default_factory=dict)
    recent: deque[TrialRow] = field(default_factory=lambda: deque(maxlen=RECENT_ROWS))
    done: dict[str, TrialRow] = field(default_factory=dict)  # completed rows, for the best and the top list

    @property
    def primary(self) -> str | None:
        return self.objectives[0] if self.objectives else None

    def apply(self, event: Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    # One method per event kind ------------------------------------------------------

    def _study_started(self, event: StudyStarted) -> None:
        self.name, self.strategy = event.study_name, event.strategy
        self.total, self.objectives = event.total_trials, tuple(event.objectives)
        self.directions = tuple(event.directions)
        self.started_at = event.time
        self.resumed = self.finished = event.resumed_trials
        self.attempts = event.retries + 1

    def _trial_started(self, event: TrialStarted) -> None:
        self.running[event.trial_id] = TrialRow(
            event.trial_id, event.number, dict(event.params), started=event.time, slot=event.slot
        )

    def _trial_metric(self, event: TrialMetric) -> None:
        row = self.running.get(event.trial_id)
        if row is not None and not math.isnan(event.value):
            row.values[event.name] = event.value
            row.step = event.step if event.step is not None else row.step

    def _trial_finished(self, event: TrialCompleted | TrialPrunedEvent | TrialFailed) -> None:
        row = self.running.pop(event.trial_id, None) or TrialRow(event.trial_id)
        trial = event.trial
        if trial is not None:  # the record is the authority; the row may have missed events
            row.number, row.params, row.duration_ms = trial.number, dict(trial.params), trial.duration_ms
            row.values, row.attempt = dict(trial.values), trial.attempts
        elif row.started is not None:
            row.duration_ms = round((event.time - row.started) * 1000)
        self.finished += 1
        if isinstance(event, TrialCompleted):
            row.state, row.values = TrialState.COMPLETED, dict(event.values)
            if trial is not None and trial.feasible is False:
                row.feasible, row.reason = False, first_line("; ".join(trial.violated or []), REASON_WIDTH)
                self.infeasible += 1
            self.completed += 1
            self.done[row.trial_id] = row
        elif isinstance(event, TrialPrunedEvent):
            row.state, row.step = TrialState.PRUNED, event.step
            row.reason = " ".join(p for p in ("" if event.step is None else f"step {event.step}:", event.reason) if p)
            self.pruned += 1
        else:
            row.state, row.reason = TrialState.FAILED, first_line(event.error, REASON_WIDTH) or "failed"
            self.failed += 1
        self.recent.append(row)

    def _best_updated(self, event: BestUpdated) -> None:
        self.best_id, self.best_value, self.best_params = event.trial_id, event.value, dict(event.params)

    def _study_progress(self, event: StudyProgress) -> None:
        # Progress carries the runner's totals (resumed trials included): resync with them.
        self.finished, self.pruned, self.failed = event.completed, event.pruned, event.failed
        self.completed = event.completed - event.pruned - event.failed
        self.total = event.total if event.total is not None else self.total
        if not math.isnan(event.best_value):
            self.best_value = event.best_value

    def _study_completed(self, event: StudyCompleted) -> None:
        self.status, self.stop_reason, self.finished_at = event.status, event.reason, event.time
        if event.best_trial_id is not None:
            self.best_id = event.best_trial_id
        if not math.isnan(event.best_value):
            self.best_value = event.best_value

    # Derived views -----------------------------------------------------------------------

    def minimize(self) -> bool:
        """Whether the primary objective is minimized."""
        return not self.directions or self.directions[0] == "minimize"

    def top(self, n: int = TOP_TRIALS) -> list[TrialRow]:
        """The n best completed trials by the primary objective, ties to the earliest."""
        metric = self.primary
        if metric is None:
            return []
        sign = 1.0 if self.minimize() else -1.0
        scored = [
            r for r in self.done.values() if r.feasible is not False and not math.isnan(r.values.get(metric, math.nan))
        ]
        return sorted(scored, key=lambda r: (sign * r.values[metric], r.number))[:n]

    def eta(self, now: float) -> float | None:
        """Seconds left at this run's pace, when the total is known."""
        ran = self.finished - self.resumed
        if self.started_at is None or self.total is None or ran <= 0 or self.status is not None:
            return None
        return (now - self.started_at) / ran * max(0, self.total - self.finished)

    def elapsed(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at


_HANDLERS = {
    StudyStarted: LiveModel._study_started,
    TrialStarted: LiveModel._trial_started,
    TrialMetric: LiveModel._trial_metric,
    TrialCompleted: LiveModel._trial_finished,
    TrialPrunedEvent: LiveModel._trial_finished,
    TrialFailed: LiveModel._trial_finished,
    BestUpdated: LiveModel._best_updated,
    StudyProgress: LiveModel._study_progress,
    StudyCompleted: LiveModel._study_completed,
}


# Rendering -----------------------------------------------------------------------------------


def render(model: LiveModel, now: float | None = None) -> RenderableType:
    """The whole live view: header lines above the trial table, laid out for the console it is drawn on."""
    return _LiveView(model, time.time() if now is None else now)


class _LiveView:
    """Lays the view out at draw time, when the console's width and height are known.

    Every line is one terminal line, so the view's height is known before it is
    drawn: the table gets the rows left under the header (finished trials fill
    what the running ones leave). Columns never wrap: the trial id, state,
    objective values and time keep their full width, the reason column takes
    what it needs of the rest, and the parameters give way first.
    """

    def __init__(self, model: LiveModel, now: float):
        self.model = model
        self.now = now

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = options.height or console.height
        yield _title(self.model)
        yield _progress(self.model, self.now, width)
        yield _best_line(self.model)
        # One line is left for the cursor, which rich's Live keeps below the view.
        yield _trial_table(self.model, self.now, width, max(1, height - HEAD_LINES - TABLE_HEAD_LINES - 1))


def _title(model: LiveModel) -> Text:
    text = Text(model.name or "study", style="bold", no_wrap=True, overflow="ellipsis")
    for part in (model.strategy, model.status):
        if part:
            text.append(f"  {part}")
    if model.missed:
        text.append(f"  ({model.missed} events missed)", style="yellow")
    return text


def _progress(model: LiveModel, now: float, width: int) -> RenderableType:
    count = f"{model.finished}/{model.total}" if model.total else str(model.finished)
    parts = [f"{count} trials", f"{model.completed} completed"]
    parts += [f"{n} {label}" for n, label in ((model.pruned, "pruned"), (model.failed, "failed")) if n]
    parts.append(f"{len(model.running)} running")
    parts.append(f"elapsed {duration_text(model.elapsed(now)) or '0.0s'}")
    eta = model.eta(now)
    if eta is not None:
        parts.append(f"ETA {duration_text(eta)}")
    line = Text("  ".join(parts), no_wrap=True, overflow="ellipsis")
    bar = min(BAR_WIDTH, width - len(line) - 1)  # the bar gives way to the counts
    if not model.total or bar < 10:
        return line
    grid = Table.grid(padding=(0, 1))
    grid.add_row(ProgressBar(total=model.total, completed=min(model.finished, model.total), width=bar), line)
    return grid


def _best_line(model: LiveModel) -> Text:
    if math.isnan(model.best_value):
        return Text("best: none yet", style="dim")
    metric = model.primary or "value"
    text = Text("best ", no_wrap=True, overflow="ellipsis")
    text.append(f"{metric}={short_number(model.best_value)}", style="bold green")
    if model.best_id:
        text.append(f"  {model.best_id}")
    if model.best_params:
        text.append(f"  {params_text(model.best_params)}")
    return text


def _trial_table(model: LiveModel, now: float, width: int = 10_000, lines: int = 10_000) -> Table:
    running = list(model.running.values())
    finished = list(model.recent)
    shown_running = min(len(running), lines if not finished else max(1, lines // 2))
    hidden = len(running) - shown_running
    room = lines - shown_running - (1 if hidden else 0)
    rows = _pick_finished(model, finished, max(0, room)) + running[:shown_running]
    cells = [_cells(model, row, now) for row in rows]
    headers = ["trial", "state", "params", *model.objectives, "time", "reason"]
    widths = [max([len(headers[i])] + [_width(row[i]) for row in cells]) for i in range(len(headers))]
    params_width, reason_width = _flexible_widths(widths, width)
    table = Table(expand=False, show_edge=False, pad_edge=False)
    table.add_column("trial", no_wrap=True, min_width=widths[0])
    table.add_column("state", no_wrap=True, min_width=widths[1])
    table.add_column("params", no_wrap=True, overflow="ellipsis", width=params_width)
    for i, metric in enumerate(model.objectives, 3):
        table.add_column(metric, justify="right", no_wrap=True, min_width=widths[i])
    table.add_column("time", justify="right", no_wrap=True, min_width=widths[-2])
    table.add_column("reason", no_wrap=True, overflow="ellipsis", width=reason_width)
    for row in cells:
        table.add_row(*row)
    if hidden > 0:
        table.add_row("", Text(f"+{hidden} more running", style="dim"))
    return table


def _width(cell: RenderableType) -> int:
    return cell.cell_len if isinstance(cell, Text) else len(str(cell))


def _flexible_widths(widths: list[int], width: int) -> tuple[int, int]:
    """Widths of the params and reason columns: what they need when it fits; otherwise the reason
    takes what it needs of the room the other columns leave, the params at least a third of it."""
    params, reason = widths[2], widths[-1]
    separators = 3 * (len(widths) - 1)  # " │ " between columns; the table has no outer edge
    room = width - separators - (sum(widths) - params - reason)
    if params + reason <= room:
        return params, reason
    floor = min(params, max(len("params"), room // 3))
    reason = max(len("reason"), min(reason, room - floor))
    return max(len("params"), room - reason), reason


def _pick_finished(model: LiveModel, finished: list[TrialRow], room: int) -> list[TrialRow]:
    """The latest finished rows that fit, with the best trial kept at the top when it has scrolled off."""
    if room <= 0:
        return []
    rows = finished[-room:]
    best = model.done.get(model.best_id or "")
    if best is not None and best not in rows:
        rows = [best, *rows[1:]] if len(rows) >= room else [best, *rows]
    return rows


def _cells(model: LiveModel, row: TrialRow, now: float) -> list[RenderableType]:
    marker = " ★" if row.trial_id == model.best_id else ""
    trial = Text(row.trial_id + marker, style="bold" if marker else "")
    state = Text(row.state.value, style=STATE_STYLES[row.state])
    if row.state is TrialState.RUNNING and row.slot is not None:  # which devices it holds
        state.append(f" on {row.slot}", style="dim")
    if row.feasible is False:
        state = Text("infeasible", style="yellow")  # completed, but never best
    values = [short_number(row.values.get(metric)) for metric in model.objectives]
    reason = row.reason
    if row.state is TrialState.RUNNING and row.step is not None:
        reason = f"step {row.step}"
    tries = attempt_text(row.attempt, model.attempts).strip(" ()")
    if tries:
        reason = f"{tries}: {reason}" if reason else tries
    return [trial, state, params_text(row.params), *values, duration_text(row.seconds(now)), reason]


def _infeasible_text(model: LiveModel) -> str:
    return f" ({model.infeasible} infeasible)" if model.infeasible else ""


def summary(model: LiveModel, n: int = TOP_TRIALS) -> RenderableType:
    """After the run: a status line and the top trials by the primary objective."""
    status = model.status or "stopped"
    if model.stop_reason not in ("", "n_trials", "exhausted", status):
        status += f" ({model.stop_reason})"
    line = Text(
        f"study {model.name or '(unnamed)'} {status}: {model.finished} trials "
        f"({model.completed} completed{_infeasible_text(model)}, {model.pruned} pruned, {model.failed} failed)"
    )
    if model.missed:
        line.append(f"  ({model.missed} events missed by the display)", style="yellow")
    top = model.top(n)
    if not top:
        # The rows may have been among the missed events; the best is still known from later ones.
        return Group(line, _best_line(model) if model.completed else Text("no completed trial", style="yellow"))
    direction = "min" if model.minimize() else "max"
    table = Table(title=f"top {len(top)} by {model.primary} ({direction})", title_justify="left", show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("trial", no_wrap=True)
    for metric in model.objectives:
        table.add_column(metric, justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("params", overflow="fold")
    for rank, row in enumerate(top, 1):
        values = [short_number(row.values.get(metric)) for metric in model.objectives]
        table.add_row(str(rank), row.trial_id, *values, duration_text(row.seconds(0.0)), params_text(row.params))
    return Group(line, table)


# The thread --------------------------------------------------------------------------------------


class LiveTable:
    """Draws the live view on stderr from a bus subscription.

    Wiring: `table = LiveTable(bus.subscribe_queue()); table.start()` before the
    run, `table.stop()` after it (idempotent, returns within about a second).
    """

    def __init__(
        self,
        subscription: Subscription,
        console: Console | None = None,
        refresh_per_second: float = 8.0,
    ):
        self.subscription = subscription
        # A default Console honours NO_COLOR and TERM=dumb by itself; never force colour here.
        self.console = console if console is not None else Console(stderr=True)
        self.model = LiveModel()
        self.interval = 1.0 / refresh_per_second
        self.error: BaseException | None = None
        self._live: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        from rich.live import Live

        # stdout is data (`-o -`, `--events -`): Live must not capture it.
        self._live = Live(
            render(self.model),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=True,
            transient=False,
        )
        self._live.start(refresh=True)
        self._thread = threading.Thread(target=self._loop, name="somatize-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Apply the last events, draw the final view, then print the summary."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.error is not None:
            self._warn()
            return
        try:
            self._apply_all(self.subscription.drain())
            self.model.missed = self.subscription.missed
            if self._live is not None:
                self._live.update(self._view(), refresh=True)
                self._live.stop()
            self.console.print(summary(self.model))
        except Exception as exc:  # noqa: BLE001 - the display must never cost the run its results
            self._give_up(exc)
            self._warn()

    def interrupted(self) -> None:
        """The first Ctrl-C: a line above the view says what the wait is for (called from the signal handler)."""
        with contextlib.suppress(Exception):  # a message must never stand in the way of stopping
            self.console.print(Text(interrupt_text(len(self.model.running)), style="bold yellow"))

    def _loop(self) -> None:
        next_draw = 0.0
        while not self._stopping.is_set():
            try:
                event = self.subscription.get(timeout=self.interval)
                if event is not None:
                    self._apply_all([event, *self.subscription.drain()])
                if time.monotonic() >= next_draw and self._live is not None:
                    self._live.update(self._view(), refresh=True)
                    next_draw = time.monotonic() + self.interval
            except Exception as exc:  # noqa: BLE001 - a broken display stops drawing, the run goes on
                self._give_up(exc)
                return

    def _apply_all(self, events: list[Event]) -> None:
        for event in events:
            self.model.apply(event)

    def _view(self) -> RenderableType:
        self.model.missed = self.subscription.missed
        return render(self.model)

    def _warn(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # stderr itself is gone: stay silent
            self.console.print(f"somatize: warning: the live display stopped: {self.error!r}", markup=False)

    def _give_up(self, exc: Exception) -> None:
        self.error = exc
        if self._live is not None:
            with contextlib.suppress(Exception):  # already half torn down; nothing more to do
                self._live.stop()
