"""`somatize ask`, `tell`, `heartbeat` and `run --join` (SPEC §8): a study shared by many processes.

The concurrency tests use real processes (each its own interpreter, as on a
cluster) and real `kill -9`; the per-command behaviour goes through CliRunner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.cli import app

cli = CliRunner()
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}

STRATEGIES = {
    "random": "{type: random, n_trials: %d}",
    "grid": "{type: grid, points_per_dim: 4, n_trials: %d}",
    "bayesian": "{type: bayesian, n_trials: %d, n_initial: 4}",
}


def study_file(tmp_path: Path, strategy: str = "random", n_trials: int = 5, extra: str = "") -> Path:
    (tmp_path / "objective.py").write_text(
        "import time\n\ndef objective(params):\n    time.sleep(0.02)\n    return (params['x'] - 1) ** 2 + len(params['k'])\n"
    )
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: shared\nseed: 3\nsearch_space:\n  x: {type: float, low: -4.0, high: 4.0}\n  k: [a, bb, ccc]\n"
        + f"strategy: {STRATEGIES[strategy] % n_trials}\n"
        + "objectives:\n  - {metric: loss, direction: minimize}\n  - {metric: size, direction: minimize}\n"
        + "executor: {function: objective:objective}\n" + extra
    )
    return path


def invoke(*args: object, stdin: str | None = None):
    return cli.invoke(app, [str(a) for a in args], input=stdin)


def ask(study: Path, results: Path, *args: object) -> dict:
    outcome = invoke("ask", study, "-o", results, *args)
    assert outcome.exit_code == 0, outcome.output
    return json.loads(outcome.stdout)


def trials_of(results: Path) -> list[dict]:
    return json.loads(results.read_text())["trials"]


def journal_records(results: Path) -> list[dict]:
    lines = results.with_name(results.stem + ".journal.jsonl").read_text().splitlines()
    return [json.loads(line)["trial"] for line in lines[1:]]


def distinct_params(trials: list[dict], strategy: str) -> int:
    """How many distinct parameter sets, counting the one repeat `noise: auto` makes in a continuous
    space (the best initial point evaluated again, samplers/bayesian.py `_replicate`) as distinct."""
    keys = [json.dumps(t["params"], sort_keys=True) for t in trials]
    repeats = len(keys) - len(set(keys))
    return len(set(keys)) + (min(repeats, 1) if strategy == "bayesian" else 0)


def one_line_error(outcome, fragment: str) -> None:
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.startswith("somatize: ") and outcome.stderr.count("\n") == 1, outcome.stderr
    assert fragment in outcome.stderr and "Traceback" not in outcome.stderr


# ask ------------------------------------------------------------------------------------


def test_ask_prints_a_trial_records_it_running_and_exits_3_when_the_budget_is_asked(tmp_path):
    study, results = study_file(tmp_path, n_trials=2), tmp_path / "r.json"
    first = ask(study, results)
    assert set(first) == {"trial_id", "number", "params", "trial_seed"}
    assert (first["trial_id"], first["number"]) == ("trial_0000", 0) and set(first["params"]) == {"x", "k"}
    assert [(t["number"], t["state"]) for t in trials_of(results)] == [(0, "running")]
    assert trials_of(results)[0]["lease"]["seconds"] == 7200  # the documented default
    assert ask(study, results)["number"] == 1
    outcome = invoke("ask", study, "-o", results)
    assert outcome.exit_code == 3 and outcome.stdout == "", outcome.output
    assert "nothing left to ask: 0 finished and 2 running of 2 planned trials" in outcome.stderr


def test_ask_formats_give_the_params_and_the_trial_id(tmp_path):
    study, results = study_file(tmp_path, n_trials=5), tmp_path / "r.json"
    args = invoke("ask", study, "-o", results, "-f", "args").stdout.split()
    assert args[:2] == ["--trial-id", "trial_0000"] and "--x" in args and "--k" in args
    env = dict(line.split("=", 1) for line in invoke("ask", study, "-o", results, "-f", "env").stdout.splitlines())
    assert env["SOMATIZE_TRIAL_ID"] == "trial_0001" and set(env) == {"SOMATIZE_TRIAL_ID", "X", "K"}
    yaml_text = invoke("ask", study, "-o", results, "--format", "yaml").stdout
    assert yaml_text.startswith("trial_id: trial_0002\n") and "params:\n  x: " in yaml_text
    one_line_error(invoke("ask", study, "-o", results, "-f", "csv"), "--format must be one of json, args, env, yaml")


def test_asked_proposals_are_those_of_a_run_with_the_same_seed(tmp_path):
    study, results = study_file(tmp_path, n_trials=4), tmp_path / "r.json"
    asked = [ask(study, results)["params"] for _ in range(4)]
    ran = tmp_path / "ran.json"
    assert invoke("run", study, "-o", ran, "-q").exit_code == 0
    assert asked == [t["params"] for t in trials_of(ran)]


def test_grid_asks_every_point_once_then_exits_3(tmp_path):
    study, results = study_file(tmp_path, "grid", n_trials=100), tmp_path / "r.json"  # 4 x 3 points
    asked = []
    while (outcome := invoke("ask", study, "-o", results)).exit_code == 0:
        trial = json.loads(outcome.stdout)
        asked.append((trial["params"]["x"], trial["params"]["k"]))
        assert invoke("tell", results, trial["trial_id"], "--value", 1).exit_code == 0
    assert outcome.exit_code == 3 and len(asked) == len(set(asked)) == 12


ENQUEUED = "enqueue:\n  - {x: 1.5, k: bb}\n  - {x: -2.0, k: a}\n"


def test_ask_hands_out_the_enqueued_sets_first_in_order_then_the_strategy(tmp_path):
    study, results = study_file(tmp_path, n_trials=4, extra=ENQUEUED), tmp_path / "r.json"
    first, second = ask(study, results), ask(study, results)
    assert [first["params"], second["params"]] == [{"x": 1.5, "k": "bb"}, {"x": -2.0, "k": "a"}]
    assert invoke("tell", results, first["trial_id"], "--value", 0.25, "--metric", "size=2").exit_code == 0
    third, fourth = ask(study, results)["params"], ask(study, results)["params"]  # the strategy's, as run's
    ran = tmp_path / "ran.json"
    assert invoke("run", study, "-o", ran, "-q").exit_code == 0
    assert [first["params"], second["params"], third, fourth] == [t["params"] for t in trials_of(ran)]
    outcome = invoke("ask", study, "-o", results)  # the enqueued sets count in the budget
    assert outcome.exit_code == 3, outcome.output


def test_an_enqueued_set_is_asked_again_only_once_its_trial_went_stale(tmp_path):
    study, results = study_file(tmp_path, n_trials=5, extra=ENQUEUED), tmp_path / "r.json"
    first = ask(study, results, "--lease", "1s")
    assert first["params"] == {"x": 1.5, "k": "bb"}
    time.sleep(1.0)  # its lease runs out: its slot, and its set, go back
    assert ask(study, results)["params"] == {"x": 1.5, "k": "bb"}
    assert ask(study, results)["params"] == {"x": -2.0, "k": "a"}
    assert ask(study, results)["params"] not in ({"x": 1.5, "k": "bb"}, {"x": -2.0, "k": "a"})


def test_processes_asking_at_once_get_each_enqueued_set_once(tmp_path):
    study, results = study_file(tmp_path, n_trials=6, extra=ENQUEUED), tmp_path / "r.json"
    argv = [sys.executable, "-m", "somatize", "ask", study, "-o", results]
    procs = [subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    asked = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert sorted(t["number"] for t in asked) == [0, 1, 2, 3]
    params = [json.dumps(t["params"], sort_keys=True) for t in sorted(asked, key=lambda t: t["number"])]
    assert params[:2] == [json.dumps({"k": "bb", "x": 1.5}), json.dumps({"k": "a", "x": -2.0})]
    assert len(set(params)) == 4


# What a cold random or grid `ask` and a `tell` must not import: the model, the UI, the cluster, numpy.
HEAVY = ("numpy", "skopt", "sklearn", "scipy", "rich", "dask", "distributed", "plotly", "mlflow", "somatize.runner")


def imported_by(*argv: object, cwd: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules a fresh `somatize` process imports, from `python -X importtime` (one line per import)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "somatize", *map(str, argv)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120, check=False)
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "somatize.cli" in names, done.stderr[-2000:]  # the parse found the imports
    return names, done


@pytest.mark.parametrize("strategy", ["random", "grid"])
def test_a_cold_ask_and_tell_import_no_model_ui_or_numpy(tmp_path, strategy):
    study, results = study_file(tmp_path, strategy, n_trials=5), tmp_path / "r.json"
    names, done = imported_by("ask", study, "-o", results, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    trial = json.loads(done.stdout)
    assert {n for n in names if n.split(".")[0] in HEAVY or n in HEAVY} == set()
    names, done = imported_by("tell", results, trial["trial_id"], "--value", "1", "--metric", "size=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {n for n in names if n.split(".")[0] in HEAVY or n in HEAVY} == set()
    assert [t["state"] for t in trials_of(results)] == ["completed"]


def test_ask_refuses_a_bad_lease_and_a_changed_study(tmp_path):
    study, results = study_file(tmp_path), tmp_path / "r.json"
    one_line_error(invoke("ask", study, "-o", results, "--lease", "soon"), "--lease must be a positive duration")
    ask(study, results)
    outcome = invoke("ask", study, "-o", results, "--set", "search_space.x.high=9.0")
    one_line_error(outcome, "its search_space changed")


def test_ask_continues_a_study_a_plain_run_finished(tmp_path):
    study, results = study_file(tmp_path, n_trials=3), tmp_path / "r.json"
    assert invoke("run", study, "-o", results, "-q").exit_code == 0
    assert invoke("ask", study, "-o", results).exit_code == 3  # its 3 trials are there
    assert ask(study, results, "--set", "strategy.n_trials=4")["number"] == 3


# tell -----------------------------------------------------------------------------------


def test_tell_records_values_metrics_and_a_metrics_file_and_best_works_at_once(tmp_path):
    study, results = study_file(tmp_path, n_trials=4), tmp_path / "r.json"
    ids = [ask(study, results)["trial_id"] for _ in range(4)]
    assert invoke("tell", results, ids[0], "--value", "0.5", "--metric", "size=3").exit_code == 0
    log = tmp_path / "train.log"
    log.write_text('epoch 1\n{"step": 1, "loss": 0.9}\n{"step": 2, "loss": 0.25}\nsize: 2\nloss=0.3\n')
    assert invoke("tell", results, ids[1], "--metrics-from", log).exit_code == 0
    assert invoke("tell", results, ids[2], "--metrics-from", "-", stdin="loss=np.float64(0.75)\n").exit_code == 0
    assert invoke("tell", results, ids[3], "--pruned", "--step", "2", "--metric", "loss=2").exit_code == 0
    trials = {t["id"]: t for t in trials_of(results)}
    assert trials[ids[0]]["values"] == {"loss": 0.5, "size": 3.0} and trials[ids[0]]["state"] == "completed"
    assert trials[ids[1]]["values"] == {"loss": 0.25, "size": 2.0}
    assert [m["step"] for m in trials[ids[1]]["metrics"] if m["name"] == "loss"] == [1, 2, None]
    assert trials[ids[2]]["values"] == {"loss": 0.75}
    assert (trials[ids[3]]["state"], trials[ids[3]]["pruned_step"]) == ("pruned", 2)
    assert all("lease" not in t for t in trials.values())
    best = invoke("best", results, "--param", "k")
    assert best.exit_code == 0 and best.stdout.strip() == trials[ids[1]]["params"]["k"]


def test_tell_failed_with_and_without_a_reason(tmp_path):
    study, results = study_file(tmp_path, n_trials=3), tmp_path / "r.json"
    ids = [ask(study, results)["trial_id"] for _ in range(3)]
    assert invoke("tell", results, ids[0], "--failed", "CUDA out of memory").exit_code == 0
    assert invoke("tell", results, ids[1], "--failed").exit_code == 0
    told = invoke("tell", results, ids[2], "--metric", "size=1")  # no value for the first objective
    assert told.exit_code == 0 and "is recorded as failed: no value for primary metric 'loss'" in told.stderr
    trials = trials_of(results)
    assert [t["state"] for t in trials] == ["failed"] * 3
    assert trials[0]["error"] == "CUDA out of memory"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["trial_0000", "--value", "1"], "trial_0000 was told already (completed)"),
        (["trial_0042", "--value", "1"], "no trial 'trial_0042'"),
        (["bogus", "--value", "1"], "no trial 'bogus'"),
        (["trial_0001", "--metric", "accuracy=0.9"], "--metric accuracy: not a metric of this study (its metrics: loss, size)"),
        (["trial_0001", "--metric", "loss"], "expected NAME=VALUE"),
        (["trial_0001", "--value", "high"], "--value 'high' is not a number"),
        (["trial_0001"], "tell needs an outcome"),
        (["trial_0001", "--failed", "x", "--pruned"], "exclude each other"),
        (["trial_0001", "--step", "3", "--value", "1"], "--step goes with --pruned"),
        (["trial_0001", "--metrics-from", "missing.log"], "--metrics-from missing.log: cannot read"),
    ],
)
def test_tell_errors_are_exit_2_with_one_line_and_record_nothing(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    study, results = study_file(tmp_path, n_trials=3), tmp_path / "r.json"
    ask(study, results)
    ask(study, results)
    assert invoke("tell", results, "trial_0000", "--value", "1").exit_code == 0
    before = results.with_name("r.journal.jsonl").read_bytes()
    one_line_error(invoke("tell", results, *args), fragment)
    assert results.with_name("r.journal.jsonl").read_bytes() == before


def test_tell_without_a_journal_and_metrics_from_a_fifo_are_refused(tmp_path):
    one_line_error(invoke("tell", tmp_path / "none.json", "trial_0000", "--value", "1"), "no journal")
    study, results = study_file(tmp_path), tmp_path / "r.json"
    trial = ask(study, results)["trial_id"]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    one_line_error(invoke("tell", results, trial, "--metrics-from", fifo), "not a regular file")


# leases -----------------------------------------------------------------------------------


def test_a_lease_that_runs_out_makes_the_trial_stale_and_frees_its_slot_and_a_late_tell_counts(tmp_path):
    study, results = study_file(tmp_path, n_trials=2), tmp_path / "r.json"
    late = ask(study, results, "--lease", "0.3s")["trial_id"]
    kept = ask(study, results, "--lease", "0.3s")["trial_id"]
    assert invoke("heartbeat", results, kept, "--lease", "1h").exit_code == 0
    time.sleep(0.5)
    third = ask(study, results)  # the stale trial's slot
    assert third["number"] == 2
    states = {t["id"]: t["state"] for t in trials_of(results)}
    assert states == {late: "stale", kept: "running", third["trial_id"]: "running"}
    show = invoke("show", results)
    assert show.exit_code == 0
    row = next(line for line in show.stdout.splitlines() if line.startswith(late))
    assert "stale" in row and "asked" in row and "lease ran out" in row
    assert "left" in next(line for line in show.stdout.splitlines() if line.startswith(kept))
    told = invoke("tell", results, late, "--value", "0.1", "--metric", "size=1")
    assert told.exit_code == 0 and f"{late}'s lease ran out" in told.stderr
    assert {t["id"]: t["state"] for t in trials_of(results)}[late] == "completed"
    beat = invoke("heartbeat", results, late)
    one_line_error(beat, "was told already")


def test_heartbeat_of_a_stale_trial_warns_and_leaves_it_stale(tmp_path):
    study, results = study_file(tmp_path, n_trials=2), tmp_path / "r.json"
    trial = ask(study, results, "--lease", "0.2s")["trial_id"]
    time.sleep(0.3)
    beat = invoke("heartbeat", results, trial)
    assert beat.exit_code == 0 and "it stays stale" in beat.stderr
    assert trials_of(results)[0]["state"] == "stale"
    assert invoke("show", results, "--state", "stale").stdout.count("trial_") == 1


# many processes -----------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """\
    import sys
    from pathlib import Path

    from somatize.asktell import ask, tell, told_outcome, read_header
    from somatize.errors import NothingToAsk
    from somatize.studyfile import load_study

    config = load_study(sys.argv[1])
    results = Path(sys.argv[2])
    done = 0
    while True:
        try:
            trial = ask(config, results)
        except NothingToAsk:
            break
        value = (trial.params["x"] - 1) ** 2  # the computation
        tell(results, trial.id, told_outcome(read_header(results), value=repr(value), metrics=["size=1"]))
        done += 1
    print(done)
    """
)


@pytest.mark.parametrize(("strategy", "processes", "n_trials"), [("random", 8, 200), ("bayesian", 2, 8)])
def test_processes_looping_ask_and_tell_finish_the_budget_exactly(tmp_path, strategy, processes, n_trials):
    # durability: process: the test is about what the processes see of each other, not about power loss.
    study = study_file(tmp_path, strategy, n_trials=n_trials, extra="durability: process\n")
    results = tmp_path / "r.json"
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    procs = [
        subprocess.Popen([sys.executable, worker, study, results], stdout=subprocess.PIPE, text=True, env=ENV)
        for _ in range(processes)
    ]
    counts = [int(p.communicate(timeout=600)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(counts) == n_trials
    trials = trials_of(results)
    assert sorted(t["number"] for t in trials) == list(range(n_trials))
    assert all(t["state"] == "completed" for t in trials)
    assert distinct_params(trials, strategy) == n_trials
    # Each trial was asked once and told once: a running record, then its outcome.
    records = Counter((r["number"], r["state"]) for r in journal_records(results))
    assert records == Counter({**{(n, "running"): 1 for n in range(n_trials)},
                               **{(n, "completed"): 1 for n in range(n_trials)}})


def test_a_shell_loop_of_ask_and_tell_runs_the_study(tmp_path):
    study, results = study_file(tmp_path, n_trials=3), tmp_path / "r.json"
    loop = (
        f'while true; do t=$({sys.executable} -m somatize ask study.yaml -o r.json -f env) || {{ s=$?; break; }}; '
        f'eval "$t"; {sys.executable} -m somatize tell r.json "$SOMATIZE_TRIAL_ID" --value "$X" --metric size=1 '
        '|| exit 9; done; echo ask exited $s'
    )
    done = subprocess.run(["sh", "-c", loop], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.stdout == "ask exited 3\n", done.stderr
    assert [t["state"] for t in trials_of(results)] == ["completed"] * 3
    assert json.loads(results.read_text())["status"] == "completed"
    assert study.exists()


def test_a_worker_killed_between_ask_and_tell_leaves_a_stale_trial_and_the_budget_is_met(tmp_path):
    study, results = study_file(tmp_path, n_trials=6), tmp_path / "r.json"
    asked = tmp_path / "asked.json"
    victim = subprocess.Popen(
        ["sh", "-c", f'{sys.executable} -m somatize ask study.yaml -o r.json --lease 1s > asked.json && exec sleep 60'],
        cwd=tmp_path, env=ENV,
    )
    deadline = time.monotonic() + 60
    while not (asked.exists() and asked.read_text().endswith("\n")):
        assert time.monotonic() < deadline and victim.poll() is None, "the ask did not finish"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)  # between its ask and its tell
    victim.wait()
    lost = json.loads(asked.read_text())["trial_id"]
    time.sleep(1.0)  # its lease runs out
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    others = subprocess.run([sys.executable, worker, study, results], env=ENV, capture_output=True, text=True,
                            timeout=120, check=False)
    assert others.returncode == 0, others.stderr
    trials = {t["id"]: t["state"] for t in trials_of(results)}
    assert trials[lost] == "stale"
    assert Counter(trials.values()) == {"completed": 6, "stale": 1}


# run --join ----------------------------------------------------------------------------------


def test_two_joined_runs_share_the_budget_without_a_duplicate(tmp_path):
    study, results = study_file(tmp_path, n_trials=24), tmp_path / "r.json"
    argv = [sys.executable, "-m", "somatize", "run", study, "-o", results, "--join", "-q"]
    runs = [subprocess.Popen([*argv, *extra], env=ENV, stderr=subprocess.PIPE, text=True)
            for extra in ([], ["-j", "2"])]
    errors = [p.communicate(timeout=300)[1] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], errors
    trials = trials_of(results)
    assert sorted(t["number"] for t in trials) == list(range(24))
    assert all(t["state"] == "completed" for t in trials)
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 24
    assert Counter(r["state"] for r in journal_records(results)) == {"running": 24, "completed": 24}
    assert invoke("ask", study, "-o", results).exit_code == 3


def test_a_joined_run_works_beside_ask_and_tell(tmp_path):
    study, results = study_file(tmp_path, n_trials=6), tmp_path / "r.json"
    mine = ask(study, results)["trial_id"]
    joined = invoke("run", study, "-o", results, "--join", "-q")
    assert joined.exit_code == 0, joined.output
    assert Counter(t["state"] for t in trials_of(results)) == {"completed": 5, "running": 1}
    assert invoke("tell", results, mine, "--value", "2", "--metric", "size=0").exit_code == 0
    data = json.loads(results.read_text())
    assert data["status"] == "completed" and len(data["trials"]) == 6


def test_a_plain_run_and_a_shared_study_keep_each_other_out(tmp_path):
    study, results = study_file(tmp_path, n_trials=4), tmp_path / "r.json"
    (tmp_path / "slow.py").write_text("import time\n\ndef objective(params):\n    time.sleep(30)\n    return 1.0\n")
    slow = study.with_name("slow.yaml")
    slow.write_text(study.read_text().replace("objective:objective", "slow:objective"))
    plain = subprocess.Popen([sys.executable, "-m", "somatize", "run", slow, "-o", results, "-q"], env=ENV,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not results.with_name("r.journal.jsonl").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        one_line_error(invoke("ask", slow, "-o", results), "is being written by another somatize run")
    finally:
        plain.kill()
        plain.wait()
    other = tmp_path / "o.json"
    ask(study, other)
    one_line_error(invoke("run", study, "-o", other, "-q"), "holds an unfinished run")
    # While a sharing process holds the study (here: this test, through the shared lock), a plain run is refused.
    from somatize.storage.shared import SharedJournal

    with SharedJournal(other):
        one_line_error(invoke("run", study, "-o", other, "-q", "--resume"), "is shared by somatize ask/tell")


def test_join_refuses_resume_and_standard_output(tmp_path):
    study = study_file(tmp_path)
    one_line_error(invoke("run", study, "--join", "--resume"), "--join shares a study")
    one_line_error(invoke("run", study, "--join", "-o", "-"), "--join shares a study")
    one_line_error(invoke("run", study, "--lease", "5m"), "--lease goes with --join")


def test_an_interrupted_joined_run_gives_its_running_trial_back_at_once(tmp_path):
    study, results = study_file(tmp_path, n_trials=4), tmp_path / "r.json"
    (tmp_path / "slow.py").write_text("import time\n\ndef objective(params):\n    time.sleep(60)\n    return 1.0\n")
    study.write_text(study.read_text().replace("objective:objective", "slow:objective"))
    joined = subprocess.Popen([sys.executable, "-m", "somatize", "run", study, "-o", results, "--join", "-q"],
                              env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (results.exists() and any(t["state"] == "running" for t in trials_of(results))):
        assert time.monotonic() < deadline and joined.poll() is None, "no trial started"
        time.sleep(0.05)
    joined.send_signal(signal.SIGINT)
    _, err = joined.communicate(timeout=60)
    assert joined.returncode == 130, err
    trial = trials_of(results)[0]
    assert (trial["state"], trial["reason"]) == ("stale", "the run --join running it stopped")
    assert ask(study, results)["number"] == 1  # its slot is free again


def test_ask_refuses_standard_output_as_the_results(tmp_path):
    one_line_error(invoke("ask", study_file(tmp_path), "-o", "-"), "not with -o -")


def test_a_joined_bayesian_run_models_the_shared_history(tmp_path):
    study, results = study_file(tmp_path, "bayesian", n_trials=7), tmp_path / "r.json"
    for _ in range(2):  # asked elsewhere and told: the joined run's model learns them too
        trial = ask(study, results)
        assert invoke("tell", results, trial["trial_id"], "--value", 3, "--metric", "size=1").exit_code == 0
    joined = invoke("run", study, "-o", results, "--join", "-q")
    assert joined.exit_code == 0, joined.output
    trials = trials_of(results)
    assert [t["state"] for t in trials] == ["completed"] * 7
    assert distinct_params(trials, "bayesian") == 7


def test_a_told_trial_breaking_a_constraint_on_a_metrics_entry_is_completed_but_never_best(tmp_path):
    extra = "metrics: [latency_ms]\nconstraints:\n  - latency_ms <= 50\n"
    study, results = study_file(tmp_path, n_trials=2, extra=extra), tmp_path / "r.json"
    fast, slow = ask(study, results), ask(study, results)
    assert invoke("tell", results, slow["trial_id"], "--metric", "loss=0.1", "--metric", "size=1",
                  "--metric", "latency_ms=80").exit_code == 0
    assert invoke("tell", results, fast["trial_id"], "--metric", "loss=0.5", "--metric", "size=1",
                  "--metric", "latency_ms=20").exit_code == 0
    trials = {t["id"]: t for t in trials_of(results)}
    assert trials[slow["trial_id"]]["state"] == "completed" and trials[slow["trial_id"]]["feasible"] is False
    assert trials[slow["trial_id"]]["values"]["latency_ms"] == 80
    assert trials[fast["trial_id"]]["feasible"] is True
    assert json.loads(results.read_text())["best_trial"]["id"] == fast["trial_id"]


def test_a_joined_run_keeps_each_trials_output_and_gives_it_its_own_slot(tmp_path):
    (tmp_path / "printing.py").write_text(
        "import os\n\ndef objective(params):\n    print('slot', os.environ.get('SOMATIZE_SLOT'))\n    return params['x']\n"
    )
    study = tmp_path / "study.yaml"
    study.write_text(
        "name: shared\nseed: 3\nsearch_space:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        "strategy: {type: random, n_trials: 3}\nobjective: {metric: loss}\n"
        "resources: {slots: [left, right]}\nexecutor: {function: printing:objective}\n"
    )
    results = tmp_path / "r.json"
    outcome = invoke("run", study, "-o", results, "--join", "-q", "-j", 2)
    assert outcome.exit_code == 0, outcome.output
    trials = trials_of(results)
    assert len(trials) == 3 and all(t["slot"] in ("left", "right") for t in trials)
    for trial in trials:
        printed = (tmp_path / trial["log_dir"] / "stdout.txt").read_text()
        assert printed.strip() == f"slot {trial['slot']}"
