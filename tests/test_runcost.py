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


def test_a_handler_subscribed_or_unsubscribed_while_the_study_runs_gets_the_events_from_then_on(function_of):
    # The runner keeps what the bus wants between two trials and asks again when a subscription changed:
    # a handler that joins at the third finished trial gets every event of the trials after it, and one that
    # leaves at the fifth gets none after it (nor is one built when nobody else wants it).
    bus = EventBus()
    joined: list = []
    leaving: list = []
    bus.subscribe(leaving.append, events=(TrialStarted,))

    def at_each_finish(event) -> None:
        number = event.trial.number
        if number == 2:
            bus.subscribe(joined.append, events=(TrialStarted, TrialMetric, StudyProgress, BestUpdated))
        if number == 4:
            bus.unsubscribe(leaving.append)

    bus.subscribe(at_each_finish, events=FINISHED_TRIAL_EVENTS)
    run(function_of, bus, 8)
    started = [e.number for e in joined if isinstance(e, TrialStarted)]
    assert started == [3, 4, 5, 6, 7]
    assert [e.completed for e in joined if isinstance(e, StudyProgress)] == [3, 4, 5, 6, 7, 8]
    assert len([e for e in joined if isinstance(e, TrialMetric)]) == 5
    assert [e.number for e in leaving] == [0, 1, 2, 3, 4]


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


def _collector_seen_by_trials(tmp_path, metric: str, expression: str) -> list[dict]:
    """The trials of a 3-trial `somatize run` whose objective records `expression` (of gc) as `metric`."""
    (tmp_path / "objective.py").write_text(
        f"import gc\n\ndef objective(params):\n    return {{'loss': params['x'], '{metric}': {expression}}}\n"
    )
    (tmp_path / "s.yaml").write_text(
        f"name: {metric}\nseed: 1\nsearch_space:\n  x: {{type: float, low: 0.0, high: 1.0}}\n"
        f"strategy: {{type: random, n_trials: 3}}\nobjective: {{metric: loss}}\nmetrics: [{metric}]\n"
        "executor: {function: 'objective:objective'}\n"
    )
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["trials"]


def test_somatize_run_leaves_the_collector_as_it_was(tmp_path):
    gc.unfreeze()
    trials = _collector_seen_by_trials(tmp_path, "frozen", "gc.get_freeze_count()")
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


TRIAL_FILES = """\
import io, os, sys, contextlib

def objective(params, trial):
    n = trial.number
    seen = os.environ.get("SOMATIZE_TRIAL_DIR")
    if n % 3 == 0:
        print(f"out of {trial.id}")
        sys.stderr.write(f"err of {trial.id}\\n")
    elif n % 3 == 1:
        (trial.dir / "own.txt").write_text(seen)
    if n == 4:  # a function that swaps the stream itself: later trials are still captured
        sys.stdout = io.StringIO()
    return {"loss": float(n), "same_dir": float(seen == os.path.join(os.path.dirname(seen), trial.id))}
"""


def test_each_in_process_trial_gets_its_own_output_files_directory_and_variable(tmp_path, capsys):
    """The capture and the environment are held for the whole run (issue 18): still each trial's print goes
    to its own stdout.txt and stderr.txt, trial.dir and $SOMATIZE_TRIAL_DIR name its own directory, a quiet
    trial has none, and after the run the streams and the environment are as they were."""
    import os
    import sys

    (tmp_path / "files.py").write_text(TRIAL_FILES)
    (tmp_path / "s.yaml").write_text(
        "name: files\nsearch_space:\n  x: [0, 1, 2, 3, 4, 5, 6, 7, 8]\nstrategy: {type: grid}\n"
        "objective: {metric: loss}\nmetrics: [same_dir]\nexecutor: {function: 'files:objective'}\n"
    )
    before = sys.stdout, sys.stderr, os.environ.get("SOMATIZE_TRIAL_DIR")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (sys.stdout, sys.stderr, os.environ.get("SOMATIZE_TRIAL_DIR")) == before
    trials = json.loads(out.read_text())["trials"]
    assert [t["state"] for t in trials] == ["completed"] * 9
    assert all(t["values"]["same_dir"] == 1.0 for t in trials)
    root = tmp_path / "r.trials"
    for t in trials:
        directory = root / t["id"]
        if t["number"] % 3 == 2:  # printed nothing, never read trial.dir
            assert "log_dir" not in t and not directory.exists()
            continue
        assert t["log_dir"] == f"r.trials/{t['id']}"
        if t["number"] % 3 == 0:
            assert (directory / "stdout.txt").read_text() == f"out of {t['id']}\n"
            assert (directory / "stderr.txt").read_text() == f"err of {t['id']}\n"
        else:
            assert sorted(p.name for p in directory.iterdir()) == ["own.txt"]
            assert (directory / "own.txt").read_text() == str(directory.resolve())
    # Still shown on stderr too, but for what went to the stream trial 4 put in place of stdout
    assert "out of trial_0003" in result.stderr and "out of trial_0006" not in result.stderr


def test_somatize_run_raises_the_young_collection_threshold_while_it_runs_and_puts_it_back(tmp_path):
    from somatize.history import YOUNG_THRESHOLD

    before = gc.get_threshold()
    trials = _collector_seen_by_trials(tmp_path, "young", "gc.get_threshold()[0]")
    # a quick trial's records are walked once, by the freeze's collection, not by young collections too
    assert [t["values"]["young"] for t in trials] == [max(before[0], YOUNG_THRESHOLD)] * 3
    assert gc.get_threshold() == before
