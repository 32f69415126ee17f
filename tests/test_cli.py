"""The command line, as a user drives it: typer's CliRunner and real subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.cli import app

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"
cli = CliRunner()

SHELL_STUDY = """\
name: quad
seed: 3
search_space:
  x: {type: float, low: -2.0, high: 2.0}
  k: [a, b]
  epochs: 4
strategy: {type: random, n_trials: 6}
objective: {metric: y, direction: minimize}
executor:
  command: python -c "import sys; x=float(sys.argv[1]); print('y=' + repr((x - 0.5) ** 2))" {x}
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args: str, input: str | None = None):
    return cli.invoke(app, [str(a) for a in args], input=input)


def run_cli(*args: str, cwd: Path | None = None, input: str | None = None, env: dict | None = None):
    return subprocess.run(
        ["somatize", *map(str, args)], capture_output=True, text=True, cwd=cwd, input=input, timeout=120,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


# validate --------------------------------------------------------------------


def test_validate_examples_prints_summary():
    result = invoke("validate", STUDIES / "shell-train.yaml")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "valid" in out and "lr" in out and "grid" in out
    assert "sample command: python train.py --lr" in out


def test_validate_reports_line_and_exit_2(tmp_path):
    bad = write(tmp_path, SHELL_STUDY.replace("high: 2.0", "high: -3.0"))
    good = write(tmp_path, SHELL_STUDY, "good.yaml")
    result = invoke("validate", good, bad)
    assert result.exit_code == 2
    assert f"{bad}:4:" in result.stderr
    assert "Traceback" not in result.output
    assert f"{good}: valid" in result.stdout


def test_validate_output_sample_shows_what_is_read(tmp_path):
    log = tmp_path / "trial.log"
    log.write_text('epoch 1\n{"step": 1, "y": 0.5}\ny: 0.25\n')
    result = invoke("validate", write(tmp_path, SHELL_STUDY), "--output-sample", log)
    assert result.exit_code == 0, result.output
    assert "0.25" in result.stdout and "0.5" in result.stdout


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("somatize ")


def test_a_misspelt_command_is_answered_with_one_suggestion():
    done = subprocess.run([sys.executable, "-m", "somatize", "asx"], capture_output=True, text=True, check=False,
                          env={**os.environ, "SOMATIZE_SERVER": "off"})
    assert done.returncode == 2
    assert done.stderr.count("Did you mean 'ask'?") == 1, done.stderr


FUNCTION_STUDY = """\
name: fn
search_space:
  x: {{type: float, low: -1.0, high: 1.0}}
strategy: {{type: random, n_trials: 3}}
objective: {{metric: y}}
executor:
  function: {target}
"""
OBJECTIVES = """\
import os
from pathlib import Path

print("objectives imported")  # must not reach validate's stdout or run's results
marks = Path(__file__).with_name("imports.log")
marks.write_text(marks.read_text() + "x" if marks.exists() else "x")


def f(params):
    return params["x"] ** 2
"""


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("objectives:nope", "module 'objectives' has no attribute 'nope'"),
        ("objectivs:f", "cannot import module 'objectivs': No module named 'objectivs'"),
        ("raising:f", "cannot import module 'raising': RuntimeError: no GPU here (raising.py:1)"),
        ("exiting:f", "cannot import module 'exiting': it called sys.exit(3) (exiting.py:2)"),
    ],
)
def test_validate_reports_a_function_that_cannot_be_imported(tmp_path, target, message):
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    (tmp_path / "raising.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "exiting.py").write_text("import sys\nsys.exit(3)\n")
    study = write(tmp_path, FUNCTION_STUDY.format(target=target))
    result = run_cli("validate", study, cwd=tmp_path / "..")  # imported from the study's directory, not cwd
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"{study}:7:13: {message}"]
    assert result.stdout == ""


def test_validate_only_warns_about_a_function_for_a_cluster(tmp_path):
    study = write(tmp_path, FUNCTION_STUDY.format(target="on_workers:f") + "cluster: tcp://scheduler:8786\n")
    result = invoke("validate", study)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"somatize: warning: {study}:7:13: cannot import module 'on_workers': No module named 'on_workers' "
        "(here; trials import it on the cluster's workers)"
    ]


def test_validate_imports_each_study_from_its_own_directory(tmp_path):
    for name, body in (("a", OBJECTIVES), ("b", "def g(params):\n    return 1.0\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "objectives.py").write_text(body)
    good = write(tmp_path / "a", FUNCTION_STUDY.format(target="objectives:f"))
    bad = write(tmp_path / "b", FUNCTION_STUDY.format(target="objectives:f"))
    result = run_cli("validate", good, bad)
    assert result.returncode == 2
    assert f"{good}: valid" in result.stdout and "objectives imported" not in result.stdout
    assert result.stderr.splitlines() == [f"{bad}:7:13: module 'objectives' has no attribute 'f'"]


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ("pythn nothere.py {x}", "'pythn' is not found on PATH"),
        ("[./train.sh, '{x}']", "'./train.sh' does not exist (in workdir {workdir})"),
    ],
)
def test_validate_warns_about_a_program_that_is_not_there_and_exits_0(tmp_path, command, program):
    program = program.format(workdir=tmp_path)
    study = write(tmp_path, FUNCTION_STUDY.format(target="x").replace("function: x", f"command: {command}"))
    result = invoke("validate", study)
    assert result.exit_code == 0, result.output
    assert f"{study}: valid" in result.stdout
    assert result.stderr.splitlines() == [
        f"somatize: warning: {study}:7:12: program {program}: trials will fail unless it exists where they run"
    ]


def test_validate_finds_a_program_on_path_or_in_workdir(tmp_path):
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/sh\necho y=1\n")
    script.chmod(0o755)
    for command in ("OMP_NUM_THREADS=1 python train.py {x}", "./train.sh {x}", "cd . && ./train.sh", "[sh, x]"):
        study = write(tmp_path, FUNCTION_STUDY.format(target="x").replace("function: x", f"command: {command}"))
        result = invoke("validate", study)
        assert result.exit_code == 0 and result.stderr == "", (command, result.stderr)


def test_run_refuses_a_function_that_cannot_be_imported_before_any_trial(tmp_path):
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    study = write(tmp_path, FUNCTION_STUDY.format(target="objectives:nope"))
    result = run_cli("run", study, "-o", "r.json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["objectives imported", f"{study}:7:13: module 'objectives' has no attribute 'nope'"]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.journal.jsonl").exists()


def test_run_imports_the_function_once_in_process(tmp_path):
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    study = write(tmp_path, FUNCTION_STUDY.format(target="objectives:f"))
    result = run_cli("run", study, "-o", "-", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["trials"]) == 3  # the module's print went to stderr
    assert (tmp_path / "imports.log").read_text() == "x"  # the check's import is the executor's


def test_validate_and_run_say_what_will_not_work_yet(tmp_path):
    text = SHELL_STUDY.replace("strategy: {type: random, n_trials: 6}", "strategy: {type: bayesian, n_trials: 2}")
    text = text.replace("objective: {metric: y, direction: minimize}", "objectives: [{metric: y}, {metric: z}]")
    text += "pruning: {type: median}\ncluster: tcp://127.0.0.1:9\n"
    study = write(tmp_path, text)
    summary = invoke("validate", study).stdout
    assert "pruning" not in "".join(line for line in summary.splitlines() if "warning" in line)  # pruned live there
    # Every objective is searched since issue 17: no warning about the second one.
    assert "objective" not in "".join(line for line in summary.splitlines() if "warning" in line)
    result = run_cli("run", study, "--set", "cluster=null", "-o", "r.json", cwd=tmp_path)
    assert "warning" not in result.stderr
    result = run_cli("run", study, "--set", "strategy.type=random", "-o", "r.json", cwd=tmp_path)
    assert result.returncode == 2  # nothing listens at port 9
    assert result.stderr.splitlines()[0].startswith("somatize: cannot reach the Dask scheduler at tcp://127.0.0.1:9")


# run ---------------------------------------------------------------------------


def test_run_writes_results_and_best_reads_them(tmp_path):
    study = write(tmp_path, SHELL_STUDY)
    out = tmp_path / "r.json"
    result = invoke("run", study, "-o", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["status"] == "completed" and len(data["trials"]) == 6
    assert all(t["params"]["epochs"] == 4 for t in data["trials"])
    best = min(data["trials"], key=lambda t: t["values"]["y"])
    assert data["best_trial"]["id"] == best["id"]
    # one plain line per finished trial on stderr when it is not a terminal
    assert sum("trial_000" in line for line in result.stderr.splitlines()) >= 6
    value = invoke("best", out, "--param", "x")
    assert value.exit_code == 0 and float(value.stdout) == best["params"]["x"]
    assert not (tmp_path / "r.journal.jsonl").exists()


def test_run_quiet_prints_nothing_on_stderr(tmp_path):
    result = invoke("run", write(tmp_path, SHELL_STUDY), "-o", tmp_path / "r.json", "-q")
    assert result.exit_code == 0 and result.stderr == ""


def test_run_default_output_next_to_cwd(tmp_path):
    study = write(tmp_path, SHELL_STUDY)
    result = run_cli("run", study, "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "study.results.json").exists()


def test_pipeline_run_to_best(tmp_path):
    study = write(tmp_path, SHELL_STUDY)
    pipeline = f"somatize run {shlex.quote(str(study))} -o - -q | somatize best - --param x"
    result = subprocess.run(pipeline, shell=True, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert -2.0 <= float(result.stdout) <= 2.0


def test_study_from_stdin(tmp_path):
    result = run_cli("run", "-", "-o", "-", "-q", cwd=tmp_path, input=SHELL_STUDY)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["study"]["name"] == "quad"


def test_best_format_args_reproduces_the_best_trial(tmp_path):
    out = tmp_path / "r.json"
    assert run_cli("run", STUDIES / "shell-train.yaml", "-o", out, "-q", "--n-trials", "4").returncode == 0
    args = run_cli("best", out, "--format", "args").stdout.strip()
    data = json.loads(out.read_text())
    best = data["best_trial"]
    seed = next(t["trial_seed"] for t in data["trials"] if t["id"] == best["id"])
    command = f"{shlex.quote(sys.executable)} train.py {args} --seed {seed}"
    rerun = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=STUDIES, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    last = rerun.stdout.strip().splitlines()[-1]
    assert last == f"val_loss={best['value']!r}"


def test_set_overrides_and_seed_and_n_trials(tmp_path):
    study = write(tmp_path, SHELL_STUDY)
    a, b, c = (tmp_path / f"{n}.json" for n in "abc")
    assert invoke("run", study, "-o", a, "-q", "--set", "strategy.n_trials=2", "--seed", "9").exit_code == 0
    assert invoke("run", study, "-o", b, "-q", "--n-trials", "2", "--seed", "9").exit_code == 0
    assert invoke("run", study, "-o", c, "-q", "--n-trials", "2", "--seed", "10").exit_code == 0
    params = [[t["params"] for t in json.loads(p.read_text())["trials"]] for p in (a, b, c)]
    assert len(params[0]) == 2 and params[0] == params[1] and params[0] != params[2]


def test_bad_set_is_exit_2_with_message(tmp_path):
    result = invoke("run", write(tmp_path, SHELL_STUDY), "--set", "strategy.n_trials=-1")
    assert result.exit_code == 2
    assert "n_trials" in result.stderr and "Traceback" not in result.output
    assert invoke("run", write(tmp_path, SHELL_STUDY), "--set", "nonsense").exit_code == 2


def test_events_file_has_one_json_object_per_line(tmp_path):
    events = tmp_path / "events.jsonl"
    result = invoke("run", write(tmp_path, SHELL_STUDY), "-o", tmp_path / "r.json", "-q", "--events", events)
    assert result.exit_code == 0
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds[0] == "study_started" and kinds[-1] == "study_completed"
    assert kinds.count("trial_started") == 6 and kinds.count("study_progress") == 6


def test_events_to_stdout(tmp_path):
    result = run_cli("run", write(tmp_path, SHELL_STUDY), "-o", tmp_path / "r.json", "-q", "--events", "-")
    assert result.returncode == 0
    assert all(json.loads(line)["event"] for line in result.stdout.splitlines())


def test_unwritable_output_is_reported_before_any_trial(tmp_path):
    result = invoke("run", write(tmp_path, SHELL_STUDY), "-o", tmp_path / "missing" / "r.json")
    assert result.exit_code == 2 and "missing" in result.stderr


FAILING_CASES = {
    "raises": ("function: objective_mod:boom", "ValueError: bad things"),
    "not-found": ("command: definitely-not-a-command-xyz {x}", "not found"),
    "no-metric": ("command: echo nothing here {x}", "no value for primary metric 'y'"),
    "exit-status": ("command: sh -c 'echo oops >&2; exit 3'", "exit status 3"),
}


@pytest.mark.parametrize("case", FAILING_CASES)
def test_failing_trials_have_readable_reasons_and_the_study_goes_on(tmp_path, case):
    executor, reason = FAILING_CASES[case]
    (tmp_path / "objective_mod.py").write_text("def boom(params):\n    raise ValueError('bad things')\n")
    text = SHELL_STUDY.replace("executor:\n", "max_consecutive_failures: null\nexecutor:\n")
    text = text.split("  command:")[0] + f"  {executor}\n"
    out = tmp_path / "r.json"
    result = invoke("run", write(tmp_path, text), "-o", out)
    assert result.exit_code == 1  # no trial completed
    data = json.loads(out.read_text())
    assert len(data["trials"]) == 6
    assert all(t["state"] == "failed" and reason in t["error"] for t in data["trials"]), data["trials"][0]["error"]
    assert "no trial completed" in result.stderr


def test_failure_storm_stops_the_study(tmp_path):
    text = SHELL_STUDY.split("  command:")[0] + "  command: 'false'\n"
    out = tmp_path / "r.json"
    result = invoke("run", write(tmp_path, text), "-o", out, "--set", "max_consecutive_failures=2")
    assert result.exit_code == 1
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and len(data["trials"]) == 2
    assert "max_consecutive_failures" in result.stderr


def test_shell_metacharacters_reach_the_command_verbatim(tmp_path):
    text = (
        "name: quoting\nsearch_space:\n  v: ['$(touch pwned)', '; touch pwned2', '`touch pwned3`']\n"
        "strategy: {type: grid}\nobjective: {metric: y}\n"
        "executor:\n  command: python -c \"import sys; print('y=' + str(len(sys.argv[1])))\" {v}\n"
    )
    out = tmp_path / "r.json"
    result = invoke("run", write(tmp_path, text), "-o", out, "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [t["values"]["y"] for t in data["trials"]] == [len(v) for v in ["$(touch pwned)", "; touch pwned2", "`touch pwned3`"]]
    assert not list(tmp_path.glob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_python_function_study_runs(tmp_path):
    out = tmp_path / "r.json"
    result = invoke("run", STUDIES / "branin.yaml", "-o", out, "-q", "--n-trials", "15")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["trials"]) == 15 and data["best_trial"]["value"] < 50


# best / show ---------------------------------------------------------------------


@pytest.fixture
def results(tmp_path) -> Path:
    out = tmp_path / "r.json"
    text = SHELL_STUDY.replace("objective: {metric: y, direction: minimize}",
                               "objectives: [{metric: y, direction: minimize}, {metric: z, direction: maximize}]")
    text = text.replace("print('y=' + repr((x - 0.5) ** 2))", "print('y=' + repr((x - 0.5) ** 2)); print('z=' + repr(x))")
    assert invoke("run", write(tmp_path, text), "-o", out, "-q").exit_code == 0
    return out


@pytest.mark.parametrize("fmt", ["table", "json", "params", "env", "args", "yaml"])
def test_best_formats(results, fmt):
    data = json.loads(results.read_text())
    result = invoke("best", results, "--format", fmt)
    assert result.exit_code == 0, result.output
    x = data["best_trial"]["params"]["x"]
    if fmt == "json":
        assert json.loads(result.stdout)["params"]["x"] == x
    elif fmt == "env":
        assert f"X={x!r}" in result.stdout.splitlines()
    elif fmt == "args":
        tokens = shlex.split(result.stdout)
        assert tokens[tokens.index("--x") + 1] == repr(x)
    elif fmt == "params":
        assert f"x={x!r}" in result.stdout.splitlines()
    else:
        assert repr(x)[:6] in result.stdout


def test_best_by_other_objective(results):
    data = json.loads(results.read_text())
    top_z = max(data["trials"], key=lambda t: t["values"]["z"])
    result = invoke("best", results, "--objective", "z", "--param", "x")
    assert float(result.stdout) == top_z["params"]["x"]
    assert invoke("best", results, "--objective", "nope").exit_code == 2


def test_best_reads_stdin(results):
    result = invoke("best", "-", "--param", "k", input=results.read_text())
    assert result.exit_code == 0 and result.stdout.strip() in ("a", "b")


def test_best_unknown_param_is_exit_2(results):
    result = invoke("best", results, "--param", "nope")
    assert result.exit_code == 2 and "x" in result.stderr


@pytest.mark.parametrize("content", ["", "{", '{"format": "other"}', "[1, 2]", '{"format": "somatize.results"}'])
def test_best_on_corrupt_results_is_exit_2(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = invoke("best", bad)
    assert result.exit_code == 2 and "Traceback" not in result.output and str(bad) in result.stderr


def test_best_on_truncated_results_is_exit_2(results):
    results.write_text(results.read_text()[:200])
    assert invoke("best", results).exit_code == 2
    assert invoke("show", results).exit_code == 2


def test_best_missing_file_is_exit_2(tmp_path):
    assert invoke("best", tmp_path / "nope.json").exit_code == 2


def test_best_with_no_completed_trial_is_exit_1(tmp_path):
    text = SHELL_STUDY.split("  command:")[0] + "  command: 'false'\n"
    out = tmp_path / "r.json"
    invoke("run", write(tmp_path, text), "-o", out, "-q")
    result = invoke("best", out)
    assert result.exit_code == 1 and "no completed trial" in result.stderr


def test_show_csv_json_table_and_filters(results):
    data = json.loads(results.read_text())
    rows = list(csv.DictReader(io.StringIO(invoke("show", results, "--format", "csv").stdout)))
    assert len(rows) == 6 and "x" in rows[0]
    listed = json.loads(invoke("show", results, "--format", "json", "--sort", "y", "--limit", "2").stdout)
    ordered = sorted(data["trials"], key=lambda t: t["values"]["y"])
    assert [t["id"] for t in listed] == [t["id"] for t in ordered[:2]]
    table = invoke("show", results)
    assert table.exit_code == 0 and "trial_0000" in table.stdout
    assert json.loads(invoke("show", results, "--format", "json", "--state", "failed").stdout) == []
    assert invoke("show", results, "--state", "bogus").exit_code == 2


def shown_ids(results: Path, *args: str) -> list[str]:
    result = invoke("show", results, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return [t["id"] for t in json.loads(result.stdout)]


def test_show_sorts_by_any_objective_parameter_or_duration(results):
    trials = json.loads(results.read_text())["trials"]

    def ids(key, reverse=False):
        return [t["id"] for t in sorted(trials, key=lambda t: (key(t), t["number"]), reverse=reverse)]

    by_y, by_z, by_x = (lambda t: t["values"]["y"]), (lambda t: t["values"]["z"]), (lambda t: t["params"]["x"])
    assert shown_ids(results, "--sort", "y") == ids(by_y)  # minimized: best first is ascending
    assert shown_ids(results, "--sort", "z") == ids(by_z, reverse=True)  # maximized: best first is descending
    assert shown_ids(results, "--sort", "+z") == ids(by_z)
    assert shown_ids(results, "--sort", "-y") == ids(by_y, reverse=True)
    assert shown_ids(results, "--sort", "x") == ids(by_x)
    assert shown_ids(results, "--sort", "-x") == ids(by_x, reverse=True)
    by_k = [t["id"] for t in sorted(trials, key=lambda t: (t["params"]["k"], t["number"]))]
    assert shown_ids(results, "--sort", "k") == by_k  # ties keep trial order
    longest = sorted(trials, key=lambda t: (-t["duration_ms"], t["number"]))  # ties keep trial order
    assert shown_ids(results, "--sort", "-duration_ms", "--limit", "1") == [longest[0]["id"]]


def test_show_sort_by_an_unknown_name_names_the_option_and_the_choices(results):
    result = invoke("show", results, "--sort", "-nope")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "somatize: --sort -nope: no objective or parameter named 'nope' "
        "(objectives: y, z; parameters: x, k, epochs; duration_ms)"
    )


def test_a_retried_trial_shows_its_attempt_in_the_progress_lines(tmp_path):
    text = SHELL_STUDY.replace("executor:\n", "retries: 2\nexecutor:\n").split("  command:")[0]
    text += "  command: \"if [ -e m_{trial_number} ]; then echo y=1; else touch m_{trial_number}; exit 1; fi\"\n"
    result = run_cli("run", write(tmp_path, text), "-o", "r.json", "--n-trials", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("[1/2] trial_0000 completed (attempt 2 of 3) y=1 x=")
    assert lines[1].startswith("[2/2] trial_0001 completed (attempt 2 of 3) y=1 x=")


def test_a_resume_says_what_it_found_and_what_is_left(tmp_path):
    study = write(tmp_path, SHELL_STUDY)
    assert run_cli("run", study, "-o", "r.json", "--n-trials", "2", "-q", cwd=tmp_path).returncode == 0
    result = run_cli("run", study, "-o", "r.json", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "resuming: 2 finished trials from r.json; 4 to go"
    assert result.stderr.splitlines()[1].startswith("[3/6] trial_0002 completed")


def test_the_first_ctrl_c_says_what_it_waits_for(tmp_path):
    text = SHELL_STUDY.replace("command: python -c", "command: touch started_{trial_number}; sleep 30; python -c")
    process = subprocess.Popen(
        ["somatize", "run", str(write(tmp_path, text)), "-o", "r.json", "-j", "2"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not ((tmp_path / "started_0").exists() and (tmp_path / "started_1").exists()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.splitlines()[0] == "interrupted: waiting for 2 running trials (Ctrl-C again to stop at once)"
    assert "study quad interrupted: 0 trials; no completed trial" in stderr


# journal and resume -----------------------------------------------------------------


def test_resume_finishes_the_planned_trials(tmp_path):
    study = write(tmp_path, SHELL_STUDY)
    out = tmp_path / "r.json"
    assert invoke("run", study, "-o", out, "-q", "--n-trials", "3").exit_code == 0
    result = invoke("run", study, "-o", out, "-q", "--resume")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [t["number"] for t in data["trials"]] == list(range(6))


def test_resume_refuses_a_changed_space(tmp_path):
    out = tmp_path / "r.json"
    assert invoke("run", write(tmp_path, SHELL_STUDY), "-o", out, "-q", "--n-trials", "2").exit_code == 0
    changed = write(tmp_path, SHELL_STUDY.replace("high: 2.0", "high: 3.0"))
    result = invoke("run", changed, "-o", out, "-q", "--resume")
    assert result.exit_code == 2 and "search_space" in result.stderr


def test_unfinished_journal_is_not_overwritten(tmp_path):
    study = write(tmp_path, SHELL_STUDY)
    out = tmp_path / "r.json"
    journal = tmp_path / "r.journal.jsonl"
    assert invoke("run", study, "-o", out, "-q", "--n-trials", "2").exit_code == 0
    # Simulate a crash: a journal left behind with two finished trials.
    header = {"format": "somatize.journal", "version": 1,
              "study": {"id": "x", "spec": json.loads(out.read_text())["study"]["spec"]}}
    lines = [json.dumps(header)] + [json.dumps({"trial": t}) for t in json.loads(out.read_text())["trials"]]
    journal.write_text("\n".join(lines) + "\n{\"trial\": {\"numb")  # torn last line
    refused = invoke("run", study, "-o", out, "-q")
    assert refused.exit_code == 2 and "--resume" in refused.stderr
    resumed = invoke("run", study, "-o", out, "-q", "--resume")
    assert resumed.exit_code == 0, resumed.output
    data = json.loads(out.read_text())
    assert [t["number"] for t in data["trials"]] == list(range(6))
    assert not journal.exists()


# multi-objective, sparkline, end of run --------------------------------------------------


def dominated(a: dict, b: dict) -> bool:
    """Whether trial b dominates trial a (y minimized, z maximized)."""
    ya, za, yb, zb = a["values"]["y"], a["values"]["z"], b["values"]["y"], b["values"]["z"]
    return yb <= ya and zb >= za and (yb < ya or zb > za)


def test_best_pareto_lists_exactly_the_non_dominated_trials(results):
    trials = json.loads(results.read_text())["trials"]
    expected = sorted(t["id"] for t in trials if not any(dominated(t, other) for other in trials))
    listed = json.loads(invoke("best", results, "--pareto", "--format", "json").stdout)
    assert sorted(t["id"] for t in listed) == expected
    assert sorted(json.loads(results.read_text())["pareto_front"]) == expected
    table = invoke("best", results, "--pareto")
    assert table.exit_code == 0 and all(trial_id in table.stdout for trial_id in expected)


def test_best_pareto_misuse_is_exit_2(tmp_path, results):
    assert invoke("best", results, "--pareto", "--format", "params").exit_code == 2
    single = tmp_path / "one.json"
    assert invoke("run", write(tmp_path, SHELL_STUDY), "-o", single, "-q").exit_code == 0
    result = invoke("best", single, "--pareto")
    assert result.exit_code == 2 and "two or more objectives" in result.stderr


def test_show_table_ends_with_a_best_so_far_sparkline(results):
    data = json.loads(results.read_text())
    last = invoke("show", results).stdout.splitlines()[-1]
    assert last.startswith("best y so far: ")
    marks = last.split()[4]
    assert len(marks) == len(data["trials"]) and marks[0] == "█" and marks[-1] == "▁" or len(set(marks)) == 1
    assert list(marks) == sorted(marks, reverse=True)  # the best so far never gets worse
    assert "so far" not in invoke("show", results, "--format", "csv").stdout
    json.loads(invoke("show", results, "--format", "json").stdout)  # still pure JSON


def test_sparkline_steps_once_per_improvement():
    from somatize.ui.formats import sparkline

    assert sparkline([100.0, 1.0, 1.0, 0.9]) == "█▅▅▁"  # by rank: the small last step still shows
    assert len(sparkline([float(v) for v in range(500)], width=60)) == 60
    assert sparkline([]) == ""


def test_best_so_far_follows_the_direction_in_trial_order_and_skips_what_has_no_value():
    from somatize.space import FloatDimension, SearchSpace
    from somatize.study import Direction, Objective, Study, Trial, TrialState
    from somatize.ui.formats import best_so_far

    values = {0: 2.0, 1: float("nan"), 2: 5.0, 3: None, 4: 3.0, 5: 7.0}
    for direction, curve in ((Direction.MAXIMIZE, [2.0, 5.0, 5.0, 7.0]), (Direction.MINIMIZE, [2.0, 2.0, 2.0, 2.0])):
        study = Study("s", SearchSpace((FloatDimension("x", 0.0, 1.0),)), [Objective("acc", direction)])
        study.trials = [Trial(n, {"x": 0.5}, TrialState.COMPLETED, values={} if v is None else {"acc": v})
                        for n, v in reversed(values.items())]  # out of order, as parallel trials finish
        study.trials.append(Trial(6, {"x": 0.5}, TrialState.FAILED))
        assert best_so_far(study) == curve


def test_run_ends_with_the_top_trials_and_the_results_path(tmp_path):
    out = tmp_path / "r.json"
    done = run_cli("run", write(tmp_path, SHELL_STUDY), "-o", out)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    top = lines.index("top 5 of 6 trials:")
    data = json.loads(out.read_text())
    best_five = sorted(data["trials"], key=lambda t: (t["values"]["y"], t["number"]))[:5]
    rows = lines[top + 3 : top + 8]
    assert [row.split()[0] for row in rows] == [t["id"] for t in best_five]
    assert lines[-1] == f"results: {out}"


def test_an_unwritable_events_file_leaves_no_journal_behind(tmp_path):
    # The events file is opened before the journal starts: a bad --events is exit 2 and nothing to resume.
    study = write(tmp_path, SHELL_STUDY)
    refused = run_cli("run", study, "-o", "r.json", "--events", str(tmp_path / "missing" / "e.jsonl"), "-q", cwd=tmp_path)
    assert refused.returncode == 2 and "cannot write events" in refused.stderr
    assert not (tmp_path / "r.journal.jsonl").exists()
    assert run_cli("run", study, "-o", "r.json", "-q", cwd=tmp_path).returncode == 0
