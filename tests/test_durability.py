"""Crashes and signals against a real `somatize run` process."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("durability", ["power", "process"])
def test_kill_9_of_a_seeded_random_study_then_resume_runs_every_planned_trial(tmp_path, durability):
    (tmp_path / "quick.py").write_text(
        "import time\n\ndef objective(params):\n    time.sleep(0.001)\n    return params['x']\n"
    )
    (tmp_path / "long.yaml").write_text(SEEDED_STUDY + f"durability: {durability}\n")
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


# fsync: group commit (durability: power) and its opt-out (durability: process) ----------------

PACED = """\
import time


def objective(params):
    time.sleep(0.004)
    return params["x"]
"""


class DiskLog:
    """os.fsync and os.replace in this process, recorded: which file, how big, in order."""

    def __init__(self, monkeypatch, journal: Path):
        self.journal = journal
        self.events: list[tuple[str, str, int]] = []  # (what, file, journal size then)
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
            real_fsync(fd)

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            size = journal.stat().st_size if journal.exists() else -1
            self.events.append(("replace", str(Path(dst).resolve()), size))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def journal_syncs(self) -> list[int]:
        return [size for what, name, size in self.events if what == "fsync" and name == str(self.journal.resolve())]


def run_paced(tmp_path: Path, monkeypatch, *extra: str):
    from typer.testing import CliRunner

    from somatize.cli import app

    (tmp_path / "paced.py").write_text(PACED)
    (tmp_path / "paced.yaml").write_text(SEEDED_STUDY.replace("quick:objective", "paced:objective"))
    monkeypatch.chdir(tmp_path)
    log = DiskLog(monkeypatch, tmp_path / "r.journal.jsonl")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", "paced.yaml", "-o", "r.json", "-q", "--n-trials", "300", *extra])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    return log, elapsed


def test_the_journal_is_fsynced_in_groups_and_before_the_results_are_written(tmp_path, monkeypatch):
    log, elapsed = run_paced(tmp_path, monkeypatch)
    syncs = log.journal_syncs()
    # One fsync covers every trial of a second: at most one a second, plus the last one at the end.
    assert 1 <= len(syncs) <= elapsed / 1.0 + 2
    assert len(syncs) < 300 / 10  # far fewer than the trials
    assert min(syncs) < max(syncs)  # not only at the end: the run takes over a second (300 trials of 4 ms)
    final = [event for event in log.events if event[0] == "replace"][-1]
    assert final[1] == str((tmp_path / "r.json").resolve())
    journal = str((tmp_path / "r.journal.jsonl").resolve())
    last_sync = [e for e in log.events[: log.events.index(final)] if e[0] == "fsync" and e[1] == journal][-1]
    assert last_sync[2] == final[2] > 0  # the whole journal was durable before the final results file was written
    directory = str(tmp_path.resolve())
    assert any(what == "fsync" and name == directory for what, name, _ in log.events)  # the journal's name too
    assert not (tmp_path / "r.journal.jsonl").exists()


def test_durability_process_never_fsyncs_the_journal(tmp_path, monkeypatch):
    log, _ = run_paced(tmp_path, monkeypatch, "--set", "durability=process")
    assert log.journal_syncs() == []
    assert [e[1] for e in log.events if e[0] == "fsync"] != []  # the results file is still flushed to disk
    assert json.loads((tmp_path / "r.json").read_text())["stop_reason"] == "n_trials"


def test_the_results_file_is_the_same_whatever_the_durability(tmp_path):
    (tmp_path / "quick.py").write_text("def objective(params):\n    return params['x']\n")
    (tmp_path / "long.yaml").write_text(SEEDED_STUDY.replace("n_trials: 1000", "n_trials: 20"))
    fast = SEEDED_STUDY.replace("n_trials: 1000", "n_trials: 20").replace("name: long", "name: fast")
    (tmp_path / "fast.yaml").write_text(fast + "durability: process\n")
    results = {}
    for study in ("long", "fast"):
        done = subprocess.run(["somatize", "run", f"{study}.yaml", "-o", f"{study}.json", "-q"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        results[study] = json.loads((tmp_path / f"{study}.json").read_text())
    power, process = results["long"], results["fast"]
    assert power.keys() == process.keys()
    assert power["study"]["spec"] == {**process["study"]["spec"], "name": "long"}  # durability is not in the spec
    assert [t["params"] for t in power["trials"]] == [t["params"] for t in process["trials"]]
    assert [t.keys() for t in power["trials"]] == [t.keys() for t in process["trials"]]


def test_a_bad_durability_is_one_line_with_its_place(tmp_path):
    (tmp_path / "quick.py").write_text("def objective(params):\n    return params['x']\n")
    (tmp_path / "long.yaml").write_text(SEEDED_STUDY + "durability: disk\n")
    done = subprocess.run(["somatize", "run", "long.yaml", "-o", "r.json", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "long.yaml:8:13: durability must be one of power, process, got 'disk'\n"
    assert not (tmp_path / "r.json").exists()
