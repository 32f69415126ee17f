"""Every trial logged to MLflow as a run, nested under one parent run for the study.

A queue subscriber of the bus: the runner only appends to a bounded buffer, and
one background thread makes every MLflow call, so a slow or unreachable
tracking server never slows or fails the study. The results file is the truth;
MLflow gets a copy, as complete as the server allows:
- a trial's run is created when it starts (params, tags), its intermediate
  metrics are sent in batches as they arrive, and when it finishes every
  record the batches missed, its values (`value.<metric>`) and its state;
- the first MLflow error is reported once (`somatize: warning: mlflow: ...`)
  and ends the logging for this study;
- at the end, `close` waits a bounded time for the backlog and says how many
  trials were not logged.

`mlflow` is imported in the background thread, never at `import somatize`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..events import (
    FINISHED_TRIAL_EVENTS,
    Event,
    StudyCompleted,
    StudyStarted,
    Subscription,
    TrialMetric,
    TrialStarted,
)
from ..study import MetricRecord, Study, Trial, TrialState
from . import is_path

EXTRA_HINT = "pip install 'somatize[mlflow]'"
# The buffer between the bus and the MLflow thread. A trial makes ~4 events plus one per report;
# 20000 events hold a few hours of a busy study behind a stalled server, at ~200 bytes each.
QUEUE_EVENTS = 20_000
# How long `close` waits for the backlog at the end of a study. Creating a fresh sqlite store
# (MLflow's alembic migrations) took 14 s on this 2-core machine under load, after 4 s to import
# mlflow; a server that is down makes MLflow retry for ~2 minutes, which nobody should sit through.
FLUSH_SECONDS = 30.0
# When the backlog is not done this soon after the study, say that somatize is waiting, and why.
_QUIET_WAIT = 1.0
# MLflow's own limits (mlflow.utils.validation): longer values are refused, not cut.
_PARAM_LENGTH = 6000
_TAG_LENGTH = 8000
_BATCH_METRICS = 1000
_MESSAGE_LENGTH = 300  # MLflow's errors can hold a whole HTTP response
# Names MLflow accepts for params and metrics; anything else becomes '_'.
_UNSAFE_NAME = re.compile(r"[^\w./\- ]")
_RUN_STATUS = {TrialState.COMPLETED: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAILED: "FAILED"}
_STUDY_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
TAG_PREFIX = "somatize."
_PARENT_TAG = "mlflow.parentRunId"
_RUN_NAME_TAG = "mlflow.runName"


def mlflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


class MlflowTracker:
    """Copies the study's trials to MLflow from a background thread; see the module docstring."""

    def __init__(
        self,
        events: Subscription,
        study: Study,
        tracking_uri: str | None,
        experiment: str | None,
        warn: Callable[[str], None],
        say: Callable[[str], None],
    ):
        self.events = events
        self.study = study
        self.tracking_uri = tracking_uri
        self.experiment = experiment or study.name
        self.warn = warn  # a problem: MLflow misses trials
        self.say = say  # for people: what somatize is doing
        self.failed = False
        self._earlier = {t.id for t in study.trials}  # resumed trials: logged by the run that made them
        self._logged: set[str] = set()
        self._runs: dict[str, str] = {}  # trial id -> MLflow run id
        self._sent: dict[str, Counter[tuple[str, float, int | None]]] = {}  # records already logged per trial
        self._steps: dict[str, dict[str, int]] = {}  # the last step logged per trial and metric
        self._parent: str | None = None
        self._client: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="somatize-mlflow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` seconds (FLUSH_SECONDS) for the backlog, then say what MLflow did not get.

        Ctrl-C stops the wait, not the rest of the run (the results are written after this).
        """
        timeout = FLUSH_SECONDS if timeout is None else timeout
        self._done.set()
        try:
            self._thread.join(min(timeout, _QUIET_WAIT))
            if self._thread.is_alive() and timeout > _QUIET_WAIT:
                self.say(f"mlflow: waiting up to {timeout:g} s for {self._where()} (Ctrl-C stops waiting)")
                self._thread.join(timeout - _QUIET_WAIT)
        except KeyboardInterrupt:
            pass
        with self._lock:
            missing = [t.id for t in self.study.trials if t.id not in self._earlier and t.id not in self._logged]
        if not missing:
            return
        why = "after the error above" if self.failed else f"within {timeout:g} s"
        if self.events.missed and not self.failed:
            why += f" ({self.events.missed} events dropped while MLflow was slow)"
        self.warn(
            f"mlflow: {len(missing)} of {len(missing) + len(self._logged)} trials not logged to "
            f"{self._where()} {why}; the results file has them all"
        )

    def _where(self) -> str:
        return self.tracking_uri or "the default MLflow tracking URI"

    # the background thread ----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._client = _client(self.tracking_uri)
            while True:
                event = self.events.get(timeout=0.2)
                if event is None:
                    if self._done.is_set():
                        return
                    continue
                self._handle([event, *self.events.drain()])
        except Exception as exc:  # noqa: BLE001 - whatever MLflow raises, the study goes on
            self.failed = True
            self.warn(f"mlflow: {_one_line(exc)}; not logging the rest of this study to {self._where()}")

    def _handle(self, batch: list[Event]) -> None:
        metrics: dict[str, list[MetricRecord]] = {}
        for event in batch:
            if isinstance(event, StudyStarted):
                self._start_study(event)
            elif isinstance(event, TrialStarted):
                self._flush(metrics)
                self._start_trial(event.trial_id, event.number, event.params, event.time)
            elif isinstance(event, TrialMetric):
                metrics.setdefault(event.trial_id, []).append(
                    MetricRecord(event.name, event.value, event.step, event.time)
                )
            elif isinstance(event, FINISHED_TRIAL_EVENTS):
                self._flush(metrics)
                self._finish_trial(event.trial)  # type: ignore[attr-defined]
            elif isinstance(event, StudyCompleted):
                self._flush(metrics)
                self._finish_study(event)
        self._flush(metrics)

    def _start_study(self, event: StudyStarted) -> None:
        client = self._client
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
        self._experiment_id = experiment_id
        tags = {
            TAG_PREFIX + "study": self.study.name,
            TAG_PREFIX + "study_id": self.study.id,
            TAG_PREFIX + "role": "study",
            TAG_PREFIX + "strategy": event.strategy,
            _RUN_NAME_TAG: self.study.name,
        }
        if event.resumed_trials:  # continue the parent run of the interrupted study, when there is one
            found = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{TAG_PREFIX}study_id` = '{self.study.id}' and tags.`{TAG_PREFIX}role` = 'study'",
                max_results=1,
            )
            if found:
                self._parent = found[0].info.run_id
                client.update_run(self._parent, status="RUNNING")
                return
        run = client.create_run(experiment_id, start_time=_ms(event.time), tags=tags, run_name=self.study.name)
        self._parent = run.info.run_id
        objectives = ", ".join(f"{o.metric} ({o.direction.value})" for o in self.study.objectives)
        client.log_batch(self._parent, params=_params({"strategy": event.strategy, "objectives": objectives}))

    def _start_trial(self, trial_id: str, number: int, params: dict[str, Any], started: float) -> None:
        if self._parent is None:
            return  # study_started was dropped from a full buffer: nothing to nest under; close() counts the loss
        tags = {
            _PARENT_TAG: self._parent,
            _RUN_NAME_TAG: trial_id,
            TAG_PREFIX + "study": self.study.name,
            TAG_PREFIX + "study_id": self.study.id,
            TAG_PREFIX + "trial_id": trial_id,
            TAG_PREFIX + "trial_number": str(number),
            TAG_PREFIX + "state": TrialState.RUNNING.value,
        }
        run = self._client.create_run(self._experiment_id, start_time=_ms(started), tags=tags, run_name=trial_id)
        self._runs[trial_id] = run.info.run_id
        self._sent[trial_id] = Counter()
        self._steps[trial_id] = {}
        self._client.log_batch(run.info.run_id, params=_params(params))

    def _flush(self, metrics: dict[str, list[MetricRecord]]) -> None:
        for trial_id, records in metrics.items():
            if trial_id in self._runs:
                self._log_records(trial_id, records, streamed=True)
        metrics.clear()

    def _log_records(self, trial_id: str, records: Iterable[MetricRecord], streamed: bool) -> None:
        """Log records; the finished trial's full list skips those streamed while it ran."""
        from mlflow.entities import Metric

        sent = self._sent[trial_id]
        last = self._steps[trial_id]
        batch = []
        for record in records:
            key = (record.name, record.value, record.step)
            if streamed:
                sent[key] += 1
            elif sent[key] > 0:
                sent[key] -= 1
                continue
            # A report without a step (a function's return value) comes after the last step.
            step = record.step if record.step is not None else last.get(record.name, -1) + 1
            last[record.name] = max(step, last.get(record.name, step))
            batch.append(Metric(_name(record.name), record.value, _ms(record.timestamp), step))
        for start in range(0, len(batch), _BATCH_METRICS):
            self._client.log_batch(self._runs[trial_id], metrics=batch[start : start + _BATCH_METRICS])

    def _finish_trial(self, trial: Trial) -> None:
        from mlflow.entities import Metric

        if self._parent is None:
            return
        if trial.id not in self._runs:  # its start was dropped: create the run now
            self._start_trial(trial.id, trial.number, trial.params, trial.started_at or time.time())
        run_id = self._runs[trial.id]
        self._log_records(trial.id, trial.metrics, streamed=False)
        ended = _ms(trial.started_at + trial.duration_ms / 1000) if trial.started_at and trial.duration_ms else None
        values = [Metric(f"value.{_name(k)}", v, ended or _ms(time.time()), 0) for k, v in trial.values.items()]
        tags = {TAG_PREFIX + "state": trial.state.value}
        if trial.pruned_step is not None:
            tags[TAG_PREFIX + "pruned_step"] = str(trial.pruned_step)
        if trial.error or trial.reason:
            tags[TAG_PREFIX + "reason"] = (trial.error or trial.reason or "")[:_TAG_LENGTH]
        self._client.log_batch(run_id, metrics=values, tags=_tags(tags))
        self._client.set_terminated(run_id, status=_RUN_STATUS[trial.state], end_time=ended)
        del self._sent[trial.id], self._steps[trial.id]
        with self._lock:
            self._logged.add(trial.id)

    def _finish_study(self, event: StudyCompleted) -> None:
        if self._parent is None:
            return
        tags = {TAG_PREFIX + "status": event.status}
        if event.best_trial_id is not None:
            tags[TAG_PREFIX + "best_trial"] = event.best_trial_id
        metrics = []
        if event.best_trial_id is not None and math.isfinite(event.best_value):
            from mlflow.entities import Metric

            metrics.append(Metric(f"best.{_name(self.study.primary.metric)}", event.best_value, _ms(event.time), 0))
        self._client.log_batch(self._parent, metrics=metrics, tags=_tags(tags))
        self._client.set_terminated(self._parent, status=_STUDY_STATUS.get(event.status, "FINISHED"))


def _client(tracking_uri: str | None) -> Any:
    if tracking_uri is not None and (is_path(tracking_uri) or tracking_uri.startswith("file:")):
        # MLflow 3 refuses a directory store unless asked; a user who names a directory asks.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    for name in ("mlflow", "alembic"):  # their INFO lines ("Creating initial MLflow database tables") are noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _name(name: str) -> str:
    return _UNSAFE_NAME.sub("_", name)


def _params(params: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(_name(k), str(v)[:_PARAM_LENGTH]) for k, v in params.items()]


def _tags(tags: dict[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, v[:_TAG_LENGTH]) for k, v in tags.items()]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MESSAGE_LENGTH else text[: _MESSAGE_LENGTH - 3] + "..."
