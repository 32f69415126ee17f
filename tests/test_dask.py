"""The Dask executor against a real local cluster: a scheduler and two one-thread workers."""

from __future__ import annotations

import _thread
import contextlib
import functools
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from somatize.errors import UsageError
from somatize.executors.base import Completed, Failed, Pruned, TrialRequest
from somatize.executors.dask import REPORT_TAIL, DaskExecutor, run_on_worker
from somatize.executors.python import FunctionExecutor
from somatize.executors.shell import ShellExecutor

STARTUP_DEADLINE = 60.0  # generous: a loaded CI machine starting three Python processes
STOP_GRACE = 5.0
SCHEDULER_OPTIONS = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file"]
# One single-threaded worker process per `dask worker`, under its nanny (which restarts a killed worker).
WORKER_OPTIONS = ["--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1", "--no-dashboard"]
WORKER_OPTIONS += ["--memory-limit", "0", "--death-timeout", "30", "--scheduler-file"]

OBJECTIVES = '''
import os
import sys
import time
from pathlib import Path

from somatize import TrialPruned


def square(params, trial):
    for step in range(3):
        trial.report({"value": float(10 - step)}, step=step)
    return {"value": params["x"] ** 2, "pid": os.getpid()}


def nap(params):
    time.sleep(params["sleep"])
    return {"value": 1.0, "pid": os.getpid()}


def boom(params):
    raise ValueError(f"bad x {params['x']}")


def leave(params):
    if params["how"] == "exit":
        sys.exit(3)
    raise KeyboardInterrupt


def give_up(params):
    raise TrialPruned("not promising", step=2)


def descend(params, trial):
    """A learning curve x + 1/(1 + step), a step every `pause` s; leaves a marker of how it ended."""
    marks = Path(params["markers"])
    (marks / f"{trial.number}.started").write_text(str(os.getpid()))
    for step in range(params["steps"]):
        trial.report(params["x"] + 1 / (1 + step), step=step)
        if trial.should_prune():
            (marks / f"{trial.number}.stopped").write_text(str(step))
            raise TrialPruned()
        time.sleep(params["pause"])
    (marks / f"{trial.number}.finished").write_text("")


def chatty(params, trial):
    for step in range(params["reports"]):
        trial.report(float(step), step=step)
    return {"value": -1.0}


def hang_once(params):
    """The first run writes its pid and hangs (to be killed); a rerun returns at once."""
    marker = Path(params["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(60)
    return {"value": 1.0, "pid": os.getpid()}
'''


# The shell twin of dask_objectives:descend: the same curve as JSON lines on stdout.
DESCEND_SCRIPT = '''
import json, os, sys, time
from pathlib import Path

x, marks, number, steps, pause = float(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
(marks / f"{number}.started").write_text(str(os.getpid()))
for step in range(steps):
    print(json.dumps({"step": step, "value": x + 1 / (1 + step)}), flush=True)
    time.sleep(pause)
(marks / f"{number}.finished").write_text("")
'''


class FakeReporter:
    def __init__(self) -> None:
        self.records: list[tuple[str, float, int | None]] = []
        self.lock = threading.Lock()

    def report(self, name: str, value: float, step: int | None = None) -> None:
        with self.lock:
            self.records.append((name, value, step))

    def should_prune(self) -> bool:
        return False


@dataclass
class Cluster:
    address: str
    client: Any  # distributed.Client
    objectives: Path  # directory holding dask_objectives.py

    def worker_pids(self) -> set[int]:
        return set(self.client.run(os.getpid).values())

    def wait_for_workers(self, count: int = 2, deadline: float = STARTUP_DEADLINE) -> None:
        try:
            self.client.wait_for_workers(count, timeout=deadline)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"the Dask cluster did not get {count} workers within {deadline:g} s: {exc}")


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """TERM each process group (a nanny and its worker share one), KILL what is left after a grace."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE
    for process in processes:
        try:
            process.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process, signal.SIGKILL)  # the group's other members too (a worker under its nanny)
        process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # its own session: the group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _logs(root: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in sorted(root.glob("*.log")))


@contextlib.contextmanager
def _local_cluster(root: Path, workers: int) -> Iterator[tuple[Cluster, list[subprocess.Popen[bytes]]]]:
    """A scheduler and `workers` one-thread workers on 127.0.0.1; (the cluster, [scheduler, worker groups...])."""
    objectives = root / "objectives"
    objectives.mkdir(parents=True)
    (objectives / "dask_objectives.py").write_text(OBJECTIVES)
    (objectives / "descend.py").write_text(DESCEND_SCRIPT)
    scheduler_file = root / "scheduler.json"
    # Everything starts at once; the workers wait for the scheduler file.
    processes = [
        _spawn(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", *SCHEDULER_OPTIONS, str(scheduler_file)],
            root / "scheduler.log",
        )
    ]
    client = None
    try:
        for i in range(workers):
            processes.append(
                _spawn(
                    [sys.executable, "-m", "distributed.cli.dask_worker", *WORKER_OPTIONS, str(scheduler_file)]
                    + ["--local-directory", str(root / f"worker{i}")],
                    root / f"worker{i}.log",
                )
            )
        address = _scheduler_address(scheduler_file, processes[0], root)
        client = distributed.Client(address, timeout=30, set_as_default=False)
        running = Cluster(address, client, objectives)
        try:
            client.wait_for_workers(workers, timeout=STARTUP_DEADLINE)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"the Dask workers did not start: {exc}\n{_logs(root)}")
        yield running, processes
    finally:
        if client is not None:
            client.close()
        _stop(processes)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with _local_cluster(tmp_path_factory.mktemp("dask"), workers=2) as (running, _):
        yield running


def _scheduler_address(scheduler_file: Path, scheduler: subprocess.Popen[bytes], root: Path) -> str:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            pytest.fail(f"the Dask scheduler exited with status {scheduler.returncode}\n{_logs(root)}")
        try:
            return str(json.loads(scheduler_file.read_text())["address"])
        except (FileNotFoundError, ValueError, KeyError):  # not written yet, or half written
            time.sleep(0.1)
    pytest.fail(f"the Dask scheduler did not start within {STARTUP_DEADLINE:g} s\n{_logs(root)}")


def request(params: dict[str, Any], number: int = 0) -> TrialRequest:
    return TrialRequest(f"t{number}", number, params, 7, "dask-study")


def executor_for(cluster: Cluster, target: str) -> DaskExecutor:
    return DaskExecutor(cluster.address, functools.partial(FunctionExecutor, target, ["value"], cluster.objectives))


def test_importing_the_module_does_not_import_dask() -> None:
    code = "import sys, somatize.executors.dask; print('distributed' in sys.modules or 'dask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_python_function_trial_runs_on_a_worker(cluster: Cluster) -> None:
    executor = executor_for(cluster, "dask_objectives:square")
    reporter = FakeReporter()
    try:
        executor.connect()
        assert executor.worker_slots() == 2
        outcome = executor.run(request({"x": 3.0}), reporter)
    finally:
        executor.close()
    assert isinstance(outcome, Completed)
    values = {record.name: record.value for record in outcome.metrics}
    assert values["value"] == 9.0
    assert int(values["pid"]) in cluster.worker_pids()
    assert int(values["pid"]) != os.getpid()
    assert executor.placements["t0"].pid == int(values["pid"])
    # trial.report() calls on the worker reach the runner's reporter, in order.
    assert reporter.records == [("value", 10.0, 0), ("value", 9.0, 1), ("value", 8.0, 2)]


def test_shell_trial_runs_on_a_worker_and_replays_its_reports(cluster: Cluster, tmp_path: Path) -> None:
    command = (
        'echo \'{{"step": 1, "loss": 0.5}}\'; echo noise; echo \'{{"step": 2, "loss": 0.4}}\'; '
        'echo "{{\\"loss\\": {lr}, \\"parent\\": $PPID}}"; pwd > where.txt'
    )
    recipe = functools.partial(ShellExecutor, command, ["loss"], tmp_path, {}, 30.0)
    executor = DaskExecutor(cluster.address, recipe)
    reporter = FakeReporter()
    try:
        assert executor.run(request({"lr": 0.25}), reporter) == Completed([])
    finally:
        executor.close()
    parent = reporter.records.pop()
    assert parent[0] == "parent" and int(parent[1]) in cluster.worker_pids()  # the shell's parent is the worker
    assert reporter.records == [("loss", 0.5, 1), ("loss", 0.4, 2), ("loss", 0.25, None)]
    assert (tmp_path / "where.txt").read_text().strip() == str(tmp_path)


def test_failures_come_back_as_outcomes(cluster: Cluster, tmp_path: Path) -> None:
    raising = executor_for(cluster, "dask_objectives:boom")
    pruning = executor_for(cluster, "dask_objectives:give_up")
    missing = executor_for(cluster, "dask_objectives:no_such_function")
    shell = DaskExecutor(
        cluster.address, functools.partial(ShellExecutor, "echo oops >&2; exit 3", ["loss"], tmp_path, {}, 30.0)
    )
    try:
        outcome = raising.run(request({"x": 4}), FakeReporter())
        assert isinstance(outcome, Failed) and outcome.error.startswith("ValueError: bad x 4\n")
        assert pruning.run(request({}), FakeReporter()) == Pruned(2, "not promising")
        outcome = missing.run(request({}), FakeReporter())
        assert isinstance(outcome, Failed) and "has no attribute 'no_such_function'" in outcome.error
        assert shell.run(request({}), FakeReporter()) == Failed("exit status 3: oops")
    finally:
        for executor in (raising, pruning, missing, shell):
            executor.close()


@pytest.mark.parametrize(("how", "error"), [("exit", "objective called sys.exit(3)"),
                                           ("interrupt", "objective raised KeyboardInterrupt")])
def test_sys_exit_and_keyboard_interrupt_on_a_worker_fail_the_trial(cluster: Cluster, how: str, error: str) -> None:
    executor = executor_for(cluster, "dask_objectives:leave")
    try:
        outcome = executor.run(request({"how": how}), FakeReporter())
    finally:
        executor.close()
    assert isinstance(outcome, Failed) and outcome.error.splitlines()[0] == error, outcome


def test_unreachable_scheduler_is_a_usage_error(tmp_path: Path) -> None:
    recipe = functools.partial(ShellExecutor, "true", ["loss"], tmp_path, {}, None)
    closed_port = _closed_port()
    executor = DaskExecutor(f"tcp://127.0.0.1:{closed_port}", recipe, connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(UsageError) as info:
        executor.connect()
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(f"cannot reach the Dask scheduler at tcp://127.0.0.1:{closed_port}: ")
    assert "\n" not in message
    # A run without connect() first fails the trial with the same message, and does not raise.
    assert DaskExecutor("nonsense", recipe).run(request({}), FakeReporter()) == Failed(
        "cannot reach the Dask scheduler at nonsense: missing port number in address 'nonsense'"
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: nothing listens there


def test_two_threads_run_two_trials_at_once_on_different_workers(cluster: Cluster) -> None:
    executor = executor_for(cluster, "dask_objectives:nap")
    executor.connect()
    executor.run(request({"sleep": 0.0}, 99), FakeReporter())  # the first trial imports the module
    outcomes: dict[int, Any] = {}

    def trial(number: int) -> None:
        outcomes[number] = executor.run(request({"sleep": 1.0}, number), FakeReporter())

    threads = [threading.Thread(target=trial, args=(n,)) for n in (1, 2)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        executor.close()
    elapsed = time.monotonic() - started
    assert all(isinstance(outcomes[n], Completed) for n in (1, 2)), outcomes
    pids = {executor.placements[f"t{n}"].pid for n in (1, 2)}
    assert len(pids) == 2 and pids <= cluster.worker_pids()
    assert elapsed < 1.9, f"two 1 s trials on two workers took {elapsed:.2f} s"


def _kill_when_started(marker: Path) -> int:
    deadline = time.monotonic() + 20
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "the trial never started"
        time.sleep(0.05)
    pid = int(marker.read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


def _run_and_kill_its_worker(executor: Any, marker: Path) -> tuple[Any, int]:
    """Run a hang_once trial, kill the worker it started on; (its outcome, the killed pid)."""
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(executor.run(request({"marker": str(marker)}), FakeReporter()))
    )
    thread.start()
    killed = _kill_when_started(marker)
    thread.join(30)
    assert outcome, "run did not return after its worker died"
    return outcome[0], killed


def test_a_trial_whose_worker_dies_reruns_on_another(cluster: Cluster, tmp_path: Path) -> None:
    executor = executor_for(cluster, "dask_objectives:hang_once")
    try:
        outcome, killed = _run_and_kill_its_worker(executor, tmp_path / "started")
        assert isinstance(outcome, Completed), outcome
        assert executor.placements["t0"].pid != killed
    finally:
        executor.close()
    cluster.wait_for_workers(2)  # the nanny restarts the killed worker


def test_a_trial_whose_worker_dies_fails_when_dask_allows_no_retries(cluster: Cluster, tmp_path: Path) -> None:
    executor = executor_for(cluster, "dask_objectives:hang_once")
    previous = cluster.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    cluster.client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
    try:
        outcome, _ = _run_and_kill_its_worker(executor, tmp_path / "started")
        assert isinstance(outcome, Failed), outcome
        assert outcome.error.startswith("worker died: 1 worker(s) died while running this trial, the last tcp://")
        assert "\n" not in outcome.error
    finally:
        executor.close()
        cluster.client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", previous))
    cluster.wait_for_workers(2)


CLUSTER_STUDY = """\
name: on-the-cluster
seed: 5
search_space:
  x: {{type: float, low: 0.0, high: 1.0}}
  sleep: 0.3
strategy: {{type: random, n_trials: 10}}
objective: {{metric: value, direction: minimize}}
output: {output}
executor:
  function: dask_objectives:nap
"""


def test_run_through_cluster_finishes_when_a_worker_is_killed_mid_study(cluster: Cluster, tmp_path: Path) -> None:
    # The study file sits beside dask_objectives.py, which the workers import from there.
    study = cluster.objectives / "cluster_study.yaml"
    results = tmp_path / "r.json"
    study.write_text(CLUSTER_STUDY.format(output=json.dumps(str(results))))
    worker_pids = cluster.worker_pids()
    process = subprocess.Popen(
        [sys.executable, "-m", "somatize", "run", str(study), "--cluster", cluster.address, "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    journal = tmp_path / "r.journal.jsonl"
    deadline = time.monotonic() + 60
    while not journal.exists() or len(journal.read_text().splitlines()) < 3:  # the header and two trials
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.kill(min(worker_pids), signal.SIGKILL)  # mid-study: the other worker is busy too
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    trials = json.loads(results.read_text())["trials"]
    assert [t["number"] for t in trials] == list(range(10))
    assert all(t["state"] == "completed" for t in trials), [t["error"] for t in trials]
    ran_on = {next(m["value"] for m in t["metrics"] if m["name"] == "pid") for t in trials}
    assert os.getpid() not in ran_on and process.pid not in ran_on
    assert ran_on & worker_pids  # trials ran in the worker processes (the restarted one has a new pid)
    cluster.wait_for_workers(2)


def test_a_cluster_left_without_workers_stops_the_study_with_results(tmp_path: Path) -> None:
    # A cluster of its own: its one worker is killed with its nanny, so nobody brings it back.
    with _local_cluster(tmp_path / "cluster", workers=1) as (lonely, processes):
        study = lonely.objectives / "cluster_study.yaml"
        results = tmp_path / "r.json"
        study.write_text(CLUSTER_STUDY.format(output=json.dumps(str(results))).replace("sleep: 0.3", "sleep: 30"))
        process = subprocess.Popen(
            [sys.executable, "-m", "somatize", "run", str(study), "--cluster", lonely.address, "-q",
             "--set", "cluster_worker_timeout=1", "--set", "parallel=2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not lonely.client.processing() or not any(lonely.client.processing().values()):
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.05)
            _signal_group(processes[1], signal.SIGKILL)  # the nanny and its worker
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 1, stderr
    assert "study stopped (executor_lost); last error: no Dask workers left: none for 1 s" in stderr
    data = json.loads(results.read_text())
    assert data["status"] == "failed"
    assert [t["error"] for t in data["trials"]] == ["no Dask workers left: none for 1 s"] * 2


def test_cluster_address_that_nobody_answers_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(CLUSTER_STUDY.format(output="r.json"))
    done = subprocess.run(
        [sys.executable, "-m", "somatize", "run", "s.yaml", "--cluster", f"tcp://127.0.0.1:{_closed_port()}",
         "--set", "executor.function=x:y"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("somatize: cannot reach the Dask scheduler at tcp://127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()


def test_recipes_for_both_local_executors_pickle(tmp_path: Path) -> None:
    for recipe in (
        functools.partial(FunctionExecutor, "objectives:branin", ["value"], tmp_path),
        functools.partial(ShellExecutor, "python train.py --lr {lr}", ["loss"], tmp_path, {}, 30.0),
    ):
        assert isinstance(pickle.loads(pickle.dumps(recipe))(), type(recipe()))


def test_every_report_of_a_chatty_trial_reaches_the_runner_in_order(cluster: Cluster) -> None:
    executor = executor_for(cluster, "dask_objectives:chatty")
    reporter = FakeReporter()
    try:
        outcome = executor.run(request({"reports": 3000}), reporter)
    finally:
        executor.close()
    assert isinstance(outcome, Completed) and [(r.name, r.value) for r in outcome.metrics] == [("value", -1.0)]
    assert reporter.records == [("value", float(step), step) for step in range(3000)]


def test_a_task_keeps_only_its_last_reports(cluster: Cluster) -> None:
    # Outside a Dask worker nothing is streamed: the tail the task returns is all the client could get.
    recipe = pickle.dumps(functools.partial(FunctionExecutor, "dask_objectives:chatty", ["value"], cluster.objectives))
    outcome, sent, tail, _ = run_on_worker(recipe, request({"reports": 20_000}))
    assert isinstance(outcome, Completed)
    assert sent == 20_000
    assert tail == [(seq, "value", float(seq), seq) for seq in range(20_000 - REPORT_TAIL, 20_000)]


DESCEND_STUDY = """\
name: descend
seed: 3
search_space:
  x: {{type: float, low: 0.0, high: 1.0}}
  markers: {markers}
  steps: {steps}
  pause: {pause}
strategy: {{type: grid, points_per_dim: 5}}
objective: {{metric: value, direction: minimize}}
{pruning}
executor:
  {executor}
"""
EXECUTORS = {
    "function": "function: dask_objectives:descend",
    "shell": f"command: [{json.dumps(sys.executable)}, descend.py, '{{x}}', '{{markers}}', '{{trial_number}}', '{{steps}}', '{{pause}}']",
}
# Grid order is ascending x: from the third trial on, each is worse than both first ones at every step, so the
# median rule prunes it at step 2 whether the others finished (one at a time) or still run (two at once).
PRUNING = "pruning: {type: median, warmup_steps: 2, min_trials: 2}"


def _descend_study(
    cluster: Cluster, tmp_path: Path, kind: str, steps: int, pause: float, pruning: str, name: str
) -> Path:
    markers = tmp_path / f"{name}-markers"
    markers.mkdir()
    study = cluster.objectives / f"{tmp_path.name}-{name}.yaml"  # beside the objectives, which it imports
    study.write_text(
        DESCEND_STUDY.format(
            markers=json.dumps(str(markers)), steps=steps, pause=pause, pruning=pruning, executor=EXECUTORS[kind]
        )
    )
    return study


def _somatize(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "somatize", "run", *map(str, args), "-q"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("kind", ["function", "shell"])
def test_pruning_on_the_cluster_stops_at_least_as_many_trials_as_locally(
    cluster: Cluster, tmp_path: Path, kind: str
) -> None:
    runs = {}
    for where, extra in (("local", []), ("cluster", ["--cluster", cluster.address])):  # both at once: faster
        study = _descend_study(cluster, tmp_path, kind, 20, 0.05, PRUNING, where)
        command = _somatize(study, "-o", tmp_path / f"{where}.json", *extra)
        runs[where] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pruned: dict[str, list[dict[str, Any]]] = {}
    for where, process in runs.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        trials = json.loads((tmp_path / f"{where}.json").read_text())["trials"]
        assert len(trials) == 5
        pruned[where] = [t for t in trials if t["state"] == "pruned"]
    assert pruned["local"], "the local run pruned nothing: the study does not exercise pruning"
    assert len(pruned["cluster"]) >= len(pruned["local"])
    markers = tmp_path / "cluster-markers"
    for trial in pruned["cluster"]:
        number = trial["number"]
        assert trial["reason"].startswith("above median of "), trial
        # Stopped live: reports after the verdict are ignored, and the trial never reached its end.
        assert max(m["step"] for m in trial["metrics"]) == trial["pruned_step"] < 19
        assert not (markers / f"{number}.finished").exists()
        if kind == "function":  # trial.should_prune() turned true on the worker
            assert int((markers / f"{number}.stopped").read_text()) < 19
        else:  # the trial's process was ended: its pid is gone though it had seconds to go
            assert not _alive(int((markers / f"{number}.started").read_text()))


# 30 s a trial: a function that asks should_prune() every step; a shell trial silent after its first step,
# so that nothing but the stop from the client can end it.
@pytest.mark.parametrize(("kind", "steps", "pause"), [("function", 600, 0.05), ("shell", 2, 30.0)])
def test_interrupting_a_cluster_run_stops_its_trials_on_the_workers(
    cluster: Cluster, tmp_path: Path, kind: str, steps: int, pause: float
) -> None:
    study = _descend_study(cluster, tmp_path, kind, steps, pause, "", "interrupted")
    markers = tmp_path / "interrupted-markers"
    results = tmp_path / "r.json"
    process = subprocess.Popen(
        _somatize(study, "-o", results, "--cluster", cluster.address),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(markers.glob("*.started"))) < 2:  # one trial on each worker
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert json.loads(results.read_text())["status"] == "interrupted"
    started = {int(path.stem): int(path.read_text()) for path in markers.glob("*.started")}
    deadline = time.monotonic() + 20  # well short of the 30 s the trials would run
    if kind == "function":  # each function saw trial.should_prune() turn true and returned
        while not all((markers / f"{n}.stopped").exists() for n in started):
            assert time.monotonic() < deadline, sorted(p.name for p in markers.iterdir())
            time.sleep(0.05)
    else:  # each shell trial's process was ended
        while any(_alive(pid) for pid in started.values()):
            assert time.monotonic() < deadline, "a shell trial runs on after the interrupt"
            time.sleep(0.05)
    assert not list(markers.glob("*.finished"))
    cluster.wait_for_workers(2)


def test_an_interrupt_while_waiting_for_a_trial_stops_it_on_its_worker(cluster: Cluster, tmp_path: Path) -> None:
    # One trial at a time (a one-thread cluster): Ctrl-C reaches the thread waiting in run(), not cancel().
    executor = executor_for(cluster, "dask_objectives:descend")
    params = {"x": 0.0, "markers": str(tmp_path), "steps": 600, "pause": 0.05}  # 30 s

    def interrupt_once_started() -> None:
        deadline = time.monotonic() + 30
        while not (tmp_path / "0.started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_started, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            executor.run(request(params), FakeReporter())
    finally:
        executor.close()
    deadline = time.monotonic() + 20
    while not (tmp_path / "0.stopped").exists():  # trial.should_prune() turned true on the worker
        assert time.monotonic() < deadline, sorted(p.name for p in tmp_path.iterdir())
        time.sleep(0.05)
    assert not (tmp_path / "0.finished").exists()


class PruneAtOnce(FakeReporter):
    def should_prune(self) -> bool:
        return bool(self.records)  # the first step's report prunes the trial


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie left to a parent that does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="setsid(1) and /proc")
@pytest.mark.parametrize("how", ["pruned", "interrupted"])
def test_a_setsid_child_of_a_shell_trial_on_a_worker_ends_with_the_trial(
    cluster: Cluster, tmp_path: Path, how: str
) -> None:
    command = (
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > escaped; "
        "echo '{{\"step\": 0, \"loss\": 1}}'; sleep 300"
    )
    executor = DaskExecutor(cluster.address, functools.partial(ShellExecutor, command, ["loss"], tmp_path, {}, 120.0))
    escaped = tmp_path / "escaped"
    outcomes: list[Any] = []
    try:
        if how == "pruned":
            outcomes.append(executor.run(request({}), PruneAtOnce()))
        else:
            runner = threading.Thread(target=lambda: outcomes.append(executor.run(request({}), FakeReporter())))
            runner.start()
            deadline = time.monotonic() + 30
            while not escaped.exists():
                assert time.monotonic() < deadline, "the trial did not start"
                time.sleep(0.05)
            time.sleep(0.2)  # its report is out: the trial is past its start
            executor.cancel()
            runner.join(30)
    finally:
        executor.close()
    expected = Pruned(0, "pruned at step 0") if how == "pruned" else Failed("cancelled: the study was interrupted")
    assert outcomes == [expected]
    pid = int(escaped.read_text())
    deadline = time.monotonic() + 10  # the sleep had 300 s to go
    while _running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the trial's setsid child {pid} outlived the {how} trial on its worker")
        time.sleep(0.05)


def test_cancel_makes_waiting_runs_return(cluster: Cluster) -> None:
    # Last in the file: the cancelled naps keep the workers busy until they end (Dask cannot stop a running task).
    executor = executor_for(cluster, "dask_objectives:nap")
    outcomes: list[Any] = []
    threads = [
        threading.Thread(target=lambda n=n: outcomes.append(executor.run(request({"sleep": 3.0}, n), FakeReporter())))
        for n in range(3)  # one more than the workers: a queued task too
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        executor.cancel()
        for thread in threads:
            thread.join(10)
        assert time.monotonic() - started < 1.5
        assert outcomes == [Failed("cancelled: the study was interrupted")] * 3
        assert executor.run(request({"sleep": 0.0}), FakeReporter()) == Failed("cancelled: the study was interrupted")
    finally:
        executor.close()
        executor.close()  # idempotent


def test_a_function_on_a_worker_makes_its_trial_directory_only_when_it_prints(cluster: Cluster, tmp_path: Path) -> None:
    # `square` prints nothing; a chatty function writes to stdout: only its directory is made.
    (cluster.objectives / "dask_chatty.py").write_text("def talk(params):\n    print('hi')\n    return params['x']\n")
    root = tmp_path / "r.trials"
    quiet = executor_for(cluster, "dask_objectives:square")
    chatty = executor_for(cluster, "dask_chatty:talk")
    try:
        for number, executor in enumerate((quiet, chatty)):
            executor.connect()
            trial = TrialRequest(f"t{number}", number, {"x": 2.0}, 7, "dask-study", trial_dir=str(root / f"t{number}"))
            assert isinstance(executor.run(trial, FakeReporter()), Completed)
    finally:
        quiet.close()
        chatty.close()
    assert sorted(p.name for p in root.iterdir()) == ["t1"]  # the cluster shares this file system
    assert (root / "t1" / "stdout.txt").read_text() == "hi\n"
