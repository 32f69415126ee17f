"""The warm command server of `ask`/`tell`/`heartbeat` (somatize.server, somatize.client), through real processes.

Every test here turns the server on (conftest.py turns it off for the rest of the suite) in a private
directory of its own, and stops it at the end; `_no_server_left` checks that no server process remains.
Waits poll with a generous deadline (the machine may be loaded); nothing asserts on a duration.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
# No empty entry: it would stand for the working directory, and a server serves only its own sys.path.
BASE = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
SOMATIZE = [sys.executable, "-m", "somatize"]
WAIT = 120.0  # seconds: a deadline for things that happen in well under a second on an idle machine


def study_file(directory: Path, strategy: str = "random", n_trials: int = 4) -> Path:
    kinds = {"random": f"{{type: random, n_trials: {n_trials}}}",
             "bayesian": f"{{type: bayesian, n_trials: {n_trials}, n_initial: 2}}"}
    path = directory / "study.yaml"
    path.write_text(
        "name: warm\nseed: 11\nsearch_space:\n  x: {type: float, low: -4.0, high: 4.0}\n  k: [a, bb]\n"
        f"strategy: {kinds[strategy]}\nobjective: {{metric: loss}}\nexecutor: {{command: 'echo loss={{x}}'}}\n"
    )
    return path


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def server_processes(directory: str) -> list[psutil.Process]:
    """The servers whose boot file (in their command line) is in `directory`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with_dir = any(directory in part for part in proc.info["cmdline"] or [])
        if with_dir and any("somatize.server" in part for part in proc.info["cmdline"]):
            found.append(proc)
    return found


class Warm:
    """A private server directory and the environment that points `somatize` at it."""

    def __init__(self, directory: str, **extra: str):
        self.directory = directory
        self.env = {**BASE, "SOMATIZE_SERVER": "on", "SOMATIZE_SERVER_DIR": directory, **extra}

    def run(self, *args: object, cwd: Path, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*SOMATIZE, *map(str, args)], cwd=cwd, env={**self.env, **extra}, input=stdin,
                              capture_output=True, text=True, timeout=WAIT, check=False)

    def sockets(self) -> list[str]:
        return [name for name in os.listdir(self.directory) if name.endswith(".sock")]

    def status(self) -> dict[str, str]:
        """`somatize server status` as a mapping; {} when no server runs."""
        done = self.run("server", "status", cwd=Path(self.directory))
        if done.returncode != 0:
            return {}
        return dict(line.split(": ", 1) for line in done.stdout.splitlines())

    def started(self) -> dict[str, str]:
        wait_for(self.sockets, "the server's socket")
        wait_for(self.status, "the server's status")
        return self.status()


@pytest.fixture
def warm() -> Iterator[Callable[..., Warm]]:
    made: list[Warm] = []

    def make(**extra: str) -> Warm:
        # A short path of its own: a Unix socket's path is limited to about 100 bytes, and tmp_path is long.
        made.append(Warm(tempfile.mkdtemp(prefix="smz-"), **extra))
        return made[-1]

    yield make
    for each in made:
        each.run("server", "stop", cwd=Path(each.directory))
        wait_for(lambda each=each: not server_processes(each.directory), "the server to exit")
        shutil.rmtree(each.directory, ignore_errors=True)


def calls(study: Path) -> list[tuple[str, ...]]:
    """A session of ask/tell/heartbeat calls, good ones and bad ones, each as it is typed."""
    name = study.name
    return [
        ("ask", name, "-o", "r.json"),
        ("ask", name, "-o", "r.json", "-f", "args"),
        ("ask", "-", "-o", "r.json", "-f", "env"),  # the study file on stdin (passed to the server)
        ("heartbeat", "r.json", "trial_0000"),
        ("tell", "r.json", "trial_0000", "--value", "0.5"),
        ("tell", "r.json", "trial_0000", "--value", "0.5"),  # told already: exit 2
        ("tell", "r.json", "trial_0099", "--value", "1"),  # no such trial: exit 2
        ("tell", "r.json", "trial_0001", "--metric", "nope=1"),  # undeclared metric: exit 2
        ("tell", "r.json", "trial_0001", "--metrics-from", "-"),  # metrics on stdin
        ("ask", name, "-o", "r.json", "-f", "bogus"),  # exit 2
        ("ask", name, "-o", "r.json", "-f", "yaml"),
        ("ask", name, "-o", "r.json"),  # the budget is asked: exit 3
        ("ask", "missing.yaml", "-o", "r.json"),  # exit 2
        ("tell", "r.json"),  # a usage error from click: exit 2
    ]


def test_warm_calls_print_and_exit_as_cold_ones_do(tmp_path, warm):
    server = warm()
    cold_dir, warm_dir = tmp_path / "cold", tmp_path / "warm"
    cold_dir.mkdir()
    warm_dir.mkdir()
    study_file(cold_dir), study_file(warm_dir)
    # The first call runs in its own process and starts the server; the rest go through it.
    first = server.run("ask", "study.yaml", "-o", "r0.json", cwd=warm_dir)
    assert first.returncode == 0, first.stderr
    assert server.started()["served"] == "0"
    outcomes = {}
    for where, env in ((cold_dir, {"SOMATIZE_SERVER": "off"}), (warm_dir, {})):
        outcomes[where.name] = []
        for args in calls(where / "study.yaml"):
            stdin = (where / "study.yaml").read_text() if args[1] == "-" else "loss=0.25\n{\"loss\": 0.125}\n"
            done = server.run(*args, cwd=where, stdin=stdin, **env)
            outcomes[where.name].append((args, done.returncode, done.stdout, done.stderr))
    assert outcomes["warm"] == outcomes["cold"]
    assert [code for _, code, _, _ in outcomes["warm"]] == [0, 0, 0, 0, 0, 2, 2, 2, 0, 2, 0, 3, 2, 2]
    assert json.loads(outcomes["warm"][0][2])["trial_id"] == "trial_0000"
    # Every one of them was served by the server the first call started.
    assert server.status()["served"] == str(len(calls(warm_dir / "study.yaml")))
    # What the study recorded is the same too.
    recorded = {where: [(t["id"], t["state"], t["params"], t["values"])
                        for t in json.loads((where / "r.json").read_text())["trials"]]
                for where in (cold_dir, warm_dir)}
    assert recorded[warm_dir] == recorded[cold_dir]


def test_a_bayesian_ask_through_the_server_proposes_what_a_cold_one_does(tmp_path, warm):
    server = warm()
    for where in ("cold", "warm"):
        (tmp_path / where).mkdir()
        study_file(tmp_path / where, "bayesian", n_trials=5)
    started = server.run("ask", "study.yaml", "-o", "r0.json", cwd=tmp_path / "warm")  # starts the server
    assert started.returncode == 0, started.stderr
    server.started()
    asked = {}
    for where, env in (("cold", {"SOMATIZE_SERVER": "off"}), ("warm", {})):
        asked[where] = []
        for _ in range(3):  # two initial points, then the model's
            done = server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path / where, **env)
            assert done.returncode == 0, done.stderr
            trial = json.loads(done.stdout)
            asked[where].append(trial)
            told = server.run("tell", "r.json", trial["trial_id"], "--value", trial["params"]["x"] ** 2,
                              cwd=tmp_path / where, **env)
            assert told.returncode == 0, told.stderr
    assert asked["warm"] == asked["cold"]
    assert int(server.status()["served"]) == 6


def test_a_server_exits_after_its_idle_timeout(tmp_path, warm):
    server = warm(SOMATIZE_SERVER_IDLE="2")
    study_file(tmp_path)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    wait_for(lambda: server_processes(server.directory), "the server to start")
    (proc,) = server_processes(server.directory)
    pid = proc.pid
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             "the idle server to exit")
    wait_for(lambda: not server.sockets(), "its socket to be removed")
    # The next call runs in its own process as before (and starts a new server).
    again = server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["trial_id"] == "trial_0001"


def test_with_the_server_off_no_server_and_no_socket_appear(tmp_path, warm):
    server = warm(SOMATIZE_SERVER="off")
    study_file(tmp_path)
    for _ in range(2):
        assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    assert os.listdir(server.directory) == []
    assert server_processes(server.directory) == []
    assert server.status() == {}


def test_by_default_one_call_leaves_no_server_and_a_second_one_starts_it(tmp_path, warm):
    server = warm()
    del server.env["SOMATIZE_SERVER"]  # unset, as a user has it
    study_file(tmp_path)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    # The server would have been started before that call exited: a single ask leaves no process behind.
    assert server_processes(server.directory) == [] and server.sockets() == []
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0  # a loop: now one
    assert server.started()["served"] == "0"
    done = server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path)
    assert json.loads(done.stdout)["trial_id"] == "trial_0002" and server.status()["served"] == "1"


def test_a_stale_socket_is_removed_and_the_call_runs_in_its_own_process(tmp_path, warm):
    server = warm()
    study_file(tmp_path)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    pid = int(server.started()["pid"])
    (socket_name,) = server.sockets()
    os.kill(pid, signal.SIGKILL)  # gone without cleaning up: its socket stays
    wait_for(lambda: not server_processes(server.directory), "the killed server to be gone")
    assert server.sockets() == [socket_name]
    done = server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trial_id"] == "trial_0001"
    assert int(server.started()["pid"]) != pid  # that call started a new one


def blocked_ask(server: Warm, directory: Path, **env: str) -> tuple[subprocess.Popen, int]:
    """An `ask` waiting for the journal's lock, which this process holds; the open lock's fd is returned."""
    journal = directory / "r.journal.jsonl"
    fd = os.open(journal, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    proc = subprocess.Popen([*SOMATIZE, "ask", "study.yaml", "-o", "r.json"], cwd=directory,
                            env={**server.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, fd


def waits_for_the_lock(server: Warm | None, proc: subprocess.Popen) -> None:
    """Wait until the blocked ask has the journal open: the client itself (cold), or its command in the server."""
    def holders() -> list[psutil.Process]:
        if server is None:
            return [psutil.Process(proc.pid)]
        return [child for each in server_processes(server.directory) for child in each.children()]

    def opened() -> bool:
        with_journal = []
        for each in holders():
            with contextlib.suppress(psutil.Error):
                with_journal += [f for f in each.open_files() if f.path.endswith("r.journal.jsonl")]
        return bool(with_journal)

    wait_for(opened, "the ask to wait for the journal's lock")


def journal_lines(directory: Path) -> int:
    return len((directory / "r.journal.jsonl").read_text().splitlines())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_a_warm_client_reaches_its_command(tmp_path, warm, signum):
    server = warm()
    study_file(tmp_path, n_trials=10)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    server.started()
    before = journal_lines(tmp_path)
    statuses = {}
    for mode, env in (("cold", {"SOMATIZE_SERVER": "off"}), ("warm", {})):
        proc, fd = blocked_ask(server, tmp_path, **env)
        waits_for_the_lock(server if mode == "warm" else None, proc)
        proc.send_signal(signum)
        proc.communicate(timeout=WAIT)
        statuses[mode] = proc.returncode
        os.close(fd)  # lets go of the lock
    # Ctrl-C: the command's own KeyboardInterrupt (exit 130); SIGTERM: it dies of it, and so does the client.
    assert statuses["warm"] == statuses["cold"] == (130 if signum == signal.SIGINT else -signum)
    wait_for(lambda: server.status().get("running") == "0", "the interrupted command to be gone")
    assert journal_lines(tmp_path) == before  # neither recorded a trial


def test_a_killed_client_does_not_leave_its_command_running(tmp_path, warm):
    server = warm()
    study_file(tmp_path, n_trials=10)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    server.started()
    before = journal_lines(tmp_path)
    proc, fd = blocked_ask(server, tmp_path)
    waits_for_the_lock(server, proc)
    proc.kill()
    proc.communicate(timeout=WAIT)
    wait_for(lambda: server.status().get("running") == "0", "the killed client's command to be ended")
    os.close(fd)
    assert journal_lines(tmp_path) == before
    done = server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path)  # the server serves on
    assert json.loads(done.stdout)["trial_id"] == "trial_0001"


def test_shell_loops_through_one_server_share_the_budget_exactly(tmp_path, warm):
    server = warm()
    n_trials, loops = 24, 4
    study_file(tmp_path, n_trials=n_trials)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0  # trial_0000: starts it
    server.started()
    assert server.run("tell", "r.json", "trial_0000", "--value", "1", cwd=tmp_path).returncode == 0
    somatize = " ".join(SOMATIZE)
    loop = (f'while true; do t=$({somatize} ask study.yaml -o r.json -f env) || {{ s=$?; break; }}; eval "$t"; '
            f'{somatize} tell r.json "$SOMATIZE_TRIAL_ID" --value "$X" || exit 9; done; [ "$s" -eq 3 ]')
    procs = [subprocess.Popen(["sh", "-c", loop], cwd=tmp_path, env=server.env) for _ in range(loops)]
    assert [p.wait(timeout=600) for p in procs] == [0] * loops
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    assert sorted(t["number"] for t in trials) == list(range(n_trials))
    assert all(t["state"] == "completed" for t in trials)
    assert int(server.status()["served"]) == 1 + 2 * (n_trials - 1) + loops  # each loop's last ask: exit 3


def test_server_stop_and_status(tmp_path, warm):
    server = warm()
    assert server.run("server", "status", cwd=tmp_path).stderr == (
        "somatize: no command server runs for this installation\n")
    assert server.run("server", "bogus", cwd=tmp_path).returncode == 2
    study_file(tmp_path)
    server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path)
    pid = int(server.started()["pid"])
    assert server.status()["idle timeout"] == "600s"  # the default
    stopped = server.run("server", "stop", cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not server_processes(server.directory), "the stopped server to exit")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert server.sockets() == []


def test_the_servers_variables_are_documented():
    from test_docs import marked_tables

    from somatize.client import VARIABLES

    documented = marked_tables(Path(__file__).resolve().parents[1] / "docs" / "asktell.md")["env:server"]
    assert documented.first_codes() == list(VARIABLES)


def test_a_server_whose_code_changed_hands_over_to_a_new_one(tmp_path, warm):
    # A copy of the package of its own, so the change touches no checkout another test or server uses.
    source = tmp_path / "src"
    shutil.copytree(Path(SRC) / "somatize", source / "somatize", ignore=shutil.ignore_patterns("__pycache__"))
    server = warm(PYTHONPATH=str(source))
    study_file(tmp_path)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    first = int(server.started()["pid"])
    module = source / "somatize" / "errors.py"
    module.write_text(module.read_text() + "\n# edited\n")
    done = server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path)  # refused, so it runs by itself
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trial_id"] == "trial_0001"
    wait_for(lambda: not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE,
             "the old server to exit")
    second = server.started()
    assert int(second["pid"]) != first and second["served"] == "0"


def test_a_server_killed_under_a_command_takes_the_command_along_and_the_client_says_so(tmp_path, warm):
    server = warm()
    study_file(tmp_path, n_trials=10)
    assert server.run("ask", "study.yaml", "-o", "r.json", cwd=tmp_path).returncode == 0
    pid = int(server.started()["pid"])
    before = journal_lines(tmp_path)
    proc, fd = blocked_ask(server, tmp_path)
    waits_for_the_lock(server, proc)
    (child,) = psutil.Process(pid).children()
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=WAIT)
    assert (proc.returncode, err) == (1, "somatize: the command server stopped while the command ran; "
                                         "its outcome is unknown\n")
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, "its command to end")
    os.close(fd)
    assert journal_lines(tmp_path) == before
