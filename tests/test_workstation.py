"""Trials on a workstation (issue 20, SPEC §10): trial directories and `somatize logs`, devices and
slots per trial, `enqueue:`, `--warm-start` and `--resume --retry-failed`, all through the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from somatize.cli import app
from somatize.executors.artifacts import OUTPUT_BYTES

cli = CliRunner()


def write_study(tmp_path: Path, executor: dict, name: str = "ws", **extra) -> Path:
    spec = {
        "name": name,
        "seed": 3,
        "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "strategy": {"type": "random", "n_trials": 3},
        "objective": {"metric": "y"},
        "executor": executor,
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run(*args: str):
    return cli.invoke(app, ["run", *args])


def results(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# trial directories --------------------------------------------------------------------------------

SHELL_TRIAL = """\
import os, sys
print("hello stdout", sys.argv[1])
print("hello stderr", file=sys.stderr)
with open(os.environ["SOMATIZE_METRICS_FILE"], "w") as f:
    f.write("y=" + sys.argv[1] + "\\n")
with open(os.path.join(sys.argv[2], "checkpoint"), "w") as f:
    f.write(os.environ["SOMATIZE_TRIAL_DIR"])
"""


def test_a_shell_trial_keeps_its_output_metrics_file_and_own_files_in_its_directory(tmp_path):
    (tmp_path / "trial.py").write_text(SHELL_TRIAL)
    study = write_study(tmp_path, {"command": "python trial.py {x} {trial_dir}"})
    out = tmp_path / "ws.results.json"
    outcome = run(str(study), "-o", str(out), "-q")
    assert outcome.exit_code == 0, outcome.output
    trials = results(out)["trials"]
    assert [t["log_dir"] for t in trials] == [f"ws.results.trials/{t['id']}" for t in trials]
    for trial in trials:
        directory = tmp_path / trial["log_dir"]
        x = repr(trial["params"]["x"])
        assert (directory / "stdout.txt").read_text() == f"hello stdout {x}\n"
        assert (directory / "stderr.txt").read_text() == "hello stderr\n"
        assert (directory / "metrics.txt").read_text() == f"y={x}\n"
        assert (directory / "checkpoint").read_text() == str(directory.resolve())  # $SOMATIZE_TRIAL_DIR


def test_a_long_output_keeps_its_tail_and_stays_bounded(tmp_path):
    script = "import sys\nfor i in range(60000): print('line %06d' % i + 'x' * 50)\nprint('y=1')\n"
    (tmp_path / "loud.py").write_text(script)
    study = write_study(tmp_path, {"command": ["python", "loud.py"]}, strategy={"type": "random", "n_trials": 1})
    outcome = run(str(study), "-o", str(tmp_path / "r.json"), "-q")
    assert outcome.exit_code == 0, outcome.output
    kept = (tmp_path / "r.trials" / "trial_0000" / "stdout.txt").read_bytes()
    written = 60000 * 62 + 4
    assert written > 2 * OUTPUT_BYTES  # the trial printed more than is kept
    head, _, tail = kept.partition(b"\n")
    assert head.startswith(b"[somatize: the first ") and str(written).encode() in head
    assert len(tail) == OUTPUT_BYTES
    assert tail.endswith(b"line 059999" + b"x" * 50 + b"\ny=1\n")


OBJECTIVE = """\
import os, sys


def objective(params, trial):
    print("printed by", trial.id)
    print("warned by", trial.id, file=sys.stderr)
    os.system("echo child of " + trial.id)
    (trial.dir / "own.txt").write_text(os.environ["SOMATIZE_TRIAL_DIR"])
    return params["x"]
"""


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["in-process", "workers"])
def test_a_python_function_keeps_what_it_prints(tmp_path, jobs):
    (tmp_path / "ws_objective.py").write_text(OBJECTIVE)
    study = write_study(tmp_path, {"function": "ws_objective:objective"}, objective={"metric": "x"})
    out = tmp_path / "r.json"
    outcome = run(str(study), "-o", str(out), "-q", "-j", jobs)
    assert outcome.exit_code == 0, outcome.output
    for trial in results(out)["trials"]:
        directory = tmp_path / trial["log_dir"]
        stdout = (directory / "stdout.txt").read_text()
        assert f"printed by {trial['id']}\n" in stdout
        assert (directory / "stderr.txt").read_text() == f"warned by {trial['id']}\n"
        assert (directory / "own.txt").read_text() == str(directory.resolve())
        if jobs != "1":  # a worker captures its file descriptors: child processes too
            assert f"child of {trial['id']}\n" in stdout
            assert "printed by" not in stdout.replace(f"printed by {trial['id']}", "")  # only its own


@pytest.mark.parametrize(("keep", "kept"), [({"keep": "best", "best": 2}, 2), ({"keep": "none"}, 0)])
def test_trial_dirs_keep_only_the_best_or_none(tmp_path, keep, kept):
    (tmp_path / "ws_objective.py").write_text(OBJECTIVE)
    study = write_study(
        tmp_path, {"function": "ws_objective:objective"}, objective={"metric": "x"}, trial_dirs=keep,
        strategy={"type": "random", "n_trials": 5},
    )  # fmt: skip
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    trials = results(out)["trials"]
    best = sorted(trials, key=lambda t: t["values"]["x"])[:kept]
    assert sorted(p.name for p in (tmp_path / "r.trials").iterdir()) == sorted(t["id"] for t in best)
    assert {t["id"] for t in trials if t.get("log_dir")} == {t["id"] for t in best}


def test_a_fresh_run_replaces_the_trial_directories_of_the_study_it_overwrites(tmp_path):
    (tmp_path / "ws_objective.py").write_text(OBJECTIVE)
    study = write_study(tmp_path, {"function": "ws_objective:objective"}, objective={"metric": "x"})
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q", "--n-trials", "3").exit_code == 0
    stale = tmp_path / "r.trials" / "trial_0002" / "stale.ckpt"
    stale.write_text("from the old study")
    assert run(str(study), "-o", str(out), "-q", "--n-trials", "2").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "r.trials").iterdir()) == ["trial_0000", "trial_0001"]


def test_logs_prints_a_trials_output_and_show_names_its_directory(tmp_path):
    (tmp_path / "trial.py").write_text(SHELL_TRIAL)
    study = write_study(tmp_path, {"command": "python trial.py {x} {trial_dir}"})
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    x = repr(results(out)["trials"][1]["params"]["x"])
    both = cli.invoke(app, ["logs", str(out), "trial_0001"])
    assert both.exit_code == 0
    assert both.stdout == f"hello stdout {x}\n" and both.stderr == "hello stderr\n"
    only = cli.invoke(app, ["logs", str(out), "1", "--stderr"])
    assert only.exit_code == 0 and only.stdout == "hello stderr\n"
    assert cli.invoke(app, ["logs", str(out), "trial_0000", "--stdout"]).stdout.startswith("hello stdout")
    unknown = cli.invoke(app, ["logs", str(out), "trial_0042"])
    assert unknown.exit_code == 2 and "no trial 'trial_0042'" in unknown.stderr
    shown = cli.invoke(app, ["show", str(out), "--format", "csv"])
    header, *rows = shown.stdout.splitlines()
    assert header.split(",")[-1] == "log_dir"
    assert [row.split(",")[-1] for row in rows] == [str(tmp_path / f"r.trials/trial_000{i}") for i in range(3)]


def test_logs_of_a_trial_without_a_directory_says_so(tmp_path):
    (tmp_path / "ws_objective.py").write_text(OBJECTIVE)
    study = write_study(tmp_path, {"function": "ws_objective:objective"}, objective={"metric": "x"},
                        trial_dirs={"keep": "none"})  # fmt: skip
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    outcome = cli.invoke(app, ["logs", str(out), "trial_0000"])
    assert outcome.exit_code == 1 and "trial_0000 has no directory kept" in outcome.stderr


@pytest.mark.skipif(importlib.util.find_spec("plotly") is None, reason="the report extra is not installed")
def test_the_report_links_each_trials_directory_and_output(tmp_path):
    (tmp_path / "trial.py").write_text(SHELL_TRIAL)
    study = write_study(tmp_path, {"command": "python trial.py {x} {trial_dir}"})
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    report = tmp_path / "reports" / "r.html"
    report.parent.mkdir()
    assert cli.invoke(app, ["report", str(out), "-o", str(report)]).exit_code == 0
    html = report.read_text()
    for i in range(3):
        assert f'href="../r.trials/trial_000{i}/stdout.txt"' in html
        assert f'href="../r.trials/trial_000{i}/stderr.txt"' in html


def test_bad_trial_dirs_are_reported_with_their_position(tmp_path):
    study = write_study(tmp_path, {"command": "echo y=1"}, trial_dirs={"keep": "most", "best": 0})
    outcome = cli.invoke(app, ["validate", str(study)])
    assert outcome.exit_code == 2
    lines = outcome.stderr.splitlines()
    assert any(line.startswith(f"{study}:") and "trial_dirs keep must be one of all, best, none" in line
               for line in lines)  # fmt: skip
    assert any("trial_dirs best must be a positive integer" in line for line in lines)


# devices and slots per trial -----------------------------------------------------------------------

# Each trial holds a lock file per device it was given, in a directory all trials share, for long
# enough that another trial starts meanwhile (it waits until it has seen one, or 5 s): a device two
# running trials shared would find its lock file taken.
DEVICE_TRIAL = """\
import json, os, sys, time
shared, slot = sys.argv[1], sys.argv[2]
devices = os.environ.get("CUDA_VISIBLE_DEVICES")
mine = [os.path.join(shared, "holding." + d) for d in (devices or slot).split(",")]
clash = False
for lock in mine:
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        clash = True
seen = set()
end = time.time() + 5
while time.time() < end:
    seen |= {n for n in os.listdir(shared) if n.startswith("holding.")} - {os.path.basename(m) for m in mine}
    if seen:
        break
    time.sleep(0.02)
time.sleep(0.1)
for lock in mine:
    os.unlink(lock)
record = {"cuda": devices, "slot": slot, "env_slot": os.environ.get("SOMATIZE_SLOT"),
          "env_gpus": os.environ.get("SOMATIZE_GPUS"), "clash": clash, "overlapped": sorted(seen)}
with open(os.path.join(shared, os.environ["SOMATIZE_TRIAL_ID"] + ".json"), "w") as f:
    json.dump(record, f)
print("y=1")
"""


def _device_study(tmp_path: Path, resources: dict | None, n_trials: int = 4, **extra) -> tuple[Path, Path]:
    (tmp_path / "device_trial.py").write_text(DEVICE_TRIAL)
    shared = tmp_path / "shared"
    shared.mkdir()
    spec = {"command": f"python device_trial.py {shared} {{slot}}"}
    more = {} if resources is None else {"resources": resources}
    study = write_study(tmp_path, spec, strategy={"type": "random", "n_trials": n_trials}, **more, **extra)
    return study, shared


def _seen(shared: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(shared.glob("trial_*.json"))]


def test_each_running_trial_gets_its_own_gpus_and_parallel_defaults_to_what_they_allow(tmp_path):
    study, shared = _device_study(tmp_path, {"gpus": [0, 1, 2, 3], "per_trial": 2}, n_trials=4)
    out = tmp_path / "r.json"
    outcome = run(str(study), "-o", str(out), "-q")  # no -j: two slots of two devices, so two at once
    assert outcome.exit_code == 0, outcome.output
    seen = _seen(shared)
    assert len(seen) == 4
    assert {s["cuda"] for s in seen} == {"0,1", "2,3"}
    assert all(s["cuda"] == s["slot"] == s["env_slot"] == s["env_gpus"] for s in seen)
    assert not any(s["clash"] for s in seen)
    assert any(s["overlapped"] for s in seen)  # two trials did run at once, on different devices
    assert [t["slot"] for t in results(out)["trials"]] == [s["cuda"] for s in seen]


def test_gpus_from_the_command_line_with_fewer_jobs_than_devices(tmp_path):
    study, shared = _device_study(tmp_path, None, n_trials=5)
    outcome = run(str(study), "-o", str(tmp_path / "r.json"), "-q", "--gpus", "5,6,7", "-j", "2")
    assert outcome.exit_code == 0, outcome.output
    seen = _seen(shared)
    assert len(seen) == 5 and not any(s["clash"] for s in seen)
    assert {s["cuda"] for s in seen} <= {"5", "6", "7"} and any(s["overlapped"] for s in seen)


def test_more_jobs_than_devices_allow_is_refused(tmp_path):
    study, _ = _device_study(tmp_path, {"gpus": [0, 1]})
    outcome = run(str(study), "-o", str(tmp_path / "r.json"), "-j", "3")
    assert outcome.exit_code == 2
    assert "parallel (-j) is 3 but resources allow 2 trials at once" in outcome.stderr
    assert not (tmp_path / "r.json").exists()


def test_named_slots_with_retries_and_failures_hold_one_slot_per_trial(tmp_path):
    # Trial 0 fails its first attempt and is retried on the slot it holds; trial 1 fails for good;
    # slots must come back in every case for 6 trials to run on 2 slots.
    script = (
        "import os, sys, subprocess\n"
        "n = int(os.environ['SOMATIZE_TRIAL_NUMBER'])\n"
        "marker = os.path.join(os.environ['SOMATIZE_TRIAL_DIR'], 'tried')\n"
        "first = not os.path.exists(marker)\n"
        "open(marker, 'w').close()\n"
        "r = subprocess.run([sys.executable, 'device_trial.py', sys.argv[1], os.environ['SOMATIZE_SLOT']])\n"
        "if n == 0 and first: sys.exit(1)\n"
        "if n == 1: sys.exit(3)\n"
    )
    study, shared = _device_study(tmp_path, {"slots": ["licence-a", "licence-b"]}, n_trials=6, retries=1)
    (tmp_path / "wrap.py").write_text(script)
    spec = yaml.safe_load(study.read_text())
    spec["executor"] = {"command": f"python wrap.py {shared}"}
    spec["max_consecutive_failures"] = None
    study.write_text(yaml.safe_dump(spec))
    out = tmp_path / "r.json"
    outcome = run(str(study), "-o", str(out), "-q")
    assert outcome.exit_code == 0, outcome.output
    trials = results(out)["trials"]
    assert len(trials) == 6 and trials[0]["attempts"] == 2 and trials[1]["state"] == "failed"
    assert {t["slot"] for t in trials} == {"licence-a", "licence-b"}
    seen = _seen(shared)
    assert all(s["cuda"] is None and s["env_slot"] in ("licence-a", "licence-b") for s in seen)
    assert not any(s["clash"] for s in seen)


PRUNED_OBJECTIVE = """\
import os
import time

import somatize


def objective(params, trial):
    shared = os.path.join(os.path.dirname(__file__), "shared")
    lock = os.path.join(shared, "holding." + trial.slot)
    os.close(os.open(lock, os.O_CREAT | os.O_EXCL))  # FileExistsError (the trial fails) if a slot is shared
    try:
        for step in range(3):
            trial.report({"y": params["x"] + step}, step=step)
            time.sleep(0.05)
            if trial.number % 3 == 1 and step == 1:
                raise somatize.TrialPruned("pruned by the objective", step=step)
    finally:
        os.unlink(lock)
    return {"y": params["x"], "slot_env": float(os.environ["SOMATIZE_SLOT"])}
"""


def test_pruned_trials_give_their_slot_back(tmp_path):
    (tmp_path / "pruned_objective.py").write_text(PRUNED_OBJECTIVE)
    (tmp_path / "shared").mkdir()
    study = write_study(tmp_path, {"function": "pruned_objective:objective"}, resources={"slots": [10, 20]},
                        strategy={"type": "random", "n_trials": 6}, pruning={"type": "median"})  # fmt: skip
    out = tmp_path / "r.json"
    outcome = run(str(study), "-o", str(out), "-q")
    assert outcome.exit_code == 0, outcome.output
    trials = results(out)["trials"]
    assert [t["state"] for t in trials].count("pruned") == 2 and len(trials) == 6
    assert not any(t["state"] == "failed" for t in trials)  # no slot was ever held by two trials
    for trial in trials:
        if trial["state"] == "completed":
            slot_env = next(m["value"] for m in trial["metrics"] if m["name"] == "slot_env")
            assert slot_env == float(trial["slot"])


DEVICE_OBJECTIVE = """\
import os


def objective(params, trial):
    return {"y": 1.0, "device": float(os.environ["CUDA_VISIBLE_DEVICES"]), "slot": float(trial.gpus)}
"""


def test_python_functions_in_workers_see_their_devices(tmp_path):
    (tmp_path / "dev_objective.py").write_text(DEVICE_OBJECTIVE)
    study = write_study(tmp_path, {"function": "dev_objective:objective"}, resources={"gpus": [7, 9]},
                        strategy={"type": "random", "n_trials": 4})  # fmt: skip
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    for trial in results(out)["trials"]:
        device = {m["name"]: m["value"] for m in trial["metrics"]}
        assert device["device"] == device["slot"] == float(trial["slot"])


def test_the_live_table_shows_which_devices_a_running_trial_holds():
    from rich.console import Console

    from somatize.events import StudyStarted, TrialStarted
    from somatize.ui.live import LiveModel, render

    model = LiveModel()
    model.apply(StudyStarted(study_name="s", strategy="random", total_trials=2, objectives=("y",)))
    model.apply(TrialStarted(trial_id="trial_0000", number=0, params={"x": 1}, slot="2,3"))
    console = Console(record=True, width=120, color_system=None)
    console.print(render(model))
    assert "running on 2,3" in console.export_text()


def test_bad_resources_are_reported_with_their_position(tmp_path):
    study = write_study(tmp_path, {"command": "echo y=1"}, resources={"gpus": [0, 0, "a,b"], "per_trial": 5})
    outcome = cli.invoke(app, ["validate", str(study)])
    assert outcome.exit_code == 2
    text = outcome.stderr
    assert "resources gpus lists '0' twice" in text and "names without commas" in text
    assert all(line.startswith(f"{study}:") for line in text.splitlines())
    bad_flag = run(str(study), "--gpus", "0,,1")
    assert bad_flag.exit_code == 2 and "--gpus takes device ids" in bad_flag.stderr


def test_a_resumed_study_gets_slots_again(tmp_path):
    study, shared = _device_study(tmp_path, {"slots": ["a", "b"]}, n_trials=4)
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    data = results(out)
    journal = tmp_path / "r.journal.jsonl"  # as a run killed after two trials leaves it
    header = {"format": "somatize.journal", "version": 1, "study": {"id": data["study"]["id"],
                                                                    "spec": data["study"]["spec"]}}
    journal.write_text("\n".join(json.dumps(x) for x in [header, *({"trial": t} for t in data["trials"][:2])]) + "\n")
    for p in shared.iterdir():
        p.unlink()
    outcome = run(str(study), "-o", str(out), "-q", "--resume")
    assert outcome.exit_code == 0, outcome.output
    trials = results(out)["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    seen = _seen(shared)
    assert len(seen) == 2 and all(s["env_slot"] in ("a", "b") for s in seen) and not any(s["clash"] for s in seen)


def test_the_environment_documented_for_slots_is_what_a_trial_gets(tmp_path):
    from test_docs import all_tables

    save = "import json, os\njson.dump(dict(os.environ), open('env.json', 'w'))\nprint('y=1')\n"
    (tmp_path / "env.py").write_text(save)
    study = write_study(tmp_path, {"command": ["python", "env.py"]}, resources={"gpus": [4]},
                        strategy={"type": "random", "n_trials": 1})  # fmt: skip
    assert run(str(study), "-o", str(tmp_path / "r.json"), "-q").exit_code == 0
    environment = json.loads((tmp_path / "env.json").read_text())
    documented = set(all_tables()["env:resources"].first_codes())
    assert documented == {"SOMATIZE_SLOT", "SOMATIZE_GPUS", "CUDA_VISIBLE_DEVICES"}
    assert {name: environment.get(name) for name in documented} == dict.fromkeys(documented, "4")
    assert os.environ.get("SOMATIZE_SLOT") is None  # the run left this process's environment alone


# enqueue ----------------------------------------------------------------------------------------

GATED_OBJECTIVE = """\
import os


def objective(params):
    if os.path.exists(os.path.join(os.path.dirname(__file__), "broken")) and params["x"] > 0.5:
        raise ValueError("broken for large x")
    return params["x"] + (0.1 if params.get("opt") == "sgd" else 0.0)
"""

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "opt": ["adam", "sgd"],
    "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"opt": "sgd"}, "default": 0.6},
}


def _gated_study(tmp_path: Path, n_trials: int, **extra) -> Path:
    (tmp_path / "gated.py").write_text(GATED_OBJECTIVE)
    return write_study(
        tmp_path, {"function": "gated:objective"}, name="gated", objective={"metric": "x"},
        search_space=SPACE, strategy={"type": "random", "n_trials": n_trials}, **extra,
    )  # fmt: skip


def test_enqueued_parameter_sets_run_first_and_count_towards_n_trials(tmp_path):
    enqueue = [{"x": 0.25, "opt": "adam"}, {"x": 0.75, "opt": "sgd", "momentum": 0.8}, {"x": 0.5, "opt": "sgd"}]
    study = _gated_study(tmp_path, 5, enqueue=enqueue)
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    trials = results(out)["trials"]
    assert len(trials) == 5
    assert [t["params"] for t in trials[:3]] == [
        {"x": 0.25, "opt": "adam"},
        {"x": 0.75, "opt": "sgd", "momentum": 0.8},
        {"x": 0.5, "opt": "sgd", "momentum": 0.6},  # momentum's default
    ]
    assert all(t["params"] not in [e for e in enqueue] for t in trials[3:])


def test_a_resumed_study_does_not_run_its_enqueued_sets_again(tmp_path):
    enqueue = [{"x": 0.25, "opt": "adam"}, {"x": 0.75, "opt": "adam"}, {"x": 0.5, "opt": "adam"}]
    study = _gated_study(tmp_path, 4, enqueue=enqueue)
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    data = results(out)
    journal = tmp_path / "r.journal.jsonl"  # as a run killed after its first two trials leaves it
    header = {"format": "somatize.journal", "version": 1,
              "study": {"id": data["study"]["id"], "spec": data["study"]["spec"]}}  # fmt: skip
    journal.write_text("\n".join(json.dumps(x) for x in [header, *({"trial": t} for t in data["trials"][:2])]) + "\n")
    assert run(str(study), "-o", str(out), "-q", "--resume").exit_code == 0
    trials = results(out)["trials"]
    assert [t["params"]["x"] for t in trials[:3]] == [0.25, 0.75, 0.5]  # the third enqueued set runs third
    assert len(trials) == 4 and [t["params"] for t in trials].count({"x": 0.25, "opt": "adam"}) == 1


def test_enqueued_sets_that_do_not_fit_the_space_are_reported_with_their_position(tmp_path):
    enqueue = [
        {"x": 2.0, "opt": "adam"},  # out of range
        {"x": 0.5, "opt": "adam", "momentum": 0.6},  # inactive conditional
        {"x": 0.5, "opt": "adma"},  # not a choice
        {"xx": 0.5, "x": 0.5, "opt": "adam"},  # unknown name
        {"x": 0.97, "opt": "adam"},  # violates the constraint
    ]
    study = _gated_study(tmp_path, 5, enqueue=enqueue, constraints=["x < 0.95"])
    outcome = cli.invoke(app, ["validate", str(study)])
    assert outcome.exit_code == 2
    lines = outcome.stderr.splitlines()
    text = study.read_text().splitlines()
    expected = [
        ("x = 2.0 is not in the dimension", "2.0"),
        ("momentum is inactive here", "0.6"),
        ("opt = 'adma' is not in the dimension", "adma"),
        ("'xx' is not a parameter of search_space (did you mean 'x'?)", "xx"),
        ("the constraint 'x < 0.95' does not hold", None),
    ]
    assert len(lines) == len(expected)
    for line, (message, token) in zip(lines, expected):
        assert message in line
        filename, row, column, _ = line.split(":", 3)
        assert filename == str(study)
        if token is not None:  # the position is that of the offending value or key
            assert text[int(row) - 1][int(column) - 1 :].startswith(token)
    assert not (tmp_path / "gated.results.json").exists()


# --warm-start ------------------------------------------------------------------------------------


def test_warm_start_tells_earlier_trials_that_fit_and_never_runs_them_again(tmp_path):
    (tmp_path / "ws_objective.py").write_text("def objective(params):\n    return params['a'] * 10 + params['b']\n")
    small = {"a": [0, 1], "b": [0, 1]}
    first = write_study(tmp_path, {"function": "ws_objective:objective"}, name="first", search_space=small,
                        strategy={"type": "grid"}, objective={"metric": "y"})  # fmt: skip
    old = tmp_path / "first.json"
    assert run(str(first), "-o", str(old), "-q").exit_code == 0
    old_data = results(old)
    old_data["trials"][3]["params"]["a"] = 7  # one earlier trial outside the current space
    old.write_text(json.dumps(old_data))
    # The new space has 6 points; 3 earlier trials fit it, so a random study of 6 runs only the 3 others.
    second = write_study(tmp_path, {"function": "ws_objective:objective"}, name="second",
                         search_space={"a": [0, 1, 2], "b": [0, 1]}, objective={"metric": "y"},
                         strategy={"type": "random", "n_trials": 6})  # fmt: skip
    out = tmp_path / "second.json"
    outcome = run(str(second), "-o", str(out), "--warm-start", str(old))
    assert outcome.exit_code == 0, outcome.output
    assert (f"warm start: 3 of 4 earlier trials told to the sampler ({old}); not used: 1 outside the search space "
            "(e.g. trial_0003: a=7 is not in the search space)") in outcome.stderr
    trials = results(out)["trials"]
    ran = {(t["params"]["a"], t["params"]["b"]) for t in trials}
    assert ran == {(2, 0), (2, 1), (1, 1)} and len(trials) == 3  # never the three told points
    assert [t["number"] for t in trials] == [0, 1, 2]


def test_warm_start_from_an_unreadable_file_is_one_line_and_exit_2(tmp_path):
    study = write_study(tmp_path, {"command": "echo y=1"})
    outcome = run(str(study), "-o", str(tmp_path / "r.json"), "--warm-start", str(tmp_path / "missing.json"))
    assert outcome.exit_code == 2
    assert outcome.stderr.startswith("somatize: --warm-start ") and len(outcome.stderr.splitlines()) == 1


# --resume --retry-failed -----------------------------------------------------------------------


def test_retry_failed_reruns_the_failed_trials_of_a_resumed_study_within_the_budget(tmp_path):
    study = _gated_study(tmp_path, 6, max_consecutive_failures=None, max_failures=10)
    out = tmp_path / "r.json"
    (tmp_path / "broken").write_text("")
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    first = results(out)["trials"]
    failed = [t for t in first if t["state"] == "failed"]
    assert failed and len(first) == 6
    (tmp_path / "broken").unlink()  # the bug is fixed
    outcome = run(str(study), "-o", str(out), "--resume", "--retry-failed")
    assert outcome.exit_code == 0, outcome.output
    assert f"retrying {len(failed)} failed trial" in outcome.stderr
    trials = results(out)["trials"]
    assert len(trials) == 6 + len(failed)  # each rerun in the place of the trial it reruns
    reruns = trials[6:]
    assert [t["params"] for t in reruns] == [t["params"] for t in failed]
    assert all(t["state"] == "completed" for t in reruns)
    assert [t["state"] for t in trials[:6]] == [t["state"] for t in first]  # the failures stay as history
    again = run(str(study), "-o", str(out), "--resume", "--retry-failed")  # nothing left to retry
    assert again.exit_code == 0 and "there are none to retry" in again.stderr
    assert len(results(out)["trials"]) == 6 + len(failed)


def test_retry_failed_without_resume_is_refused(tmp_path):
    study = write_study(tmp_path, {"command": "echo y=1"})
    outcome = run(str(study), "--retry-failed")
    assert outcome.exit_code == 2 and "use it with --resume" in outcome.stderr


def test_a_trial_that_prints_nothing_has_no_output_files_and_logs_prints_nothing(tmp_path):
    study = write_study(tmp_path, {"command": ["python", "-c", "import os; open(os.environ['SOMATIZE_METRICS_FILE'],"
                                               " 'w').write('y=1')"]})  # fmt: skip
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    directory = tmp_path / "r.trials" / "trial_0000"
    assert sorted(p.name for p in directory.iterdir()) == ["metrics.txt"]
    outcome = cli.invoke(app, ["logs", str(out), "trial_0000"])
    assert outcome.exit_code == 0 and outcome.stdout == "" and outcome.stderr == ""


# a Python function's directory is made on first use ----------------------------------------------

QUIET = "def objective(params):\n    return params['x']\n"

ON_DEMAND = """\
import os


def objective(params, trial):
    if trial.number == 0:
        print("spoke")
    elif trial.number == 1:
        trial.dir  # reading it makes it
    elif trial.number == 3:  # the variable names a path to make, as documented
        os.makedirs(os.environ["SOMATIZE_TRIAL_DIR"], exist_ok=True)
    elif trial.number == 4:
        os.system("echo from a child process")  # only a worker's capture of its file descriptors sees it
    return params["x"]
"""


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["in-process", "workers"])
def test_a_quiet_function_makes_no_directory_and_logs_says_why(tmp_path, jobs):
    (tmp_path / "ws_quiet.py").write_text(QUIET)
    study = write_study(tmp_path, {"function": "ws_quiet:objective"}, objective={"metric": "x"})
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q", "-j", jobs).exit_code == 0
    assert not (tmp_path / "r.trials").exists()  # not even the root
    assert all("log_dir" not in t for t in results(out)["trials"])
    outcome = cli.invoke(app, ["logs", str(out), "trial_0000"])
    assert outcome.exit_code == 1
    assert outcome.stderr == (
        "somatize: trial_0000 has no directory: it printed nothing and did not use trial.dir"
        " (or the results went to stdout)\n"
    )
    shown = cli.invoke(app, ["show", str(out), "--format", "csv"])
    assert "log_dir" not in shown.stdout.splitlines()[0]  # no column of paths that are not there


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["in-process", "workers"])
def test_a_function_gets_its_directory_when_it_prints_or_uses_it(tmp_path, jobs):
    (tmp_path / "ws_on_demand.py").write_text(ON_DEMAND)
    study = write_study(tmp_path, {"function": "ws_on_demand:objective"}, objective={"metric": "x"},
                        strategy={"type": "random", "n_trials": 5})  # fmt: skip
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q", "-j", jobs).exit_code == 0
    with_dirs = ["trial_0000", "trial_0001", "trial_0003"] + (["trial_0004"] if jobs != "1" else [])
    assert sorted(p.name for p in (tmp_path / "r.trials").iterdir()) == with_dirs
    assert {t["id"]: t.get("log_dir") for t in results(out)["trials"]} == {
        f"trial_000{i}": f"r.trials/trial_000{i}" if f"trial_000{i}" in with_dirs else None for i in range(5)
    }
    assert cli.invoke(app, ["logs", str(out), "0"]).stdout == "spoke\n"
    assert sorted(p.name for p in (tmp_path / "r.trials" / "trial_0001").iterdir()) == []
    if jobs != "1":
        assert cli.invoke(app, ["logs", str(out), "4"]).stdout == "from a child process\n"


LOUD_WHEN_ODD = """\
def objective(params, trial):
    if trial.number % 2:
        print("odd")
    return params["x"]
"""


def test_keep_best_keeps_the_best_of_the_trials_that_have_a_directory(tmp_path):
    (tmp_path / "ws_odd.py").write_text(LOUD_WHEN_ODD)
    study = write_study(tmp_path, {"function": "ws_odd:objective"}, objective={"metric": "x"},
                        strategy={"type": "random", "n_trials": 8}, trial_dirs={"keep": "best", "best": 2})  # fmt: skip
    out = tmp_path / "r.json"
    assert run(str(study), "-o", str(out), "-q").exit_code == 0
    trials = results(out)["trials"]
    best = sorted((t for t in trials if t["number"] % 2), key=lambda t: t["values"]["x"])[:2]
    assert sorted(p.name for p in (tmp_path / "r.trials").iterdir()) == sorted(t["id"] for t in best)
    assert {t["id"] for t in trials if t.get("log_dir")} == {t["id"] for t in best}


def test_a_fresh_run_of_a_quiet_function_still_removes_the_old_studys_directories(tmp_path):
    (tmp_path / "ws_objective.py").write_text(OBJECTIVE)
    (tmp_path / "ws_quiet.py").write_text(QUIET)
    out = tmp_path / "r.json"
    loud = write_study(tmp_path, {"function": "ws_objective:objective"}, objective={"metric": "x"})
    assert run(str(loud), "-o", str(out), "-q").exit_code == 0
    assert len(list((tmp_path / "r.trials").iterdir())) == 3
    quiet = write_study(tmp_path, {"function": "ws_quiet:objective"}, objective={"metric": "x"})
    assert run(str(quiet), "-o", str(out), "-q").exit_code == 0
    assert list((tmp_path / "r.trials").iterdir()) == []
    assert all("log_dir" not in t for t in results(out)["trials"])
