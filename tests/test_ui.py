"""The terminal UI and output formats: plain lines, the live model and table, best/show formats."""

from __future__ import annotations

import csv
import io
import json
import shlex
import time

import pytest
import yaml
from rich.console import Console

from somatize.events import (
    BestUpdated,
    Event,
    EventBus,
    StudyCompleted,
    StudyProgress,
    StudyStarted,
    TrialCompleted,
    TrialFailed,
    TrialMetric,
    TrialPrunedEvent,
    TrialStarted,
)
from somatize.executors.command import value_text
from somatize.runner import StudyRunner
from somatize.samplers import make_sampler
from somatize.space import CategoricalDimension, FloatDimension, IntDimension, SearchSpace
from somatize.study import Objective, Study, Trial, TrialState
from somatize.ui.formats import (
    BEST_FORMATS,
    env_name,
    filter_state,
    format_best,
    format_param,
    format_trials,
    sort_trials,
)
from somatize.ui.lines import PlainProgress
from somatize.ui.live import LiveModel, LiveTable, render, summary

SPACE = SearchSpace(
    (
        FloatDimension("lr", 1e-4, 0.1, scale="log"),
        IntDimension("layers", 1, 4),
        CategoricalDimension("act", ("relu", "tanh")),
    )
)
LONG_ERROR = "exit status 1: CUDA out of memory while allocating a very large tensor on device 0\nTraceback ..."


def make_study() -> Study:
    return Study("mlp-tuning", SPACE, [Objective("f1", "maximize"), Objective("latency_ms", "minimize")])


def trials() -> list[Trial]:
    """Five finished trials: three completed (trial_0002 best), one failed, one pruned."""
    return [
        Trial(
            0,
            {"lr": 0.01, "layers": 3, "act": "relu"},
            TrialState.COMPLETED,
            values={"f1": 0.91, "latency_ms": 12.5},
            duration_ms=1200,
        ),
        Trial(1, {"lr": 0.001, "layers": 1, "act": "tanh"}, TrialState.FAILED, error=LONG_ERROR, duration_ms=400),
        Trial(
            2,
            {"lr": 0.003, "layers": 2, "act": "relu"},
            TrialState.COMPLETED,
            values={"f1": 0.93, "latency_ms": 20.0},
            duration_ms=900,
        ),
        Trial(
            3,
            {"lr": 0.05, "layers": 4, "act": "tanh"},
            TrialState.PRUNED,
            values={"f1": 0.4},
            pruned_step=4,
            reason="below the median at step 4",
            duration_ms=300,
        ),
        Trial(
            4,
            {"lr": 0.02, "layers": 1, "act": "relu"},
            TrialState.COMPLETED,
            values={"f1": 0.88, "latency_ms": 8.0},
            duration_ms=700,
        ),
    ]


def finished_study() -> Study:
    study = make_study()
    study.trials = trials()
    return study


def event_sequence(total: int = 5) -> list[Event]:
    """The events the runner publishes for `trials()`, in its order (see runner._record)."""
    events: list[Event] = [
        StudyStarted(
            study_id="s",
            study_name="mlp-tuning",
            strategy="random",
            total_trials=total,
            directions=("maximize", "minimize"),
            objectives=("f1", "latency_ms"),
        ),
    ]
    best: Trial | None = None
    pruned = failed = 0
    for done, trial in enumerate(trials(), 1):
        events.append(TrialStarted(trial_id=trial.id, number=trial.number, params=trial.params))
        for name, value in trial.values.items():
            events.append(TrialMetric(trial_id=trial.id, name=name, value=value, step=None))
        if trial.state is TrialState.COMPLETED:
            events.append(TrialCompleted(trial_id=trial.id, values=dict(trial.values), trial=trial))
            if best is None or trial.values["f1"] > best.values["f1"]:
                best = trial
                events.append(BestUpdated(trial_id=trial.id, value=trial.values["f1"], params=trial.params))
        elif trial.state is TrialState.PRUNED:
            pruned += 1
            events.append(
                TrialPrunedEvent(trial_id=trial.id, step=trial.pruned_step, reason=trial.reason or "", trial=trial)
            )
        else:
            failed += 1
            events.append(TrialFailed(trial_id=trial.id, error=trial.error or "", trial=trial))
        events.append(
            StudyProgress(
                completed=done, total=total, best_value=best.values["f1"] if best else 0.0, pruned=pruned, failed=failed
            )
        )
    events.append(StudyCompleted(status="completed", reason="n_trials", best_trial_id="trial_0002", best_value=0.93))
    return events


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, force_terminal=False, color_system=None), out


def render_text(model: LiveModel, now: float | None = None) -> str:
    console, out = plain_console()
    console.print(render(model, now))
    return out.getvalue()


# Plain progress lines ----------------------------------------------------------------------


def test_plain_progress_prints_a_line_per_finished_trial_and_a_summary():
    out = io.StringIO()
    progress = PlainProgress(out)
    for event in event_sequence():
        progress(event)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert (
        lines[0]
        == "[1/5] trial_0000 completed f1=0.91 latency_ms=12.5 lr=0.01 layers=3 act=relu (1.2s) best=0.91 (new best)"
    )
    assert lines[1].startswith("[2/5] trial_0001 failed: exit status 1: CUDA out of memory")
    assert "Traceback" not in lines[1] and lines[1].endswith("(0.4s) best=0.91")
    assert lines[2].endswith("best=0.93 (new best)")
    assert lines[3] == "[4/5] trial_0003 pruned at step 4: below the median at step 4 (0.3s) best=0.93"
    assert lines[5] == (
        "study mlp-tuning completed: 5 trials (3 completed, 1 pruned, 1 failed); best trial_0002 f1=0.93"
    )


def test_plain_progress_quiet_prints_nothing():
    out = io.StringIO()
    progress = PlainProgress(out, quiet=True)
    for event in event_sequence():
        progress(event)
    assert out.getvalue() == ""


def test_plain_progress_survives_a_closed_stream():
    out = io.StringIO()
    progress = PlainProgress(out)
    out.close()
    for event in event_sequence():
        progress(event)  # must not raise into the runner
    assert progress.broken


def test_plain_progress_unknown_total_and_stop_reason():
    out = io.StringIO()
    progress = PlainProgress(out)
    for event in event_sequence(total=0)[:6]:
        progress(event)
    progress(StudyCompleted(status="failed", reason="max_consecutive_failures", best_trial_id=None))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1] trial_0000 completed")
    assert lines[-1].startswith("study mlp-tuning failed (max_consecutive_failures): 1 trials")


# Live model and rendering ----------------------------------------------------------------------


def test_live_model_renders_progress_best_failed_and_pruned_rows():
    model = LiveModel()
    for event in event_sequence():
        model.apply(event)
    assert (model.finished, model.completed, model.pruned, model.failed) == (5, 3, 1, 1)
    text = render_text(model)
    assert "mlp-tuning" in text and "random" in text
    assert "5/5 trials" in text
    assert "best f1=0.93" in text and "trial_0002 ★" in text
    assert "exit status 1: CUDA out of memory" in text and "Traceback" not in text
    pruned_row = next(line for line in text.splitlines() if "trial_0003" in line)
    assert "pruned" in pruned_row and "step 4" in pruned_row


def test_live_model_running_trial_shows_latest_metric_and_eta():
    model = LiveModel()
    events = event_sequence(total=10)
    for event in events[:5]:  # study started, trial_0000 started/metrics/completed
        model.apply(event)
    model.apply(TrialStarted(trial_id="trial_0001", number=1, params={"lr": 0.5, "layers": 2, "act": "relu"}))
    model.apply(TrialMetric(trial_id="trial_0001", name="f1", value=0.42, step=3))
    assert "trial_0001" in model.running
    text = render_text(model, now=model.started_at + 10)
    row = next(line for line in text.splitlines() if "trial_0001" in line)
    assert "running" in row and "0.42" in row and "step 3" in row
    assert "1/10 trials" in text and "ETA" in text and "1 running" in text


def test_live_model_shows_missed_events_and_keeps_best_row_when_scrolled_off():
    model = LiveModel()
    for event in event_sequence():
        model.apply(event)
    for number in range(5, 20):  # many failures push the best trial out of the recent rows
        model.apply(TrialStarted(trial_id=f"trial_{number:04d}", number=number, params={}))
        model.apply(TrialFailed(trial_id=f"trial_{number:04d}", error="boom"))
    model.missed = 7
    text = render_text(model)
    assert "(7 events missed)" in text
    assert "trial_0002 ★" in text and "trial_0000 " not in text


def test_live_model_top_trials_follow_the_direction():
    model = LiveModel()
    for event in event_sequence():
        model.apply(event)
    assert not model.minimize()
    assert [r.trial_id for r in model.top(5)] == ["trial_0002", "trial_0000", "trial_0004"]
    console, out = plain_console()
    console.print(summary(model))
    text = out.getvalue()
    assert "top 3 by f1 (max)" in text
    assert text.index("trial_0002") < text.index("trial_0000") < text.index("trial_0004")


def test_live_output_has_no_colour_codes_without_a_terminal(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)  # NO_COLOR must win even on a terminal
    model = LiveModel()
    for event in event_sequence():
        model.apply(event)
    console.print(render(model))
    assert "\x1b[3" not in out.getvalue() and "\x1b[9" not in out.getvalue()


# LiveTable thread ---------------------------------------------------------------------------------


def test_live_table_starts_and_stops_promptly_with_a_summary():
    bus = EventBus()
    console, out = plain_console()
    table = LiveTable(bus.subscribe_queue(), console=console)
    table.start()
    for event in event_sequence():
        bus.publish(event)
    time.sleep(0.05)
    began = time.monotonic()
    table.stop()
    assert time.monotonic() - began < 1.0
    table.stop()  # a second stop is a no-op
    assert table.error is None
    text = out.getvalue()
    summary_part = text[text.index("study mlp-tuning completed") :]
    assert "top 3 by f1" in summary_part and "trial_0002" in summary_part
    assert "5 trials (3 completed, 1 pruned, 1 failed)" in summary_part


def test_live_table_stop_without_start_and_missed_events():
    bus = EventBus()
    console, out = plain_console()
    subscription = bus.subscribe_queue(maxsize=4)
    table = LiveTable(subscription, console=console)
    for event in event_sequence():
        bus.publish(event)
    table.stop()
    assert subscription.missed > 0
    text = out.getvalue()
    assert f"({subscription.missed} events missed" in text
    assert "completed: 5 trials (3 completed, 1 pruned, 1 failed)" in text
    assert "best value=0.93  trial_0002" in text  # study_started was lost, so the metric name is too


def test_live_table_and_plain_progress_follow_a_real_run(function_of):
    study = Study(
        "quad",
        SearchSpace((FloatDimension("x", -2.0, 2.0),)),
        [Objective("y", "minimize")],
        {"type": "random", "n_trials": 6},
    )
    bus = EventBus()
    lines = io.StringIO()
    bus.subscribe(PlainProgress(lines))
    console, out = plain_console()
    table = LiveTable(bus.subscribe_queue(), console=console)
    table.start()
    sampler = make_sampler(study.strategy, study.space, study.primary, 1)
    StudyRunner(study, sampler, function_of("y", lambda p: (p["x"] - 0.5) ** 2), bus, None, 1).run()
    table.stop()
    best = study.best_trial()
    assert best is not None
    assert len(lines.getvalue().splitlines()) == 7
    assert lines.getvalue().splitlines()[-1].endswith(f"best {best.id} y={best.values['y']:.6g}")
    assert table.model.top(1)[0].trial_id == best.id
    assert f"{best.id} ★" in out.getvalue()


# best formats ----------------------------------------------------------------------------------------


@pytest.fixture
def study() -> Study:
    return finished_study()


def test_format_best_json_round_trips(study):
    best = study.best_trial()
    data = json.loads(format_best(study, best, "json"))
    assert data == {
        "id": "trial_0002",
        "number": 2,
        "value": 0.93,
        "values": {"f1": 0.93, "latency_ms": 20.0},
        "params": best.params,
    }
    other = json.loads(format_best(study, study.best_trial("latency_ms"), "json", "latency_ms"))
    assert other["id"] == "trial_0004" and other["value"] == 8.0


def test_format_best_params_env_args_yaml(study):
    best = study.trials[0]
    assert format_best(study, best, "params").splitlines() == ["lr=0.01", "layers=3", "act=relu"]
    assert format_best(study, best, "env").splitlines() == ["LR=0.01", "LAYERS=3", "ACT=relu"]
    assert format_best(study, best, "args") == "--lr 0.01 --layers 3 --act relu"
    assert yaml.safe_load(format_best(study, best, "yaml")) == best.params
    assert list(yaml.safe_load(format_best(study, best, "yaml"))) == ["lr", "layers", "act"]


def test_format_best_quotes_awkward_values_for_the_shell(study):
    trial = Trial(9, {"name": "two words", "lr": 0.1 + 0.2, "flag": True, "data-dir": "it's"}, TrialState.COMPLETED)
    tokens = shlex.split(format_best(study, trial, "args"))
    assert tokens == ["--name", "two words", "--lr", "0.30000000000000004", "--flag", "true", "--data-dir", "it's"]
    env = format_best(study, trial, "env").splitlines()
    assert env[2] == "FLAG=true" and env_name("data-dir") == "DATA_DIR" and env_name("3d") == "_3D"
    assert [shlex.split(line) for line in env] == [
        ["NAME=two words"],
        ["LR=0.30000000000000004"],
        ["FLAG=true"],
        ["DATA_DIR=it's"],
    ]


def test_format_best_table_and_every_format_is_text(study):
    best = study.best_trial()
    table = format_best(study, best, "table")
    assert "trial_0002" in table and "0.93" in table and "0.003" in table and "maximize, best by" in table
    for fmt in BEST_FORMATS:
        text = format_best(study, best, fmt)
        assert text and not text.endswith("\n")
    with pytest.raises(ValueError):
        format_best(study, best, "xml")


def test_format_param(study):
    best = study.trials[0]
    assert format_param(best, "lr") == "0.01"
    assert format_param(best, "layers") == "3"
    assert format_param(Trial(0, {"on": False}), "on") == "false"
    with pytest.raises(KeyError):
        format_param(best, "nope")
    assert value_text(0.1 + 0.2) == format_param(Trial(0, {"x": 0.1 + 0.2}), "x")


# show formats --------------------------------------------------------------------------------------------


def test_format_trials_csv(study):
    rows = list(csv.DictReader(io.StringIO(format_trials(study, "csv", study.trials))))
    assert len(rows) == 5
    assert list(rows[0]) == [
        "id",
        "number",
        "state",
        "f1",
        "latency_ms",
        "duration_ms",
        "lr",
        "layers",
        "act",
        "reason",
    ]
    assert rows[0]["f1"] == "0.91" and rows[0]["lr"] == "0.01" and rows[0]["reason"] == ""
    assert rows[1]["state"] == "failed" and rows[1]["f1"] == "" and "\n" not in rows[1]["reason"]
    assert rows[3]["reason"] == "at step 4: below the median at step 4"


def test_format_trials_json_and_table(study):
    listed = json.loads(format_trials(study, "json", study.trials[:2]))
    assert [t["id"] for t in listed] == ["trial_0000", "trial_0001"] and listed[1]["error"] == LONG_ERROR
    table = format_trials(study, "table", study.trials)
    assert table.endswith("\n") and "\x1b" not in table
    failed_row = next(line for line in table.splitlines() if "trial_0001" in line)
    assert "failed" in failed_row and "nan" not in failed_row.lower() and "CUDA" in failed_row
    assert "id" in table.splitlines()[0] and "latency_ms" in table.splitlines()[0]


def test_format_trials_param_named_like_a_column(study):
    trial = Trial(0, {"state": "on", "lr": 0.1}, TrialState.COMPLETED, values={"f1": 1.0})
    header = next(csv.reader(io.StringIO(format_trials(study, "csv", [trial]))))
    assert "param.state" in header and header.count("state") == 1


def test_sort_and_filter(study):
    assert [t.id for t in sort_trials(study, study.trials)] == [
        "trial_0002",
        "trial_0000",
        "trial_0004",
        "trial_0003",
        "trial_0001",
    ]
    by_latency = sort_trials(study, study.trials, "latency_ms")
    assert [t.id for t in by_latency][:3] == ["trial_0004", "trial_0000", "trial_0002"]
    assert [t.id for t in by_latency][3:] == ["trial_0001", "trial_0003"]  # no value: last, by number
    assert [t.id for t in filter_state(study.trials, "failed")] == ["trial_0001"]
    assert [t.id for t in filter_state(study.trials, TrialState.PRUNED)] == ["trial_0003"]
    with pytest.raises(KeyError):
        sort_trials(study, study.trials, "nope")


# The live table on a real terminal's size ------------------------------------------------------------------------

CUDA_ERROR = "exit status 1: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total)"


def wide_model(finished: int = 40, running: int = 3) -> LiveModel:
    """A study with eight parameters and two objectives: too wide for 80 columns as it is."""
    model = LiveModel()
    params = {f"param_{i}": 0.123456789 * (i + 1) for i in range(8)}
    model.apply(
        StudyStarted(study_id="s", study_name="wide", strategy="random", total_trials=100,
                     objectives=("val_loss", "latency_ms"), directions=("minimize", "minimize"))
    )  # fmt: skip
    for number in range(finished + running):
        trial_id = f"trial_{number:04d}"
        model.apply(TrialStarted(trial_id=trial_id, number=number, params=params))
        if number >= finished:
            continue
        trial = Trial(number, params, values={"val_loss": 1000.123456 + number, "latency_ms": 12.5})
        trial.duration_ms = 1234
        if number % 7 == 3:
            trial.state, trial.error = TrialState.FAILED, CUDA_ERROR
            model.apply(TrialFailed(trial_id=trial_id, error=CUDA_ERROR, trial=trial))
        else:
            trial.state = TrialState.COMPLETED
            model.apply(TrialCompleted(trial_id=trial_id, values=dict(trial.values), trial=trial))
    return model


def terminal_text(model: LiveModel, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO(), color_system=None)
    console.print(render(model, now=model.started_at))
    return console.export_text().splitlines()


def test_live_table_at_80_columns_keeps_ids_states_and_values_whole():
    lines = terminal_text(wide_model(), 80, 30)
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    rows = {line.split(" ")[0]: line for line in lines if line.startswith("trial_")}
    assert "trial_0042" in rows and "running" in rows["trial_0042"]  # running trials are shown
    cells = [cell.strip() for cell in rows["trial_0039"].split("│")]
    assert cells[:2] == ["trial_0039", "completed"] and cells[3:6] == ["1039.12", "12.5", "1.2s"]
    assert cells[2].startswith("param_") and cells[2].endswith("…")  # the parameters gave way
    failed = [cell.strip() for cell in rows["trial_0038"].split("│")]
    assert failed[1] == "failed" and failed[-1].startswith("exit status") and failed[-1].endswith("…")
    assert len(failed[-1]) > len(failed[2])  # before the reason did


def test_live_table_fills_the_terminal_height_with_finished_trials():
    for height in (30, 50):
        lines = terminal_text(wide_model(finished=60), 80, height)
        assert len(lines) == height - 1  # the last line is the cursor's
        finished = [line for line in lines if line.startswith("trial_") and "running" not in line]
        assert len(finished) == height - 1 - 3 - 2 - 3  # header lines, table header, running rows
        assert finished[-1].startswith("trial_0059")  # the latest ones


def test_live_table_shows_the_whole_reason_when_there_is_room():
    failed = next(line for line in terminal_text(wide_model(), 240, 30) if line.startswith("trial_0038"))
    assert failed.rstrip().endswith(f"│ {CUDA_ERROR}")
    failed = next(line for line in terminal_text(wide_model(), 300, 30) if line.startswith("trial_0038"))
    assert failed.rstrip().endswith(f"│ {CUDA_ERROR}") and "param_7=0.987654 │" in failed  # and every parameter
