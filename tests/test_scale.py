"""Large studies (issue 18): the results file written off the trial loop and read a part at a time,
reports that sample what they cannot draw, and finite spaces filled up in linear time."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize import (
    CategoricalDimension,
    FloatDimension,
    IntDimension,
    MetricRecord,
    Objective,
    SearchSpace,
    Study,
    Trial,
    TrialState,
    make_sampler,
)
from somatize.cli import app
from somatize.storage.paths import temp_prefix
from somatize.storage.reader import open_results
from somatize.storage.results import parse_results, read_results, results_json, write_results
from somatize.study import Recommendation

cli = CliRunner()

SPACE = SearchSpace(
    (FloatDimension("lr", 1e-4, 0.1, scale="log"), IntDimension("layers", 1, 4),
     CategoricalDimension("act", ("relu", "tänh", True, 2))),
    {"epochs": 20},
)


def big_study(trials: int, seed: int = 3, objectives: int = 1) -> Study:
    """A finished study of `trials` trials in every state, as a run leaves it (no run needed)."""
    names = [Objective("f1", "maximize"), Objective("latency_ms")][:objectives]
    study = Study("big-ß", SPACE, names, {"type": "random", "n_trials": trials}, id="big-20260101-000000-abcdef")
    rng = random.Random(seed)
    study.started_at = 1_790_000_000.0
    for number in range(trials):
        params = {"lr": rng.uniform(1e-4, 0.1), "layers": rng.randint(1, 4), "act": rng.choice(SPACE.dimensions[2]
                  .choices), "epochs": 20}
        state = rng.choice([TrialState.COMPLETED] * 8 + [TrialState.PRUNED, TrialState.FAILED])
        values = {} if state is TrialState.FAILED else {"f1": rng.random(), "latency_ms": rng.uniform(1, 100)}
        values = {k: v for k, v in values.items() if k in [o.metric for o in names]}
        metrics = [MetricRecord(k, v, None, 1_790_000_000.0 + number) for k, v in values.items()]
        study.trials.append(Trial(number, params, state, metrics, values, 1_790_000_000.0 + number, rng.randint(0, 99),
                                  error="boom\nline 2" if state is TrialState.FAILED else None,
                                  pruned_step=2 if state is TrialState.PRUNED else None, trial_seed=number))
    study.status, study.finished_at, study.stop_reason = "completed", 1_790_100_000.0, "n_trials"
    return study


def both_layouts(tmp_path: Path, study: Study) -> tuple[Path, Path]:
    """The study as this version writes it, and pretty-printed whole as before issue 18 (and as jq writes it)."""
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    write_results(study, new)
    old.write_text(json.dumps(study.to_dict(), indent=2) + "\n")
    return new, old


def output(*args: object) -> str:
    result = cli.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


# The results file ------------------------------------------------------------------


def test_the_results_file_is_the_documented_document_with_one_trial_a_line(tmp_path):
    study = big_study(30, objectives=2)
    new, old = both_layouts(tmp_path, study)
    assert json.loads(new.read_text()) == json.loads(old.read_text())  # the same content as before
    lines = new.read_text().splitlines()
    opening = lines.index('  "trials": [')
    assert lines[:opening] == old.read_text().splitlines()[:opening]  # the head is indented as before
    for number, line in enumerate(lines[opening + 1 : opening + 31]):  # then each trial on its own line
        assert json.loads(line.strip().rstrip(",")) == study.trials[number].to_dict()
    assert lines[opening + 31 :] == ["  ]", "}"]
    assert results_json(read_results(new)) == new.read_text()


def test_a_study_without_trials_keeps_an_empty_list(tmp_path):
    study = big_study(0)
    new, old = both_layouts(tmp_path, study)
    assert json.loads(new.read_text()) == json.loads(old.read_text())
    assert open_results(new) is not None and output("show", new, "-f", "json") == "[]\n"


@pytest.mark.parametrize("args", [
    ["best"], ["best", "-f", "json"], ["best", "--objective", "latency_ms", "-f", "json"], ["best", "--observed"],
    ["best", "--pareto", "-f", "json"], ["show"], ["show", "--limit", "7"], ["show", "-f", "csv", "--state", "failed"],
    ["show", "-f", "json", "--limit", "3"], ["show", "--sort", "-lr", "--limit", "5"], ["show", "--limit", "0"],
])
def test_best_and_show_print_the_same_from_either_layout(tmp_path, args):
    study = big_study(60, objectives=2)
    study.recommended = Recommendation(study.completed()[3].number, 0.5, 0.1)
    new, old = both_layouts(tmp_path, study)
    assert output(args[0], new, *args[1:]) == output(args[0], old, *args[1:])


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_show_of_more_trials_than_a_block_streams_what_it_printed_whole(tmp_path, fmt, monkeypatch):
    from somatize.ui import rows

    monkeypatch.setattr(rows, "TABLE_BLOCK", 40)  # streamed in blocks past 40 rows
    study = big_study(150)
    new, old = both_layouts(tmp_path, study)
    for limit in ([], ["--limit", "90"]):
        streamed, whole = output("show", new, "-f", fmt, *limit), output("show", old, "-f", fmt, *limit)
        if fmt != "table":
            assert streamed == whole
            continue
        # The same cells; a column is as wide as the rows read so far need, so it may widen later on.
        cells = [[line.split() for i, line in enumerate(text.splitlines()) if i != 1] for text in (streamed, whole)]
        assert cells[0] == cells[1]  # (line 1 is the rule under the header)
        assert streamed.splitlines()[:42] == [line.rstrip() for line in rich_rows(study, 40)]


def rich_rows(study: Study, count: int) -> list[str]:
    from somatize.ui.formats import format_trials

    return format_trials(study, "table", study.trials[:count]).splitlines()


def test_best_reads_only_the_head_and_the_best_trials_line(tmp_path):
    study = big_study(50)
    new, _ = both_layouts(tmp_path, study)
    best = study.best_trial()
    text = new.read_text()
    lines = text.splitlines()
    # Corrupt every other trial line: best never parses them; show says which line is bad.
    for index, line in enumerate(lines):
        if line.startswith('    {"id"') and f'"number": {best.number},' not in line:
            lines[index] = '    {"id": "trial_x", "number": "not a number"},'
    new.write_text("\n".join(lines) + "\n")
    assert json.loads(output("best", new, "-f", "json"))["id"] == best.id
    result = cli.invoke(app, ["show", str(new)])
    assert result.exit_code == 2 and f"{new}:" in result.output and "not a valid trial record" in result.output


def test_a_truncated_results_file_is_one_line_and_exit_2(tmp_path):
    new, _ = both_layouts(tmp_path, big_study(20))
    new.write_text(new.read_text()[:-12])
    for command in (["show", "-f", "csv"], ["show", "--sort", "f1"], ["report"]):
        result = cli.invoke(app, [command[0], str(new), *command[1:]])
        assert result.exit_code == 2 and "truncated" in result.output, result.output
        assert "Traceback" not in result.output


# kill -9 during a periodic write -------------------------------------------------------------

FAST = """\
name: fast
seed: 5
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  k: {type: int, low: 0, high: 9}
strategy: {type: random, n_trials: 400000}
objective: {metric: v}
executor: {function: "fast:objective"}
"""


def test_kill_9_during_a_periodic_write_loses_only_running_trials(tmp_path):
    # Trials of a millisecond: a few thousand by the second periodic write, so the resume below is quick.
    (tmp_path / "fast.py").write_text("import time\n\ndef objective(params):\n    time.sleep(0.001)\n"
                                      "    return params['x']\n")
    (tmp_path / "fast.yaml").write_text(FAST)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    argv = ["python", "-m", "somatize", "run", "fast.yaml", "-o", "r.json", "-q"]
    process = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    prefix = temp_prefix(tmp_path / "r.json")
    deadline = time.monotonic() + 60
    writes = 0
    try:
        while time.monotonic() < deadline and writes < 2:  # the second write: the first one's lines are reused
            if any(p.name.startswith(prefix) for p in tmp_path.iterdir()):  # a write under way
                writes += 1
                if writes == 2:
                    break
                while any(p.name.startswith(prefix) for p in tmp_path.iterdir()):
                    time.sleep(0.001)
            time.sleep(0.001)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert writes == 2, "no periodic write was seen"
    earlier = read_results(tmp_path / "r.json")  # the first write is whole; the second left a temp file only
    journal_lines = (tmp_path / "r.journal.jsonl").read_text().splitlines()[1:]
    journaled = {json.loads(line)["trial"]["number"] for line in journal_lines if line.endswith("}")}
    assert {t.number for t in earlier.trials} <= journaled
    resumed = subprocess.run([*argv, "--resume", "--n-trials", str(len(journaled) + 50)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    final = read_results(tmp_path / "r.json")
    numbers = [t.number for t in final.trials]
    assert numbers == sorted(set(numbers)) and len(numbers) == len(journaled) + 50
    assert journaled <= set(numbers)
    assert not any(p.name.startswith(prefix) for p in tmp_path.iterdir())  # the torn write's temp file is gone


@pytest.mark.parametrize("way", ["copied in the kernel", "read and written", "changed behind", "ended early",
                                 "two objectives"])
def test_each_periodic_write_is_the_file_a_full_rewrite_gives(tmp_path, monkeypatch, way):
    """A write after the first copies the lines of the file before it (issue 18): with copy_file_range, with
    reads and writes where the file system cannot, and from scratch when that file was changed since; the
    head names the best trial and the Pareto front kept up as trials finished."""
    from somatize.storage import results

    monkeypatch.setattr(results, "PERIODIC_WRITE_SECONDS", 0.0)  # a write whenever the one before has ended
    # Two objectives of a few values each: equal vectors (the earliest trial stands for one) and dominated ones.
    (tmp_path / "fast.py").write_text("import time\n\ndef objective(params):\n    time.sleep(0.002)\n"
                                      "    return {'v': round(params['x'], 1), 'w': params['k'] % 4}\n")
    study = FAST.replace("400000", "80")
    if way == "two objectives":
        study = study.replace("objective: {metric: v}", "objectives: [{metric: v}, {metric: w, direction: maximize}]")
    (tmp_path / "fast.yaml").write_text(study)
    out = tmp_path / "r.json"
    written: list[str] = []
    copies: list[int] = []
    replace, copy = os.replace, os.copy_file_range

    def replacing(source, target):
        replace(source, target)
        if Path(target) == out:
            written.append(out.read_text())
            if way == "changed behind" and len(written) == 3:
                with open(out, "a") as handle:  # the same file, one byte longer: not the one it wrote
                    handle.write(" ")

    def copying(source, target, count, offset_src=None):
        copies.append(count)
        if way == "read and written":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        if way == "ended early" and len(copies) == 2:
            return 0
        return copy(source, target, count, offset_src)

    monkeypatch.setattr(os, "replace", replacing)
    monkeypatch.setattr(os, "copy_file_range", copying)
    before = threading.enumerate()
    result = cli.invoke(app, ["run", str(tmp_path / "fast.yaml"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    final = read_results(out)
    assert len(written) > 4 and len(copies) >= 3, (len(written), len(copies))  # periodic writes that copied
    for text in written[:-1]:
        study = parse_results(text, "periodic")
        assert study.status == "running" and results_json(study) == text  # as written afresh, byte for byte
        assert [t.to_dict() for t in study.trials] == [t.to_dict() for t in final.trials[: len(study.trials)]]
    assert [len(parse_results(t, "p").trials) for t in written[:-1]] == sorted(
        len(parse_results(t, "p").trials) for t in written[:-1])
    assert results_json(final) == written[-1] and final.status == "completed" and len(final.trials) == 80
    assert not [t for t in threading.enumerate() if t.name == "somatize-results-write" and t not in before]
    if way == "two objectives":
        assert 1 < len(final.pareto_front()) < 80
        assert len({len(parse_results(t, "p").pareto_front()) for t in written}) > 1  # the front changed meanwhile


def _front_by_definition(trials, objectives):
    """The Pareto front as the results documentation defines it, trial against trial: completed feasible
    trials with every value known, none of which another such trial dominates; of trials with equal values,
    the lowest-numbered. `objectives`: (metric, sign), the sign making each one to minimise."""
    points = [(tuple(t.values.get(m) for m, _ in objectives), t) for t in trials
              if t.state is TrialState.COMPLETED and t.feasible is not False]
    points = [(tuple(x * sign for x, (_, sign) in zip(v, objectives)), t) for v, t in points
              if all(x is not None and not math.isnan(x) for x in v)]
    front = [t for v, t in points
             if not any(all(a <= b for a, b in zip(w, v)) and (w != v or u.number < t.number) for w, u in points)]
    return sorted(t.number for t in front)


@pytest.mark.parametrize("seed", range(5))
def test_the_front_kept_up_as_trials_finish_in_any_order_is_the_studys(seed):
    from somatize.study import ParetoFront

    rng = random.Random(seed)
    study = big_study(300, seed=seed, objectives=2)
    for trial in study.trials:  # few distinct values, a better f1 costing latency: equal vectors, dominated ones
        if trial.values:
            f1 = round(rng.random(), 1)
            trial.values = {"f1": f1, "latency_ms": round(f1 * 10) + rng.choice([0, 1, 2])}
    study.trials[5].values["f1"] = math.nan
    study.trials[7].feasible = False
    front = ParetoFront(Study(study.name, study.space, study.objectives, study.strategy))
    for trial in rng.sample(study.trials, len(study.trials)):  # as trials of a parallel study finish
        front.add(trial)
    assert [t.number for t in front.trials()] == [t.number for t in study.pareto_front()]
    assert [t.number for t in front.trials()] == _front_by_definition(study.trials, [("f1", -1), ("latency_ms", 1)])
    assert len(front.trials()) > 1


def test_a_resumed_study_is_written_with_the_content_it_would_have_had(tmp_path):
    (tmp_path / "fast.py").write_text("def objective(params):\n    return params['x']\n")
    (tmp_path / "fast.yaml").write_text(FAST.replace("400000", "60"))
    assert cli.invoke(app, ["run", str(tmp_path / "fast.yaml"), "-o", str(tmp_path / "r.json"), "-q",
                            "--n-trials", "40"]).exit_code == 0
    before = json.loads((tmp_path / "r.json").read_text())["trials"]
    result = cli.invoke(app, ["run", str(tmp_path / "fast.yaml"), "-o", str(tmp_path / "r.json"), "-q", "--resume"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.json").read_text()
    after = json.loads(text)["trials"]
    assert after[:40] == before and len(after) == 60
    assert results_json(read_results(tmp_path / "r.json")) == text  # written as it would be encoded afresh


# report ----------------------------------------------------------------------------


def test_a_report_of_more_trials_than_it_draws_samples_them_and_says_so(tmp_path, monkeypatch):
    pytest.importorskip("plotly")
    from somatize.report import page

    monkeypatch.setattr(page, "MAX_POINTS", 30)
    monkeypatch.setattr(page, "MAX_LINES", 20)
    monkeypatch.setattr(page, "MAX_ROWS", 25)
    study = big_study(200)
    new, _ = both_layouts(tmp_path, study)
    html = tmp_path / "r.html"
    result = cli.invoke(app, ["report", str(new), "-o", str(html)])
    assert result.exit_code == 0, result.output
    text = html.read_text()
    completed = len([t for t in study.completed()])
    assert f"shows 30 of {completed:,} trials" in text and f"shows 20 of {completed:,} trials" in text
    assert "25 of 200 trials" in text
    assert f'<tr class="completed best"><td data-key="{study.best_trial().number}"' in text  # the best is listed


# finite spaces -----------------------------------------------------------------------


def test_the_remainder_of_a_finite_space_is_what_a_list_of_untried_points_would_give():
    from somatize.samplers.random import FiniteRemainder

    space = SearchSpace((IntDimension("a", 0, 29), CategoricalDimension("b", ("x", "y", "z"))))
    sampler = make_sampler({"type": "random", "n_trials": 90}, space, Objective("v"), 0)
    points = list(space.enumerate())
    rng = random.Random(1)
    remainder = FiniteRemainder(space, sampler.seen)
    for _ in range(80):
        untried = [p for p in points if space.key(p) not in sampler.seen]
        assert remainder.count() == len(untried)
        k = rng.randrange(len(untried))
        assert remainder.pick(k) == untried[k]
        sampler.seen.add(space.key(untried[rng.randrange(len(untried))]))


def test_random_search_fills_a_finite_space_with_every_point_once():
    space = SearchSpace((IntDimension("a", 0, 49), IntDimension("b", 0, 39)))
    sampler = make_sampler({"type": "random", "n_trials": 5000}, space, Objective("v"), 2)
    proposed = []
    while (params := sampler.propose(len(proposed))) is not None:
        proposed.append((params["a"], params["b"]))
    assert sorted(proposed) == sorted((p["a"], p["b"]) for p in space.enumerate())


def test_reading_a_study_whole_leaves_the_garbage_collector_as_it_was(tmp_path):
    import gc

    from somatize.errors import ResultsFileError
    from somatize.storage.reader import read_all

    study = big_study(50)
    new, _ = both_layouts(tmp_path, study)
    known: dict = {}
    assert [t.to_dict() for t in read_all(new, known).trials] == [t.to_dict() for t in study.trials]
    assert gc.isenabled() and sorted(known) == list(range(50))
    lines = new.read_text().splitlines(keepends=True)
    opening = lines.index('  "trials": [\n')
    lines[opening + 20] = lines[opening + 20].replace('"number": 19,', '"number": "19",')
    new.write_text("".join(lines))
    with pytest.raises(ResultsFileError, match=r":\d+: not a valid trial record"):
        read_all(new, {})
    assert gc.isenabled()  # paused while the trials are built, on again after a bad line too
    gc.disable()
    try:
        read_all(tmp_path / "old.json")
        assert not gc.isenabled()  # and left off when it was off
    finally:
        gc.enable()
