"""The study-file loader through its public API: load_study, describe (SPEC §1, §5)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from somatize.errors import StudyFileError
from somatize.space import CategoricalDimension, FloatDimension, IntDimension
from somatize.studyfile import StudyConfig, describe, load_study
from somatize.study import Direction

FULL = """\
name: mlp-tuning
seed: 42
search_space:
  lr:         {type: float, low: 1.0e-4, high: 0.1, scale: log}
  dropout:    {type: float, low: 0.0, high: 0.5, step: 0.1}
  layers:     {type: int, low: 1, high: 4}
  units:      {type: int, low: 16, high: 1024, scale: log}
  activation: {type: categorical, choices: [relu, tanh, gelu], default: relu}
  optimizer:  [adam, sgd]
  epochs: 20
strategy:
  type: bayesian
  n_trials: 50
  n_initial: 10
  acquisition: EI
  estimator: GP
  initial_points: sobol
objectives:
  - {metric: f1, direction: maximize}
  - {metric: latency_ms, direction: minimize, reduce: last}
target: {metric: f1, value: 0.99}
executor:
  command: python train.py --lr {lr} --layers {layers} --act {activation} --seed {trial_seed}
  timeout: 600
  workdir: work
  env: {OMP_NUM_THREADS: "1", DEBUG: true, RATIO: 0.5}
parallel: 2
retries: 1
max_failures: 10
max_consecutive_failures: null
timeout: 2h
output: results/mlp.json
pruning: {type: median, warmup_steps: 5, min_trials: 5}
cluster: tcp://scheduler:8786
"""

# Line numbers below refer to this file.
BASE = """\
name: demo
seed: 1
search_space:
  lr: {type: float, low: 1.0e-4, high: 0.1, scale: log}
  layers: {type: int, low: 1, high: 4}
  act: [relu, tanh]
  epochs: 20
strategy: {type: random, n_trials: 10}
objectives:
  - {metric: f1, direction: maximize}
executor:
  command: python train.py --lr {lr} --layers {layers} --act {act}
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(StudyFileError) as info:
        load_study(path, overrides)
    prefix = f"{path}:"
    return [p.removeprefix(prefix) for p in info.value.problems]


def only_problem(tmp_path: Path, text: str) -> str:
    found = problems_of(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


# valid files -------------------------------------------------------------------


def test_full_example_fills_every_field(tmp_path):
    path = write(tmp_path, FULL)
    config = load_study(path)
    assert isinstance(config, StudyConfig)
    assert config.path == str(path) and config.base_dir == tmp_path.resolve()
    assert config.name == "mlp-tuning" and config.seed == 42
    dims = {d.name: d for d in config.space}
    assert list(dims) == ["lr", "dropout", "layers", "units", "activation", "optimizer"]
    assert dims["lr"] == FloatDimension("lr", 1e-4, 0.1, scale="log")
    assert dims["dropout"] == FloatDimension("dropout", 0.0, 0.5, step=0.1)
    assert dims["units"] == IntDimension("units", 16, 1024, scale="log")
    assert dims["activation"] == CategoricalDimension("activation", ("relu", "tanh", "gelu"), "relu")
    assert dims["optimizer"] == CategoricalDimension("optimizer", ("adam", "sgd"))
    assert config.space.constants == {"epochs": 20}
    assert config.strategy == {
        "type": "bayesian", "n_trials": 50, "n_initial": 10, "acquisition": "EI", "estimator": "GP",
        "initial_points": "sobol",
    }  # fmt: skip
    assert [(o.metric, o.direction, o.reduce) for o in config.objectives] == [
        ("f1", Direction.MAXIMIZE, "best"),
        ("latency_ms", Direction.MINIMIZE, "last"),
    ]
    assert config.primary.metric == "f1" and config.target == ("f1", 0.99)
    executor = config.executor
    assert executor.command.startswith("python train.py --lr {lr}") and executor.function is None
    assert executor.timeout == 600.0 and executor.workdir == tmp_path.resolve() / "work"
    assert executor.env == {"OMP_NUM_THREADS": "1", "DEBUG": "true", "RATIO": "0.5"}
    assert (config.parallel, config.retries, config.max_failures, config.max_consecutive_failures) == (2, 1, 10, None)
    assert config.timeout == 7200.0
    assert config.output == tmp_path.resolve() / "results" / "mlp.json"
    assert config.pruning == {"type": "median", "warmup_steps": 5, "min_trials": 5}
    assert config.cluster == "tcp://scheduler:8786"


def test_spec_is_plain_json_and_canonical(tmp_path):
    config = load_study(write(tmp_path, FULL))
    spec = json.loads(json.dumps(config.spec, allow_nan=False))
    assert spec == config.spec
    assert spec["search_space"] == config.space.to_spec()
    assert spec["search_space"]["optimizer"] == {"type": "categorical", "choices": ["adam", "sgd"]}
    assert spec["executor"]["workdir"] == "work" and spec["output"] == "results/mlp.json"
    assert spec["objectives"][1] == {"metric": "latency_ms", "direction": "minimize", "reduce": "last"}
    assert spec["target"] == {"metric": "f1", "value": 0.99} and spec["timeout"] == 7200.0
    expected = {
        "name", "seed", "search_space", "strategy", "objectives", "target", "executor", "parallel", "retries",
        "max_failures", "max_consecutive_failures", "timeout", "output", "pruning", "cluster",
        "cluster_worker_timeout",
        "mlflow",
    }  # fmt: skip
    assert set(spec) == expected


def test_defaults_and_shorthands(tmp_path):
    text = """\
name: short.1
search_space:
  lr: {type: float, low: 1e-4, high: "1e-1", scale: log, default: 1e-3}
  x: {type: float, low: 0, high: 2}
  opt: [adam, sgd, 3, 1.5, true]
  tag: hello
strategy: {type: grid}
objective: {metric: loss, direction: minimize}
executor: {function: mypkg.train:objective}
"""
    config = load_study(write(tmp_path, text))
    lr, x, opt = config.space.dimensions
    assert (lr.low, lr.high, lr.default) == (1e-4, 0.1, 1e-3)
    assert isinstance(x.low, float) and isinstance(x.high, float)
    assert opt.choices == ("adam", "sgd", 3, 1.5, True)
    assert config.space.constants == {"tag": "hello"}
    assert config.strategy == {"type": "grid", "n_trials": None}
    assert [o.metric for o in config.objectives] == ["loss"]
    assert load_study("-", text=text.replace(", direction: minimize", "")).primary.direction is Direction.MINIMIZE
    assert config.executor.function == "mypkg.train:objective"
    assert config.executor.workdir == tmp_path.resolve()  # default: the study file's directory
    assert (config.seed, config.parallel, config.retries, config.max_failures) == (None, 1, 0, None)
    assert (config.max_consecutive_failures, config.timeout, config.output, config.pruning) == (5, None, None, None)


@pytest.mark.parametrize(
    "executor",
    [
        "{function: mypkg.train.objective}",
        "{function: 'train:Trainer.run'}",
        "{command: [python, train.py, --lr, '{lr}', '{args}']}",
        "{command: 'echo {{literal}} {lr} {trial_id} {trial_number} {study} {args}'}",
    ],
)
def test_executor_forms(tmp_path, executor):
    text = BASE.replace("executor:\n  command: python train.py --lr {lr} --layers {layers} --act {act}\n", "")
    config = load_study(write(tmp_path, text + f"executor: {executor}\n"))
    assert config.executor.command or config.executor.function


def test_stdin_text_uses_cwd_and_stdin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_study("-", text=BASE)
    assert config.path == "<stdin>" and config.base_dir == tmp_path
    with pytest.raises(StudyFileError) as info:
        load_study("-", text=BASE.replace("name: demo", "name: 'a b'"))
    assert info.value.problems == ["<stdin>:1:7: name must be letters, digits, '_', '.' and '-' only, got 'a b'"]


def test_anchors_aliases_and_merge_keys(tmp_path):
    text = BASE.replace(
        "  act: [relu, tanh]\n",
        "  a: &unit {type: float, low: 0.0, high: 1.0}\n  b: *unit\n  c: {<<: *unit, high: 2.0}\n  act: [relu, tanh]\n",
    )
    dims = {d.name: d for d in load_study(write(tmp_path, text)).space}
    assert dims["b"] == FloatDimension("b", 0.0, 1.0) and dims["c"] == FloatDimension("c", 0.0, 2.0)


# problems, each with its line -------------------------------------------------

# fmt: off
CASES = [
    # (replace this, with this, expected LINE:COL, fragment of the message)
    ("name: demo", "name: my study", "1:7", "name must be letters, digits"),
    ("seed: 1", "seed: one", "2:7", "seed must be a non-negative integer or null, got 'one'"),
    ("seed: 1", "seed: true", "2:7", "got true"),
    ("high: 0.1", "high: 1.0e-5", "4:26", "low (0.0001) must be less than high (1e-05)"),
    ("scale: log}", "scale: lg}", "4:52", "scale must be one of linear, log, got 'lg' (did you mean 'log'?)"),
    ("low: 1.0e-4", "low: 0.0", "4:26", "log-scale dimension needs low > 0"),
    ("low: 1, high: 4", "low: 1.5, high: 4", "5:28", "layers: low must be an integer, got 1.5"),
    ("low: 1, high: 4", "low: 5, high: 4", "5:28", "low (5) must not exceed high (4)"),
    ("low: 1, high: 4", "low: 1, high: 4, step: 0", "5:46", "step must be a positive integer"),
    ("type: int", "type: integer", "5:18", "type must be one of float, int, categorical, got 'integer' (did you mean 'int'?)"),
    ("type: int, low", "low", "5:11", "a dimension needs a type"),
    ("type: int, low: 1, high: 4", "type: int, low: 1, high: 4, choices: [1]", "5:40", "choices is not used by an int"),
    ("[relu, tanh]", "[relu, relu]", "6:8", "choices must be unique"),
    ("[relu, tanh]", "[relu, [tanh]]", "6:15", "a choice must be a string, number or boolean, got a list"),
    ("[relu, tanh]", "{type: categorical, choices: []}", "6:37", "choices must be a non-empty list"),
    ("[relu, tanh]", "{type: categorical, choices: [a, b], default: c}", "6:54", "default 'c' is not one of the choices"),
    ("epochs: 20", "epochs:", "7:10", "epochs has no value"),
    ("epochs: 20", "args: 20", "7:3", "reserved for the {args} command placeholder"),
    ("n_trials: 10", "n_trials: ten", "8:36", "n_trials must be a positive integer, got 'ten'"),
    ("n_trials: 10", "n_trials: 0", "8:36", "n_trials must be a positive integer, got 0"),
    ("n_trials: 10", "n_trials: true", "8:36", "got true"),
    ("{type: random, n_trials: 10}", "{type: random}", "8:11", "a random strategy needs n_trials"),
    ("type: random", "type: rnadom", "8:18", "(did you mean 'random'?)"),
    ("n_trials: 10}", "n_trials: 10, n_initial: 3}", "8:40", "n_initial is a bayesian option; it does not apply to a random"),
    ("{type: random, n_trials: 10}", "{type: grid, points_per_dim: 0}", "8:40", "points_per_dim must be a positive integer"),
    ("direction: maximize", "direction: max", "10:29", "direction must be one of minimize, maximize, got 'max'"),
    ("direction: maximize", "direction: maximize, reduce: mean", "10:47", "reduce must be one of best, last"),
    ("{metric: f1, direction: maximize}", "{metric: 'f 1', direction: maximize}", "10:14", "metric must be a metric name"),
    ("{metric: f1, direction: maximize}", "{direction: maximize}", "10:5", "missing required key 'metric'"),
    ("  - {metric: f1, direction: maximize}", "  - f1", "10:5", "objective must be a mapping, got 'f1'"),
    ("--act {act}", "--act {actv}", "12:12", "unknown placeholder {actv} in command (did you mean 'act'?)"),
    ("--act {act}", "--act {", "12:12", "malformed placeholder"),
    ("--act {act}", "--act {0}", "12:12", "malformed placeholder {0}: a placeholder name starts with a letter"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "where", "fragment"), CASES, ids=[c[3][:40] for c in CASES])
def test_each_problem_points_at_its_node(tmp_path, old, new, where, fragment):
    assert old in BASE
    problem = only_problem(tmp_path, BASE.replace(old, new, 1))
    assert problem.startswith(where + ":"), problem
    assert fragment in problem


# fmt: off
APPENDED = [
    ("target: {metric: acc, value: 1}", "13:18", "target metric must be one of the objectives (f1), got 'acc'"),
    ("target: {metric: f1, value: high}", "13:29", "target value must be a number, got 'high'"),
    ("parallel: 0", "13:11", "parallel must be a positive integer, got 0"),
    ("retries: -1", "13:10", "retries must be a non-negative integer, got -1"),
    ("max_failures: 0", "13:15", "max_failures must be a positive integer or null, got 0"),
    ("max_consecutive_failures: 2.5", "13:27", "max_consecutive_failures must be a positive integer or null"),
    ("timeout: soon", "13:10", "timeout must be a positive number of seconds or a duration"),
    ("timeout: 0", "13:10", "timeout must be a positive number"),
    ("output: 3", "13:9", "output must be a non-empty string, got 3"),
    ("cluster: 'tcp://a b:1'", "13:10", "cluster must be a scheduler address"),
    ("pruning: {type: median, min_resource: 1}", "13:25", "min_resource is a successive_halving option"),
    ("pruning: {type: median, warmup_steps: -1}", "13:39", "warmup_steps must be a non-negative integer"),
    ("pruning: {type: successive_halving, reduction_factor: 1}", "13:55", "reduction_factor must be an integer >= 2"),
    ("pruning: {warmup_steps: 1}", "13:10", "missing required key 'type' in pruning"),
    ("objective: {metric: f1, direction: maximize}", "13:1", "either objectives (a list) or objective"),
    ("serach_space: {}", "13:1", "unknown key 'serach_space' in the study file (did you mean 'search_space'?)"),
    ("name: again", "13:1", "duplicate key 'name'"),
]
# fmt: on


@pytest.mark.parametrize(("line", "where", "fragment"), APPENDED, ids=[a[0][:30] for a in APPENDED])
def test_top_level_problems_point_at_their_node(tmp_path, line, where, fragment):
    problem = only_problem(tmp_path, BASE + line + "\n")
    assert problem.startswith(where + ":"), problem
    assert fragment in problem


# fmt: off
EXECUTOR_CASES = [
    ("executor: {command: 'a', function: 'b.c'}", "11:11", "exactly one of command"),
    ("executor: {timeout: 5}", "11:11", "exactly one of command"),
    ("executor: {command: ''}", "11:21", "command must be a non-empty string"),
    ("executor: {command: [python, 3]}", "11:30", "command list items must be non-empty strings, got 3 (quote it)"),
    ("executor: {command: [python, '{nope}']}", "11:30", "unknown placeholder {nope}"),
    ("executor: {command: {a: 1}}", "11:21", "command must be a string or a non-empty list"),
    ("executor: {function: 'not a path'}", "11:22", "function must be a dotted path"),
    ("executor: {function: mod}", "11:22", "function must be a dotted path"),
    ("executor: {function: a.b, timeout: -1}", "11:36", "executor timeout must be a positive number"),
    ("executor: {function: a.b, env: {A: null}}", "11:36", "env value for 'A' must be a string"),
    ("executor: {function: a.b, env: [A]}", "11:32", "env must be a mapping"),
    ("executor: {function: a.b, workdir: 3}", "11:36", "workdir must be a non-empty string"),
    ("executor: {function: a.b, comand: x}", "11:27", "unknown key 'comand' in executor (did you mean 'command'?)"),
    ("executor: python train.py", "11:11", "executor must be a mapping, got 'python train.py'"),
]
# fmt: on


@pytest.mark.parametrize(("line", "where", "fragment"), EXECUTOR_CASES, ids=[e[0][10:40] for e in EXECUTOR_CASES])
def test_executor_problems(tmp_path, line, where, fragment):
    text = BASE.split("executor:")[0] + line + "\n"
    problem = only_problem(tmp_path, text)
    assert problem.startswith(where + ":"), problem
    assert fragment in problem


def test_bad_dimension_is_reported_on_its_line_with_the_file_name(tmp_path):
    path = write(tmp_path, BASE.replace("high: 4", "high: -4"), "bad.yaml")
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}:5:")


MANY_MISTAKES = """\
name: my study
seed: -1
search_space:
  lr: {type: float, low: 1, high: 0}
  layers: {type: int, low: 1.5, high: 4}
  units: {type: int, low: 1, hihg: 4}
  act: {type: categorical, choices: [relu, relu]}
  mom: {type: flaot, low: 0, high: 1}
  lr: [1, 2]
strategy:
  type: random
  n_trials: ten
  points_per_dim: 3
objectives:
  - {metric: f1, direction: maximise}
  - {metric: f1, direction: minimize}
target: {metric: acc, value: 1}
executor:
  command: python train.py --lr {lr} --foo {foo}
  timeout: -3
  env: {A: [1]}
parallel: 0
retries: true
max_failures: 0
timeout: 3 weeks
pruning: {type: median, min_resource: 3}
serch: 1
"""


def test_many_mistakes_reported_at_once_in_file_order(tmp_path):
    found = problems_of(tmp_path, MANY_MISTAKES)
    lines = [int(p.split(":")[0]) for p in found]
    expected_lines = [1, 2, 4, 5, 6, 6, 7, 8, 9, 12, 13, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27]
    assert lines == expected_lines, found
    assert "duplicate key 'lr'" in found[8]
    assert "unknown key 'hihg' in dimension 'units' (did you mean 'high'?)" in found[5]
    assert all(re.fullmatch(r"\d+:\d+: .+", p) for p in found)


def test_missing_required_keys_all_reported(tmp_path):
    found = problems_of(tmp_path, "seed: 3\n")
    assert found == [
        "1:1: missing required key 'name' in the study file",
        "1:1: missing required key 'search_space' in the study file",
        "1:1: missing required key 'strategy' in the study file",
        "1:1: missing required key 'executor' in the study file",
        "1:1: the study needs objectives (a list of {metric, direction}) or objective (one mapping)",
    ]


def test_problems_on_one_line_come_in_column_order(tmp_path):
    assert problems_of(tmp_path, BASE.replace("low: 1, high: 4", "low: 1, hihg: 4")) == [
        "5:11: layers: an int dimension needs 'high'",
        "5:31: unknown key 'hihg' in dimension 'layers' (did you mean 'high'?)",
    ]
    assert problems_of(tmp_path, BASE.replace("n_trials: 10}", "n_trails: 10}")) == [
        "8:11: a random strategy needs n_trials",
        "8:26: unknown key 'n_trails' in strategy (did you mean 'n_trials'?)",
    ]


def test_duplicate_keys_at_every_level(tmp_path):
    text = BASE.replace("  act: [relu, tanh]\n", "  act: [relu, tanh]\n  act: [a]\n").replace(
        "{type: random, n_trials: 10}", "{type: random, n_trials: 10, type: grid}"
    )
    assert problems_of(tmp_path, text) == ["7:3: duplicate key 'act'", "9:40: duplicate key 'type'"]


def test_search_space_needs_a_searched_dimension(tmp_path):
    text = BASE.split("search_space:")[0] + "search_space: {epochs: 3}\n" + BASE.split("epochs: 20\n")[1]
    assert "needs at least one searched dimension" in only_problem(tmp_path, text.replace(" --lr {lr}", "").replace(
        " --layers {layers} --act {act}", ""))  # fmt: skip


# YAML that is not a study file -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\n  b: c\n", "2:4: YAML syntax error: mapping values are not allowed here"),
        ("x: [1, 2\n", "2:1: YAML syntax error:"),
        ("a: 1\n---\nb: 2\n", "2:1: YAML syntax error: expected a single document"),
        ("ok: 1\nbad: \x00\n", "2:6: YAML syntax error: unacceptable character #x0000"),
        ("- a\n- b\n", "1:1: the study file must be a mapping"),
        ("", "1:1: the study file must be a mapping with name, search_space, strategy, ... (it is empty)"),
        ("just text", "1:1: the study file must be a mapping"),
        ("[" * 3000, "1:102: YAML is nested too deeply (over 100 levels)"),
    ],
    ids=["indent", "unclosed", "two-documents", "nul", "list", "empty", "scalar", "deep"],
)
def test_not_a_study_file(tmp_path, text, expected):
    found = problems_of(tmp_path, text)
    assert found[0].startswith(expected), found


def test_python_tags_are_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    text = BASE + f"target: !!python/object/apply:os.system ['touch {marker}']\n"
    problem = only_problem(tmp_path, text)
    assert problem.startswith("13:9: unsupported YAML tag !!python/object/apply:os.system")
    assert not marker.exists()
    assert only_problem(tmp_path, "!!python/object:os.system {}").startswith("1:1: unsupported YAML tag")


def test_alias_bombs_and_self_reference_are_refused(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefg"):
        prev = "abcdefg"[i]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    found = problems_of(tmp_path, BASE + "\n".join(levels) + "\n")
    assert any("too large" in p for p in found)
    found = problems_of(tmp_path, BASE + "loop: &l [*l]\n")
    assert any(p.startswith("13:7: ") and "refers to itself" in p for p in found), found


def test_unreadable_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(StudyFileError) as info:
        load_study(missing)
    assert info.value.problems == [f"{missing}: cannot read: No such file or directory"]
    with pytest.raises(StudyFileError) as info:
        load_study(tmp_path)
    assert info.value.problems[0].startswith(f"{tmp_path}: cannot read: ")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(StudyFileError) as info:
        load_study(latin)
    assert info.value.problems == [f"{latin}:1:10: the file is not UTF-8 text (byte 0xe9)"]
    with pytest.raises(StudyFileError) as info:
        load_study("-")
    assert info.value.problems == ["<stdin>: cannot read: no input was given"]


# --set overrides -----------------------------------------------------------------


def test_overrides_apply_before_validation(tmp_path):
    path = write(tmp_path, BASE)
    overrides = [
        "strategy.n_trials=5",
        "seed=3",
        "search_space.lr.high=0.5",
        "executor.timeout=10",
        "executor.env.MODE=fast",
        "pruning.type=median",
        "objectives.0.direction=minimize",
        "search_space.act=[x, y, z]",
        "max_failures=",
    ]
    config = load_study(path, overrides)
    assert config.strategy["n_trials"] == 5 and config.seed == 3
    assert config.space.dimensions[0].high == 0.5
    assert config.executor.timeout == 10.0 and config.executor.env == {"MODE": "fast"}
    assert config.pruning == {"type": "median"}
    assert config.primary.direction is Direction.MINIMIZE
    assert config.space.dimensions[2].choices == ("x", "y", "z")
    assert config.spec["strategy"]["n_trials"] == 5 and config.spec["seed"] == 3


def test_override_problems_name_the_option(tmp_path):
    found = problems_of(
        tmp_path,
        BASE,
        (
            "strategy.n_trials=-1",
            "nonsense",
            "=3",
            "a..b=1",
            "seed=[",
            "name.first=x",
            "objectives.5.metric=x",
            "pruning.kind=median",
            "search_space.lr.high=1.0e-5",
            "strategy.n_trails=3",
        ),
    )
    assert found == [
        "4:26: lr: low (0.0001) must be less than high (1e-05)",
        "--set nonsense: expected KEY=VALUE, e.g. strategy.n_trials=20",
        "--set =3: the key must be a dotted path such as strategy.n_trials",
        "--set a..b=1: the key must be a dotted path such as strategy.n_trials",
        (
            "--set seed=[: cannot read the value as YAML: YAML syntax error: while parsing a flow node, expected the "
            "node content, but found '<stream end>'"
        ),
        "--set name.first=x: name is not a mapping, so it has no key 'first'",
        "--set objectives.5.metric=x: objectives is a list of 1 items; '5' is not an index in it",
        "--set strategy.n_trails: unknown key 'n_trails' in strategy (did you mean 'n_trials'?)",
        "--set strategy.n_trials: n_trials must be a positive integer, got -1",
        "--set pruning.kind: unknown key 'kind' in pruning",
        "--set pruning.kind: missing required key 'type' in pruning",
    ]


# durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3600", 3600.0), ("90.5", 90.5), ("'90s'", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0),
     ("1d", 86400.0), ("1.5h", 5400.0), ("'2H 5S'", 7205.0), ("null", None)],
)  # fmt: skip
def test_durations(tmp_path, value, seconds):
    assert load_study(write(tmp_path, BASE + f"timeout: {value}\n")).timeout == seconds


@pytest.mark.parametrize("value", ["-5", "0", "2x", "h", "1h-5m", "true", "[1]", ".inf", "5m2"])
def test_bad_durations(tmp_path, value):
    assert "timeout must be a positive number of seconds" in only_problem(tmp_path, BASE + f"timeout: {value}\n")


# describe ------------------------------------------------------------------------


def test_describe_lists_dimensions_strategy_and_executor(tmp_path):
    lines = describe(load_study(write(tmp_path, FULL)))
    text = "\n".join(lines)
    assert re.search(r"lr +float +\[0\.0001, 0\.1\] log", text)
    assert re.search(r"dropout +float +\[0\.0, 0\.5\] step 0\.1", text)
    assert re.search(r"activation +categorical +relu\|tanh\|gelu +default relu", text)
    assert re.search(r"epochs += 20 \(constant\)", text)
    assert "bayesian" in text and "50 trials planned" in text
    assert "f1 (maximize), latency_ms (minimize)" in text
    assert "command python train.py --lr {lr}" in text


@pytest.mark.parametrize(
    ("strategy", "planned"),
    [
        ("{type: grid, points_per_dim: 3}", 3 * 3 * 2),  # lr: 3 points, layers 1..4: 1, 3, 4; act: 2 choices
        ("{type: grid, points_per_dim: 3, n_trials: 7}", 7),
        ("{type: grid}", 5 * 4 * 2),  # the default 5 points; layers has only 4 values
        ("{type: random, n_trials: 500}", 500),
    ],
)
def test_describe_planned_trials(tmp_path, strategy, planned):
    text = BASE.replace("{type: random, n_trials: 10}", strategy)
    lines = describe(load_study(write(tmp_path, text)))
    assert f"{planned} trials planned" in "\n".join(lines)


def test_describe_caps_random_by_a_finite_space(tmp_path):
    text = BASE.replace("  lr: {type: float, low: 1.0e-4, high: 0.1, scale: log}\n", "").replace(" --lr {lr}", "")
    assert "8 trials planned" in "\n".join(describe(load_study(write(tmp_path, text))))


# never anything but StudyConfig or StudyFileError -----------------------------------------------

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["float", "int", "categorical", "grid", "random", "bayesian", "log", "1e-4", "2h", "{x}"]),
)  # fmt: skip
yaml_data = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(["type", "low", "high", "name", "metric", "command"])),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
FULL_DATA = yaml.safe_load(FULL)


def _paths(data: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, prefix + (i,))
    return out


FULL_PATHS = _paths(FULL_DATA)[1:]


def _outcome(text: str, overrides: tuple[str, ...] = ()) -> None:
    try:
        result = load_study("-", overrides, text=text)
    except StudyFileError as exc:
        assert exc.problems and all(isinstance(p, str) and "\n" not in p for p in exc.problems)
        return
    assert isinstance(result, StudyConfig)
    json.dumps(result.spec)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text):
    _outcome(text)


@FAST
@given(yaml_data)
def test_arbitrary_yaml_data_never_crashes(data):
    _outcome(yaml.safe_dump(data))


@FAST
@given(st.sampled_from(FULL_PATHS), yaml_data)
def test_any_value_anywhere_in_a_valid_study_never_crashes(path, value):
    data = json.loads(json.dumps(FULL_DATA))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _outcome(yaml.safe_dump(data, sort_keys=False))


@FAST
@given(st.lists(st.text(max_size=30), max_size=3))
def test_arbitrary_overrides_never_crash(options):
    _outcome(FULL, tuple(options))


def test_the_loader_package_is_named_for_what_it_holds():
    # Issue 15.14: "spec" named three things; the loader is `somatize.studyfile` now, and no `spec` package remains
    # to be mistaken for a test folder or the contract.
    import importlib.util

    import somatize.studyfile as studyfile

    assert studyfile.load_study is load_study
    assert importlib.util.find_spec("somatize.spec") is None
