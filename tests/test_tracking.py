"""MLflow tracking (`somatize run --mlflow URI`, `mlflow:` in the study file), read back from real stores.

Each test makes its own store in tmp_path (sqlite, a directory, or a real `mlflow server`
on 127.0.0.1) and reads it with `mlflow.MlflowClient`, comparing with the results file.
Tests that need MLflow skip when the `mlflow` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from somatize.cli import app

needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="the mlflow extra is not installed"
)
cli = CliRunner()

# One trial of each state, in this order: its kind says what it does.
OBJECTIVE = """\
import somatize


def objective(params, trial):
    if params["kind"] == "failed":
        raise ValueError("diverged")
    for step in range(4 if params["kind"] == "completed" else 2):
        trial.report({"loss": 1.0 / (step + 1) + params["lr"]}, step=step)
    if params["kind"] == "pruned":
        raise somatize.TrialPruned("plateau", step=1)
"""


def study(tmp_path: Path, name: str, **extra) -> Path:
    (tmp_path / "track_objective.py").write_text(OBJECTIVE, encoding="utf-8")
    spec = {
        "name": name,
        "search_space": {"kind": ["completed", "pruned", "failed"], "lr": [0.01]},
        "strategy": {"type": "grid"},
        "objective": {"metric": "loss", "direction": "minimize"},
        "executor": {"function": "track_objective:objective"},
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def somatize(*args, cwd: Path, env: dict[str, str] | None = None, patch: str = "pass") -> subprocess.CompletedProcess:
    """A real `somatize` process; `patch` runs first in it (to shorten a wait the test would sit through)."""
    code = f"import sys; {patch}; from somatize.cli import main; sys.argv = ['somatize', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def results(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def read_back(tracking_uri: str, experiment: str):
    """The study's parent run and its child runs by trial id, from the store itself."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {tracking_uri}"
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if r.data.tags.get("somatize.role") == "study"]
    assert len(parents) == 1
    children = {r.data.tags["somatize.trial_id"]: r for r in runs if r is not parents[0]}
    return client, parents[0], children


def assert_trials_match(client, parent, children, document: dict) -> None:
    """Every trial of the results file is a child run with its params, state, values and every report."""
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["somatize.study_id"] == document["study"]["id"]
    assert parent.data.tags["somatize.best_trial"] == document["best_trial"]["id"]
    assert sorted(children) == sorted(t["id"] for t in document["trials"])
    status = {"completed": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
    for trial in document["trials"]:
        run = children[trial["id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == trial["id"]
        assert run.data.tags["somatize.study"] == document["study"]["name"]
        assert run.data.tags["somatize.state"] == trial["state"]
        assert run.info.status == status[trial["state"]]
        assert run.data.params == {k: str(v) for k, v in trial["params"].items()}
        assert {k: v for k, v in run.data.metrics.items() if k.startswith("value.")} == {
            f"value.{k}": v for k, v in trial["values"].items()
        }
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
        assert sorted(history) == sorted((m["step"], m["value"]) for m in trial["metrics"] if m["name"] == "loss")
    by_state = {t["state"]: t for t in document["trials"]}
    assert children[by_state["pruned"]["id"]].data.tags["somatize.pruned_step"] == "1"
    assert "diverged" in children[by_state["failed"]["id"]].data.tags["somatize.reason"]


@needs_mlflow
def test_every_trial_is_a_nested_run_with_params_steps_and_state(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = somatize("run", study(tmp_path, "nested"), "--mlflow", uri, "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    document = results(tmp_path / "study.results.json")
    assert {t["state"] for t in document["trials"]} == {"completed", "pruned", "failed"}
    client, parent, children = read_back(uri, "nested")
    assert_trials_match(client, parent, children, document)
    assert parent.data.tags["somatize.status"] == "completed"
    assert parent.data.metrics["best.loss"] == document["best_trial"]["value"]


@needs_mlflow
def test_the_study_files_mlflow_key_names_a_directory_beside_the_study_and_the_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a directory store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = study(tmp_path, "keyed", mlflow={"tracking_uri": "mlruns", "experiment": "team-runs"})
    done = somatize("run", path, "-q", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlruns").is_dir() and not (elsewhere / "mlruns").exists()
    client, parent, children = read_back(str(tmp_path / "mlruns"), "team-runs")
    assert_trials_match(client, parent, children, results(elsewhere / "study.results.json"))


@needs_mlflow
def test_a_resumed_study_adds_its_new_trials_to_the_same_study_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    path = study(tmp_path, "resumed", mlflow={"tracking_uri": "mlruns"}, strategy={"type": "grid", "n_trials": 2})
    first = somatize("run", path, "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = somatize("run", path, "-q", "--resume", "--n-trials", "3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    client, parent, children = read_back(str(tmp_path / "mlruns"), "resumed")  # one study run, asserted there
    assert_trials_match(client, parent, children, results(tmp_path / "study.results.json"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_mlflow
def test_an_unreachable_server_costs_one_bounded_wait_and_a_warning(tmp_path):
    """MLflow retries a refused connection for minutes; the study ends anyway, its results whole."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    patch = "import somatize.trackers.mlflow as m; m.FLUSH_SECONDS = 1"
    done = somatize("run", study(tmp_path, "down"), "--mlflow", uri, cwd=tmp_path, patch=patch)
    assert done.returncode == 0, done.stderr
    assert len(results(tmp_path / "study.results.json")["trials"]) == 3
    warnings = [line for line in done.stderr.splitlines() if line.startswith("somatize: warning: mlflow:")]
    assert warnings == [
        f"somatize: warning: mlflow: 3 of 3 trials not logged to {uri} within 1 s; the results file has them all"
    ]


@needs_mlflow
def test_a_failing_server_is_one_warning_and_the_study_goes_on(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # MLflow gives up at once: the error path, not the wait
    done = somatize("run", study(tmp_path, "refused"), "--mlflow", uri, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert len(results(tmp_path / "study.results.json")["trials"]) == 3
    warnings = [line for line in done.stderr.splitlines() if line.startswith("somatize: warning: mlflow:")]
    assert len(warnings) == 2, done.stderr
    assert warnings[0].endswith(f"; not logging the rest of this study to {uri}")
    assert warnings[1] == (
        f"somatize: warning: mlflow: 3 of 3 trials not logged to {uri} after the error above; "
        "the results file has them all"
    )


@needs_mlflow
def test_a_real_mlflow_server_gets_every_trial(tmp_path):
    if importlib.util.find_spec("mlflow.server") is None or importlib.util.find_spec("flask") is None:
        pytest.skip("`mlflow server` needs the full mlflow package")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not _healthy(uri):
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.skip("mlflow server did not start within 20 s on this machine")
            time.sleep(0.5)
        done = somatize("run", study(tmp_path, "served"), "--mlflow", uri, "-q", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "warning" not in done.stderr
        client, parent, children = read_back(uri, "served")
        assert_trials_match(client, parent, children, results(tmp_path / "study.results.json"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


# without MLflow ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "study file"])
def test_without_the_extra_it_is_one_line_and_exit_2_before_any_trial(tmp_path, monkeypatch, how):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    extra = {"mlflow": {"tracking_uri": "sqlite:///m.db"}} if how == "study file" else {}
    path = study(tmp_path, "bare", **extra)
    args = ["run", str(path)] + (["--mlflow", "sqlite:///m.db"] if how == "option" else [])
    outcome = cli.invoke(app, args)
    assert outcome.exit_code == 2
    where = "--mlflow" if how == "option" else f"{path}: mlflow:"
    assert outcome.stderr == f"somatize: {where} needs the mlflow extra: pip install 'somatize[mlflow]'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml", "track_objective.py"]  # no trial, no journal


def test_mlflow_key_problems_point_at_their_node(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: bad\nsearch_space: {x: [1, 2]}\nstrategy: {type: grid}\nobjective: {metric: y}\n"
        "executor: {command: echo y=1}\nmlflow:\n  tracking_uri: ''\n  experimnt: runs\n",
        encoding="utf-8",
    )
    outcome = cli.invoke(app, ["validate", str(path)])
    assert outcome.exit_code == 2
    assert outcome.stderr.splitlines() == [
        f"{path}:7:17: mlflow tracking_uri must be a non-empty string, got ''",
        f"{path}:8:3: unknown key 'experimnt' in mlflow (did you mean 'experiment'?)",
    ]


def test_validate_says_where_the_runs_will_go(tmp_path):
    path = study(tmp_path, "shown", mlflow={"tracking_uri": "mlruns", "experiment": "team-runs"})
    outcome = cli.invoke(app, ["validate", str(path)])
    assert outcome.exit_code == 0, outcome.output
    assert f"  mlflow: experiment team-runs at {tmp_path / 'mlruns'}\n" in outcome.stdout


def test_validate_best_and_show_never_import_mlflow(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: light\nsearch_space: {x: [1, 2]}\nstrategy: {type: grid}\nobjective: {metric: y}\n"
        "executor:\n  command: echo y={x}\nmlflow: {tracking_uri: 'sqlite:///m.db'}\n",
        encoding="utf-8",
    )
    ran = cli.invoke(app, ["run", str(path), "--set", "mlflow=null", "-q", "-o", str(tmp_path / "r.json")])
    assert ran.exit_code == 0, ran.output
    code = (
        "import sys; from typer.testing import CliRunner; from somatize.cli import app\n"
        f"for args in (['validate', {str(path)!r}], ['best', {str(tmp_path / 'r.json')!r}],"
        f" ['show', {str(tmp_path / 'r.json')!r}]):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
