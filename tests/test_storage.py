"""Property tests of the results-file and journal readers ("never lose a trial").

Whatever bytes sit in a results file or a journal, reading them gives a study
(or the journal's trials) or a ResultsFileError -- one line, naming the file --
and never another exception. On the command line that is a clean exit 2.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
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
)
from somatize.cli import app
from somatize.errors import ResultsFileError
from somatize.storage.journal import Journal, read_journal
from somatize.storage.results import parse_results, read_results, results_json, write_results

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# A study with a trial in every state, non-ASCII text, NaN and a constant.

SPACE = SearchSpace(
    (
        FloatDimension("lr", 1e-4, 0.1, scale="log"),
        IntDimension("layers", 1, 4),
        CategoricalDimension("act", ("relu", "tanh", True, 2)),
    ),
    {"epochs": 20},
)


def every_state_study() -> Study:
    study = Study(
        "storage-ß",
        SPACE,
        [Objective("f1", "maximize"), Objective("latency_ms", "minimize", reduce="last")],
        {"type": "random", "n_trials": 5},
        id="storage-20260101-000000-abcdef",
    )
    study.started_at = 1_790_000_000.25
    params = {"lr": 0.012345678901234567, "layers": 2, "act": "relu", "epochs": 20}
    study.trials = [
        Trial(0, dict(params), TrialState.COMPLETED,
              [MetricRecord("f1", 0.5, 0, 1_790_000_001.5), MetricRecord("latency_ms", 12.0, None, 1_790_000_002.0)],
              {"f1": 0.5, "latency_ms": 12.0}, 1_790_000_000.5, 2500, trial_seed=11),
        Trial(1, dict(params, layers=3), TrialState.PRUNED, [MetricRecord("f1", 0.1, 3, 1_790_000_004.0)],
              {"f1": 0.1}, 1_790_000_004.0, 100, pruned_step=3, reason="below median"),
        Trial(2, dict(params, act=True), TrialState.FAILED, [MetricRecord("f1", math.nan, None, 1_790_000_005.0)],
              {}, 1_790_000_005.0, 7, error="exit status 1: boom…\n  at line 2", attempts=2),
        Trial(3, dict(params, act=2), TrialState.COMPLETED,
              [MetricRecord("f1", 0.9, None, 1_790_000_006.0), MetricRecord("latency_ms", 5.0, None, 1_790_000_006.0)],
              {"f1": 0.9, "latency_ms": 5.0}, 1_790_000_006.0, 10),
        Trial(4, dict(params, act="tanh"), TrialState.RUNNING, [], {}, 1_790_000_007.0),
        Trial(5, dict(params, layers=4), TrialState.STALE, [], {}, 1_790_000_008.0, reason="its lease ran out",
              lease_seconds=60.0, lease_until=1_790_000_068.0),
    ]
    study.status = "completed"
    study.finished_at = 1_790_000_010.0
    return study


VALID_TEXT = results_json(every_state_study())
VALID_DOC = json.loads(VALID_TEXT)
NAME = "results/r.json"

# Keys of the format, so generated objects often look like the real thing.
KEYS = sorted({
    "format", "version", "study", "name", "id", "spec", "objectives", "metric", "direction", "reduce",
    "search_space", "strategy", "type", "low", "high", "choices", "status", "trials", "number", "state",
    "params", "values", "metrics", "value", "step", "timestamp", "started_at", "finished_at", "trial",
    "duration_ms", "error", "pruned_step", "reason", "trial_seed", "attempts", "best_trial", "pareto_front",
})
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["somatize.results", "somatize.journal", "completed", "failed", "pruned", "running",
                       "minimize", "maximize", "last", "float", "int", "categorical", "nan", "inf",
                       "2026-01-01T00:00:00+00:00", "not-a-date"])
    | st.sampled_from([1, 0, -1, 10**400, 2**63])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                                                max_size=5),
    max_leaves=25,
)


def dumps(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity as the non-standard literals Python's json reads back


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document (keys and list indices)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def parent_of(doc: Any, path: tuple) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def mutated_documents(draw) -> str:
    """A valid results document with one to three keys dropped or values replaced."""
    doc = copy.deepcopy(VALID_DOC)
    for _ in range(draw(st.integers(1, 3))):
        candidates = [p for p in paths(doc) if p]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = parent_of(doc, path)
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    return dumps(doc)


def parses_or_clean_error(text: str, name: str = NAME) -> Study | None:
    """The property: a usable Study, or a one-line ResultsFileError naming the file."""
    try:
        study = parse_results(text, name)
    except ResultsFileError as exc:
        assert_clean(exc, name)
        return None
    assert isinstance(study, Study)
    # A study that came back is usable: it can be written again and reads back the same.
    again = results_json(study)
    assert results_json(parse_results(again, name)) == again
    return study


def assert_clean(exc: ResultsFileError, name: str) -> None:
    message = str(exc)
    assert message.startswith(str(name)), message
    assert "\n" not in message and "\r" not in message, message


# The results file ------------------------------------------------------------------


def test_valid_document_round_trips():
    study = parses_or_clean_error(VALID_TEXT)
    assert study is not None and results_json(study) == VALID_TEXT
    assert {t.state for t in study.trials} == set(TrialState)


@SETTINGS
@given(st.text())
@example("")
@example("[" * 100_000)
@example('{"format": "somatize.results", "version": ' + "1" * 5000 + "}")  # too many digits to read
@example('{"format": "somatize.results", "version": 1, "study": ' + "[" * 5000 + "]" * 5000 + "}")
def test_parse_results_on_arbitrary_text(text):
    assert parses_or_clean_error(text) is None


@SETTINGS
@given(JSON)
def test_parse_results_on_arbitrary_json(value):
    parses_or_clean_error(dumps(value))


@SETTINGS
@given(mutated_documents())
def test_parse_results_on_a_mutated_valid_document(text):
    parses_or_clean_error(text)


@pytest.mark.parametrize(("path", "value"), [
    (("trials", 0, "values", "f1"), 10**400),  # an integer too large for a float
    (("trials", 0, "metrics", 0, "value"), -(10**400)),
    (("trials", 0, "params", "lr"), math.nan),  # NaN literal: not written by somatize, cannot be written back
    (("trials", 0, "params", "lr"), math.inf),
    (("study", "spec", "search_space", "lr", "high"), math.nan),
    (("trials", 0, "started_at"), "0001-01-01T00:00:00-23:59"),
    (("trials", 0, "started_at"), 17),
    (("trials", 0, "metrics"), {"name": "f1"}),
    (("study", "objectives"), []),
    (("study", "spec", "search_space"), {"a\nb": {"type": "float", "low": 0, "high": 1, "bad\nkey": 1}}),
])
def test_parse_results_on_chosen_bad_values(path, value):
    doc = copy.deepcopy(VALID_DOC)
    parent_of(doc, path)[path[-1]] = value
    parses_or_clean_error(dumps(doc))


def test_fields_only_ever_printed_are_not_over_checked():
    # An objective may raise TrialPruned(step=1.5); the file somatize wrote must stay readable.
    doc = copy.deepcopy(VALID_DOC)
    doc["trials"][1]["pruned_step"] = 1.5
    study = parses_or_clean_error(dumps(doc))
    assert study is not None and study.trials[1].pruned_step == 1.5


@SETTINGS
@given(st.integers(0, len(VALID_TEXT)))
def test_parse_results_on_a_truncated_valid_document(cut):
    study = parses_or_clean_error(VALID_TEXT[:cut])
    # Only the trailing newline may go: any shorter cut is an error, never a partial study.
    assert (study is not None) == (cut >= len(VALID_TEXT.rstrip()))


@SETTINGS
@given(st.binary(max_size=200), st.integers(0, len(VALID_TEXT.encode())))
@example(b"\xff\xfe", 0)
@example(b"\x80", 300)
def test_read_results_on_bytes(tmp_path, garbage, cut):
    path = tmp_path / "r.json"
    path.write_bytes(VALID_TEXT.encode()[:cut] + garbage)
    try:
        study = read_results(path)
    except ResultsFileError as exc:
        assert_clean(exc, str(path))
    else:
        assert isinstance(study, Study)


def test_read_results_on_a_directory_or_missing_file(tmp_path):
    for path in (tmp_path, tmp_path / "missing.json"):
        with pytest.raises(ResultsFileError) as caught:
            read_results(path)
        assert_clean(caught.value, str(path))


def test_read_results_reads_what_write_results_wrote(tmp_path):
    path = tmp_path / "r.json"
    write_results(every_state_study(), path)
    assert results_json(read_results(path)) == VALID_TEXT


# The journal -------------------------------------------------------------------------


def journal_text(tmp_path: Path, study: Study | None = None) -> str:
    path = tmp_path / "made.journal.jsonl"
    path.unlink(missing_ok=True)
    journal = Journal(path)
    journal.begin(study or every_state_study())
    journal.close()
    return path.read_text(encoding="utf-8")


def trial_lines(text: str) -> list[str]:
    return text.splitlines()[1:]


def reads_or_clean_error(path: Path) -> tuple[dict, list[Trial]] | None:
    try:
        header, trials = read_journal(path)
    except ResultsFileError as exc:
        assert_clean(exc, str(path))
        return None
    assert isinstance(header, dict)
    assert all(isinstance(t, Trial) for t in trials)
    assert [t.number for t in trials] == sorted({t.number for t in trials})
    return header, trials


def as_dicts(trials: list[Trial]) -> list[dict]:
    return [t.to_dict() for t in trials]


def test_journal_round_trip(tmp_path):
    text = journal_text(tmp_path)
    assert text.isascii()  # so a cut can never fall inside a UTF-8 sequence
    path = tmp_path / "j.jsonl"
    path.write_text(text)
    header, trials = read_journal(path)
    assert header["id"] == every_state_study().id
    assert as_dicts(trials) == as_dicts(every_state_study().trials)


LINE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)


@SETTINGS
@given(st.data())
def test_read_journal_on_random_lines(tmp_path, data):
    valid = journal_text(tmp_path).splitlines()
    line = (st.sampled_from(valid) | JSON.map(dumps) | JSON.map(lambda v: dumps({"trial": v}))
            | JSON.map(lambda v: dumps({"format": "somatize.journal", "version": 1, "study": v})) | LINE_TEXT)
    lines = data.draw(st.lists(line, max_size=8))
    path = tmp_path / "j.jsonl"
    path.write_text("\n".join(lines) + data.draw(st.sampled_from(["", "\n"])), encoding="utf-8")
    reads_or_clean_error(path)


@SETTINGS
@given(st.binary(max_size=300))
@example(b"\xff\n")
def test_read_journal_on_random_bytes(tmp_path, raw):
    path = tmp_path / "j.jsonl"
    path.write_bytes(raw)
    reads_or_clean_error(path)


@SETTINGS
@given(st.data())
def test_read_journal_keeps_every_trial_before_a_torn_last_line(tmp_path, data):
    text = journal_text(tmp_path)
    raw = text.encode()
    cut = data.draw(st.integers(0, len(raw)))
    path = tmp_path / "j.jsonl"
    path.write_bytes(raw[:cut])
    outcome = reads_or_clean_error(path)
    header_end = len(text.splitlines()[0])
    if cut < header_end:
        assert outcome is None  # no header: nothing to resume, a clean error
        return
    assert outcome is not None
    header, trials = outcome
    assert header["id"] == every_state_study().id
    # Every trial line whose text is wholly before the cut is kept; a torn one is dropped.
    kept, end = [], header_end + 1
    for line in trial_lines(text):
        end += len(line)
        if cut >= end:
            kept.append(json.loads(line)["trial"]["number"])
        end += 1
    assert [t.number for t in trials] == kept
    expected = [t for t in every_state_study().trials if t.number in kept]
    assert as_dicts(trials) == as_dicts(expected)


def is_trial_record(line: str) -> bool:
    try:
        Trial.from_dict(json.loads(line)["trial"])
    except Exception:  # noqa: BLE001 - anything that fails is garbage
        return False
    return True


@SETTINGS
@given(st.data())
def test_read_journal_names_a_corrupt_line_in_the_middle(tmp_path, data):
    lines = journal_text(tmp_path).splitlines()
    garbage = data.draw(
        LINE_TEXT | JSON.map(dumps) | JSON.map(lambda v: dumps({"trial": v}))
        | st.sampled_from([line[: len(line) // 2] for line in lines[1:]])
    )
    assume(not is_trial_record(garbage))  # a line that happens to be a good trial record is not garbage
    where = data.draw(st.integers(1, len(lines) - 1))  # never the last line: that one may be torn
    lines.insert(where, garbage)
    path = tmp_path / "j.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ResultsFileError) as caught:
        read_journal(path)
    assert str(caught.value).startswith(f"{path}:{where + 1}: corrupt journal line")
    assert_clean(caught.value, str(path))


@pytest.mark.parametrize("line", [
    '{"trial": ' + "[" * 5000 + "]" * 5000 + "}",  # nested too deeply for the parser
    json.dumps({"trial": {"number": 9, "params": {}, "state": "completed", "values": {"f1": 10**400}}}),
    '{"trial": {"number": ' + "9" * 5000 + "}}",
    json.dumps({"trial": {"number": 9, "params": {}, "state": "completed", "started_at": 5}}),
    json.dumps({"trial": {"number": 9, "params": {"lr": math.nan}, "state": "completed"}}),
])
def test_read_journal_on_chosen_bad_lines(tmp_path, line):
    lines = journal_text(tmp_path).splitlines()
    lines.insert(1, line)
    path = tmp_path / "j.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ResultsFileError) as caught:
        read_journal(path)
    assert str(caught.value).startswith(f"{path}:2: corrupt journal line")


@pytest.mark.parametrize("study", [5, [], "x", {"spec": []}, {"spec": "x"}, {"id": 5, "spec": {}}])
def test_read_journal_rejects_a_header_that_is_not_a_study(tmp_path, study):
    # The header feeds `run --resume` (header["spec"], header["id"]): a bad one is a corrupt line 1.
    lines = journal_text(tmp_path).splitlines()
    lines[0] = json.dumps({"format": "somatize.journal", "version": 1, "study": study})
    path = tmp_path / "j.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ResultsFileError) as caught:
        read_journal(path)
    assert str(caught.value).startswith(f"{path}:1: corrupt journal line")


# The command line ----------------------------------------------------------------------

cli = CliRunner()

SHELL_STUDY = """\
name: quad
seed: 3
search_space:
  x: {type: float, low: -2.0, high: 2.0}
strategy: {type: random, n_trials: 4}
objective: {metric: y, direction: minimize}
executor:
  command: python -c "import sys; print('y=' + repr(float(sys.argv[1]) ** 2))" {x}
"""

BAD_RESULTS = {
    "truncated": VALID_TEXT[: len(VALID_TEXT) // 2].encode(),
    "wrong-format": json.dumps({"format": "somatize.journal", "version": 1}).encode(),
    "wrong-version": json.dumps({**VALID_DOC, "version": 2}).encode(),
    "binary": bytes(range(256)) * 4,
    "invalid-utf8": VALID_TEXT.encode()[:100] + b"\xc3\x28\xff" + VALID_TEXT.encode()[100:],
}


def assert_clean_exit_2(result, name: str | Path) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # nothing else escaped
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"somatize: {name}"), result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["best", "show"])
@pytest.mark.parametrize("kind", sorted(BAD_RESULTS))
def test_best_and_show_on_a_bad_results_file_exit_2(tmp_path, command, kind):
    path = tmp_path / "r.json"
    path.write_bytes(BAD_RESULTS[kind])
    assert_clean_exit_2(cli.invoke(app, [command, str(path)]), path)


@pytest.mark.parametrize("command", ["best", "show"])
def test_best_and_show_on_a_directory_exit_2(tmp_path, command):
    assert_clean_exit_2(cli.invoke(app, [command, str(tmp_path)]), tmp_path)


@pytest.mark.parametrize("command", ["best", "show"])
def test_best_and_show_on_bad_results_from_stdin_exit_2(command):
    assert_clean_exit_2(cli.invoke(app, [command, "-"], input=VALID_TEXT[:300]), "<stdin>")


@settings(max_examples=60, deadline=None)
@given(mutated_documents(), st.sampled_from([
    ["best"], ["best", "--format", "json"], ["best", "--format", "args"], ["best", "--format", "yaml"],
    ["show"], ["show", "--format", "csv"], ["show", "--format", "json"], ["show", "--sort", "latency_ms"],
]))
def test_best_and_show_on_mutated_results_never_crash(text, args):
    result = cli.invoke(app, [*args, "-"], input=text)
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(result.exception)
    assert result.exit_code in (0, 1, 2)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def finished_run(tmp_path: Path) -> tuple[Path, Path]:
    study = tmp_path / "study.yaml"
    study.write_text(SHELL_STUDY)
    out = tmp_path / "r.json"
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "2"])
    assert result.exit_code == 0, result.output
    return study, out


@pytest.mark.parametrize("kind", sorted(BAD_RESULTS))
def test_resume_from_a_bad_results_file_exits_2_and_leaves_it(tmp_path, kind):
    study, out = finished_run(tmp_path)
    out.write_bytes(BAD_RESULTS[kind])
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--resume"])
    assert_clean_exit_2(result, out)
    assert out.read_bytes() == BAD_RESULTS[kind]
    assert not (tmp_path / "r.journal.jsonl").exists()


@pytest.mark.parametrize("corruption", ["garbage-line", "bad-header", "binary", "header-is-a-list", "torn-header"])
def test_resume_from_a_corrupt_journal_exits_2_and_leaves_it(tmp_path, corruption):
    study, out = finished_run(tmp_path)
    results_before = out.read_bytes()
    trials = json.loads(results_before)["trials"]
    header = {"format": "somatize.journal", "version": 1,
              "study": {"id": "x", "spec": json.loads(results_before)["study"]["spec"]}}
    lines = [json.dumps(header)] + [json.dumps({"trial": t}) for t in trials]
    if corruption == "garbage-line":
        lines.insert(2, "{not json")
    elif corruption == "bad-header":
        lines[0] = json.dumps({"format": "other"})
    elif corruption == "header-is-a-list":
        lines[0] = json.dumps({"format": "somatize.journal", "version": 1, "study": [1, 2]})
    elif corruption == "torn-header":
        lines = [lines[0][:20]]
    journal = tmp_path / "r.journal.jsonl"
    content = b"\x00\xff\xfe" * 50 if corruption == "binary" else ("\n".join(lines) + "\n").encode()
    journal.write_bytes(content)
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--resume"])
    assert_clean_exit_2(result, journal)
    assert journal.read_bytes() == content
    assert out.read_bytes() == results_before


def test_resume_over_a_journal_with_a_torn_last_line_keeps_its_trials(tmp_path):
    study, out = finished_run(tmp_path)
    data = json.loads(out.read_text())
    header = {"format": "somatize.journal", "version": 1, "study": {"id": data["study"]["id"], "spec": data["study"]["spec"]}}
    lines = [json.dumps(header)] + [json.dumps({"trial": t}) for t in data["trials"]]
    journal = tmp_path / "r.journal.jsonl"
    journal.write_text("\n".join(lines) + "\n" + lines[-1][:-7])
    out.unlink()
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--resume"])
    assert result.exit_code == 0, result.output
    again = json.loads(out.read_text())
    assert again["study"]["id"] == data["study"]["id"]
    assert again["trials"][:2] == data["trials"]
    assert [t["number"] for t in again["trials"]] == [0, 1, 2, 3]
    assert not journal.exists()
