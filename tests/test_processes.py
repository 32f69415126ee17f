"""Trial processes against a real `somatize run`: how objectives end, and that nothing outlives its owner."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
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


# Nothing outlives its trial or somatize ----------------------------------------------------------

MARK = "SOMATIZE_TEST_MARK"

SHELL_STUDY = """\
name: lifetimes
search_space:
  x: [0, 1, 2, 3, 4, 5, 6, 7]
strategy: {{type: grid}}
objective: {{metric: y, direction: minimize}}
executor:
  command: {command}
"""

NAPS = """\
import os, time

def nap(params):
    with open("started", "a") as out:
        out.write(f"{os.getpid()}\\n")
    time.sleep(1234.5)
    return 1.0
"""


def marked(marker: str) -> list[int]:
    """Live processes whose environment carries the marker (scanning /proc); zombies have none."""
    wanted = f"{MARK}={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as handle:
                    if wanted in handle.read().split(b"\0"):
                        found.append(int(name))
            except OSError:  # gone, or not ours
                continue
    return found


def none_left(marker: str, within: float = 5.0) -> list[int]:
    """The marked processes still there after `within` seconds (an empty list as soon as none are)."""
    deadline = time.monotonic() + within
    while (left := marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def commands(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return out


def start_somatize(tmp_path: Path, study: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`somatize run` with a unique marker in its environment; stderr goes to a file, never to a pipe
    that processes left behind would hold open."""
    marker = uuid.uuid4().hex
    with (tmp_path / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "somatize", "run", study, "-o", "r.json", "-q", *args],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, MARK: marker},
        )
    return process, marker


def started(tmp_path: Path, count: int, process: subprocess.Popen[bytes]) -> None:
    path = tmp_path / "started"
    wait_until(lambda: (path.exists() and len(path.read_text().split()) >= count) or process.poll() is not None,
               f"{count} trials never started")
    assert process.poll() is None, (tmp_path / "stderr").read_text()


@pytest.mark.parametrize(
    ("kind", "jobs"), [("shell", 1), ("shell", 4), ("function", 2)], ids=["shell-j1", "shell-j4", "functions-j2"]
)
def test_kill_9_of_somatize_ends_every_trial_process(tmp_path: Path, kind: str, jobs: int) -> None:
    if kind == "shell":
        command = "echo $$ >> started; sleep 1234.5; echo y={x}"
        (tmp_path / "s.yaml").write_text(SHELL_STUDY.format(command=json.dumps(command)))
    else:
        (tmp_path / "naps.py").write_text(NAPS)
        study = SHELL_STUDY.format(command="null").replace("command: null", "function: naps:nap")
        (tmp_path / "s.yaml").write_text(study)
    process, marker = start_somatize(tmp_path, "s.yaml", "-j", str(jobs))
    started(tmp_path, jobs, process)
    assert len(marked(marker)) > jobs  # somatize and its trial processes
    process.kill()
    process.wait(10)
    left = none_left(marker)
    assert left == [], commands(left)


def test_a_setsid_child_of_a_finished_trial_ends_with_the_trial(tmp_path: Path) -> None:
    command = (
        "if [ {x} = 0 ]; then setsid sleep 1234.6 </dev/null >/dev/null 2>&1 & echo $! > escaped; echo y=0; "
        "else echo $$ >> started; sleep 1234.5; fi"
    )
    (tmp_path / "s.yaml").write_text(SHELL_STUDY.format(command=json.dumps(command)))
    process, marker = start_somatize(tmp_path, "s.yaml")
    try:
        started(tmp_path, 1, process)  # trial 0 is over: trial 1 runs
        escaped = int((tmp_path / "escaped").read_text())
        deadline = time.monotonic() + 5
        while escaped in marked(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert escaped not in marked(marker), commands([escaped])
    finally:
        process.terminate()
        process.wait(20)
    assert none_left(marker) == []


def test_sighup_is_handled_like_sigterm(tmp_path: Path) -> None:
    command = "if [ {x} = 0 ]; then echo y=0; else echo $$ >> started; sleep 1234.5; fi"
    (tmp_path / "s.yaml").write_text(SHELL_STUDY.format(command=json.dumps(command)))
    process, marker = start_somatize(tmp_path, "s.yaml")
    started(tmp_path, 1, process)
    process.send_signal(signal.SIGHUP)  # the terminal was closed
    assert process.wait(20) == 130, (tmp_path / "stderr").read_text()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "interrupted" and [t["params"]["x"] for t in data["trials"]] == [0]
    assert none_left(marker) == []


def test_closing_the_terminal_stops_like_sigterm_with_results_written(tmp_path: Path) -> None:
    import pty
    import select

    command = "if [ {x} = 0 ]; then echo y=0; else echo $$ >> started; sleep 1234.5; fi"
    (tmp_path / "s.yaml").write_text(SHELL_STUDY.format(command=json.dumps(command)))
    marker = uuid.uuid4().hex
    argv = [sys.executable, "-m", "somatize", "run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "r.json")]
    pid, terminal = pty.fork()  # somatize on a terminal of its own: the live table draws on it
    if pid == 0:
        os.chdir(tmp_path)
        os.execve(sys.executable, argv, {**os.environ, MARK: marker})
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the second trial never started"
            if select.select([terminal], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):
                    os.read(terminal, 65536)  # keep the terminal drained
    finally:
        os.close(terminal)  # the terminal is closed: somatize gets SIGHUP, and every write to it fails
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "interrupted" and [t["params"]["x"] for t in data["trials"]] == [0]
    assert none_left(marker) == []
