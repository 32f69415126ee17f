"""`somatize schema` (the JSON Schema of study files) and `somatize init` (starter files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from test_studyfile import BASE, FULL  # the loader's own valid examples
from typer.testing import CliRunner

from somatize.cli import app
from somatize.errors import StudyFileError
from somatize.studyfile import load_study
from somatize.studyfile.dimensions import DIMENSION_KEYS
from somatize.studyfile.executor import EXECUTOR_KEYS
from somatize.studyfile.loader import REQUIRED_KEYS, TOP_KEYS
from somatize.studyfile.schema import DRAFT, study_schema
from somatize.studyfile.sections import OBJECTIVE_KEYS, PRUNING_KEYS, STRATEGY_KEYS, TARGET_KEYS

STUDIES = Path(__file__).resolve().parent.parent / "studies"
cli = CliRunner()


@pytest.fixture(scope="module")
def schema() -> dict:
    return study_schema()


@pytest.fixture(scope="module")
def validator(schema) -> Draft202012Validator:
    return Draft202012Validator(schema)


def schema_errors(validator: Draft202012Validator, text: str) -> list[str]:
    return [error.message for error in validator.iter_errors(yaml.safe_load(text))]


def loader_accepts(tmp_path: Path, text: str) -> bool:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_study(path)
    except StudyFileError:
        return False
    return True


# the schema itself ---------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema(schema):
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("https://") and schema["title"]
    for key in ("name", "search_space", "strategy", "executor", "timeout", "pruning"):
        described = schema["properties"][key]
        if "$ref" in described:
            described = schema["$defs"][described["$ref"].rsplit("/", 1)[1]]
        assert described.get("description"), key


def test_schema_keys_are_the_validators_keys(schema):
    """Generated from the validator's tables: the key lists cannot drift apart."""
    defs = schema["$defs"]
    assert list(schema["properties"]) == list(TOP_KEYS)
    assert schema["required"] == list(REQUIRED_KEYS)
    assert schema["additionalProperties"] is False
    assert list(defs["strategy"]["properties"]) == list(STRATEGY_KEYS)
    assert list(defs["pruning"]["properties"]) == list(PRUNING_KEYS)
    assert list(defs["objective"]["properties"]) == list(OBJECTIVE_KEYS)
    assert list(defs["target"]["properties"]) == list(TARGET_KEYS)
    assert list(defs["executor"]["properties"]) == list(EXECUTOR_KEYS)
    assert list(defs["dimension"]["properties"]) == list(DIMENSION_KEYS)
    for name in ("strategy", "pruning", "objective", "target", "executor", "dimension"):
        assert defs[name]["additionalProperties"] is False, name


def test_cli_schema_prints_and_writes_it(tmp_path, schema):
    result = cli.invoke(app, ["schema"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == schema
    assert result.stdout.startswith('{\n  "$schema"')  # indented by 2

    out = tmp_path / "somatize.schema.json"
    result = cli.invoke(app, ["schema", "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8")) == schema
    assert str(out) in result.stderr


def test_cli_schema_cannot_write_is_one_line(tmp_path):
    result = cli.invoke(app, ["schema", "-o", str(tmp_path / "missing" / "schema.json")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "cannot write" in result.stderr


# valid studies pass ----------------------------------------------------------------


@pytest.mark.parametrize("study", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_studies_match_the_schema(validator, study):
    load_study(study)  # valid for the validator ...
    assert schema_errors(validator, study.read_text(encoding="utf-8")) == []  # ... and for the schema


VALID = {
    "full": FULL,
    "base": BASE,
    "shorthands": """\
name: short.1
search_space:
  lr: {type: float, low: 1e-4, high: "1e-1", scale: log, default: 1e-3}
  x: {type: float, low: 0, high: 2, step: 0.5}
  opt: [adam, sgd, 3, 1.5, true]
  tag: hello
strategy: {type: grid, n_trials: null, points_per_dim: 3}
objective: {metric: loss}
executor: {function: mypkg.train:objective, timeout: 1h30m}
""",
    "conditional": """\
name: cond
search_space:
  optimizer: [adam, sgd]
  momentum: {type: float, low: 0.5, high: 0.99, when: {optimizer: sgd}}
  nesterov: {type: categorical, choices: [true, false], when: {optimizer: [sgd]}}
  batch_size: {type: int, low: 8, high: 512, scale: log, default: 32}
  layers: {type: int, low: 1, high: 8, step: 1}
constraints:
  - batch_size * layers <= 1024
strategy: {type: bayesian, n_trials: 5, n_initial: 2, acquisition: LCB, estimator: RF, initial_points: lhs,
           noise: 0.05}
objectives:
  - {metric: acc, direction: maximize, reduce: last}
target: {value: "0.9"}
executor:
  command: [python, train.py, "{args}"]
  env: {A: 1, B: "two", C: true}
pruning: {type: successive_halving, min_resource: 2, reduction_factor: 3, min_early_stopping_rate: 0}
timeout: "90"
seed: null
max_failures: 3
output: null
cluster: null
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid_studies_match_the_schema(tmp_path, validator, text):
    assert loader_accepts(tmp_path, text)
    assert schema_errors(validator, text) == []


# structurally invalid studies fail both ---------------------------------------------

STRATEGY = "strategy: {type: random, n_trials: 10}"
# fmt: off
INVALID = {
    "unknown top-level key": BASE + "serach_space: {}\n",
    "unknown strategy option": BASE.replace(STRATEGY, "strategy: {type: random, n_trials: 10, n_initail: 3}"),
    "another strategy's option": BASE.replace(STRATEGY, "strategy: {type: random, n_trials: 10, n_initial: 3}"),
    "bad strategy type": BASE.replace(STRATEGY, "strategy: {type: rnadom, n_trials: 10}"),
    "n_trials not a number": BASE.replace("n_trials: 10", "n_trials: ten"),
    "n_trials zero": BASE.replace("n_trials: 10", "n_trials: 0"),
    "n_trials missing": BASE.replace(STRATEGY, "strategy: {type: random}"),
    "bad acquisition": BASE.replace(STRATEGY, "strategy: {type: bayesian, n_trials: 9, acquisition: UCB}"),
    "bad noise": BASE.replace(STRATEGY, "strategy: {type: bayesian, n_trials: 9, noise: loud}"),
    "negative noise": BASE.replace(STRATEGY, "strategy: {type: bayesian, n_trials: 9, noise: -0.5}"),
    "noise on random": BASE.replace(STRATEGY, "strategy: {type: random, n_trials: 9, noise: auto}"),
    "bad direction": BASE.replace("direction: maximize", "direction: max"),
    "bad reduce": BASE.replace("direction: maximize", "direction: maximize, reduce: mean"),
    "reserved metric": BASE.replace("metric: f1", "metric: step"),
    "objective and objectives": BASE + "objective: {metric: f1}\n",
    "no objective": BASE.replace("objectives:\n  - {metric: f1, direction: maximize}\n", ""),
    "dimension missing low": BASE.replace("{type: int, low: 1, high: 4}", "{type: int, high: 4}"),
    "dimension missing type": BASE.replace("{type: int, low: 1, high: 4}", "{low: 1, high: 4}"),
    "unknown dimension key": BASE.replace("{type: int, low: 1, high: 4}", "{type: int, low: 1, high: 4, hgih: 5}"),
    "key of another kind": BASE.replace("{type: int, low: 1, high: 4}", "{type: int, low: 1, high: 4, choices: [1]}"),
    "int bound not an int": BASE.replace("low: 1, high: 4", "low: 1.5, high: 4"),
    "bad scale": BASE.replace("scale: log}", "scale: lg}"),
    "empty choices": BASE.replace("[relu, tanh]", "{type: categorical, choices: []}"),
    "reserved parameter": BASE.replace("epochs: 20", "args: 20"),
    "bad parameter name": BASE.replace("epochs: 20", "'2x': 20"),
    "no executor": BASE.split("executor:")[0],
    "command and function": BASE.split("executor:")[0] + "executor: {command: a, function: b.c}\n",
    "bad function": BASE.split("executor:")[0] + "executor: {function: 'not a path'}\n",
    "executor as a string": BASE.split("executor:")[0] + "executor: python train.py\n",
    "unknown executor key": BASE.split("executor:")[0] + "executor: {function: a.b, comand: x}\n",
    "bad name": BASE.replace("name: demo", "name: my study"),
    "bad timeout": BASE + "timeout: soon\n",
    "zero timeout": BASE + "timeout: 0\n",
    "parallel zero": BASE + "parallel: 0\n",
    "retries negative": BASE + "retries: -1\n",
    "seed too large": BASE.replace("seed: 1", "seed: 4294967296"),
    "pruning without type": BASE + "pruning: {warmup_steps: 1}\n",
    "another pruner's option": BASE + "pruning: {type: median, min_resource: 1}\n",
    "pruning option too small": BASE + "pruning: {type: successive_halving, reduction_factor: 1}\n",
    "target without value": BASE + "target: {metric: f1}\n",
    "bad cluster": BASE + "cluster: 'tcp://a b:1'\n",
    "empty constraints": BASE + "constraints: []\n",
}
# fmt: on


@pytest.mark.parametrize("text", INVALID.values(), ids=INVALID.keys())
def test_invalid_studies_fail_the_schema_too(tmp_path, validator, text):
    assert not loader_accepts(tmp_path, text)
    assert schema_errors(validator, text) != []


# somatize init -------------------------------------------------------------------


def init(tmp_path: Path, *args: str):
    return cli.invoke(app, ["init", "-d", str(tmp_path), *args])


def somatize(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "somatize", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("executor", "name", "code"),
    [("function", "study", "study_objective.py"), ("command", "study", "train.py")],
)
def test_init_writes_a_study_that_validates_and_runs(tmp_path, validator, executor, name, code):
    result = init(tmp_path, "--executor", executor)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # people's output goes to stderr
    study = tmp_path / f"{name}.yaml"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([study.name, code])
    assert f"wrote {study}" in result.stderr and f"somatize run {study}" in result.stderr
    text = study.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=./somatize.schema.json\n")
    assert "somatize schema -o somatize.schema.json" in text
    for explained in ("scale: log", "type: random", "bayesian", "direction: minimize", "# pruning:", "parallel:"):
        assert explained in text
    assert schema_errors(validator, text) == []

    checked = somatize("validate", study.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    ran = somatize("run", study.name, "-q", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    results = json.loads((tmp_path / f"{name}.results.json").read_text(encoding="utf-8"))
    states = [t["state"] for t in results["trials"]]
    assert states and set(states) == {"completed"}
    assert results["best_trial"]["value"] < 0.2
    # the objective reported intermediate values, with steps, as the comments promise
    assert any(m["step"] is not None for m in results["trials"][0]["metrics"])


@pytest.mark.parametrize("executor", ["function", "command"])
def test_init_starter_with_pruning_uncommented_runs(tmp_path, executor):
    assert init(tmp_path, "--executor", executor).exit_code == 0
    study = tmp_path / "study.yaml"
    text = study.read_text(encoding="utf-8")
    assert "\n# pruning: {type: median" in text
    study.write_text(text.replace("\n# pruning: ", "\npruning: "), encoding="utf-8")
    config = load_study(study)
    assert config.pruning and config.pruning["type"] == "median"


def test_init_name_directory_and_module_name(tmp_path, validator):
    target = tmp_path / "sub" / "dir"
    result = init(target, "my-study.yaml")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["my-study.yaml", "my_study_objective.py"]
    config = load_study(target / "my-study.yaml")
    assert config.name == "my-study" and config.executor.function == "my_study_objective:objective"


def test_init_refuses_to_overwrite(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("mine\n", encoding="utf-8")
    result = init(tmp_path)
    assert result.exit_code == 2
    assert result.stderr == f"somatize: {study} already exists; choose another name or remove it\n"
    assert study.read_text(encoding="utf-8") == "mine\n"
    assert not (tmp_path / "study_objective.py").exists()  # nothing is written when anything is refused


def test_init_refuses_to_overwrite_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.invoke(app, ["init", "exp"]).exit_code == 0
    result = cli.invoke(app, ["init", "exp"])
    assert result.exit_code == 2
    assert result.stderr == "somatize: exp.yaml already exists; choose another name or remove it\n"


def test_init_refuses_to_overwrite_the_objective(tmp_path):
    (tmp_path / "train.py").write_text("# my own script\n", encoding="utf-8")
    result = init(tmp_path, "--executor", "command", "other")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "train.py already exists" in result.stderr
    assert not (tmp_path / "other.yaml").exists()


def test_init_force_overwrites(tmp_path):
    (tmp_path / "study.yaml").write_text("mine\n", encoding="utf-8")
    (tmp_path / "study_objective.py").write_text("mine\n", encoding="utf-8")
    result = init(tmp_path, "--force")
    assert result.exit_code == 0, result.stderr
    assert load_study(tmp_path / "study.yaml").name == "study"
    assert "def objective(params, trial)" in (tmp_path / "study_objective.py").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--executor", "shell"], "--executor must be one of function, command, got 'shell'"),
        (["a b"], "NAME must be letters, digits"),
        (["../escape"], "NAME must be letters, digits"),
    ],
)
def test_init_bad_arguments_are_one_line(tmp_path, args, fragment):
    result = init(tmp_path, *args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and fragment in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_import_stays_light():
    """`import somatize.cli` (every command, --version) loads neither the schema, the starter nor jsonschema."""
    heavy = ("somatize.studyfile", "somatize.studyfile.schema", "somatize.starter", "jsonschema")
    code = f"import sys, somatize.cli; print([m for m in {heavy!r} if m in sys.modules])"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
