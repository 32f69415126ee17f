"""`run --resume` of a long history (issue 18): the history read and checked in bulk, written back as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from somatize.cli import app
from somatize.space import CategoricalDimension, FloatDimension, IntDimension, SearchSpace
from somatize.storage.results import read_results, results_json

cli = CliRunner()

# Every state a finished trial can be in: completed, pruned, failed, and completed but infeasible; a
# choice past 64 bits and one that is not ASCII, so lines hold what a fast JSON reader could get wrong.
EVERY_STATE = """\
from somatize import TrialPruned


def objective(params, trial):
    kind = params["kind"]
    trial.report({"v": params["x"]}, step=0)
    if kind == "fail":
        raise RuntimeError("boom \\u00e9")
    if kind == "prune":
        raise TrialPruned(step=0)
    return {"v": params["x"] * params["n"], "latency": 10.0 if kind == "slow" else 1.0}
"""

STUDY = """\
name: states
seed: 3
search_space:
  x: {type: float, low: 0.0001, high: 0.001, scale: log}
  n: {type: int, low: 1, high: 4}
  kind: [ok, fail, prune, slow, 1180591620717411303424, "\u00e9t\u00e9"]
constraints:
  - latency <= 5
metrics: [latency]
strategy: {type: random, n_trials: 30}
objective: {metric: v, direction: minimize}
executor: {function: "states:objective"}
max_consecutive_failures: null
"""


def every_state_study(tmp_path: Path, trials: int = 30) -> tuple[Path, Path]:
    (tmp_path / "states.py").write_text(EVERY_STATE)
    study, out = tmp_path / "study.yaml", tmp_path / "r.json"
    study.write_text(STUDY, encoding="utf-8")
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", str(trials)])
    assert result.exit_code == 0, result.output
    return study, out


def trial_lines(out: Path) -> list[str]:
    lines = out.read_text(encoding="utf-8").splitlines()
    return [line.strip().removesuffix(",") for line in lines[lines.index('  "trials": [') + 1 : lines.index("  ]")]]


@pytest.mark.parametrize("source", ["results file", "journal"])
def test_a_history_of_every_state_is_resumed_and_written_back_as_it_was(tmp_path, source):
    study, out = every_state_study(tmp_path)
    before = trial_lines(out)
    records = [json.loads(line) for line in before]
    kinds = {(r["state"], r.get("feasible")) for r in records}
    assert {("completed", True), ("completed", False), ("pruned", None), ("failed", None)} <= kinds, kinds
    assert any(r["params"]["kind"] == 2**70 for r in records)  # read back as the integer it is, not a float
    if source == "journal":  # as kill -9 leaves a run: the journal, and no results file
        data = json.loads(out.read_text(encoding="utf-8"))
        header = {"format": "somatize.journal", "version": 1,
                  "study": {"id": data["study"]["id"], "spec": data["study"]["spec"]}}
        journal = [json.dumps(header)] + ['{"trial": ' + line + "}" for line in before]
        (tmp_path / "r.journal.jsonl").write_text("\n".join(journal) + "\n", encoding="utf-8")
        out.unlink()
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "45", "--resume"])
    assert result.exit_code == 0, result.output
    after = trial_lines(out)
    assert after[:30] == before and len(after) == 45  # each earlier trial's line, byte for byte
    assert [json.loads(line)["number"] for line in after] == list(range(45))
    # The whole document as a full rewrite encodes it afresh, trial by trial (best, front, head).
    assert results_json(read_results(out)) == out.read_text(encoding="utf-8")


def test_lines_a_fast_json_reader_reads_otherwise_are_resumed_as_json_reads_them(tmp_path):
    study, out = every_state_study(tmp_path, trials=6)
    text = out.read_text(encoding="utf-8")
    # An integer past 64 bits (a float to orjson) and a lone surrogate escape (refused by orjson).
    text = text.replace('"trial_seed": ', '"trial_seed": 1180591620717411303424', 1).replace(
        '"error": null', '"error": "half \\ud800 a pair"', 1)
    out.write_text(text, encoding="utf-8")
    edited = trial_lines(out)
    assert any('"trial_seed": 1180591620717411303424' in line for line in edited)
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--n-trials", "8", "--resume"])
    assert result.exit_code == 0, result.output
    assert trial_lines(out)[:6] == edited
    assert read_results(out).trials[0].trial_seed // 1180591620717411303424 >= 1


def test_a_nan_literal_in_a_trial_line_is_refused_on_resume_with_json_s_message(tmp_path):
    study, out = every_state_study(tmp_path, trials=6)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    first = lines.index('  "trials": [\n') + 1
    lines[first + 2] = lines[first + 2].replace('"duration_ms": ', '"duration_ms": NaN, "x": ', 1)
    out.write_text("".join(lines), encoding="utf-8")
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--resume"])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"somatize: {out}:{first + 3}: not a valid trial record (NaN is not a JSON number)\n"


def journal_of(tmp_path: Path, out: Path) -> tuple[Path, list[str]]:
    data = json.loads(out.read_text(encoding="utf-8"))
    header = {"format": "somatize.journal", "version": 1,
              "study": {"id": data["study"]["id"], "spec": data["study"]["spec"]}}
    return tmp_path / "r.journal.jsonl", [json.dumps(header)] + [json.dumps({"trial": t}) for t in data["trials"]]


@pytest.mark.parametrize("first", ["misfit", "corrupt"])
def test_a_journal_s_first_bad_line_is_named_whether_it_does_not_fit_or_is_no_trial(tmp_path, first):
    # The records are checked against the space all at once, after they are built: the first bad line of
    # either kind is still the one named.
    study, out = every_state_study(tmp_path, trials=6)
    journal, lines = journal_of(tmp_path, out)
    misfit, corrupt = (3, 5) if first == "misfit" else (5, 3)
    record = json.loads(lines[misfit - 1])
    record["trial"]["params"]["n"] = 9
    lines[misfit - 1] = json.dumps(record)
    record = json.loads(lines[corrupt - 1])
    record["trial"]["started_at"] = "yesterday"  # found when the record is built, after every line is read
    lines[corrupt - 1] = json.dumps(record)
    journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.unlink()
    result = cli.invoke(app, ["run", str(study), "-o", str(out), "-q", "--resume"])
    assert result.exit_code == 2, result.output
    named = misfit if first == "misfit" else corrupt
    assert result.stderr.startswith(f"somatize: {journal}:{named}: "), result.stderr
    assert ("n=9" in result.stderr) == (first == "misfit") and result.stderr.count("\n") == 1


# SearchSpace.all_fit says a history fits exactly when problem finds nothing wrong with any set ---------------

SPACE = SearchSpace(
    (FloatDimension("x", 0.0, 1.0), FloatDimension("s", 0.0, 1.0, step=0.25), IntDimension("n", 1, 8),
     IntDimension("e", 0, 10, step=2), CategoricalDimension("k", (1, "a", 2.5, True))),
    {"epochs": 5},
)

VALUES = st.one_of(
    st.floats(-0.5, 1.5), st.sampled_from([0.0, 0.25, 0.5, 1.0, -0.0, math.inf, -math.inf]),
    st.integers(-2, 12), st.sampled_from([True, False, 1, "a", 2.5, "b", 1.0, 5, 5.0, None, [1], 2**70]),
)


@st.composite
def parameter_sets(draw):
    params = {"x": 0.5, "s": 0.25, "n": 3, "e": 4, "k": "a", "epochs": 5}
    for name in draw(st.sets(st.sampled_from(sorted(params)), max_size=2)):
        params[name] = draw(VALUES)
    if draw(st.integers(0, 9)) == 0:
        params.pop(draw(st.sampled_from(sorted(params))))
    if draw(st.integers(0, 9)) == 0:
        params["depth"] = 3
    return params


@settings(max_examples=300, deadline=None)
@given(st.lists(parameter_sets(), max_size=6))
def test_all_fit_holds_exactly_when_every_set_fits(sets):
    assert SPACE.all_fit(sets) == all(SPACE.problem(p) is None for p in sets)


@settings(max_examples=100, deadline=None)
@given(st.lists(parameter_sets(), max_size=6))
def test_keys_are_each_set_s_key(sets):
    assert SPACE.keys(sets) == [SPACE.key(p) for p in sets]


def test_reading_a_history_leaves_objects_a_program_froze_frozen(tmp_path):
    import gc

    from somatize.storage.reader import read_all

    _, out = every_state_study(tmp_path, trials=6)
    kept = [object() for _ in range(10)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert len(read_all(out, {}).trials) == 6
        assert gc.get_freeze_count() == frozen and gc.isenabled()
    finally:
        gc.unfreeze()
    del kept


# the JSON of trial lines: orjson's reading where it is json's, json's otherwise -------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\ud800", "é", '"', "\\"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
)
ODD_TEXTS = ["[NaN]", "[1e400]", "[-Infinity]", '["\\ud800"]', "[18446744073709551616]", "[-9223372036854775809]",
             '{"a": 1, "a": 2}', "[1]x", "[01]", '["\x01"]', "", "[0.000123456789012345678]"]


def decoded(read, text):
    try:
        value = read(text)
    except (ValueError, RecursionError) as exc:
        return type(exc), str(exc)
    return value, json.dumps(value)  # the value, and its types to the last int and float


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_trial_json_is_read_as_json_reads_it(value):
    from somatize.storage import fastjson
    from somatize.storage.results import load_json

    text = json.dumps(value)
    assert decoded(lambda t: fastjson.loads(t, load_json), text) == decoded(load_json, text)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_json_that_orjson_reads_otherwise_is_read_as_json_reads_it(text):
    from somatize.storage import fastjson
    from somatize.storage.results import load_json

    assert decoded(lambda t: fastjson.loads(t, load_json), text) == decoded(load_json, text)
