"""Trial processes against a real `somatize run`: how objectives end, and that nothing outlives its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXITS = """\
import os, sys, time
from pathlib import Path

def objective(params):
    how = params["how"]
    if how == "exit3":
        sys.exit(3)
    if how == "exit0":
        sys.exit(0)
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "abort":
        os.abort()
    if how == "wait":
        Path("started").write_text(str(os.getpid()))
        time.sleep(30)
    return {"y": 1.0}
"""

EXITS_STUDY = """\
name: exits
search_space:
  how: {hows}
strategy: {{type: grid}}
objective: {{metric: y, direction: minimize}}
max_consecutive_failures: null
executor:
  function: exits:objective
"""

EXPECTED_ERRORS = {
    "ok": None,
    "exit3": "objective called sys.exit(3)",
    "exit0": "objective called sys.exit(0)",
    "interrupt": "objective raised KeyboardInterrupt",
    "abort": "worker process died from SIGABRT",
}


def exits_study(tmp_path: Path, hows: list[str]) -> None:
    (tmp_path / "exits.py").write_text(EXITS)
    (tmp_path / "exits.yaml").write_text(EXITS_STUDY.format(hows=json.dumps(hows)))


def run_somatize(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "somatize", "run", *args, "-o", "r.json", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "options",
    [[], ["-j", "2"], ["--set", "executor.timeout=30"]],
    ids=["in-process", "workers", "worker-with-timeout"],
)
def test_sys_exit_and_keyboard_interrupt_of_an_objective_fail_its_trial(tmp_path: Path, options: list[str]) -> None:
    hows = ["ok", "exit3", "exit0", "interrupt"] + (["abort"] if options else [])  # abort in process kills somatize
    exits_study(tmp_path, hows)
    done = run_somatize(tmp_path, "exits.yaml", *options)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "completed"
    errors = {t["params"]["how"]: t["error"] and t["error"].splitlines()[0] for t in data["trials"]}
    assert errors == {how: EXPECTED_ERRORS[how] for how in hows}


def test_a_native_crash_of_an_in_process_objective_ends_somatize_and_keeps_the_journal(tmp_path: Path) -> None:
    exits_study(tmp_path, ["ok", "abort"])
    done = run_somatize(tmp_path, "exits.yaml")
    assert done.returncode == -signal.SIGABRT  # a shell shows 134
    assert not (tmp_path / "r.json").exists()
    lines = (tmp_path / "r.journal.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["trial"]["state"] == "completed"  # the header and trial 0


def test_ctrl_c_still_interrupts_an_in_process_objective(tmp_path: Path) -> None:
    exits_study(tmp_path, ["ok", "wait", "exit3"])
    process = subprocess.Popen(
        [sys.executable, "-m", "somatize", "run", "exits.yaml", "-o", "r.json", "-q"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: (tmp_path / "started").exists() or process.poll() is not None, "the objective never started")
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "interrupted"
    assert [t["params"]["how"] for t in data["trials"]] == ["ok"]


def wait_until(condition, message: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)
