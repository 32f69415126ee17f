"""Crashes and signals against a real `somatize run` process."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

STUDY = """\
name: slow
seed: 4
search_space:
  x: {type: float, low: 0.0, high: 1.0}
strategy: {type: random, n_trials: 10}
objective: {metric: y, direction: minimize}
executor:
  command: sleep 0.15; echo y={x}
"""


def start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    (tmp_path / "slow.yaml").write_text(STUDY)
    return subprocess.Popen(
        ["somatize", "run", "slow.yaml", "-o", "r.json", "-q", *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_journal_trials(journal: Path, count: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists():
            lines = journal.read_text().splitlines()[1:]
            if len(lines) >= count:
                return [json.loads(line)["trial"] for line in lines if line.endswith("}")]
        time.sleep(0.02)
    raise AssertionError(f"journal did not reach {count} trials")


def test_kill_9_then_resume_loses_no_finished_trial(tmp_path):
    process = start(tmp_path)
    before = wait_for_journal_trials(tmp_path / "r.journal.jsonl", 4)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    journaled = wait_for_journal_trials(tmp_path / "r.journal.jsonl", len(before))
    resumed = subprocess.run(
        ["somatize", "run", "slow.yaml", "-o", "r.json", "-q", "--resume"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    numbers = [t["number"] for t in trials]
    assert len(numbers) == len(set(numbers)) == 10
    by_id = {t["id"]: t for t in trials}
    for trial in journaled:  # every trial finished before the kill is kept as it was
        assert by_id[trial["id"]]["params"] == trial["params"]
        assert by_id[trial["id"]]["values"] == trial["values"]


def test_sigint_writes_interrupted_results_and_exits_130(tmp_path):
    process = start(tmp_path)
    wait_for_journal_trials(tmp_path / "r.journal.jsonl", 2)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "interrupted" and 2 <= len(data["trials"]) < 10
    assert (tmp_path / "r.journal.jsonl").exists()  # kept for --resume
    assert "Traceback" not in stderr


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    process = start(tmp_path)
    wait_for_journal_trials(tmp_path / "r.journal.jsonl", 1)
    process.terminate()
    process.communicate(timeout=20)
    assert process.returncode == 130
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "interrupted"


SEEDED_STUDY = """\
name: long
seed: 11
search_space:
  x: {type: float, low: 0.0, high: 1.0}
strategy: {type: random, n_trials: 1000}
objective: {metric: y, direction: minimize}
executor: {function: quick:objective}
"""


def test_kill_9_of_a_seeded_random_study_then_resume_runs_every_planned_trial(tmp_path):
    (tmp_path / "quick.py").write_text(
        "import time\n\ndef objective(params):\n    time.sleep(0.001)\n    return params['x']\n"
    )
    (tmp_path / "long.yaml").write_text(SEEDED_STUDY)
    process = subprocess.Popen(["somatize", "run", "long.yaml", "-o", "r.json", "-q"], cwd=tmp_path)
    wait_for_journal_trials(tmp_path / "r.journal.jsonl", 100)  # past the 64 redraws a replayed stream exhausts
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    resumed = subprocess.run(
        ["somatize", "run", "long.yaml", "-o", "r.json", "-q", "--resume"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["stop_reason"] == "n_trials"
    assert [t["number"] for t in data["trials"]] == list(range(1000))
    assert len({t["params"]["x"] for t in data["trials"]}) == 1000


# one run at a time -------------------------------------------------------------------


GATED_STUDY = STUDY.replace(
    "command: sleep 0.15; echo y={x}", "command: while [ ! -e go ]; do sleep 0.02; done; echo y={x}"
)


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path):
    (tmp_path / "slow.yaml").write_text(GATED_STUDY)  # its trials wait for the file `go`
    first = subprocess.Popen(["somatize", "run", "slow.yaml", "-o", "r.json", "-q"], cwd=tmp_path,
                             stderr=subprocess.PIPE, text=True)
    wait_for_journal_trials(tmp_path / "r.journal.jsonl", 0)  # the header: the first run holds the study
    assert (tmp_path / "r.lock").read_text().strip() == str(first.pid)  # the documented lock file, beside the results
    for extra in ([], ["--resume"]):
        second = subprocess.run(
            ["somatize", "run", "slow.yaml", "-o", "r.json", "-q", *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 2
        assert second.stderr == f"somatize: r.json is being written by another somatize run (pid {first.pid})\n"
    (tmp_path / "go").touch()
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    assert [t["number"] for t in trials] == list(range(10))
    assert not (tmp_path / "r.lock").exists() and not (tmp_path / "r.journal.jsonl").exists()


def test_the_lock_of_a_run_killed_with_kill_9_does_not_block_the_next_run(tmp_path):
    first = start(tmp_path)
    wait_for_journal_trials(tmp_path / "r.journal.jsonl", 2)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert (tmp_path / "r.lock").exists()  # left behind, but no live process holds it
    resumed = subprocess.run(
        ["somatize", "run", "slow.yaml", "-o", "r.json", "-q", "--resume"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(json.loads((tmp_path / "r.json").read_text())["trials"]) == 10
    assert not (tmp_path / "r.lock").exists()


# a native crash of an in-process objective --------------------------------------------

ABORTING = """\
import os

calls = 0


def objective(params):
    global calls
    calls += 1
    if calls == 4 and os.environ.get("ABORT_ON_FOURTH"):
        os.abort()  # a native crash: no Python exception, no cleanup
    return params["x"]
"""


def test_a_native_crash_keeps_the_journal_and_the_next_run_says_how_to_resume(tmp_path):
    (tmp_path / "aborting.py").write_text(ABORTING)
    (tmp_path / "crash.yaml").write_text(SEEDED_STUDY.replace("quick:objective", "aborting:objective"))
    argv = ["somatize", "run", "crash.yaml", "-o", "r.json", "-q", "--n-trials", "6"]
    crashed = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "ABORT_ON_FOURTH": "1"})
    assert crashed.returncode == -signal.SIGABRT
    assert len(wait_for_journal_trials(tmp_path / "r.journal.jsonl", 3)) == 3
    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    command = "somatize run crash.yaml -o r.json --n-trials 6 --resume"
    assert again.stderr == (
        f"somatize: r.journal.jsonl holds an unfinished run of this study with 3 finished trials: "
        f"continue it with `{command}`, or write to another file with -o\n"
    )
    resumed = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert [t["number"] for t in json.loads((tmp_path / "r.json").read_text())["trials"]] == list(range(6))
