from __future__ import annotations

import json
import math

from somatize import (
    CategoricalDimension,
    FloatDimension,
    IntDimension,
    MetricRecord,
    Objective,
    SearchSpace,
    Study,
    Trial,
    TrialState,
)
from somatize.storage.results import parse_results, results_json

SPACE = SearchSpace(
    (
        FloatDimension("lr", 1e-4, 0.1, scale="log", default=0.01),
        FloatDimension("dropout", 0.0, 0.5, step=0.1),
        IntDimension("layers", 1, 4),
        CategoricalDimension("act", ("relu", "tanh", True, 2)),
    ),
    {"epochs": 20},
)


def full_study() -> Study:
    study = Study(
        "round-trip",
        SPACE,
        [Objective("f1", "maximize"), Objective("latency_ms", "minimize", reduce="last")],
        {"type": "random", "n_trials": 4},
    )
    study.started_at = 1_790_000_000.25
    params = {"lr": 0.012345678901234567, "dropout": 0.1, "layers": 2, "act": True, "epochs": 20}
    study.trials = [
        Trial(0, dict(params), TrialState.COMPLETED,
              [MetricRecord("f1", 0.5, 0, 1_790_000_001.123456), MetricRecord("f1", 0.9, 1, 1_790_000_002.5),
               MetricRecord("latency_ms", 12.0, None, 1_790_000_003.0)],
              {"f1": 0.9, "latency_ms": 12.0}, 1_790_000_000.5, 2500, trial_seed=11),
        Trial(1, dict(params, layers=3), TrialState.PRUNED, [MetricRecord("f1", 0.1, 3, 1_790_000_004.0)],
              {"f1": 0.1}, 1_790_000_004.0, 100, pruned_step=3, reason="below median"),
        Trial(2, dict(params, act="relu"), TrialState.FAILED, [MetricRecord("f1", math.nan, None, 1_790_000_005.0)],
              {}, 1_790_000_005.0, 7, error="exit status 1: boom", attempts=2),
        Trial(3, dict(params, layers=4), TrialState.COMPLETED,
              [MetricRecord("f1", 0.9, None, 1_790_000_006.0), MetricRecord("latency_ms", 5.0, None, 1_790_000_006.0)],
              {"f1": 0.9, "latency_ms": 5.0}, 1_790_000_006.0, 10),
    ]
    study.status = "completed"
    study.finished_at = 1_790_000_010.0
    return study


def test_results_round_trip_without_loss():
    text = results_json(full_study())
    again = parse_results(text, "r.json")
    assert results_json(again) == text
    assert again.trials[0].metrics[0].timestamp == 1_790_000_001.123456
    assert again.trials[2].metrics[0].value != again.trials[2].metrics[0].value  # NaN survives
    assert again.trials[0].params["lr"] == 0.012345678901234567


def test_results_document_shape():
    data = json.loads(results_json(full_study()))
    assert data["format"] == "somatize.results" and data["version"] == 1
    assert data["best_trial"]["id"] == "trial_0000"  # tie on f1 goes to the earliest
    assert data["pareto_front"] == ["trial_0003"]  # same f1, lower latency dominates
    assert [t["state"] for t in data["trials"]] == ["completed", "pruned", "failed", "completed"]
    assert data["trials"][1]["pruned_step"] == 3


def test_best_trial_by_other_objective():
    study = full_study()
    assert study.best_trial("latency_ms").id == "trial_0003"
    assert study.trials[0].best_metric("f1", "maximize") == 0.9
    assert study.trials[0].best_metric("f1", "minimize") == 0.5
