"""`run --resume` as a user drives it: the study goes on where it stopped, and the journal is checked first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.cli import app

cli = CliRunner()

OBJECTIVE = """\
def objective(params):
    return sum(float(v) for v in params.values() if not isinstance(v, str))
"""

SPACES = {
    "continuous": "  x: {type: float, low: 0.0, high: 1.0}\n  y: {type: float, low: -1.0, high: 1.0, scale: linear}\n",
    "discrete": "  x: {type: int, low: 0, high: 29}\n  k: [a, b, c, d, e, f, g, h, i, j]\n",
}

STRATEGIES = {
    "random": "{type: random, n_trials: 10}",
    "grid": "{type: grid, points_per_dim: 20}",
    # An initial design longer than the study keeps the test fast; the model's path has its own test below.
    "bayesian": "{type: bayesian, n_trials: 10, n_initial: 1000}",
}


def study_file(tmp_path: Path, strategy: str, space: str = "continuous", seed: int | None = 7) -> Path:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: resumed\n" + (f"seed: {seed}\n" if seed is not None else "")
        + "search_space:\n" + SPACES[space]
        + f"strategy: {STRATEGIES[strategy]}\n"
        + "objective: {metric: v, direction: minimize}\n"
        + "executor: {function: objective:objective}\n"
    )
    return path


def run(*args: object):
    return cli.invoke(app, ["run", *map(str, args)])


def trials_of(results: Path) -> list[dict]:
    return json.loads(results.read_text())["trials"]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("space", sorted(SPACES))
def test_a_seeded_study_resumed_after_64_trials_runs_every_planned_trial(tmp_path, strategy, space):
    study, out = study_file(tmp_path, strategy, space), tmp_path / "r.json"
    first = run(study, "-o", out, "-q", "--n-trials", 64)
    assert first.exit_code == 0, first.output
    resumed = run(study, "-o", out, "-q", "--n-trials", 100, "--resume")
    assert resumed.exit_code == 0, resumed.output
    data = json.loads(out.read_text())
    assert data["status"] == "completed" and data["stop_reason"] == "n_trials"
    assert [t["number"] for t in data["trials"]] == list(range(100))
    keys = {json.dumps(t["params"], sort_keys=True) for t in data["trials"]}
    assert len(keys) == 100  # never the same parameter set twice
    assert not (tmp_path / "r.journal.jsonl").exists()


@pytest.mark.parametrize("strategy", ["random", "grid"])
def test_a_resumed_study_proposes_what_an_uninterrupted_one_would_have(tmp_path, strategy):
    study = study_file(tmp_path, strategy)
    assert run(study, "-o", tmp_path / "whole.json", "-q", "--n-trials", 90).exit_code == 0
    assert run(study, "-o", tmp_path / "parts.json", "-q", "--n-trials", 64).exit_code == 0
    assert run(study, "-o", tmp_path / "parts.json", "-q", "--n-trials", 90, "--resume").exit_code == 0
    whole, parts = trials_of(tmp_path / "whole.json"), trials_of(tmp_path / "parts.json")
    assert [t["params"] for t in parts] == [t["params"] for t in whole]


def test_a_bayesian_study_resumed_past_its_initial_design_runs_every_planned_trial(tmp_path):
    study, out = study_file(tmp_path, "bayesian"), tmp_path / "r.json"
    text = study.read_text().replace("n_initial: 1000", "n_initial: 4")
    study.write_text(text)
    assert run(study, "-o", out, "-q", "--n-trials", 8).exit_code == 0
    resumed = run(study, "-o", out, "-q", "--n-trials", 14, "--resume")
    assert resumed.exit_code == 0, resumed.output
    trials = trials_of(out)
    assert [t["number"] for t in trials] == list(range(14))
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 14


def test_a_finite_space_still_ends_when_every_point_was_tried(tmp_path):
    study, out = study_file(tmp_path, "random", "discrete"), tmp_path / "r.json"
    assert run(study, "-o", out, "-q", "--n-trials", 250).exit_code == 0
    resumed = run(study, "-o", out, "-q", "--n-trials", 400, "--resume")
    assert resumed.exit_code == 0, resumed.output
    data = json.loads(out.read_text())
    assert len(data["trials"]) == 300 and data["status"] == "completed"
