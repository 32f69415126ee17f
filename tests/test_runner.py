"""The study loop, through the package API (the seed's runner tests, ported)."""

from __future__ import annotations

import json

import pytest

from somatize import (
    CategoricalDimension,
    EventBus,
    FloatDimension,
    IntDimension,
    Objective,
    SearchSpace,
    StopConditions,
    Study,
    StudyRunner,
    TrialPruned,
    TrialState,
    make_sampler,
)
from somatize.executors.base import Pruned


def run_study(function_of, space, strategy, fn, *, direction="minimize", seed=0, stop=None, metric="loss"):
    study = Study("t", space, [Objective(metric, direction)], strategy)
    events = []
    bus = EventBus()
    bus.subscribe(events.append)
    sampler = make_sampler(strategy, space, study.primary, seed)
    StudyRunner(study, sampler, function_of(metric, fn), bus, stop, seed).run()
    return study, events


LR = FloatDimension("lr", 0.001, 0.1, scale="log")


def test_grid_runs_six_trials_and_finds_lr(function_of):
    space = SearchSpace((LR, CategoricalDimension("opt", ("adam", "sgd"))))
    study, events = run_study(
        function_of, space, {"type": "grid", "points_per_dim": 3}, lambda p: (p["lr"] - 0.01) ** 2
    )
    assert len(study.trials) == 6
    assert abs(study.best_trial().params["lr"] - 0.01) < 0.05
    kinds = {e.kind for e in events}
    assert {"study_started", "trial_started", "trial_completed", "best_updated", "study_completed"} <= kinds


def test_random_runs_twenty_trials_with_a_best(function_of):
    space = SearchSpace((FloatDimension("x", -1.0, 1.0),))
    study, _ = run_study(function_of, space, {"type": "random", "n_trials": 20}, lambda p: p["x"] ** 2)
    assert len(study.trials) == 20
    best = study.best_trial()
    assert best is not None
    assert best.values["loss"] == min(t.values["loss"] for t in study.trials)


def test_failures_are_recorded_and_study_completes(function_of):
    def objective(p):
        if p["x"] > 0.5:
            raise RuntimeError("x too large")
        return p["x"]

    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study, events = run_study(
        function_of, space, {"type": "random", "n_trials": 20}, objective,
        stop=StopConditions(max_consecutive_failures=None),
    )
    failed = [t for t in study.trials if t.state is TrialState.FAILED]
    assert failed and all(t.params["x"] > 0.5 for t in failed)
    assert all("x too large" in t.error for t in failed)
    assert len(study.trials) == 20 and study.status == "completed"
    assert sum(e.kind == "trial_failed" for e in events) == len(failed)


def test_always_pruning_executor_gives_all_pruned_trials(function_of):
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study, events = run_study(
        function_of, space, {"type": "random", "n_trials": 5}, lambda p: Pruned(3, "always")
    )
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 5
    assert all(t.pruned_step == 3 and t.reason == "always" for t in study.trials)
    assert study.best_trial() is None
    assert sum(e.kind == "trial_pruned" for e in events) == 5


def test_trial_pruned_exception_prunes(function_of):
    def objective(p):
        raise TrialPruned("not promising", step=2)

    study, _ = run_study(function_of, SearchSpace((LR,)), {"type": "random", "n_trials": 2}, objective)
    assert all(t.state is TrialState.PRUNED and t.pruned_step == 2 for t in study.trials)


def test_progress_events_count_up(function_of):
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    _, events = run_study(function_of, space, {"type": "random", "n_trials": 3}, lambda p: p["x"])
    assert [(e.completed, e.total) for e in events if e.kind == "study_progress"] == [(1, 3), (2, 3), (3, 3)]


def test_event_order_for_one_trial(function_of):
    _, events = run_study(function_of, SearchSpace((LR,)), {"type": "random", "n_trials": 1}, lambda p: 1.0)
    assert [e.kind for e in events] == [
        "study_started", "trial_started", "trial_metric", "trial_completed",
        "best_updated", "study_progress", "study_completed",
    ]
    for event in events:
        json.dumps(event.to_json(), allow_nan=False)


def test_best_updated_only_on_improvement(function_of):
    values = iter([3.0, 1.0, 2.0, 1.0, 0.5])
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study, events = run_study(function_of, space, {"type": "random", "n_trials": 5}, lambda p: next(values))
    assert [e.trial_id for e in events if e.kind == "best_updated"] == ["trial_0000", "trial_0001", "trial_0004"]


def test_ties_go_to_the_earliest_trial(function_of):
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study, _ = run_study(function_of, space, {"type": "random", "n_trials": 4}, lambda p: 1.0, direction="maximize")
    assert study.best_trial().id == "trial_0000"


def test_missing_primary_metric_fails_with_reason(function_of):
    from somatize.executors.base import Completed
    from somatize.study import MetricRecord

    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study, _ = run_study(
        function_of, space, {"type": "random", "n_trials": 2},
        lambda p: Completed([MetricRecord("acc", 1.0), MetricRecord("loss", float("nan"))]),
    )
    assert all(t.state is TrialState.FAILED for t in study.trials)
    assert "primary metric 'loss' was NaN" in study.trials[0].error


@pytest.mark.parametrize(
    "stop, reason, status",
    [
        (StopConditions(target_metric="loss", target_value=0.5), "target", "completed"),
        (StopConditions(max_failures=3, max_consecutive_failures=None), "max_failures", "failed"),
        (StopConditions(max_consecutive_failures=2), "max_consecutive_failures", "failed"),
        (StopConditions(timeout=0.0), "timeout", "completed"),
    ],
)
def test_stop_conditions(function_of, stop, reason, status):
    def objective(p):
        if "fail" in reason:
            raise ValueError("boom")
        return p["x"]

    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study, events = run_study(function_of, space, {"type": "random", "n_trials": 50}, objective, stop=stop)
    assert study.stop_reason == reason and study.status == status
    assert len(study.trials) < 50
    assert events[-1].kind == "study_completed" and events[-1].reason == reason


def test_retries_rerun_failed_trials_with_same_params(function_of):
    calls = []

    def flaky(p):
        calls.append(p["x"])
        if len(calls) % 2:
            raise RuntimeError("flaky")
        return p["x"]

    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study, _ = run_study(function_of, space, {"type": "random", "n_trials": 3}, flaky, stop=StopConditions(retries=1))
    assert all(t.state is TrialState.COMPLETED and t.attempts == 2 for t in study.trials)
    assert calls[0] == calls[1]


def test_finite_space_smaller_than_n_trials_ends_when_exhausted(function_of):
    space = SearchSpace((IntDimension("a", 0, 2),))
    study, _ = run_study(function_of, space, {"type": "random", "n_trials": 10}, lambda p: p["a"])
    assert sorted(t.params["a"] for t in study.trials) == [0, 1, 2]
    assert study.status == "completed"


def test_trial_seeds_are_stable_per_number(function_of):
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    first, _ = run_study(function_of, space, {"type": "random", "n_trials": 3}, lambda p: p["x"], seed=5)
    second, _ = run_study(function_of, space, {"type": "random", "n_trials": 3}, lambda p: p["x"], seed=5)
    assert [t.trial_seed for t in first.trials] == [t.trial_seed for t in second.trials]
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert len({t.trial_seed for t in first.trials}) == 3


def test_resume_continues_numbering_and_keeps_history(function_of):
    space = SearchSpace((IntDimension("a", 0, 9),))
    study, _ = run_study(function_of, space, {"type": "grid", "points_per_dim": 10, "n_trials": 4}, lambda p: p["a"])
    study.strategy = {"type": "grid", "points_per_dim": 10, "n_trials": 7}
    sampler = make_sampler(study.strategy, space, study.primary, 0)
    StudyRunner(study, sampler, function_of("loss", lambda p: p["a"])).run()
    assert [t.number for t in study.trials] == list(range(7))
    assert [t.params["a"] for t in study.trials] == list(range(7))


@pytest.mark.parametrize("parallel", [1, 3])
def test_an_executor_that_can_run_no_more_stops_the_study_without_retries(function_of, parallel):
    from somatize.executors.base import Failed

    calls = []

    def lost_from_the_third(params):
        calls.append(params)
        return Failed("no Dask workers left: none for 1 s", stops_study=True) if len(calls) >= 3 else 1.0

    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study = Study("t", space, [Objective("loss")], {"type": "random", "n_trials": 20})
    sampler = make_sampler(study.strategy, space, study.primary, 0)
    stop = StopConditions(retries=2, max_consecutive_failures=None)
    StudyRunner(study, sampler, function_of("loss", lost_from_the_third), None, stop, 0, parallel).run()
    assert study.status == "failed" and study.stop_reason == "executor_lost"
    failed = [t for t in study.trials if t.state is TrialState.FAILED]
    assert failed and all(t.error == "no Dask workers left: none for 1 s" and t.attempts == 1 for t in failed)
    assert len(calls) < 20 and len(study.trials) == len(calls)
