"""The per-trial path of `somatize run` (issue 18): events built and delivered only for the handlers that
take them, and finished trials kept out of the collector's full passes."""

from __future__ import annotations

import gc
import json

from typer.testing import CliRunner

from somatize import EventBus, FloatDimension, Objective, SearchSpace, StopConditions, Study, StudyRunner, make_sampler
from somatize.cli import app
from somatize.events import (
    FINISHED_TRIAL_EVENTS,
    BestUpdated,
    StudyProgress,
    TrialCompleted,
    TrialMetric,
    TrialStarted,
)
from somatize.history import FrozenHistory

SPACE = SearchSpace((FloatDimension("x", 0.0, 1.0),))


def run(function_of, bus: EventBus, n: int, fn=lambda p: p["x"]) -> Study:
    strategy = {"type": "random", "n_trials": n}
    study = Study("cost", SPACE, [Objective("loss")], strategy)
    sampler = make_sampler(strategy, SPACE, study.primary, 1)
    StudyRunner(study, sampler, function_of("loss", fn), bus, StopConditions(max_consecutive_failures=None), 1).run()
    return study


class Finished:
    events = FINISHED_TRIAL_EVENTS

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, event) -> None:
        self.seen.append(event)


def test_a_handler_gets_only_the_events_it_takes_and_the_others_are_not_built(function_of):
    bus = EventBus()
    finished = Finished()
    bus.subscribe(finished)  # its `events` attribute
    progress: list = []
    bus.subscribe(progress.append, events=(StudyProgress,))
    assert not bus.wants(TrialStarted) and not bus.wants(TrialMetric) and not bus.wants(BestUpdated)
    assert bus.wants(TrialCompleted) and bus.wants(StudyProgress)
    study = run(function_of, bus, 5)
    assert [type(e) for e in finished.seen] == [TrialCompleted] * 5
    assert [e.trial for e in finished.seen] == study.trials
    assert [e.completed for e in progress] == [1, 2, 3, 4, 5]


def test_a_handler_for_every_event_still_gets_every_event(function_of):
    bus = EventBus()
    finished, everything = Finished(), []
    bus.subscribe(finished)
    bus.subscribe(everything.append)
    run(function_of, bus, 3)
    kinds = [e.kind for e in everything]
    assert kinds.count("trial_started") == 3 and kinds.count("trial_metric") == 3
    assert kinds.count("study_progress") == 3 and "best_updated" in kinds
    assert len(finished.seen) == 3
    bus.unsubscribe(everything.append)
    assert not bus.wants(TrialStarted)


def test_finished_trials_are_frozen_every_so_many_and_given_back_at_the_end(function_of):
    gc.unfreeze()
    counts: list[int] = []

    def objective(params):
        counts.append(gc.get_freeze_count())
        return params["x"]

    bus = EventBus()
    frozen = FrozenHistory(every=10)
    bus.subscribe(frozen)
    try:
        run(function_of, bus, 25, objective)
        assert gc.get_freeze_count() > 0
    finally:
        frozen.close()
    assert gc.get_freeze_count() == 0
    assert all(c > 0 for c in counts)  # frozen when the study started
    assert counts[10] > counts[9] and counts[20] > counts[19]  # and again after the 10th and the 20th
    assert counts[11] == counts[10]


def test_somatize_run_leaves_the_collector_as_it_was(tmp_path):
    gc.unfreeze()
    (tmp_path / "objective.py").write_text(
        "import gc\n\ndef objective(params):\n    return {'loss': params['x'], 'frozen': gc.get_freeze_count()}\n"
    )
    (tmp_path / "s.yaml").write_text(
        "name: frozen\nseed: 1\nsearch_space:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        "strategy: {type: random, n_trials: 3}\nobjective: {metric: loss}\nmetrics: [frozen]\n"
        "executor: {function: 'objective:objective'}\n"
    )
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    trials = json.loads(out.read_text())["trials"]
    assert [t["state"] for t in trials] == ["completed"] * 3
    assert all(t["values"]["frozen"] > 0 for t in trials)  # the run froze what it had
    assert gc.get_freeze_count() == 0


def test_keep_best_drops_log_dir_from_the_final_file_after_periodic_writes(tmp_path, monkeypatch):
    """A trial pushed out of the best after a periodic write had encoded it: the final file names no directory
    for it (a long study's writes used to keep its first line, which did)."""
    from somatize.storage import results

    monkeypatch.setattr(results, "PERIODIC_WRITE_SECONDS", 0.0)  # a write after every trial
    (tmp_path / "objective.py").write_text(
        "import time\n\ndef objective(params):\n    print('trial output')\n    time.sleep(0.05)\n"
        "    return -params['x']\n"  # x grows with the grid: each trial is the new best
    )
    (tmp_path / "s.yaml").write_text(
        "name: keep\nsearch_space:\n  x: [1, 2, 3, 4, 5, 6]\n"
        "strategy: {type: grid}\nobjective: {metric: loss}\n"
        "executor: {function: 'objective:objective'}\ntrial_dirs: {keep: best, best: 2}\n"
    )
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    trials = json.loads(out.read_text())["trials"]
    assert [t["params"]["x"] for t in trials] == [1, 2, 3, 4, 5, 6]
    assert {t["id"] for t in trials if t.get("log_dir")} == {"trial_0004", "trial_0005"}
    assert sorted(p.name for p in (tmp_path / "r.trials").iterdir()) == ["trial_0004", "trial_0005"]
