"""StudyRunner: the study loop (sampler -> executor -> trial record -> events).

It depends only on the Sampler and Executor interfaces and the EventBus; it
knows nothing of YAML, terminals or files. Subscribers (journal, live table,
event log) learn everything from events.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .bounds import ERROR_CHARS, FEW_RECORDS, MetricLog, clip_text
from .errors import TrialPruned
from .events import (
    BestUpdated,
    EventBus,
    StudyCompleted,
    StudyProgress,
    StudyStarted,
    TrialCompleted,
    TrialFailed,
    TrialMetric,
    TrialPrunedEvent,
    TrialStarted,
)
from .executors.base import Completed, Executor, Failed, Outcome, Pruned, TrialRequest, failure
from .pruners.base import Pruner
from .samplers.base import Sampler
from .samplers.streams import derive_trial_seed  # defined there, beside the streams, for ask (no runner import)
from .study import Direction, MetricRecord, Recommendation, Study, Trial, TrialState

# A trial's state and number read in C: no Python call per trial of a resumed history or of the final sort.
_STATE_OF, _NUMBER_OF = operator.attrgetter("state"), operator.attrgetter("number")
_UNFINISHED = frozenset({TrialState.RUNNING, TrialState.STALE})  # what TrialState.is_finished is not

if TYPE_CHECKING:
    from .executors.artifacts import TrialDirs
    from .executors.slots import Slot, SlotPool


@dataclass(frozen=True)
class StopConditions:
    """When a study ends besides running out of planned trials."""

    target_metric: str | None = None
    target_value: float | None = None
    max_failures: int | None = None
    max_consecutive_failures: int | None = 5
    timeout: float | None = None  # seconds of wall time for the whole study
    retries: int = 0  # re-runs of a failed trial with the same params


class TrialReporter:
    """Collects a running trial's intermediate metrics (bounded), publishes them, and asks the pruner."""

    __slots__ = ("_declared", "bus", "metric", "prune_reason", "pruner", "reported", "trial")

    def __init__(
        self, trial: Trial, bus: EventBus, pruner: Pruner | None = None, metric: str = "",
        declared: tuple[str, ...] | frozenset[str] = (),
    ):
        self.trial = trial
        self.bus = bus
        self.pruner = pruner
        self.metric = metric  # the primary metric: the one the pruner judges
        self.prune_reason: str | None = None
        # a frozenset given is used as it is (one per study)
        self._declared = declared if isinstance(declared, frozenset) else frozenset((metric, *declared))
        # What the trial reported while it ran, which becomes trial.metrics when the attempt ends; made at
        # the first report: most quick functions report nothing but their return value (issue 18).
        self.reported: MetricLog | None = None

    @property
    def log(self) -> MetricLog:
        """The trial's bounded records so far."""
        if self.reported is None:
            self.reported = MetricLog(self._declared)
        return self.reported

    def report(self, name: str, value: float, step: int | None = None) -> None:
        record = MetricRecord(name, float(value), step)
        if not self.log.add(record):  # an undeclared name past the cap: not kept, not shown
            return
        if self.bus.wants(TrialMetric):
            self.bus.publish(TrialMetric(trial_id=self.trial.id, name=name, value=record.value, step=step))
        if self.pruner is not None and step is not None and name == self.metric and self.prune_reason is None:
            self.prune_reason = self.pruner.report(self.trial.number, step, record.value)

    def should_prune(self) -> bool:
        return self.prune_reason is not None


class StudyRunner:
    # After an interrupt, how long to wait for cancelled trials (shell trials get
    # TERM, then KILL after 2 s) before giving up on them.
    CANCEL_WAIT = 5.0

    def __init__(
        self,
        study: Study,
        sampler: Sampler,
        executor: Executor,
        bus: EventBus | None = None,
        stop: StopConditions | None = None,
        seed: int | None = None,
        parallel: int = 1,
        pruner: Pruner | None = None,
        trial_dirs: TrialDirs | None = None,
        slots: SlotPool | None = None,
    ):
        self.study = study
        self.trial_dirs = trial_dirs  # each trial's directory (None: trials get none)
        self.slots = slots  # devices or named slots, one per running trial
        self._held: dict[int, Slot] = {}  # trial number -> the slot it holds until recorded
        self.sampler = sampler
        self.executor = executor
        self.bus = bus or EventBus()
        self.stop = stop or StopConditions()
        self.seed = seed
        self.parallel = max(1, parallel)  # trials in flight at once
        self.pruner = pruner
        # Kept in full (up to a cap); others less.
        self._declared = frozenset((*(o.metric for o in study.objectives), *study.metrics))
        self._primary_metric = study.primary.metric
        self._minimize = study.primary.direction is Direction.MINIMIZE
        # Plain flags, not threading.Event: read twice a trial, an Event's is_set is a Python call each time, and
        # a flag set by a signal handler or a trial's thread is seen by the loop at its next read (the GIL).
        self._stop_requested = False
        self._failures = 0
        self._pruned = 0
        self._consecutive_failures = 0
        self._best: Trial | None = None
        self._executor_lost = False  # a trial's outcome said the executor can run no more
        # What the bus's subscribers want, as of its `version`: asked again only when that changed, instead of
        # `has_subscribers` and `wants` four times a trial, each a call (issue 18, fifth round).
        self._bus_version = -1
        self._listening = self._wants_started = self._wants_metric = False
        self._wants_best = self._wants_progress = False

    def request_stop(self) -> None:
        """Start no new trial; the running one finishes (used by signal handlers)."""
        self._stop_requested = True

    def _ask_bus(self) -> None:
        """What the bus's subscribers want now (its version changed since the last time)."""
        bus = self.bus
        self._bus_version = bus.version
        self._listening = bus.has_subscribers
        self._wants_started, self._wants_metric = bus.wants(TrialStarted), bus.wants(TrialMetric)
        self._wants_best, self._wants_progress = bus.wants(BestUpdated), bus.wants(StudyProgress)

    # The loop -----------------------------------------------------------------

    def run(self) -> Study:
        study = self.study
        study.started_at = study.started_at or time.time()
        study.status = "running"
        if not _UNFINISHED.isdisjoint(map(_STATE_OF, study.trials)):  # a C-level pass over a resumed history
            study.trials = [t for t in study.trials if t.state.is_finished()]
        self.sampler.replay(study.trials)  # resumed history
        if self.pruner is not None:
            for trial in study.trials:
                self.pruner.finish(trial)
        self._best = study.best_trial()
        # A resumed history's counts by C-level passes over it: three generator expressions took 0.07 s of
        # a 100,000-trial resume (py-spy, issue 18).
        states = list(map(_STATE_OF, study.trials))
        self._failures, self._pruned = states.count(TrialState.FAILED), states.count(TrialState.PRUNED)
        total = self.sampler.total
        number = max(map(_NUMBER_OF, study.trials), default=-1) + 1
        deadline = None if self.stop.timeout is None else time.monotonic() + self.stop.timeout
        self.bus.publish(
            StudyStarted(
                study_id=study.id,
                study_name=study.name,
                strategy=str(study.strategy.get("type", "")),
                total_trials=total,
                objectives=tuple(o.metric for o in study.objectives),
                directions=tuple(o.direction.value for o in study.objectives),
                resumed_trials=len(study.trials),
                retries=self.stop.retries,
            )
        )
        try:
            if self.parallel == 1:
                reason = self._run_sequential(number, total, deadline)
            else:
                reason = self._run_parallel(number, total, deadline)
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            self.executor.close()
        self._finish(reason)
        return study

    def _run_sequential(self, number: int, total: int | None, deadline: float | None) -> str:
        while True:
            reason = self._reason_to_stop(total, deadline)
            if reason:
                return reason
            claimed = self.sampler.claim(number)
            if claimed is None:
                return self._nothing_proposed()
            number, params = claimed  # a shared study's sampler picks the number (run --join)
            trial = self._start_trial(number, params)
            self._run_attempts(trial)
            number += 1
            self._record(trial, total)
            self.sampler.tell(trial)

    def _run_parallel(self, number: int, total: int | None, deadline: float | None) -> str:
        """Keep `parallel` trials in flight; only this thread proposes, records and tells.

        Trial threads run the executor and publish trial_metric events; every
        other event comes from here, so subscribers see each trial finish once.
        """
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="somatize-trial")
        running: dict = {}  # future -> trial
        reason: str | None = None
        try:
            while True:
                while reason is None and len(running) < self.parallel:
                    reason = self._reason_to_stop(total, deadline, in_flight=len(running))
                    if reason:
                        break
                    claimed = self.sampler.claim(number)
                    if claimed is None:
                        reason = self._nothing_proposed()
                        break
                    number, params = claimed
                    trial = self._start_trial(number, params)
                    running[pool.submit(self._run_attempts, trial)] = trial
                    number += 1
                if not running:
                    return reason or "n_trials"
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for trial in sorted((running.pop(f) for f in done), key=lambda t: t.number):
                    self._record(trial, total)
                    self.sampler.tell(trial)
        except BaseException:
            # Ctrl-C, or a subscriber that failed (the journal on a full disk): trials in
            # flight are dropped, not recorded, and --resume runs them again.
            self.executor.cancel()
            wait(running, timeout=self.CANCEL_WAIT)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _nothing_proposed(self) -> str:
        """The stop reason when the sampler has no proposal: the space ran out, or it gave up (its `give_up`)."""
        if self.sampler.ended_by is not None:
            return self.sampler.ended_by
        return "infeasible" if self.sampler.give_up else "exhausted"

    def _reason_to_stop(self, total: int | None, deadline: float | None, in_flight: int = 0) -> str | None:
        if self._stop_requested:
            return "interrupted"
        if self._executor_lost:
            return "executor_lost"
        if self.sampler.give_up:  # known before the first proposal (a grid with no feasible point)
            return "infeasible"
        if total is not None and len(self.study.trials) + in_flight >= total:
            return "n_trials"
        if self.stop.max_failures is not None and self._failures >= self.stop.max_failures:
            return "max_failures"
        limit = self.stop.max_consecutive_failures
        if limit is not None and self._consecutive_failures >= limit:
            return "max_consecutive_failures"
        if self.stop.target_metric is not None and self._target_reached():
            return "target"
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        return None

    def _target_reached(self) -> bool:
        metric, value = self.stop.target_metric, self.stop.target_value
        if metric is None or value is None:
            return False
        try:
            direction = self.study.objective(metric).direction
        except KeyError:
            direction = self.study.primary.direction
        for trial in reversed(self.study.trials):
            if trial.state is TrialState.COMPLETED and trial.is_feasible:  # an infeasible value reaches nothing
                got = trial.values.get(metric)
                if got is None:
                    got = trial.best_metric(metric, direction)
                return got is not None and direction.reached(got, value)
        return False

    # One trial ----------------------------------------------------------------

    def _start_trial(self, number: int, params: dict) -> Trial:
        trial = Trial(number, params, trial_seed=derive_trial_seed(self.seed, number))
        if self.slots is not None:  # held by the trial through every attempt, until it is recorded
            slot = self._held[number] = self.slots.acquire()
            trial.slot = slot.label
        if self.bus.version != self._bus_version:
            self._ask_bus()
        if self._wants_started:  # events are only built when someone listens
            self.bus.publish(TrialStarted(trial_id=trial.id, number=number, params=params, slot=trial.slot))
        return trial

    def _run_attempts(self, trial: Trial) -> None:
        """Run the trial, again with the same params after a failure while retries last."""
        slot = self._held.get(trial.number)
        trial_dir = None
        if self.trial_dirs is not None:
            try:
                trial_dir = self.trial_dirs.prepare(trial.id)
            except OSError as exc:
                trial.started_at = time.time()
                self._apply(trial, Failed(f"cannot make the trial's directory: {exc}"), None)
                return
        request = TrialRequest(  # every argument by position: no keywords for the call to match
            trial.id, trial.number, trial.params, trial.trial_seed or 0, self.study.name, trial_dir,
            None if slot is None else slot.label, None if slot is None else slot.gpus,
        )  # fmt: skip
        for attempt in range(1, self.stop.retries + 2):
            trial.attempts = attempt
            trial.metrics = []
            trial.started_at = time.time()
            if self.pruner is not None:
                self.pruner.start(trial.number)
            reporter = TrialReporter(trial, self.bus, self.pruner, self._primary_metric, self._declared)
            clock = time.perf_counter()
            outcome = self._execute(request, reporter)
            trial.duration_ms = round((time.perf_counter() - clock) * 1000)
            if isinstance(outcome, Pruned) and reporter.prune_reason is not None:
                outcome = Pruned(outcome.step, reporter.prune_reason)  # the pruner's why beats "pruned"
            self._apply(trial, outcome, reporter.reported)
            if isinstance(outcome, Failed) and outcome.stops_study:
                self._executor_lost = True
                break
            if trial.state is not TrialState.FAILED:
                break
        if self.trial_dirs is not None:  # named only if it is there: a function's is made on first use
            trial.log_dir = self.trial_dirs.finished(trial.id)

    def _execute(self, request: TrialRequest, reporter: TrialReporter) -> Outcome:
        try:
            return self.executor.run(request, reporter)
        except TrialPruned as exc:
            # Whatever the objective passed, the record holds an int step and a text reason.
            step = exc.step if isinstance(exc.step, int) and not isinstance(exc.step, bool) else None
            return Pruned(step, str(exc.reason))
        except Exception as exc:  # any error in user code fails the trial, the study goes on
            return failure(exc)

    def _apply(self, trial: Trial, outcome: Outcome, log: MetricLog | None) -> None:
        """The outcome into the trial's record; `log` holds what it reported while it ran (None: nothing)."""
        if isinstance(outcome, Completed):
            if log is None and outcome.thinned is None and len(outcome.metrics) <= FEW_RECORDS:
                # Nothing reported before, and too few records for any bound to cut: kept as they are, in
                # order, as the log would keep them, without a log (a quick function's return value).
                final = trial.metrics = list(outcome.metrics)
                trial.truncated = None
            else:
                if log is None:
                    log = MetricLog(self._declared)
                if outcome.thinned is not None:  # the executor kept a share of many records: take its counts too
                    final = log.merge(outcome.thinned)
                else:
                    final = [record for record in outcome.metrics if log.add(record)]
                trial.metrics = log.records()
                trial.truncated = log.truncation()
            if self.bus.version != self._bus_version:
                self._ask_bus()
            if self._wants_metric:
                for record in final:
                    self.bus.publish(TrialMetric(trial_id=trial.id, name=record.name, value=record.value, step=record.step))
        elif log is None:
            trial.metrics, trial.truncated = [], None
        else:
            trial.metrics = log.records()
            trial.truncated = log.truncation()
        if isinstance(outcome, Failed):
            trial.state, trial.error = TrialState.FAILED, self._bounded_error(trial, outcome)
            return
        trial.values = values = {}
        metrics = trial.metrics
        if len(metrics) == 1:  # a function's return value: its one record is its value, unless NaN (reduce_records)
            only = metrics[0]
            for objective in self.study.objectives:
                if only.name == objective.metric and not math.isnan(only.value):
                    values[objective.metric] = only.value
        else:
            for objective in self.study.objectives:
                value = objective.reduce_records(metrics)
                if value is not None:
                    values[objective.metric] = value
        if self.study.metrics:
            for name, value in self.study.outcome_values(trial).items():  # `metrics:` entries, by their last report
                trial.values.setdefault(name, value)
        if isinstance(outcome, Pruned):
            trial.state, trial.pruned_step, trial.reason = TrialState.PRUNED, outcome.step, outcome.reason
            return
        primary = self._primary_metric
        if primary not in values:
            trial.state = TrialState.FAILED
            trial.error = self._missing_metric_reason(trial, primary)
            if isinstance(outcome, Completed):  # which line named it, and output that was not read
                hints = [h for h in (outcome.unread.get(primary), *outcome.notes) if h]
                trial.error = clip_text("; ".join([trial.error, *hints]))[0]
            return
        trial.state = TrialState.COMPLETED
        if self.study.outcome_constraints:
            self.study.judge(trial)  # constraints on metrics: an infeasible trial is still completed (SPEC §9)

    @staticmethod
    def _bounded_error(trial: Trial, outcome: Failed) -> str:
        """The error text cut to its head and tail, and the trial record saying so."""
        error, cut = clip_text(outcome.error)
        if cut or outcome.chars is not None:  # cut here, or already by the executor (a worker's exception)
            chars = len(outcome.error) if outcome.chars is None else outcome.chars
            trial.truncated = {**(trial.truncated or {}), "error": {"chars": chars, "kept": ERROR_CHARS}}
        return error

    @staticmethod
    def _missing_metric_reason(trial: Trial, primary: str) -> str:
        if any(r.name == primary for r in trial.metrics):
            return f"primary metric {primary!r} was NaN"
        seen = sorted({r.name for r in trial.metrics})
        if seen:
            return f"no value for primary metric {primary!r} (metrics seen: {', '.join(seen)})"
        return f"no value for primary metric {primary!r} (no metrics reported)"

    def _record(self, trial: Trial, total: int | None) -> None:
        study = self.study
        study.trials.append(trial)
        slot = self._held.pop(trial.number, None)
        if slot is not None and self.slots is not None:
            self.slots.release(slot)
        if self.pruner is not None:
            self.pruner.finish(trial)
        state = trial.state
        became_best = False
        if state is TrialState.COMPLETED:
            self._consecutive_failures = 0
            # An infeasible trial is completed but never best (SPEC §9).
            if trial.feasible is not False:
                best = self._best
                if best is None:
                    self._best, became_best = trial, True
                else:
                    metric = self._primary_metric
                    value, best_value = trial.values[metric], best.values[metric]
                    if value < best_value if self._minimize else value > best_value:  # Direction.better
                        self._best, became_best = trial, True
        elif state is TrialState.PRUNED:
            self._pruned += 1
            self._consecutive_failures = 0
        else:
            self._failures += 1
            self._consecutive_failures += 1
        if self.bus.version != self._bus_version:
            self._ask_bus()
        if self._listening:
            self._publish_finished(trial, became_best, total)

    def _publish_finished(self, trial: Trial, became_best: bool, total: int | None) -> None:
        publish, bus = self.bus.publish, self.bus
        if trial.state is TrialState.COMPLETED:
            publish(TrialCompleted(trial_id=trial.id, values=dict(trial.values), trial=trial))
            if bus.version != self._bus_version:  # a handler of that event subscribed another
                self._ask_bus()
            if became_best and self._wants_best:
                value = trial.values[self.study.primary.metric]
                publish(BestUpdated(trial_id=trial.id, value=value, params=trial.params))
        elif trial.state is TrialState.PRUNED:
            publish(TrialPrunedEvent(trial_id=trial.id, step=trial.pruned_step, reason=trial.reason or "", trial=trial))
        else:
            publish(TrialFailed(trial_id=trial.id, error=trial.error or "", trial=trial))
        if bus.version != self._bus_version:
            self._ask_bus()
        if not self._wants_progress:
            return
        publish(
            StudyProgress(
                completed=len(self.study.trials),
                total=total,
                best_value=self._best_value(),
                pruned=self._pruned,
                failed=self._failures,
            )
        )

    def _best_value(self) -> float:
        return math.nan if self._best is None else self._best.values[self.study.primary.metric]

    def _recommendation(self) -> Recommendation | None:
        try:
            return self.sampler.recommend()
        except Exception:  # noqa: BLE001 - a model that cannot be refitted must not cost the results
            return None

    def _finish(self, reason: str) -> None:
        study = self.study
        study.finished_at = time.time()
        study.stop_reason = reason
        study.trials.sort(key=_NUMBER_OF)  # parallel trials finish out of order
        study.recommended = self._recommendation()
        if reason == "interrupted":
            study.status = "interrupted"
        elif reason in ("max_failures", "max_consecutive_failures", "executor_lost"):
            study.status = "failed"
        else:
            study.status = "completed"
        self.bus.publish(
            StudyCompleted(
                status=study.status,
                reason=reason,
                best_trial_id=None if self._best is None else self._best.id,
                best_value=self._best_value(),
            )
        )
