"""`run --resume` as a user drives it: the study goes on where it stopped, and the journal is checked first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.cli import app
from somatize.storage.results import read_results, results_json

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
    # One repeat, not two: noise: auto's second evaluation of its best initial point is not redone on resume.
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 13


def test_a_finite_space_still_ends_when_every_point_was_tried(tmp_path):
    study, out = study_file(tmp_path, "random", "discrete"), tmp_path / "r.json"
    assert run(study, "-o", out, "-q", "--n-trials", 250).exit_code == 0
    resumed = run(study, "-o", out, "-q", "--n-trials", 400, "--resume")
    assert resumed.exit_code == 0, resumed.output
    data = json.loads(out.read_text())
    assert len(data["trials"]) == 300 and data["status"] == "completed"


# journal records are checked against the study before anything runs --------------------------------------


CONDITIONAL = """\
name: checked
seed: 3
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  n: {type: int, low: 1, high: 8, step: 1}
  opt: [adam, sgd]
  momentum: {type: float, low: 0.5, high: 0.9, when: {opt: sgd}}
  epochs: 5
constraints:
  - n * x <= 6
strategy: {type: random, n_trials: 6}
objective: {metric: v, direction: minimize}
executor: {function: objective:objective}
"""


def crashed_run(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A study with a journal of 3 finished trials, as a kill -9 leaves it; its lines."""
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    study, out = tmp_path / "study.yaml", tmp_path / "r.json"
    study.write_text(CONDITIONAL)
    assert run(study, "-o", out, "-q", "--n-trials", 3).exit_code == 0
    data = json.loads(out.read_text())
    study_header = {"id": data["study"]["id"], "spec": data["study"]["spec"]}
    header = {"format": "somatize.journal", "version": 1, "study": study_header}
    return study, out, [json.dumps(header)] + [json.dumps({"trial": t}) for t in data["trials"]]


def bad_record(line: str, change) -> str:
    trial = json.loads(line)["trial"]
    change(trial)
    return json.dumps({"trial": trial})


BAD_RECORDS = {
    "x outside its range": (lambda t: t["params"].update(x=5.0), "x=5.0"),
    "int off the dimension": (lambda t: t["params"].update(n=2.5), "n=2.5"),
    "unknown choice": (lambda t: t["params"].update(opt="rmsprop"), "opt='rmsprop'"),
    "a parameter the space lacks": (lambda t: t["params"].update(depth=3), "depth"),
    "a searched parameter missing": (lambda t: t["params"].pop("x"), "x"),
    "a constant changed": (lambda t: t["params"].update(epochs=50), "epochs=50"),
    "inactive parameter present": (lambda t: t["params"].update(opt="adam", momentum=0.6), "momentum"),
    "constraint violated": (lambda t: t["params"].update(n=8, x=0.99), "constraint"),
    "a huge trial number": (lambda t: t.update(number=10**18, id="trial_1000000000000000000"), "number"),
    "a duplicated number": (lambda t: t.update(number=0, id="trial_0000"), "number 0"),
}


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_resume_refuses_a_journal_record_that_does_not_fit_the_study(tmp_path, case, where):
    study, out, lines = crashed_run(tmp_path)
    change, fragment = BAD_RECORDS[case]
    line = 3 if where == "middle" else len(lines)  # trial 1's record, or trial 2's on the last line
    lines[line - 1] = bad_record(lines[line - 1], change)
    journal = tmp_path / "r.journal.jsonl"
    journal.write_text("\n".join(lines) + "\n")
    before = journal.read_bytes()
    result = run(study, "-o", out, "-q", "--resume")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"somatize: {journal}:{line}: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert journal.read_bytes() == before


def test_resume_from_a_results_file_checks_its_trials_too(tmp_path):
    study, out, _ = crashed_run(tmp_path)
    data = json.loads(out.read_text())
    data["trials"][1]["params"]["x"] = -1.0
    out.write_text(json.dumps(data))
    result = run(study, "-o", out, "-q", "--resume")
    assert result.exit_code == 2 and result.stderr.startswith(f"somatize: {out}: trial 1"), result.stderr
    assert "x=-1.0" in result.stderr and result.stderr.count("\n") == 1


def test_resume_accepts_a_journal_written_by_a_run_of_the_study(tmp_path):
    study, out, lines = crashed_run(tmp_path)
    (tmp_path / "r.journal.jsonl").write_text("\n".join(lines) + "\n")
    result = run(study, "-o", out, "-q", "--resume")
    assert result.exit_code == 0, result.output
    assert [t["number"] for t in trials_of(out)] == list(range(6))


INTERRUPTING = """\
import os
import signal
import time

calls = 0


def objective(params):
    global calls
    calls += 1
    if calls == 3 and os.environ.get("INTERRUPT_ON_THIRD"):
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, mid-study (a KeyboardInterrupt raised here fails the trial)
        time.sleep(5)  # the handler interrupts this
    return params["x"]
"""


def test_a_journal_resumed_over_a_torn_last_line_stays_readable_for_the_next_resume(tmp_path, monkeypatch):
    study, out, lines = crashed_run(tmp_path)
    (tmp_path / "interrupting.py").write_text(INTERRUPTING)
    study.write_text(study.read_text().replace("objective:objective", "interrupting:objective"))
    journal = tmp_path / "r.journal.jsonl"
    journal.write_text("\n".join(lines) + "\n" + lines[-1][:25])  # killed while writing a fourth record
    monkeypatch.setenv("INTERRUPT_ON_THIRD", "1")
    interrupted = run(study, "-o", out, "-q", "--resume")
    assert interrupted.exit_code == 130, interrupted.output
    records = [json.loads(line) for line in journal.read_text().splitlines()]  # every line whole
    assert [r["trial"]["number"] for r in records[1:]] == [0, 1, 2, 3, 4]  # and the two trials run since
    monkeypatch.delenv("INTERRUPT_ON_THIRD")
    resumed = run(study, "-o", out, "-q", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert [t["number"] for t in trials_of(out)] == list(range(6))


def test_a_sampler_that_finds_no_feasible_point_does_not_call_the_space_exhausted(tmp_path):
    # validate finds its first draw feasible (random.Random(0)), the sampler's thousands of draws find none:
    # a continuous space always has untried points, so this is no "exhausted" study.
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    study = tmp_path / "study.yaml"
    study.write_text(
        "name: narrow\nseed: 1\nsearch_space:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        "constraints:\n  - x == 0.8444218515250481\n"
        "strategy: {type: random, n_trials: 5}\nobjective: {metric: v, direction: minimize}\n"
        "executor: {function: objective:objective}\n"
    )
    result = run(study, "-o", tmp_path / "r.json", "-q")
    assert result.exit_code == 1, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["stop_reason"] == "infeasible" and data["trials"] == []
    assert result.stderr == "somatize: gave up after 5000 parameter sets in a row violated the constraints or had " \
        "already run; loosen the constraints or give fewer n_trials\n"


def test_resume_with_a_narrowed_space_says_the_space_changed(tmp_path):
    study, out, lines = crashed_run(tmp_path)
    (tmp_path / "r.journal.jsonl").write_text("\n".join(lines) + "\n")
    study.write_text(study.read_text().replace("low: 0.0, high: 1.0}", "low: 0.0, high: 0.001}"))
    result = run(study, "-o", out, "-q", "--resume")
    assert result.exit_code == 2 and "the study's search_space changed" in result.stderr, result.stderr


# the history as a results file holds it: checked, and written back as a full rewrite would (issue 18) ------


PLAIN = """\
name: plain
seed: 5
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  n: {type: int, low: 1, high: 8}
  k: [1, a, 2.5]
  epochs: 5
constraints:
  - n * x <= 6
strategy: {type: random, n_trials: 6}
objective: {metric: v, direction: minimize}
executor: {function: objective:objective}
"""

# An unconditional space's names are checked once per order they come in (space.py): each misfit still named.
PLAIN_MISFITS = {
    "x outside its range": (lambda p: p.update(x=5.0), "x=5.0"),
    "an int that is a float": (lambda p: p.update(n=2.0), "n=2.0"),
    "a bool for an int choice": (lambda p: p.update(k=True), "k=True"),
    "a float for an int choice": (lambda p: p.update(k=1.0), "k=1.0"),
    "an unknown choice": (lambda p: p.update(k="b"), "k='b'"),
    "a parameter the space lacks": (lambda p: p.update(depth=3), "depth"),
    "a searched parameter missing": (lambda p: p.pop("n"), "n is missing"),
    "a constant changed": (lambda p: p.update(epochs=6), "epochs=6"),
    "a constant missing": (lambda p: p.pop("epochs"), "epochs=None"),
    "the constraint violated": (lambda p: p.update(n=8, x=0.99), "constraint"),
}


@pytest.mark.parametrize("case", sorted(PLAIN_MISFITS))
def test_resume_from_a_results_file_names_a_trial_that_does_not_fit_an_unconditional_space(tmp_path, case):
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    study, out = tmp_path / "study.yaml", tmp_path / "r.json"
    study.write_text(PLAIN)
    assert run(study, "-o", out, "-q", "--n-trials", 4).exit_code == 0
    data = json.loads(out.read_text())
    change, fragment = PLAIN_MISFITS[case]
    reordered = dict(reversed(list(data["trials"][1]["params"].items())))  # another order of the same names
    data["trials"][1]["params"] = reordered
    change(data["trials"][2]["params"])
    out.write_text(json.dumps(data))
    result = run(study, "-o", out, "-q", "--resume")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"somatize: {out}: trial 2's params do not fit the study: "), result.stderr
    assert fragment in result.stderr and result.stderr.count("\n") == 1


TIES = """\
import math


def objective(params):
    # Few distinct values, so many trials tie on the best; some infeasible (latency), one NaN.
    if params["n"] == 3 and params["x"] < 0.2:
        return {"v": math.nan, "latency": 1.0}
    return {"v": round(params["x"], 1), "latency": float(params["n"])}
"""


def test_a_resumed_study_is_written_as_a_full_rewrite_would_write_it(tmp_path):
    (tmp_path / "ties.py").write_text(TIES)
    study, out = tmp_path / "study.yaml", tmp_path / "r.json"
    study.write_text(PLAIN.replace("objective:objective", "ties:objective").replace(
        "  - n * x <= 6\n", "  - n * x <= 6\n  - latency <= 6\n").replace(
        "objective: {metric: v, direction: minimize}", "objective: {metric: v, direction: minimize}\n"
        "metrics: [latency]"))
    assert run(study, "-o", out, "-q", "--n-trials", 60).exit_code == 0
    before = json.loads(out.read_text())
    result = run(study, "-o", out, "-q", "--n-trials", 80, "--resume")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    data = json.loads(text)
    assert data["trials"][:60] == before["trials"] and len(data["trials"]) == 80
    # The head as it was always computed: the earliest of the feasible trials with the lowest value.
    feasible = [t for t in data["trials"] if t["state"] == "completed" and t.get("feasible") is not False
                and isinstance(t["values"]["v"], float)]
    lowest = min(t["values"]["v"] for t in feasible)
    assert sum(t["values"]["v"] == lowest for t in feasible) > 1  # a tie, decided by the number
    assert data["best_trial"]["number"] == min(t["number"] for t in feasible if t["values"]["v"] == lowest)
    assert any(t.get("feasible") is False and t["values"]["v"] <= lowest for t in data["trials"])
    # And the whole document as a full rewrite encodes it afresh, trial by trial.
    assert json.loads(results_json(read_results(out))) == data


def test_a_resumed_trial_whose_directory_the_keep_policy_now_removes_is_written_without_it(tmp_path):
    study, out = tmp_path / "study.yaml", tmp_path / "r.json"
    study.write_text("name: kept\nseed: 1\nsearch_space:\n  x: {type: float, low: 0.0, high: 1.0}\n"
                     "strategy: {type: random, n_trials: 4}\nobjective: {metric: v}\n"
                     "executor: {command: [python, -c, \"print('v={x}')\"]}\n")
    assert run(study, "-o", out, "-q").exit_code == 0
    assert all(t["log_dir"] for t in trials_of(out))  # keep: all, the default
    study.write_text(study.read_text().replace("objective:", "trial_dirs: {keep: best, best: 1}\nobjective:"))
    result = run(study, "-o", out, "-q", "--n-trials", 5, "--resume")
    assert result.exit_code == 0, result.output
    trials = trials_of(out)
    kept = {t["id"] for t in trials if t.get("log_dir")}
    on_disk = {p.name for p in (tmp_path / "r.trials").iterdir()}
    assert len(kept) == 1 and kept == on_disk  # the results name only the directory that is still there
