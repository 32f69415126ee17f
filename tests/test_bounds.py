"""Spaces that validate accepts never make run hang or allocate without bound (issue 14.11)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize import IntDimension, Objective, SearchSpace, Study, StudyRunner, make_sampler
from somatize.cli import app
from somatize.constraints import parse_constraint
from somatize.errors import StudyFileError
from somatize.studyfile import load_study

cli = CliRunner()

STUDY = """\
name: bounds
search_space:
  x: {{type: int, low: 0, high: 999}}
  y: {{type: int, low: 0, high: {y_high}}}
{extra}strategy: {strategy}
objective: {{metric: value}}
executor: {{function: "objective:value"}}
"""
OBJECTIVE = "def value(params):\n    return float(params['x'])\n"


def write_study(tmp_path: Path, strategy: str, extra: str = "", y_high: int = 999, **fields: str) -> Path:
    (tmp_path / "objective.py").write_text(OBJECTIVE, encoding="utf-8")
    text = STUDY.format(strategy=strategy, extra=extra, y_high=y_high)
    for key, value in fields.items():
        text += f"{key}: {value}\n"
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    return [p.removeprefix(f"{path}:") for p in info.value.problems]


# validate: bounds on what run would build ----------------------------------------


def test_points_per_dim_has_a_maximum(tmp_path):
    path = write_study(tmp_path, "{type: grid, points_per_dim: 100000000000}")
    assert problems(path) == ["5:40: points_per_dim must be at most 1,000,000, got 100,000,000,000"]


def test_a_grid_of_more_than_a_million_points_is_refused(tmp_path):
    path = write_study(tmp_path, "{type: grid, points_per_dim: 1000}", extra="  z: [a, b]\n")
    expected = (
        "6:40: the grid has more than 1,000,000 points (up to 1000 per dimension over 3 dimensions): "
        "lower points_per_dim, or search with type random"
    )
    assert problems(path) == [expected]
    path = write_study(tmp_path, "{type: grid, points_per_dim: 1000}")  # exactly 1000 x 1000
    assert load_study(path).strategy["points_per_dim"] == 1000


def test_parallel_and_n_initial_have_maxima(tmp_path):
    path = write_study(tmp_path, "{type: bayesian, n_trials: 5, n_initial: 1000000000}", parallel="1000000")
    assert problems(path) == [
        "5:52: n_initial must be at most 10,000, got 1,000,000,000",
        "8:11: parallel must be at most 1024, got 1000000",
    ]


def test_a_large_finite_space_no_draw_satisfies_is_refused(tmp_path):
    # A million combinations: too many to count, so validate draws from it as from a continuous space.
    path = write_study(tmp_path, "{type: random, n_trials: 5}", extra="constraints: ['x + y < 0']\n")
    assert problems(path) == ["5:14: none of 4000 random parameter sets satisfies the constraints"]


# run: giving up instead of hanging ------------------------------------------------


def test_a_grid_with_no_feasible_point_ends_with_one_line_and_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Random draws of x in [0, 999] satisfy it, so validate accepts it; the grid's points 0 and 999 do not.
    path = write_study(tmp_path, "{type: grid, points_per_dim: 2}", extra="constraints: ['x > 100 and x < 900']\n")
    result = cli.invoke(app, ["run", str(path), "-o", "r.json", "-q"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "somatize: no point of the grid satisfies the constraints; try another points_per_dim or random search"
    ]
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["status"], data["stop_reason"], data["trials"]) == ("completed", "infeasible", [])


def huge_infeasible_space() -> SearchSpace:
    """A billion combinations, none satisfying the constraint (built directly: validate refuses it)."""
    space = SearchSpace(tuple(IntDimension(name, 0, 999) for name in "xyz"))
    return replace(space, constraints=(parse_constraint("x + y + z < 0", ["x", "y", "z"]),))


@pytest.mark.parametrize("strategy", ["random", "bayesian"])
def test_random_and_bayesian_give_up_on_consecutive_infeasible_draws(function_of, strategy):
    space = huge_infeasible_space()
    study = Study("t", space, [Objective("loss")], {"type": strategy, "n_trials": 5})
    sampler = make_sampler(study.strategy, space, study.primary, 0)
    StudyRunner(study, sampler, function_of("loss", lambda p: 0.0)).run()
    assert (study.status, study.stop_reason, study.trials) == ("completed", "infeasible", [])
    assert sampler.give_up == (
        "gave up after 5000 parameter sets in a row violated the constraints or had already run; "
        "loosen the constraints or give fewer n_trials"
    )


def test_bayesian_never_lists_a_huge_lattice(function_of):
    space = SearchSpace((IntDimension("x", 0, 2**53, step=2), IntDimension("y", 1, 2**53, scale="log")))
    study = Study("t", space, [Objective("loss")], {"type": "bayesian", "n_trials": 3, "n_initial": 2})
    sampler = make_sampler(study.strategy, space, study.primary, 0)
    StudyRunner(study, sampler, function_of("loss", lambda p: p["x"] / 2**53)).run()
    assert len(study.completed()) == 3
    assert all(space.contains(t.params) for t in study.trials)


def test_random_gives_up_after_some_trials_with_exit_0_and_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 100 feasible points of 250,000: validate's draws find some, and so do the first few trials'.
    extra = "constraints: ['x < 1 and y < 100']\nseed: 3\n"
    path = write_study(tmp_path, "{type: random, n_trials: 1000}", extra=extra, y_high=249)
    result = cli.invoke(app, ["run", str(path), "-o", "r.json", "-q"])
    assert result.exit_code == 0, result.output
    expected = (
        "somatize: gave up after 5000 parameter sets in a row violated the constraints or had already run; "
        "loosen the constraints or give fewer n_trials"
    )
    assert result.output.splitlines() == [expected]
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["status"], data["stop_reason"]) == ("completed", "infeasible")
    assert data["trials"] and all(t["params"]["x"] == 0 and t["params"]["y"] < 100 for t in data["trials"])
