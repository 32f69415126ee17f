"""Executors and metric parsing: output lines, Python functions, shell commands."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from somatize import (
    CategoricalDimension,
    FloatDimension,
    Objective,
    SearchSpace,
    Study,
    StudyRunner,
    TrialPruned,
    TrialState,
    make_sampler,
)
from somatize.executors.base import Completed, Executor, Failed, Pruned, TrialRequest
from somatize.executors.output import MetricStream, explain_output, parse_metric_line
from somatize.executors.python import FunctionExecutor, TrialHandle
from somatize.executors.shell import ShellExecutor

DECLARED = ["f1", "val_loss"]


class FakeReporter:
    """Records reports; asks for pruning once a step >= prune_from has been reported."""

    def __init__(self, prune_from: int | None = None):
        self.records: list[tuple[str, float, int | None]] = []
        self.prune_from = prune_from

    def report(self, name: str, value: float, step: int | None = None) -> None:
        self.records.append((name, value, step))

    def should_prune(self) -> bool:
        steps = [s for _, _, s in self.records if s is not None]
        return self.prune_from is not None and bool(steps) and max(steps) >= self.prune_from


def request(params: dict[str, Any] | None = None, number: int = 0) -> TrialRequest:
    return TrialRequest(f"trial_{number:04d}", number, params or {}, 1234, "demo")


def run_study(executor: Executor, space: SearchSpace, strategy: dict[str, Any], metric: str = "f1") -> Study:
    study = Study("demo", space, [Objective(metric, "maximize")], strategy)
    sampler = make_sampler(strategy, space, study.primary, 0)
    return StudyRunner(study, sampler, executor, seed=0).run()


def process_gone(pid: int) -> bool:
    """Not running. A zombie counts as gone: in containers PID 1 may never reap orphans."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def wait_gone(pid: int, within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while not process_gone(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


# Metric lines --------------------------------------------------------------------

PARSE_TABLE = [
    ('{"f1": 0.9}', [("f1", 0.9, None)]),
    ('  {"f1": 0.5, "loss": 2, "step": 3}  ', [("f1", 0.5, 3), ("loss", 2.0, 3)]),
    ('{"acc": 1, "flag": true, "name": "x", "nested": {"f1": 1}}', [("acc", 1.0, None)]),
    ('{"f1": 1, "step": 2.5}', [("f1", 1.0, None)]),
    ('{"f1": 1, "step": 4.0}', [("f1", 1.0, 4)]),
    ('{"f1": 1e400, "val_loss": -Infinity}', [("f1", math.inf, None), ("val_loss", -math.inf, None)]),
    ("f1=0.91", [("f1", 0.91, None)]),
    ("  f1 :  0.91 \r", [("f1", 0.91, None)]),
    ("val_loss: 1e-3", [("val_loss", 0.001, None)]),
    ("f1 = 1e400", [("f1", math.inf, None)]),
    ("f1=-inf", [("f1", -math.inf, None)]),
    ("epoch=3", []),  # undeclared name=value lines are log noise
    ("loss: 0.2", []),
    ("f1=abc", []),
    ("f1=0.9 (best)", []),
    ("f1=1_0", []),
    ("f1 - 0.8", []),
    ("[1, 2]", []),
    ('{"f1": 0.9', []),
    ("{'f1': 0.9}", []),
    ("", []),
]


@pytest.mark.parametrize("line, expected", PARSE_TABLE)
def test_parse_metric_line(line: str, expected: list[tuple[str, float, int | None]]) -> None:
    assert [tuple(r) for r in parse_metric_line(line, DECLARED)] == expected


@pytest.mark.parametrize("line", ["f1=nan", "f1: NaN", '{"f1": NaN}'])
def test_nan_is_kept_for_the_runner_to_reject(line: str) -> None:
    [(name, value, step)] = parse_metric_line(line, DECLARED)
    assert name == "f1" and math.isnan(value) and step is None


def test_metric_stream_joins_partial_lines_and_flushes_the_last() -> None:
    stream = MetricStream(DECLARED)
    assert stream.feed(b"f1=0.") == []
    assert stream.feed(b'5\nnoise\n{"val_loss": 2, "st') == [("f1", 0.5, None)]
    assert stream.feed('ep": 7}\nf1=0.75') == [("val_loss", 2.0, 7)]
    assert stream.close() == [("f1", 0.75, None)]


def test_metric_stream_drops_over_long_lines_but_keeps_the_next() -> None:
    stream = MetricStream(DECLARED, max_line=16)
    assert stream.feed(b"f1=" + b"1" * 40) == []
    assert stream.feed(b"1" * 40) == []  # still the same line: nothing kept in memory
    assert len(stream._partial) == 0
    assert stream.feed(b"\nf1=2\n") == [("f1", 2.0, None)]


def test_explain_output_lists_metrics_near_misses_and_missing() -> None:
    text = 'f1=0.91\nval_loss - 0.8\n{"f1": 0.5, "step": 3}\nepoch: 2\n'
    lines = explain_output(text, ["f1", "val_loss", "acc"])
    assert lines[0] == "line 1: f1 = 0.91"
    assert lines[1].startswith("line 2: 'val_loss - 0.8'") and "not read" in lines[1]
    assert lines[2] == "line 3: f1 = 0.5 (step 3)"
    assert "val_loss: not found (lines like 'val_loss=0.8', 'val_loss: 0.8' or {\"val_loss\": 0.8} are read)" in lines
    assert any(line.startswith("acc: not found") for line in lines)
    assert not any("epoch" in line for line in lines)


def test_explain_output_flags_python_dicts_and_nan() -> None:
    lines = explain_output("{'f1': 0.3}\nf1=nan\n", ["f1"])
    assert "not a JSON object" in lines[0]
    assert lines[1].startswith("line 2: f1 = nan") and "NaN" in lines[1]


# Python functions ------------------------------------------------------------------

_module_numbers = itertools.count()


@pytest.fixture
def module_in(tmp_path: Path):
    """Writes a module next to a (pretend) study file; returns its unique name."""

    def write(source: str) -> str:
        name = f"somatize_test_objective_{os.getpid()}_{next(_module_numbers)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def function_executor(tmp_path: Path, target: str, metrics: list[str] | None = None) -> FunctionExecutor:
    return FunctionExecutor(target, metrics or ["f1", "latency_ms"], tmp_path)


@pytest.mark.parametrize("form", [":", "."])
def test_function_returning_a_number_in_both_target_forms(tmp_path: Path, module_in, form: str) -> None:
    name = module_in("def objective(params):\n    return params['x'] * 2\n")
    outcome = function_executor(tmp_path, f"{name}{form}objective").run(request({"x": 0.25}), FakeReporter())
    assert isinstance(outcome, Completed)
    assert [(r.name, r.value, r.step) for r in outcome.metrics] == [("f1", 0.5, None)]


def test_function_returning_a_mapping_and_float_like_values(tmp_path: Path, module_in) -> None:
    name = module_in(
        """
        class Scalar:  # stands in for numpy.float64 without importing numpy
            def __float__(self):
                return 0.75

        def objective(params):
            return {"f1": Scalar(), "latency_ms": 3, "note": "text", "flag": True}
        """
    )
    outcome = function_executor(tmp_path, f"{name}:objective").run(request(), FakeReporter())
    assert isinstance(outcome, Completed)
    assert [(r.name, r.value) for r in outcome.metrics] == [("f1", 0.75), ("latency_ms", 3.0)]
    assert all(type(r.value) is float for r in outcome.metrics)


def test_function_with_trial_reports_and_returns_none(tmp_path: Path, module_in) -> None:
    name = module_in(
        """
        def objective(params, trial):
            params["x"] = "mutated"  # a copy: the request is untouched
            trial.report(0.1, step=0)
            trial.report({"f1": 0.2, "latency_ms": 9, "label": "a"}, step=1)
            trial.report({"f1": float(trial.number + trial.seed)})
            return None
        """
    )
    reporter = FakeReporter()
    req = request({"x": 1.0}, number=3)
    outcome = function_executor(tmp_path, f"{name}:objective").run(req, reporter)
    assert outcome == Completed([])
    assert reporter.records == [("f1", 0.1, 0), ("f1", 0.2, 1), ("latency_ms", 9.0, 1), ("f1", 1237.0, None)]
    assert req.params == {"x": 1.0}


def test_trial_handle_exposes_the_trial() -> None:
    handle = TrialHandle(request({"x": 1}, number=5), FakeReporter(prune_from=0), "f1")
    assert (handle.id, handle.number, handle.params, handle.seed) == ("trial_0005", 5, {"x": 1}, 1234)
    assert handle.should_prune() is False
    handle.report(1.0, step=0)
    assert handle.should_prune() is True
    with pytest.raises(TypeError, match="number or a mapping"):
        handle.report("high")


def test_function_prunes_with_the_last_step(tmp_path: Path, module_in) -> None:
    name = module_in(
        """
        import somatize

        def objective(params, trial):
            for step in range(10):
                trial.report(1.0 / (step + 1), step=step)
                if trial.should_prune():
                    raise somatize.TrialPruned()
            return 0.0
        """
    )
    reporter = FakeReporter(prune_from=2)
    with pytest.raises(TrialPruned) as caught:
        function_executor(tmp_path, f"{name}:objective").run(request(), reporter)
    assert caught.value.step == 2
    assert [s for _, _, s in reporter.records] == [0, 1, 2]


def test_function_returning_a_string_is_a_clear_error(tmp_path: Path, module_in) -> None:
    name = module_in("def objective(params):\n    return 'good'\n")
    with pytest.raises(TypeError, match="returned str; expected a number, a mapping"):
        function_executor(tmp_path, f"{name}:objective").run(request(), FakeReporter())


@pytest.mark.parametrize(
    "source, target_suffix, message",
    [
        (
            "def objective(params):\n    return 1\n",
            ":objectiv",
            "has no attribute 'objectiv' (did you mean 'objective'?)",
        ),
        ("x = 1 / 0\n", ":objective", "ZeroDivisionError: division by zero ("),
        ("def objective(params:\n", ":objective", "SyntaxError"),
        ("objective = 3\n", ":objective", "is a int, not a function"),
        ("def objective():\n    return 1\n", ":objective", "must take (params) or (params, trial)"),
    ],
)
def test_function_load_errors_are_readable(
    tmp_path: Path, module_in, source: str, target_suffix: str, message: str
) -> None:
    executor = function_executor(tmp_path, module_in(source) + target_suffix)
    for _ in range(2):  # every trial fails the same way, with the message alone (no traceback)
        outcome = executor.run(request(), FakeReporter())
        assert isinstance(outcome, Failed)
        assert message in outcome.error and "Traceback" not in outcome.error


def test_missing_module_fails_every_trial_through_the_runner(tmp_path: Path) -> None:
    executor = function_executor(tmp_path, "trainx_not_there:objective")
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    study = run_study(executor, space, {"type": "random", "n_trials": 3})
    assert [t.state for t in study.trials] == [TrialState.FAILED] * 3
    assert all(
        "cannot import module 'trainx_not_there': No module named 'trainx_not_there'" in t.error for t in study.trials
    )


def test_raising_function_fails_its_trial_and_the_study_goes_on(tmp_path: Path, module_in) -> None:
    name = module_in(
        """
        def objective(params):
            if params["opt"] == "bad":
                raise ValueError(f"diverged at lr={params['opt']}")
            return 0.5
        """
    )
    space = SearchSpace((CategoricalDimension("opt", ("good", "bad", "fine")),))
    study = run_study(function_executor(tmp_path, f"{name}.objective"), space, {"type": "grid"})
    states = {t.params["opt"]: t for t in study.trials}
    assert states["good"].state is TrialState.COMPLETED and states["fine"].state is TrialState.COMPLETED
    assert states["bad"].state is TrialState.FAILED
    assert "ValueError: diverged at lr=bad" in states["bad"].error


def test_numpy_scalars_become_floats(tmp_path: Path, module_in) -> None:
    pytest.importorskip("numpy")
    name = module_in(
        "import numpy as np\ndef objective(params):\n    return {'f1': np.float32(0.5), 'latency_ms': np.int64(4)}\n"
    )
    outcome = function_executor(tmp_path, f"{name}:objective").run(request(), FakeReporter())
    assert isinstance(outcome, Completed)
    assert [(r.name, r.value, type(r.value)) for r in outcome.metrics] == [
        ("f1", 0.5, float),
        ("latency_ms", 4.0, float),
    ]


# Shell commands --------------------------------------------------------------------


def shell(command: str | list[str], workdir: Path, timeout: float | None = None, **env: str) -> ShellExecutor:
    return ShellExecutor(command, list(DECLARED), workdir, env, timeout)


def test_string_command_reports_metrics_live(tmp_path: Path) -> None:
    reporter = FakeReporter()
    command = 'echo f1={x}; echo noise; echo \'{{"val_loss": 0.5, "step": 1}}\'; printf "f1: 0.75"'
    outcome = shell(command, tmp_path).run(request({"x": 0.5}), reporter)
    assert outcome == Completed([])
    assert reporter.records == [("f1", 0.5, None), ("val_loss", 0.5, 1), ("f1", 0.75, None)]


def test_list_command_runs_without_a_shell(tmp_path: Path) -> None:
    reporter = FakeReporter()
    command = [sys.executable, "-c", "import sys; print('f1=' + sys.argv[1]); print(sys.argv[2])", "{x}", "$HOME"]
    assert shell(command, tmp_path).run(request({"x": 0.25}), reporter) == Completed([])
    assert reporter.records == [("f1", 0.25, None)]


# Placeholders inside quotes in a template are quoted for that context, not doubly.
@pytest.mark.parametrize(
    "form", ["printf '%s' L", "printf '%s' \"L\"", "printf '%s' 'L'", "printf '%s' \\\"L\\\"", "list"]
)
@pytest.mark.parametrize("value", ["$(touch pwned)", "; rm -f keep", "`touch pwned`", "a 'b' \"c\" \\ *"])
def test_categorical_values_reach_the_command_verbatim(tmp_path: Path, form: str, value: str) -> None:
    (tmp_path / "keep").write_text("")
    if form != "list":
        command: str | list[str] = form.replace("L", "{label}") + " > out.txt; echo f1=1"
    else:
        command = [sys.executable, "-c", "import sys; open('out.txt', 'w').write(sys.argv[1])", "{label}"]
    outcome = shell(command, tmp_path).run(request({"label": value}), FakeReporter())
    assert isinstance(outcome, Completed)
    expected = f'"{value}"' if "\\" in form else value  # \" is a literal quote, not quoting
    assert (tmp_path / "out.txt").read_text() == expected
    assert not (tmp_path / "pwned").exists() and (tmp_path / "keep").exists()


@pytest.mark.parametrize("value", [0.1 + 0.2, 1e-300, 123456.78901234567, -2.5e17, 1 / 3])
def test_float_parameters_round_trip_exactly(tmp_path: Path, value: float) -> None:
    reporter = FakeReporter()
    shell("echo f1={x}", tmp_path).run(request({"x": value}), reporter)
    shell(["echo", "val_loss={x}"], tmp_path).run(request({"x": value}), reporter)
    assert reporter.records == [("f1", value, None), ("val_loss", value, None)]


def test_args_placeholder_in_both_forms(tmp_path: Path) -> None:
    params = {"lr": 0.01, "act": "a b", "deep": True}
    shell("printf '%s\\n' {args} > s.txt", tmp_path).run(request(params), FakeReporter())
    assert (tmp_path / "s.txt").read_text().splitlines() == ["--lr", "0.01", "--act", "a b", "--deep", "true"]
    argv = [sys.executable, "-c", "import sys; open('l.txt', 'w').write(repr(sys.argv[1:]))", "{args}"]
    shell(argv, tmp_path).run(request(params), FakeReporter())
    assert (tmp_path / "l.txt").read_text() == repr(["--lr", "0.01", "--act", "a b", "--deep", "true"])


def test_trial_placeholders_and_literal_braces(tmp_path: Path) -> None:
    command = "echo {trial_id} {trial_number} {trial_seed} {study} > t.txt; echo '{{\"f1\": 2}}'"
    reporter = FakeReporter()
    assert shell(command, tmp_path).run(request(number=7), reporter) == Completed([])
    assert (tmp_path / "t.txt").read_text() == "trial_0007 7 1234 demo\n"
    assert reporter.records == [("f1", 2.0, None)]


def test_environment_and_metrics_file(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, os
        with open("env.json", "w") as out:
            json.dump({k: v for k, v in os.environ.items() if k.startswith(("SOMATIZE_", "MY_"))}, out)
        with open(os.environ["SOMATIZE_METRICS_FILE"], "w") as metrics:
            metrics.write('f1=0.5\\n{"val_loss": 0.25, "step": 4}\\nnoise\\n')
        """
    )
    (tmp_path / "job.py").write_text(script)
    executor = ShellExecutor([sys.executable, "job.py"], ["f1"], tmp_path, {"MY_VAR": "v"}, None)
    params = {"lr": 0.001, "act": "relu"}
    outcome = executor.run(request(params, number=2), FakeReporter())
    assert isinstance(outcome, Completed)
    assert [(r.name, r.value, r.step) for r in outcome.metrics] == [("f1", 0.5, None), ("val_loss", 0.25, 4)]
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["SOMATIZE_TRIAL_ID"] == "trial_0002" and env["SOMATIZE_TRIAL_SEED"] == "1234"
    assert json.loads(env["SOMATIZE_PARAMS"]) == params
    assert env["MY_VAR"] == "v"
    assert not Path(env["SOMATIZE_METRICS_FILE"]).exists()  # read, then removed
    metrics_dir = Path(env["SOMATIZE_METRICS_FILE"]).parent
    executor.close()
    assert not metrics_dir.exists()


def test_non_zero_exit_fails_with_the_stderr_tail(tmp_path: Path) -> None:
    command = 'for i in $(seq 1 50); do echo "problem $i" >&2; done; echo f1=1; exit 3'
    reporter = FakeReporter()
    outcome = shell(command, tmp_path).run(request(), reporter)
    assert isinstance(outcome, Failed)
    assert outcome.error.startswith("exit status 3: problem 50\n")
    assert "problem 31" in outcome.error and "problem 30\n" not in outcome.error
    assert reporter.records == [("f1", 1.0, None)]


@pytest.mark.parametrize(
    "command, message",
    [
        ("definitely_not_a_command_xyz --lr 1", "command not found: definitely_not_a_command_xyz"),
        (["definitely_not_a_command_xyz", "--lr"], "command not found: definitely_not_a_command_xyz"),
        ("kill -9 $$", "killed by signal SIGKILL"),
        ("true", None),
    ],
)
def test_start_and_signal_failures_are_readable(tmp_path: Path, command: str | list[str], message: str | None) -> None:
    outcome = shell(command, tmp_path).run(request(), FakeReporter())
    assert outcome == (Completed([]) if message is None else Failed(message))


def test_missing_workdir_is_readable(tmp_path: Path) -> None:
    outcome = shell(["true"], tmp_path / "nope").run(request(), FakeReporter())
    assert outcome == Failed(f"workdir not found: {tmp_path / 'nope'}")


def test_shell_failures_through_the_runner(tmp_path: Path) -> None:
    space = SearchSpace((CategoricalDimension("mode", ("ok", "silent", "crash", "nan")),))
    command = (
        "case {mode} in ok) echo f1=0.5;; silent) echo epoch=1;; crash) echo boom >&2; exit 2;; nan) echo f1=nan;; esac"
    )
    study = run_study(shell(command, tmp_path), space, {"type": "grid"})
    by_mode = {t.params["mode"]: t for t in study.trials}
    assert by_mode["ok"].state is TrialState.COMPLETED and by_mode["ok"].values == {"f1": 0.5}
    assert "no value for primary metric 'f1'" in by_mode["silent"].error
    assert by_mode["crash"].error == "exit status 2: boom"
    assert by_mode["nan"].error == "primary metric 'f1' was NaN"
    assert study.status == "completed"


def _pids(path: Path, count: int) -> list[int]:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        if path.exists() and len(lines := path.read_text().split()) >= count:
            return [int(p) for p in lines]
        time.sleep(0.01)
    raise AssertionError(f"{path} never got {count} pids")


def test_timeout_kills_a_tree_that_ignores_sigterm(tmp_path: Path) -> None:
    (tmp_path / "stubborn.sh").write_text("trap '' TERM\nsleep 30 &\necho $$ $! > pids\nwait\nwait\n")
    executor = shell("sh stubborn.sh", tmp_path, timeout=0.5)
    executor.KILL_GRACE = 0.3
    started = time.monotonic()
    outcome = executor.run(request(), FakeReporter())
    assert outcome == Failed("timeout after 0.5 s")
    assert time.monotonic() - started < 2.5
    assert all(wait_gone(pid) for pid in _pids(tmp_path / "pids", 2))


def test_pruning_stops_the_process_at_the_step(tmp_path: Path) -> None:
    script = 'echo $$ > pid\nfor i in 0 1 2 3 4 5 6 7 8 9; do echo "{\\"f1\\": $i, \\"step\\": $i}"; sleep 0.1; done\n'
    (tmp_path / "steps.sh").write_text(script)
    reporter = FakeReporter(prune_from=2)
    started = time.monotonic()
    outcome = shell(["sh", "steps.sh"], tmp_path).run(request(), reporter)
    assert outcome == Pruned(2, "pruned at step 2")
    assert time.monotonic() - started < 0.9
    assert [s for _, _, s in reporter.records] == [0, 1, 2]
    assert wait_gone(_pids(tmp_path / "pid", 1)[0])


def test_background_child_holding_stdout_does_not_hang_the_trial(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = shell("sleep 30 & echo $! > pid; echo f1=1", tmp_path).run(request(), FakeReporter())
    assert outcome == Completed([])
    assert time.monotonic() - started < 2
    assert wait_gone(_pids(tmp_path / "pid", 1)[0])


def test_interrupt_while_waiting_kills_the_trial(tmp_path: Path) -> None:
    class InterruptingReporter(FakeReporter):
        def report(self, name: str, value: float, step: int | None = None) -> None:
            raise KeyboardInterrupt

    executor = shell("echo $$ > pid; echo f1=1; sleep 30", tmp_path)
    with pytest.raises(KeyboardInterrupt):
        executor.run(request(), InterruptingReporter())
    assert wait_gone(_pids(tmp_path / "pid", 1)[0])


def test_huge_output_is_not_held_in_memory(tmp_path: Path) -> None:
    reporter = FakeReporter()
    tracemalloc.start()
    try:
        outcome = shell("yes | head -c 50000000; echo f1=3", tmp_path).run(request(), reporter)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome == Completed([])
    assert reporter.records == [("f1", 3.0, None)]
    assert peak < 4_000_000
