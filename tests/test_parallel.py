"""N trials in flight: the runner's parallel loop, worker processes, shell trials, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from somatize import (
    CategoricalDimension,
    EventBus,
    FloatDimension,
    IntDimension,
    Objective,
    SearchSpace,
    StopConditions,
    Study,
    StudyRunner,
    TrialState,
    make_sampler,
)
from somatize.events import StudyProgress, TrialCompleted, TrialStarted


class Concurrency:
    """Counts how many trials run at the same moment."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def run_parallel(function_of, space, strategy, fn, parallel, stop=None, seed=0):
    study = Study("p", space, [Objective("y")], strategy)
    bus = EventBus()
    events = []
    bus.subscribe(events.append)
    sampler = make_sampler(strategy, space, study.primary, seed)
    StudyRunner(study, sampler, function_of("y", fn), bus, stop or StopConditions(), seed, parallel).run()
    return study, events


def test_parallel_runner_keeps_n_trials_in_flight_and_records_each_once(function_of):
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))
    concurrency = Concurrency()

    def slow(params):
        with concurrency:
            time.sleep(0.05)
        return params["x"]

    study, events = run_parallel(function_of, space, {"type": "random", "n_trials": 12}, slow, 3)
    assert concurrency.peak == 3
    assert [t.number for t in study.trials] == list(range(12))
    assert all(t.state is TrialState.COMPLETED for t in study.trials)
    started = [e.trial_id for e in events if isinstance(e, TrialStarted)]
    finished = [e.trial_id for e in events if isinstance(e, TrialCompleted)]
    assert sorted(started) == sorted(finished) == sorted(t.id for t in study.trials)
    assert [e.completed for e in events if isinstance(e, StudyProgress)] == list(range(1, 13))
    assert study.status == "completed" and study.stop_reason == "n_trials"


def test_parallel_runner_stops_on_failures_without_losing_running_trials(function_of):
    space = SearchSpace((FloatDimension("x", 0.0, 1.0),))

    def broken(params):
        time.sleep(0.01)
        raise RuntimeError("boom")

    study, _ = run_parallel(
        function_of, space, {"type": "random", "n_trials": 50}, broken, 4, StopConditions(max_failures=5)
    )
    assert study.status == "failed" and study.stop_reason == "max_failures"
    # Trials already in flight when the limit was hit finish and are kept.
    assert 5 <= len(study.trials) <= 8
    assert all("boom" in (t.error or "") for t in study.trials)


@pytest.mark.parametrize("strategy", ["random", "bayesian"])
def test_parallel_proposals_never_repeat_in_a_discrete_space(function_of, strategy):
    space = SearchSpace((IntDimension("a", 0, 4), CategoricalDimension("b", ("p", "q", "r"))))

    def slow(params):
        time.sleep(0.01)
        return params["a"] + len(params["b"])

    options = {"type": strategy, "n_trials": 15}
    if strategy == "bayesian":
        options["n_initial"] = 4
    study, _ = run_parallel(function_of, space, options, slow, 3)
    keys = [(t.params["a"], t.params["b"]) for t in study.trials]
    assert len(keys) == len(set(keys)) == 15


# Command line ------------------------------------------------------------------------------

OBJECTIVE = """\
import os, signal, sys, time

def objective(params):
    if params["x"] > 0.8 and params.get("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(params.get("sleep", 0))
    print("chatter from the objective")
    return {"y": params["x"], "pid": os.getpid(), "omp": float(os.environ.get("OMP_NUM_THREADS", "-1"))}
"""


def function_study(tmp_path: Path, n_trials: int = 8, extra: str = "", constants: str = "") -> Path:
    (tmp_path / "obj.py").write_text(OBJECTIVE)
    (tmp_path / "f.yaml").write_text(
        f"""\
name: f
seed: 1
search_space:
  x: {{type: float, low: 0.0, high: 1.0}}
{constants}strategy: {{type: random, n_trials: {n_trials}}}
objective: {{metric: y, direction: minimize}}
executor:
  function: obj:objective
{extra}"""
    )
    return tmp_path / "f.yaml"


def somatize(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["somatize", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_jobs_runs_python_functions_in_worker_processes_with_thread_caps(tmp_path):
    function_study(tmp_path, constants="  sleep: 0.3\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        ["somatize", "run", "f.yaml", "-j", "2", "-o", "-", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # prints of the objective did not end up in the results
    assert "chatter from the objective" in done.stderr
    trials = data["trials"]
    assert [t["number"] for t in trials] == list(range(8))
    pids = {t["values"].get("pid") or next(m["value"] for m in t["metrics"] if m["name"] == "pid") for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids
    expected = max(1, (os.cpu_count() or 1) // 2)
    assert {next(m["value"] for m in t["metrics"] if m["name"] == "omp") for t in trials} == {expected}


def test_a_thread_variable_the_user_set_is_left_alone(tmp_path):
    function_study(tmp_path, n_trials=2)
    done = somatize("run", "f.yaml", "-j", "2", "-o", "-", "-q", cwd=tmp_path, env={"OMP_NUM_THREADS": "3"})
    assert done.returncode == 0, done.stderr
    values = [m["value"] for t in json.loads(done.stdout)["trials"] for m in t["metrics"] if m["name"] == "omp"]
    assert values == [3.0, 3.0]


def test_a_worker_that_dies_fails_its_trial_and_the_study_goes_on(tmp_path):
    function_study(tmp_path, n_trials=10, constants="  crash: true\n")
    done = somatize("run", "f.yaml", "-j", "2", "-o", "r.json", "-q", cwd=tmp_path)
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    failed = [t for t in trials if t["state"] == "failed"]
    assert failed and all(t["params"]["x"] > 0.8 for t in failed)
    assert all("worker process died from SIGKILL" in t["error"] for t in failed)
    assert len(trials) == 10 and done.returncode == 0, done.stderr


def test_function_timeout_kills_the_worker(tmp_path):
    function_study(tmp_path, n_trials=2, constants="  sleep: 30\n", extra="  timeout: 0.5\n")
    started = time.monotonic()
    done = somatize("run", "f.yaml", "-o", "r.json", "-q", "--set", "max_consecutive_failures=2", cwd=tmp_path)
    assert time.monotonic() - started < 20
    assert done.returncode == 1
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    assert [t["error"] for t in trials] == ["timeout after 0.5 s"] * 2


SHELL_STUDY = """\
name: s
seed: 2
search_space:
  x: {{type: float, low: 0.0, high: 1.0}}
strategy: {{type: random, n_trials: {n}}}
objective: {{metric: y, direction: minimize}}
executor:
  command: {command}
"""


def shell_study(tmp_path: Path, command: str, n: int = 6) -> None:
    (tmp_path / "s.yaml").write_text(SHELL_STUDY.format(command=json.dumps(command), n=n))


def test_jobs_runs_shell_trials_at_the_same_time(tmp_path):
    # Each trial notes when it started and ended; with -j 3 they overlap.
    shell_study(tmp_path, "date +%s.%N >> spans.{trial_number}; sleep 0.4; date +%s.%N >> spans.{trial_number}; "
                "echo y={x}")
    done = somatize("run", "s.yaml", "-j", "3", "-o", "r.json", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spans = [tuple(map(float, (tmp_path / f"spans.{n}").read_text().split())) for n in range(6)]
    overlapping = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert overlapping == 3
    data = json.loads((tmp_path / "r.json").read_text())
    assert [t["id"] for t in data["trials"]] == [f"trial_{n:04d}" for n in range(6)]


def leftover(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return found.stdout.split()


def wait_for(path: Path, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} entries")


def test_ctrl_c_with_jobs_ends_every_running_trial(tmp_path):
    marker = f"somatize-par-{os.getpid()}"
    shell_study(tmp_path, f"echo {{trial_number}} >> started; {sys.executable} -c 'import time; time.sleep(30)' {marker}",
                n=4)
    process = subprocess.Popen(
        ["somatize", "run", "s.yaml", "-j", "2", "-o", "r.json", "-q"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(tmp_path / "started", 2)
    time.sleep(0.2)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "interrupted" and data["trials"] == []  # in-flight trials rerun on --resume
    assert leftover(marker) == []


def test_second_ctrl_c_exits_at_once_and_keeps_the_journal(tmp_path):
    # The trial ignores SIGTERM, so the first Ctrl-C waits out the kill grace;
    # the second one must not.
    marker = f"somatize-stubborn-{os.getpid()}"
    shell_study(
        tmp_path,
        f"if [ {{trial_number}} -lt 2 ]; then echo y={{x}}; exit 0; fi; trap '' TERM; echo go >> started; "
        f"{sys.executable} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)' "
        f"{marker}",
        n=5,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "somatize", "run", "s.yaml", "-o", "r.json", "-q"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(tmp_path / "started", 1)
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGINT)
    time.sleep(0.2)
    interrupted_again = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert time.monotonic() - interrupted_again < 1.0
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted again" in stderr
    lines = (tmp_path / "r.journal.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the header and the two trials that finished
    assert leftover(marker) == []
