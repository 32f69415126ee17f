"""A results file whose trials are all as the writer writes them, read at once (issue 18, fourth round):
the trials read behave exactly as Trial.from_dict's, and any line the bulk reading does not take as it is
gets what the line-by-line reading gives it (the same trials, or the same error naming the line)."""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from somatize.cli import app
from somatize.errors import ResultsFileError
from somatize.storage.reader import open_results, read_all
from somatize.storage.results import read_results, trial_line
from somatize.study import MetricRecord, Trial

cli = CliRunner()

OBJECTIVE = """\
def objective(params, trial):
    for step in range(3):
        trial.report({"loss": params["x"] / (step + 1), "aux": float(step)}, step=step)
    if params["kind"] == "fail":
        raise RuntimeError("boom")
    return {"loss": params["x"] * params["n"]}
"""

STUDY = """\
name: plain
seed: 5
search_space:
  x: {type: float, low: 0.0001, high: 0.01, scale: log}
  n: {type: int, low: 1, high: 4}
  kind: [ok, fail, ok2]
strategy: {type: random, n_trials: 12}
objective: {metric: loss, direction: minimize}
metrics: [aux]
executor: {function: "plain:objective"}
max_consecutive_failures: null
"""


@pytest.fixture
def plain_study(tmp_path: Path) -> tuple[Path, Path]:
    """A study of 12 trials, some failed, each with metric records at three steps, written by `run`."""
    (tmp_path / "plain.py").write_text(OBJECTIVE)
    study, out = tmp_path / "study.yaml", tmp_path / "r.json"
    study.write_text(STUDY)
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return study, out


def test_a_plainly_written_history_is_resumed_without_building_each_trial_from_its_record(plain_study, monkeypatch):
    study, out = plain_study
    full = read_results(out)  # every trial built by Trial.from_dict, before from_dict is taken away

    def refused(data):
        raise AssertionError("a plainly written trial was built by Trial.from_dict")

    monkeypatch.setattr(Trial, "from_dict", classmethod(lambda cls, data: refused(data)))
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "15", "--resume"])
    assert result.exit_code == 0, result.output
    monkeypatch.undo()
    resumed = read_results(out)
    assert [t.to_dict() for t in resumed.trials[:12]] == [t.to_dict() for t in full.trials]
    assert [t.number for t in resumed.trials] == list(range(15))


def test_trials_read_at_once_are_equal_to_trials_built_from_their_records(plain_study):
    _, out = plain_study
    built = read_results(out).trials  # Trial.from_dict for each
    read = read_all(out, {}).trials
    assert len(read) == len(built) == 12
    for lazy, full in zip(read, built):
        assert type(lazy) is Trial
        assert repr(lazy) == repr(full)  # every field, metrics and start time built as from_dict builds them
        assert lazy == full and full == lazy
        assert lazy.to_dict() == full.to_dict()
        assert trial_line(lazy) == trial_line(full)
        assert dataclasses.asdict(lazy) == dataclasses.asdict(full)
        assert dataclasses.replace(lazy, reason="r") == dataclasses.replace(full, reason="r")
        assert pickle.loads(pickle.dumps(lazy)) == full
        assert copy.deepcopy(lazy) == full
        assert all(type(m) is MetricRecord for m in lazy.metrics) and len(lazy.metrics) >= 6
        assert lazy.best_metric("loss") == full.best_metric("loss")
        assert lazy.id == full.id and lazy.started_at == full.started_at


def test_a_trial_read_at_once_takes_new_values_like_any_trial(plain_study):
    _, out = plain_study
    trial = read_all(out, {}).trials[0]
    trial.metrics.append(MetricRecord("loss", 0.5, 9, 1.0))  # the list built on first read is kept
    assert trial.metrics[-1].step == 9 and len(trial.metrics) == 7
    fresh = read_all(out, {}).trials[1]
    fresh.metrics, fresh.started_at = [], 12.5  # set before ever being read
    assert fresh.metrics == [] and fresh.started_at == 12.5
    assert json.loads(trial_line(fresh))["started_at"] == "1970-01-01T00:00:12.500000+00:00"


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda record: record.__setitem__(key, value)


def _metric(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda record: record["metrics"][0].__setitem__(key, value)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda record: record.pop(key)


# One record changed, each in a way the bulk reading does not take as it is: valid ones (converted or
# defaulted by Trial.from_dict) and invalid ones (an error naming the line).
CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "an integer value": lambda r: r["values"].__setitem__("loss", 3),
    "a nan value": lambda r: r["values"].__setitem__("loss", "nan"),
    "a value that is text": lambda r: r["values"].__setitem__("loss", "much"),
    "a state that is no state": _set("state", "bogus"),
    "a state that is a list": _set("state", ["completed"]),
    "a negative number": _set("number", -1),
    "a number that is true": _set("number", True),
    "params that are a list": _set("params", [1]),
    "no id": _drop("id"),
    "no metrics": _drop("metrics"),
    "metrics null": _set("metrics", None),
    "no values": _drop("values"),
    "an unknown key": _set("colour", "red"),
    "a lease": _set("lease", {"seconds": 5.0, "until": "2026-01-01T00:00:00.000000+00:00"}),
    "truncated output": _set("truncated", {"stdout": 10}),
    "attempts null": _set("attempts", None),
    "no attempts": _drop("attempts"),
    "a duration that is text": _set("duration_ms", "long"),
    "a log_dir that is a number": _set("log_dir", 5),
    "a feasible that is text": _set("feasible", "yes"),
    "violated constraints": _set("violated", ["x < 1"]),
    "a start in the year 999": _set("started_at", "0999-06-01T00:00:00.000000+00:00"),
    "a start in the year 9999": _set("started_at", "9999-12-31T23:59:00.000000+00:00"),
    "a start that is no time": _set("started_at", "2026-13-45T00:00:00.000000+00:00"),
    "a start that is a number": _set("started_at", 5),
    "a naive start": _set("started_at", "2026-01-01T00:00:00"),
    "a start with an offset": _set("started_at", "2026-01-01T00:00:00+05:00"),
    "a metric step that is a float": _metric("step", 1.5),
    "a metric step that is true": _metric("step", True),
    "a metric timestamp that is no time": _metric("timestamp", "yesterday"),
    "a metric timestamp null": _metric("timestamp", None),
    "a metric name that is a number": _metric("name", 7),
    "a metric without a name": lambda r: r["metrics"][0].pop("name"),
    "a metric with its keys in another order": lambda r: r["metrics"].__setitem__(
        0, dict(reversed(list(r["metrics"][0].items())))
    ),
    "a metric that is a list": lambda r: r["metrics"].__setitem__(0, [1]),
    "an integer past 64 bits": lambda r: r["params"].__setitem__("big", 2**70 + 1),
    "a float of many digits": lambda r: r["params"].__setitem__("x", 0.00012345678901234567),
    "text that is not ascii": lambda r: r["params"].__setitem__("kind", "\u00e9t\u00e9"),
}

# The same for the line's text itself.
LINE_CHANGES: dict[str, Callable[[str], str]] = {
    "two objects on a line": lambda line: line.replace("},\n", "}, {},\n"),
    "an indent of two": lambda line: line[2:],
    "a space before the comma": lambda line: line.replace("},\n", "} ,\n"),
    "no comma": lambda line: line.replace("},\n", "}\n"),
    "a nan literal": lambda line: line.replace('"duration_ms": ', '"duration_ms": NaN, "x": '),
    "an array": lambda line: "    [1],\n",
    "an empty line after": lambda line: line + "\n",
    "a line of spaces after": lambda line: line + "    \n",
    "a torn line": lambda line: line[: len(line) // 2] + "\n",
    "not utf-8": lambda line: line.replace('"ok', '"\udcff'),
}


def _rewrite_third(out: Path, change: Callable[[str], str]) -> None:
    lines = out.read_text().splitlines(keepends=True)
    opening = next(i for i, line in enumerate(lines) if line.startswith('  "trials": ['))
    lines[opening + 3] = change(lines[opening + 3])
    out.write_bytes("".join(lines).encode("utf-8", "surrogateescape"))


def _line_by_line(out: Path) -> list[Trial] | str:
    results = open_results(out)
    if results is None:
        return "other layout"
    try:
        return list(results.trials())
    except ResultsFileError as exc:
        return str(exc)


def _at_once(out: Path) -> list[Trial] | str:
    try:
        return read_all(out, {}).trials
    except ResultsFileError as exc:
        return str(exc)


def _record_change(change: Callable[[dict[str, Any]], None]) -> Callable[[str], str]:
    def rewrite(line: str) -> str:
        record = json.loads(line.strip().removesuffix(","))
        change(record)
        return "    " + json.dumps(record) + ",\n"

    return rewrite


@pytest.mark.parametrize(
    "change",
    [*(_record_change(c) for c in CHANGES.values()), *LINE_CHANGES.values()],
    ids=[*CHANGES, *LINE_CHANGES],
)
def test_a_line_not_read_at_once_gets_what_the_line_by_line_reading_gives_it(plain_study, change):
    _, out = plain_study
    _rewrite_third(out, change)
    expected = _line_by_line(out)
    if expected == "other layout":
        with pytest.raises(ResultsFileError):
            read_results(out)
        return
    got = _at_once(out)
    if isinstance(expected, str):
        assert got == expected
        assert ":" in expected and "\n" not in expected
    else:
        assert not isinstance(got, str), got
        assert [repr(t) for t in got] == [repr(t) for t in expected]


def test_a_bad_metric_timestamp_deep_in_a_plain_history_is_named_by_its_line_on_resume(plain_study):
    study, out = plain_study
    _rewrite_third(out, _record_change(_metric("timestamp", "2026-02-30T00:00:00.000000+00:00")))
    line = 1 + next(i for i, text in enumerate(out.read_text().splitlines()) if '"2026-02-30' in text)
    before = out.read_bytes()
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "15", "--resume"])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith(f"somatize: {out}:{line}: not a valid trial record") and "\n" not in message
    assert "Traceback" not in result.output
    assert out.read_bytes() == before  # nothing lost


def test_a_full_disk_while_the_history_is_copied_into_the_journal_loses_no_trial(tmp_path, monkeypatch):
    (tmp_path / "plain.py").write_text(OBJECTIVE)
    study, out = tmp_path / "study.yaml", tmp_path / "r.json"
    study.write_text(STUDY)
    first = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "1100"])
    assert first.exit_code == 0, first.output
    before = read_results(out)
    journal = tmp_path / "r.journal.jsonl"
    real_write = os.write

    def write(fd: int, data) -> int:  # no room in the journal past 64 KiB: the header and some trials fit
        if os.readlink(f"/proc/self/fd/{fd}") == str(journal) and os.fstat(fd).st_size + len(data) > 64 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "1103", "--resume"])
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert not journal.exists()  # the results file, untouched, is what holds the history
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    monkeypatch.setattr(os, "write", real_write)  # room again
    again = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "1103", "--resume"])
    assert again.exit_code == 0, again.output
    resumed = read_results(out)
    assert [t.to_dict() for t in resumed.trials[:1100]] == [t.to_dict() for t in before.trials]
    assert [t.number for t in resumed.trials] == list(range(1103))
