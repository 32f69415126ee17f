"""Conditional parameters (`when:`) and constraints (SPEC §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize import StudyRunner, make_sampler
from somatize.assemble import build_study
from somatize.cli import app
from somatize.constraints import ConstraintError, parse_constraint
from somatize.studyfile.loader import load_study

cli = CliRunner()

CONDITIONAL = """\
name: cond
seed: 4
search_space:
  optimizer: [adam, sgd, rmsprop]
  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [sgd, rmsprop]}}
  nesterov: {type: categorical, choices: [true, false], when: {optimizer: sgd}}
  layers: {type: int, low: 1, high: 3}
strategy: {strategy}
objective: {metric: loss}
executor:
  command: "echo loss=1"
"""


def study_text(template: str, strategy: str) -> str:
    return template.replace("{strategy}", strategy)


def config_of(template: str, tmp_path: Path, strategy: str):
    path = tmp_path / "s.yaml"
    path.write_text(study_text(template, strategy))
    return load_study(str(path))


class Recorder:
    """An executor that records every parameter set it is asked to run."""

    def __init__(self, fn):
        self.fn = fn
        self.seen: list[dict] = []

    def run(self, request, reporter):
        from somatize.executors.base import Completed
        from somatize.study import MetricRecord

        self.seen.append(dict(request.params))
        return Completed([MetricRecord("loss", float(self.fn(request.params)))])

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_config(config, fn=lambda p: 1.0):
    study = build_study(config)
    recorder = Recorder(fn)
    sampler = make_sampler(config.strategy, config.space, config.primary, config.seed)
    StudyRunner(study, sampler, recorder, seed=config.seed).run()
    return study, recorder


def test_grid_enumerates_only_active_combinations_once(tmp_path):
    config = config_of(CONDITIONAL, tmp_path, strategy="{type: grid, points_per_dim: 2}")
    study, recorder = run_config(config)
    # Two grid points per numeric dimension (layers 1 and 3, momentum 0.5 and 0.9):
    # adam: 2 layers; rmsprop: 2 momenta x 2 layers; sgd: 2 momenta x 2 nesterov x 2 layers.
    assert len(study.trials) == 2 + 4 + 8 == len(recorder.seen)
    keys = {tuple(sorted(p.items())) for p in recorder.seen}
    assert len(keys) == 14
    for params in recorder.seen:
        assert ("momentum" in params) == (params["optimizer"] != "adam")
        assert ("nesterov" in params) == (params["optimizer"] == "sgd")
    validated = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert "14 trials planned" in validated.output


@pytest.mark.parametrize("strategy", ["random", "bayesian"])
def test_samplers_never_propose_an_inactive_parameter(tmp_path, strategy):
    options = "{type: %s, n_trials: 25%s}" % (strategy, ", n_initial: 6" if strategy == "bayesian" else "")
    config = config_of(CONDITIONAL, tmp_path, strategy=options)
    study, recorder = run_config(config, fn=lambda p: p.get("momentum", 1.0) + p["layers"])
    assert len(recorder.seen) == 25
    for params in recorder.seen:
        assert ("momentum" in params) == (params["optimizer"] != "adam")
        assert ("nesterov" in params) == (params["optimizer"] == "sgd")
    assert {p["optimizer"] for p in recorder.seen} == {"adam", "sgd", "rmsprop"}
    # Distinct, but for the Bayesian strategy's one second evaluation of its best point (noise: auto).
    assert len({tuple(sorted(p.items())) for p in recorder.seen}) == 25 - (strategy == "bayesian")


def test_inactive_parameters_are_absent_from_the_command_and_the_results(tmp_path):
    text = CONDITIONAL.replace(
        'command: "echo loss=1"', 'command: "echo m={momentum}: {args} >> calls.txt; echo loss=1"'
    )
    (tmp_path / "s.yaml").write_text(study_text(text, "{type: grid, points_per_dim: 2}"))
    result = cli.invoke(app, ["run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "r.json"), "-q"])
    assert result.exit_code == 0, result.output
    calls = (tmp_path / "s.yaml").parent.joinpath("calls.txt").read_text().splitlines()
    adam = [line for line in calls if "--optimizer adam" in line]
    assert len(adam) == 2 and all(line.startswith("m=: ") and "--momentum" not in line for line in adam)
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    assert all("momentum" not in t["params"] for t in trials if t["params"]["optimizer"] == "adam")
    shown = cli.invoke(app, ["show", str(tmp_path / "r.json"), "--format", "csv"])
    rows = [line.split(",") for line in shown.stdout.splitlines()]
    column = rows[0].index("momentum")
    assert all(row[column] == "" for row in rows[1:] if "adam" in row)


HALF = """\
name: half
seed: 2
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  y: {type: float, low: 0.0, high: 1.0}
  k: {type: int, low: 0, high: 9}
constraints:
  - x + y <= 1
  - not (k in [3, 4] and x > 0.5)
strategy: {strategy}
objective: {metric: loss}
executor:
  command: "echo loss=1"
"""


@pytest.mark.parametrize(
    "strategy",
    ["{type: random, n_trials: 40}", "{type: bayesian, n_trials: 20, n_initial: 5}", "{type: grid, points_per_dim: 5}"],
)
def test_no_violating_parameter_set_ever_runs(tmp_path, strategy):
    config = config_of(HALF, tmp_path, strategy=strategy)
    # The objective pulls towards the forbidden corner (x = y = 1).
    study, recorder = run_config(config, fn=lambda p: 2 - p["x"] - p["y"])
    assert recorder.seen and len(recorder.seen) == len(study.trials)
    for params in recorder.seen:
        assert params["x"] + params["y"] <= 1
        assert not (params["k"] in (3, 4) and params["x"] > 0.5)


def test_grid_skips_violating_points_in_its_count(tmp_path):
    config = config_of(HALF, tmp_path, strategy="{type: grid, points_per_dim: 3}")
    study, _ = run_config(config)
    # x, y in {0, .5, 1}: 6 of 9 pairs have x + y <= 1; k has 3 grid points (0, 4 or 5, 9).
    feasible = [
        (x, y, k) for x in (0, 0.5, 1) for y in (0, 0.5, 1) for k in config.space.dimensions[2].grid(3)
        if x + y <= 1 and not (k in (3, 4) and x > 0.5)
    ]
    assert len(study.trials) == len(feasible)


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("__import__('os').system('true') == 0", "a function call is not allowed"),
        ("x.__class__ == 1", "attribute access is not allowed"),
        ("x[0] > 1", "indexing is not allowed"),
        ("(lambda: 1)() > 0", "not allowed"),
        ("x ** 10 ** 10 > 1", "exponent"),
        ("z > 1", "names 'z', not a parameter"),
        ("x >", "cannot parse constraint"),
        ("x > 2", "none of 4000 random parameter sets satisfies the constraints"),
    ],
)
def test_hostile_or_impossible_constraints_are_clean_validation_errors(tmp_path, constraint, message):
    text = HALF.replace("  - x + y <= 1\n", f"  - {json.dumps(constraint)}\n")
    (tmp_path / "s.yaml").write_text(study_text(text, "{type: random, n_trials: 5}"))
    result = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    line = next(line for line in result.stderr.splitlines() if message in line)
    assert line.startswith(f"{tmp_path / 's.yaml'}:8:")  # FILE:LINE of the constraints entry


def test_finite_space_with_no_feasible_point_is_rejected(tmp_path):
    text = HALF.replace("  - x + y <= 1\n", "  - k > 20\n")
    continuous = "  x: {type: float, low: 0.0, high: 1.0}\n  y: {type: float, low: 0.0, high: 1.0}\n"
    finite = study_text(text, "{type: random, n_trials: 5}").replace(continuous, "  x: [0.1, 0.9]\n  y: [0.2]\n")
    (tmp_path / "s.yaml").write_text(finite)
    result = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2
    assert "no parameter set in the search space satisfies the constraints" in result.stderr


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{optimizer: adagrad}", "which optimizer can never be"),
        ("{optimiser: sgd}", "names 'optimiser', which is not another searched dimension"),
        ("{momentum: 0.6}", "names 'momentum', which is not another searched dimension"),
        ("[sgd]", "when must map other parameters"),
    ],
)
def test_bad_when_is_a_clean_validation_error(tmp_path, when, message):
    text = CONDITIONAL.replace("when: {optimizer: [sgd, rmsprop]}", "when: " + when)
    (tmp_path / "s.yaml").write_text(study_text(text, "{type: random, n_trials: 5}"))
    result = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert f"{tmp_path / 's.yaml'}:5:" in result.stderr


def test_a_cycle_of_conditions_is_rejected_with_its_place(tmp_path):
    text = """\
name: cyc
search_space:
  a: {type: categorical, choices: [p, q], when: {b: r}}
  b: {type: categorical, choices: [r, s], when: {a: p}}
  c: {type: int, low: 1, high: 2}
strategy: {type: random, n_trials: 3}
objective: {metric: loss}
executor: {command: "echo loss=1"}
"""
    (tmp_path / "s.yaml").write_text(text)
    result = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{tmp_path / 's.yaml'}:3:")
    assert "the when conditions of a, b depend on each other in a cycle" in result.stderr


def test_chained_conditions(tmp_path):
    text = """\
name: chain
search_space:
  model: [linear, tree]
  depth: {type: int, low: 1, high: 3, when: {model: tree}}
  split: {type: categorical, choices: [gini, entropy], when: {depth: [2, 3]}}
strategy: {type: grid}
objective: {metric: loss}
executor: {command: "echo loss=1"}
"""
    (tmp_path / "s.yaml").write_text(text)
    study, recorder = run_config(load_study(str(tmp_path / "s.yaml")))
    # linear; tree depth 1; tree depth 2-3 with each split.
    assert sorted(map(lambda p: tuple(sorted(p.items())), recorder.seen)) == sorted(
        [(("model", "linear"),), (("depth", 1), ("model", "tree"))]
        + [(("depth", d), ("model", "tree"), ("split", s)) for d in (2, 3) for s in ("gini", "entropy")]
    )


def test_validate_summary_shows_conditions_and_constraints(tmp_path):
    (tmp_path / "s.yaml").write_text(study_text(HALF, "{type: random, n_trials: 5}"))
    (tmp_path / "c.yaml").write_text(study_text(CONDITIONAL, "{type: random, n_trials: 5}"))
    out = cli.invoke(app, ["validate", str(tmp_path / "s.yaml"), str(tmp_path / "c.yaml")]).output
    assert "constraints:\n    x + y <= 1\n    not (k in [3, 4] and x > 0.5)" in out
    assert "when optimizer in sgd|rmsprop" in out and "when optimizer=sgd" in out


def test_results_keep_conditions_and_a_resume_with_other_constraints_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text(study_text(CONDITIONAL, "{type: random, n_trials: 4}"))
    assert cli.invoke(app, ["run", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "r.json"), "-q"]).exit_code == 0
    spec = json.loads((tmp_path / "r.json").read_text())["study"]["spec"]
    assert spec["search_space"]["nesterov"]["when"] == {"optimizer": "sgd"}
    assert spec["search_space"]["momentum"]["when"] == {"optimizer": ["sgd", "rmsprop"]}
    best = cli.invoke(app, ["best", str(tmp_path / "r.json"), "--format", "args"])
    assert best.exit_code == 0 and "--optimizer" in best.stdout


def test_constraint_evaluation():
    names = ["a", "b", "s"]
    assert parse_constraint("a * b <= 10 and s != 'x'", names).holds({"a": 2, "b": 5, "s": "y"})
    assert not parse_constraint("1 < a < 3", names).holds({"a": 3})
    assert parse_constraint("s not in ['p', 'q'] or -a >= -1", names).holds({"s": "p", "a": 1})
    assert parse_constraint("a % 2 == 0 and a // 2 == 3 and a / 4 == 1.5", names).holds({"a": 6})
    assert parse_constraint("b == 1", names).holds({"a": 1})  # b inactive: the constraint does not apply
    with pytest.raises(ConstraintError, match="division by zero"):
        parse_constraint("a / b > 1", names).holds({"a": 1, "b": 0})
    with pytest.raises(ConstraintError, match="cannot compare"):
        parse_constraint("s < 1", names).holds({"s": "x"})
    with pytest.raises(ConstraintError):
        parse_constraint("a if b else s", names)
    with pytest.raises(ConstraintError):
        parse_constraint("x" * 2000, ["x" * 2000])
    with pytest.raises(ConstraintError, match="not allowed"):
        parse_constraint("[i for i in a] == 1", names)
    with pytest.raises(ConstraintError, match="None"):
        parse_constraint("a == None", names)


def test_a_constraint_that_cannot_be_evaluated_makes_the_point_infeasible(tmp_path):
    text = HALF.replace("  - x + y <= 1\n", "  - k / (k - 5) < 100\n")
    config = config_of(text, tmp_path, strategy="{type: grid, points_per_dim: 10}")
    _, recorder = run_config(config)
    assert recorder.seen and all(p["k"] != 5 for p in recorder.seen)


EVERY_PROBLEM = """\
name: many
search_space:
  optimizer: [adam, sgd]
  momentum: {type: float, low: 0.5, high: 0.99, when: {optimzer: sgd}}
  nesterov: {type: categorical, choices: [true, false], when: {optimizer: [rmsprop]}}
  a: {type: float, low: 0, high: 1, when: {b: 1}}
  b: {type: int, low: 0, high: 3, when: {a: 0.5}}
  broken: {type: float, low: 2, high: 1, when: {optimizer: sgd}}
  x: {type: int, low: 1, high: 4}
constraints:
  - x * y <= 3
  - max(x, 2) < 3
  - x +
strategy: {type: random, n_trials: 5}
objective: {metric: loss}
executor: {command: "echo loss=1"}
"""


def test_every_when_and_constraint_problem_is_reported_at_once(tmp_path):
    (tmp_path / "s.yaml").write_text(EVERY_PROBLEM)
    result = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    expected = [
        (4, "momentum: when names 'optimzer', which is not another searched dimension (did you mean 'optimizer'?)"),
        (5, "nesterov: when optimizer is 'rmsprop', which optimizer can never be"),
        (6, "the when conditions of a, b depend on each other in a cycle"),
        (8, "broken: low (2.0) must be less than high (1.0)"),
        (11, "constraint 'x * y <= 3' names 'y', not a parameter"),
        (12, "constraint 'max(x, 2) < 3': a function call is not allowed in a constraint"),
        (13, "cannot parse constraint 'x +'"),
    ]
    assert len(lines) == len(expected), result.stderr
    for line, (number, message) in zip(lines, expected):
        assert line.startswith(f"{tmp_path / 's.yaml'}:{number}:") and message in line, line


def test_a_refused_call_is_reported_once(tmp_path):
    text = HALF.replace("  - x + y <= 1\n", "  - \"__import__('os').system('true') == 0\"\n")
    (tmp_path / "s.yaml").write_text(study_text(text, "{type: random, n_trials: 5}"))
    result = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2
    assert result.stderr.count("a function call is not allowed") == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"{tmp_path / 's.yaml'}:8:5: constraint \"__import__('os').system('true') == 0\": "
        "a function call is not allowed in a constraint"
    ]
