"""What a trial's output can make somatize hold, and how metrics are read from it (issues 14.12, 14.13, 15.6).

Through the real command line (`somatize run` on shell and Python trials) and the parser API.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.bounds import DECLARED_RECORDS, ERROR_CHARS, OTHER_NAMES, OTHER_RECORDS, MetricLog, clip_text
from somatize.cli import app
from somatize.executors.output import MetricStream, explain_output, parse_metric_line, why_unread
from somatize.study import Direction, MetricRecord, Objective

cli = CliRunner()
# Generous: a hang is what these tests catch, and without the fixes they hang for ever.
SUBPROCESS_TIMEOUT = 60


def study_file(tmp_path: Path, executor: str, objectives: str = "objective: {metric: y, direction: minimize}") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: outputs
            seed: 1
            search_space:
              x: {type: float, low: 0.0, high: 1.0}
            strategy: {type: random, n_trials: 1}
            """
        )
        + objectives
        + "\nexecutor:\n"
        + textwrap.indent(executor, "  ")
    )
    return path


def run(study: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """A real `somatize run`; the process and the one trial's record."""
    out = study.parent / "results.json"
    process = subprocess.run(
        ["somatize", "run", str(study), "-o", str(out), "-q", *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        cwd=study.parent,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert "Traceback" not in process.stderr, process.stderr
    return process, json.loads(out.read_text())["trials"][0]


# 14.12: many metric lines, huge errors -------------------------------------------------

MANY_LINES = 30_000  # three times DECLARED_RECORDS: enough to thin, quick to run
GENERATOR = f"""\
import json, sys
n = {MANY_LINES}
out = sys.stdout
for i in range(n):
    loss = 0.001 if i == 12345 else 1.0 + i / n      # the best loss at a step thinning would drop
    acc = 0.99 if i == 7777 else (0.25 if i == n - 1 else 0.5)
    line = {{"step": i, "loss": loss, "acc": acc, "lr": 0.1, "m%d" % (i % 150): i}}
    out.write(json.dumps(line) + "\\n")
"""


@pytest.fixture(scope="module")
def many_lines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp_path = tmp_path_factory.mktemp("many")
    (tmp_path / "gen.py").write_text(GENERATOR)
    study = study_file(
        tmp_path,
        f"command: {sys.executable} gen.py\n",
        "objectives:\n  - {metric: loss, direction: minimize}\n  - {metric: acc, direction: maximize, reduce: last}",
    )
    process, trial = run(study)
    assert process.returncode == 0, process.stderr
    return study.parent / "results.json", trial


def test_many_metric_lines_keep_a_bounded_thinned_record(many_lines: tuple[Path, dict]) -> None:
    _, trial = many_lines
    assert trial["state"] == "completed"
    by_name: dict[str, list[dict]] = {}
    for record in trial["metrics"]:
        by_name.setdefault(record["name"], []).append(record)
    for name in ("loss", "acc"):
        steps = [r["step"] for r in by_name[name]]
        assert DECLARED_RECORDS // 2 <= len(steps) <= DECLARED_RECORDS + 5
        assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == MANY_LINES - 1  # in order, ends kept
        assert trial["truncated"]["metrics"][name] == {"reported": MANY_LINES, "kept": len(steps)}
    assert len(by_name["lr"]) <= OTHER_RECORDS + 5
    assert trial["truncated"]["metrics"]["lr"]["reported"] == MANY_LINES


def test_thinning_keeps_best_and_last_values_exact(many_lines: tuple[Path, dict]) -> None:
    _, trial = many_lines
    assert trial["values"] == {"loss": 0.001, "acc": 0.25}  # best loss (step 12345), last acc
    assert {"step": 12345, "value": 0.001} in [{"step": r["step"], "value": r["value"]} for r in trial["metrics"]]


def test_undeclared_metric_names_are_capped_and_the_cut_is_said(many_lines: tuple[Path, dict]) -> None:
    _, trial = many_lines
    names = {r["name"] for r in trial["metrics"]}
    others = names - {"loss", "acc"}
    assert len(others) == OTHER_NAMES  # lr and m0..m98; m99..m149 dropped
    dropped = trial["truncated"]["metrics_dropped"]
    assert dropped["records"] == 51 * MANY_LINES // 150
    assert dropped["names"][:2] == ["m99", "m100"] and all(n not in names for n in dropped["names"])


def test_results_with_truncated_trials_read_back(many_lines: tuple[Path, dict]) -> None:
    results, trial = many_lines
    shown = cli.invoke(app, ["show", str(results), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)[0]["truncated"] == trial["truncated"]
    assert cli.invoke(app, ["best", str(results)]).exit_code == 0


def test_results_with_a_malformed_truncated_member_are_refused(many_lines: tuple[Path, dict], tmp_path: Path) -> None:
    results, _ = many_lines
    data = json.loads(results.read_text())
    data["trials"][0]["truncated"] = "lots"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = cli.invoke(app, ["show", str(bad)])
    assert result.exit_code == 2
    assert "truncated must be an object" in result.stderr


def test_results_without_truncated_have_no_such_member(tmp_path: Path) -> None:
    process, trial = run(study_file(tmp_path, "command: echo y=1\n"))
    assert process.returncode == 0 and "truncated" not in trial


HUGE = 3_000_000  # characters; a 50 MB message made a 300 MB results file


@pytest.mark.parametrize("timeout", ["", "timeout: 30\n"], ids=["in-process", "worker-process"])
def test_a_huge_exception_message_is_cut_to_head_and_tail(tmp_path: Path, timeout: str) -> None:
    (tmp_path / "huge.py").write_text(f"def objective(params):\n    raise ValueError('HEAD' + 'x' * {HUGE} + 'TAIL')\n")
    process, trial = run(study_file(tmp_path, f"function: huge:objective\n{timeout}"))
    assert process.returncode == 1
    error = trial["error"]
    assert error.startswith("ValueError: HEADxxx") and "TAIL" in error and "characters cut" in error
    assert len(error) <= ERROR_CHARS + 100
    assert 'huge.py", line 2, in objective' in error  # where it was raised is kept
    assert trial["truncated"]["error"]["chars"] > HUGE
    assert (tmp_path / "results.json").stat().st_size < 10 * ERROR_CHARS


def test_clip_text_keeps_head_and_tail_and_is_idempotent() -> None:
    text = "a" * 10 + "b" * 100 + "c" * 10
    clipped, cut = clip_text(text, limit=20, head=10)
    assert clipped == "a" * 10 + "\n[... 100 characters cut ...]\n" + "c" * 10 and cut == 100
    assert clip_text(clipped, limit=20, head=10) == (clipped, 0)
    assert clip_text("short") == ("short", 0)


# The MetricLog itself


def test_metric_log_gives_the_same_values_as_every_record() -> None:
    rng = random.Random(5)
    records = [MetricRecord("f1", rng.random(), step) for step in range(5000)]
    records += [MetricRecord("f1", math.nan, 5000), MetricRecord("f1", math.inf, 5001), MetricRecord("f1", 0.5, 5002)]
    records.insert(2500, MetricRecord("f1", math.nan, None))
    log = MetricLog(["f1"], declared_records=100)
    log.extend(records)
    kept = log.records()
    assert len(kept) <= 105 and kept[0] is records[0] and kept[-1] is records[-1]
    assert [r.step for r in kept if r.step is not None] == sorted(r.step for r in kept if r.step is not None)
    for direction in Direction:
        for reduce in ("best", "last"):
            objective = Objective("f1", direction, reduce)
            assert objective.reduce_records(kept) == objective.reduce_records(records)
    last_finite = [r for r in records if math.isfinite(r.value)][-1]
    assert [r for r in kept if math.isfinite(r.value)][-1] is last_finite
    assert log.truncation() == {"metrics": {"f1": {"reported": len(records), "kept": len(kept)}}}


def test_metric_log_merges_an_executors_thinned_log() -> None:
    executor_log = MetricLog(["f1"], declared_records=10)
    executor_log.extend(MetricRecord("f1", float(i), i) for i in range(100))
    executor_log.extend(MetricRecord(f"other{i}", 1.0) for i in range(3))
    trial_log = MetricLog(["f1"], declared_records=10, other_names=2)
    trial_log.add(MetricRecord("f1", -1.0, None))
    taken = trial_log.merge(executor_log)
    assert [r.name for r in taken].count("f1") == len([r for r in executor_log.records() if r.name == "f1"])
    truncation = trial_log.truncation()
    assert truncation is not None
    assert truncation["metrics"]["f1"]["reported"] == 101
    assert truncation["metrics_dropped"] == {"records": 1, "names": ["other2"]}


# 14.13: a metrics file that is not a file ---------------------------------------------


@pytest.mark.parametrize(
    "replace, kind",
    [
        ('rm -f "$SOMATIZE_METRICS_FILE"; mkfifo "$SOMATIZE_METRICS_FILE"', "named pipe (FIFO)"),
        ('ln -sf /dev/zero "$SOMATIZE_METRICS_FILE"', "character device"),
        ('mkdir -p "$SOMATIZE_METRICS_FILE"', "directory"),
    ],
    ids=["fifo", "dev-zero", "directory"],
)
def test_a_metrics_file_that_is_not_a_regular_file_is_not_read(tmp_path: Path, replace: str, kind: str) -> None:
    process, trial = run(study_file(tmp_path, f"command: {replace}; echo y=0.5\ntimeout: 2\n"))
    assert process.returncode == 0, process.stderr
    assert trial["state"] == "completed" and trial["values"] == {"y": 0.5}
    process, trial = run(study_file(tmp_path, f"command: {replace}\ntimeout: 2\n"))
    assert process.returncode == 1
    assert trial["error"] == (
        f"no value for primary metric 'y' (no metrics reported); "
        f"$SOMATIZE_METRICS_FILE is a {kind}, not a regular file: not read"
    )


def test_the_timeout_holds_while_reading_a_huge_metrics_file(tmp_path: Path) -> None:
    # Five million metric lines, written in a blink, take tens of seconds to parse.
    command = 'command: yes y=1 | head -c 20000000 > "$SOMATIZE_METRICS_FILE"\ntimeout: 1\n'
    process, trial = run(study_file(tmp_path, command))
    assert process.returncode == 1
    assert trial["error"] == "timeout after 1 s (reading $SOMATIZE_METRICS_FILE)"


def test_a_regular_metrics_file_is_still_read_with_its_near_misses(tmp_path: Path) -> None:
    command = 'command: |-\n  printf \'y=[1]\\n{{"step": 1, "z": 2}}\\n\' > "$SOMATIZE_METRICS_FILE"\n'
    process, trial = run(study_file(tmp_path, command))
    assert process.returncode == 1
    assert trial["metrics"][0]["name"] == "z"
    assert trial["error"].endswith(
        "metrics file line 1 'y=[1]' names 'y' but is not read: the value is an array, not one number "
        "(print float(x) or x.item())"
    )


# 15.6: how Python prints metrics today ---------------------------------------------------


WRAPPED = [
    ("accuracy=np.float64(0.91)", 0.91),
    ("accuracy=np.float32(0.91)", 0.91),
    ("accuracy: np.int64(3)", 3.0),
    ("accuracy=numpy.float64(-1e-05)", -1e-05),
    ("accuracy=np.float64(nan)", math.nan),
    ("accuracy=np.longdouble('0.10000000000000000555')", 0.1),
    ("accuracy=tensor(0.9100)", 0.91),
    ("accuracy = tensor(2.)", 2.0),
    ("accuracy=tensor(1.0000e-05)", 1e-05),
    ("accuracy=tensor(0.9100, device='cuda:0')", 0.91),
    ("accuracy=tensor(0.9100, dtype=torch.float64)", 0.91),
    ("accuracy=tensor(0.91, device='cuda:0', dtype=torch.float16, grad_fn=<AddBackward0>)", 0.91),
    ("accuracy=tensor(0.5, requires_grad=True)", 0.5),
]


@pytest.mark.parametrize("line, value", WRAPPED)
def test_numpy_and_torch_scalar_reprs_are_read(line: str, value: float) -> None:
    [(name, got, step)] = parse_metric_line(line, ["accuracy"])
    assert name == "accuracy" and step is None
    assert got == value or (math.isnan(got) and math.isnan(value))


@pytest.mark.parametrize(
    "line",
    [
        "accuracy=tensor([0.91])",
        "accuracy=np.float64(0.91",
        "accuracy=Tensor(0.9)",
        "accuracy=np.bool(1)",
        "accuracy=tensor(True)",
        "accuracy=np.float64('0.9') extra",
        "accuracy=tensor(0.9, device=cuda(0))",
    ],
)
def test_other_reprs_are_not_read(line: str) -> None:
    assert parse_metric_line(line, ["accuracy"]) == []
    assert why_unread(line, "accuracy") is not None


@pytest.mark.parametrize(
    "line, reason",
    [
        ("accuracy=tensor([0.91])", "the value is an array, not one number (print float(x) or x.item())"),
        ("accuracy=0.91%", "text follows the number ('%'); print only accuracy=<number>"),
        ("accuracy=", "nothing follows the name"),
        ("accuracy=high", "'high' is not a number"),
        (
            "accuracy=Array(0.9, dtype=float32)",
            "'Array(0.9, dtype=float32)' is not a number nor a numpy/torch scalar's repr (print float(x))",
        ),
        ('{"accuracy": "0.9"}', "its value '0.9' is a string; write the number unquoted"),
        ('{"accuracy": [0.9]}', "its value '[0.9]' is not a number"),
        ('{"metrics": {"accuracy": 0.9}}', "it is a JSON object without a top-level member 'accuracy'"),
        ("{'accuracy': 0.9}", "it starts with '{' but is not a JSON object (single quotes? use json.dumps)"),
        ("epoch 3 accuracy=0.9", "expected 'accuracy=0.8' or 'accuracy: 0.8' on a line of its own, or a JSON object"),
    ],
)
def test_why_a_line_naming_a_metric_is_not_read(line: str, reason: str) -> None:
    assert why_unread(line, "accuracy") == f"names 'accuracy' but is not read: {reason}"


@pytest.mark.parametrize("line", ["accuracy=0.9", '{"accuracy": 1}', "val_accuracy=0.3", "epoch 3", "accuracy_top5: x"])
def test_lines_that_give_the_value_or_do_not_name_it_need_no_reason(line: str) -> None:
    assert why_unread(line, "accuracy") is None


def test_metric_stream_remembers_the_first_unread_line_until_the_metric_is_read() -> None:
    stream = MetricStream(["accuracy", "loss"], source="stdout")
    stream.feed(b"epoch 1\nloss=0.5\nval accuracy 0.3\n")
    stream.feed(b"acc\nuracy=tensor([1.0])\n")  # a line split across reads
    assert stream.close() == []
    assert stream.unread_for(["accuracy", "loss"]) == {
        "accuracy": "stdout line 3 'val accuracy 0.3' names 'accuracy' but is not read: "
        "expected 'accuracy=0.8' or 'accuracy: 0.8' on a line of its own, or a JSON object"
    }
    stream.feed("accuracy=np.float64(0.5)\n")
    assert stream.unread_for(["accuracy"]) == {}


def test_a_trial_printing_numpy_and_torch_scalars_completes(tmp_path: Path) -> None:
    command = "command: echo 'y=np.float64(0.91)'; echo \"z=tensor(0.5000, device='cuda:0')\"\n"
    process, trial = run(
        study_file(tmp_path, command, "objectives:\n  - {metric: y, direction: minimize}\n  - {metric: z}")
    )
    assert process.returncode == 0, process.stderr
    assert trial["values"] == {"y": 0.91, "z": 0.5}


def test_a_trial_without_its_metric_says_which_line_named_it(tmp_path: Path) -> None:
    command = "command: |-\n  echo epoch 1; echo 'y=tensor([0.91])'; echo 'y: 0.5 (best)'\n"
    process, trial = run(study_file(tmp_path, command))
    assert process.returncode == 1
    assert trial["error"] == (
        "no value for primary metric 'y' (no metrics reported); stdout line 2 'y=tensor([0.91])' names 'y' "
        "but is not read: the value is an array, not one number (print float(x) or x.item())"
    )


def test_validate_output_sample_reads_wrapped_scalars_and_explains_misses(tmp_path: Path) -> None:
    log = tmp_path / "trial.log"
    log.write_text("y=np.float64(0.91)\ny=tensor([0.5])\n")
    result = cli.invoke(app, ["validate", str(study_file(tmp_path, "command: echo\n")), "--output-sample", str(log)])
    assert result.exit_code == 0, result.output
    assert "line 1: y = 0.91" in result.stdout
    assert "line 2: 'y=tensor([0.5])' names 'y' but is not read: the value is an array" in result.stdout


def test_explain_output_says_a_json_string_value_is_not_a_number() -> None:
    assert explain_output('{"y": "0.5"}\n', ["y"])[0] == (
        "line 1: '{\"y\": \"0.5\"}' names 'y' but is not read: its value '0.5' is a string; write the number unquoted"
    )


def test_validate_output_sample_of_a_long_run_lists_a_bounded_number_of_values(tmp_path: Path) -> None:
    log = tmp_path / "trial.log"
    log.write_text("".join(f'{{"step": {i}, "y": {i}}}\n' for i in range(1000)))
    result = cli.invoke(app, ["validate", str(study_file(tmp_path, "command: echo\n")), "--output-sample", str(log)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": y = ") == 21  # twenty, then the last
    assert "... and 980 more values of y, the last line 1000: y = 999.0 (step 999)" in result.stdout


def test_a_python_objective_reporting_many_values_keeps_a_bounded_record(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(
        textwrap.dedent(
            f"""\
            def objective(params, trial):
                for step in range({MANY_LINES}):
                    trial.report({{"y": 5.0 if step == 3333 else 9.0, "note%d" % (step % 120): 1.0}}, step=step)
                trial.report(7.0)
            """
        )
    )
    process, trial = run(study_file(tmp_path, "function: chatty:objective\n"))
    assert process.returncode == 0, process.stderr
    assert trial["values"] == {"y": 5.0}
    assert len(trial["metrics"]) <= DECLARED_RECORDS + OTHER_NAMES * OTHER_RECORDS
    assert trial["truncated"]["metrics"]["y"]["reported"] == MANY_LINES + 1
    assert trial["truncated"]["metrics_dropped"]["records"] == 20 * MANY_LINES // 120


def test_of_a_metrics_file_over_the_cap_both_ends_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from somatize.executors import metrics_file, shell
    from somatize.executors.base import Completed, TrialRequest

    monkeypatch.setattr(metrics_file, "METRICS_FILE_BYTES", 64)
    lines = "".join(f"y={i}\n" for i in range(100))  # 390 bytes: the first and last 32 are read
    command = f"printf '{lines}y=[0]' > \"$SOMATIZE_METRICS_FILE\""
    executor = shell.ShellExecutor(command, ["y"], tmp_path, {}, None)
    outcome = executor.run(TrialRequest("trial_0000", 0, {}, 1, "demo"), reporter=_NoReporter())
    assert isinstance(outcome, Completed) and outcome.thinned is not None
    values = [r.value for r in outcome.metrics]
    assert values[:3] == [0.0, 1.0, 2.0] and values[-2:] == [98.0, 99.0] and len(values) < 20
    assert outcome.thinned.truncation() == {"metrics_file": {"bytes": len(lines) + 5, "read": 64}}
    assert outcome.unread == {}  # y was read
    executor.close()


class _NoReporter:
    def report(self, name: str, value: float, step: int | None = None) -> None:
        raise AssertionError("nothing is printed")

    def should_prune(self) -> bool:
        return False
