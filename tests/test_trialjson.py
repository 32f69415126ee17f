"""A trial's line in the journal and the results file (storage/trialjson.py) is written from the trial's
parts: it must be the very text the standard encoder made of `Trial.to_dict()` before (issue 18)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from somatize.cli import app
from somatize.storage.results import TRIAL_INDENT, TRIALS_OPENING, trial_line
from somatize.study import MetricRecord, Trial, TrialState

# What the results file and the journal wrote each trial with before: the C encoder of the trial's dict.
REFERENCE = json.JSONEncoder(allow_nan=False, check_circular=False).encode


def reference_line(trial: Trial) -> str | type[ValueError]:
    try:
        return REFERENCE(trial.to_dict())
    except ValueError:
        return ValueError


TEXT = st.text(max_size=8) | st.sampled_from(["relu", "é", "a\"b\\c", "\n\t", "\u2028", "😀", ""])
FLOATS = st.floats() | st.sampled_from([0.1, -0.0, 1e-300, 1e300, 0.012345678901234567])
SCALARS = st.none() | st.booleans() | st.integers() | FLOATS | TEXT
TIMES = st.none() | st.floats(0, 4e9)
COUNTS = st.none() | st.integers(-5, 10**12)


@st.composite
def trials(draw) -> Trial:
    keys = TEXT if draw(st.integers(0, 9)) else (TEXT | st.integers())  # params come from the space: names
    params = draw(st.dictionaries(keys, SCALARS | st.lists(SCALARS, max_size=3), max_size=5))
    metrics = draw(st.lists(st.builds(
        MetricRecord, TEXT, FLOATS | st.integers(-10, 10), st.none() | st.integers(0, 10**6), st.floats(0, 4e9),
    ), max_size=4))  # fmt: skip
    lease = draw(st.none() | st.tuples(st.floats(0, 1e6), st.floats(0, 4e9)))
    feasible = draw(st.none() | st.booleans())
    return Trial(
        number=draw(st.integers(0, 10**9)),
        params=params,
        state=draw(st.sampled_from(list(TrialState))),
        metrics=metrics,
        values=draw(st.dictionaries(TEXT, FLOATS, max_size=3)),
        started_at=draw(TIMES),
        duration_ms=draw(COUNTS),
        error=draw(st.none() | TEXT),
        pruned_step=draw(COUNTS),
        reason=draw(st.none() | TEXT),
        trial_seed=draw(COUNTS),
        attempts=draw(st.integers(1, 5)),
        truncated=draw(st.none() | st.dictionaries(TEXT, st.integers() | TEXT, max_size=2)),
        log_dir=draw(st.none() | st.just("r.trials/trial_0001") | TEXT),
        slot=draw(st.none() | TEXT),
        lease_seconds=None if lease is None else lease[0],
        lease_until=None if lease is None else lease[1],
        feasible=feasible,
        violated=draw(st.lists(TEXT, max_size=2)) if feasible is False else None,
    )


@settings(max_examples=150, deadline=None)
@given(trials())
def test_a_trial_line_is_the_text_the_standard_encoder_makes_of_its_record(trial):
    expected = reference_line(trial)
    if expected is ValueError:  # a NaN or infinity among the params: refused, as before
        try:
            trial_line(trial)
        except ValueError:
            return
        raise AssertionError("a NaN parameter was written")
    assert trial_line(trial) == expected


def test_a_run_writes_each_trial_as_the_standard_encoder_did(tmp_path):
    """A seeded study run through the CLI: every trial line of its results file (and of the journal of
    an interrupted copy) reads back into a trial whose standard encoding is that line, byte for byte."""
    (tmp_path / "objective.py").write_text(
        "import math\n\n"
        "def objective(params, trial):\n"
        "    if params['act'] == 'gelu':\n"
        "        print('a line of output é')\n"  # a trial directory, so log_dir
        "    trial.report({'value': params['x'] * params['layers'], 'other': math.nan}, step=1)\n"
        "    return {'value': params['x'] * params['layers'], 'aux': math.inf}\n"
    )
    (tmp_path / "study.yaml").write_text(
        "name: lines\nseed: 3\nsearch_space:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        "  layers: {type: int, low: 1, high: 8}\n  act: [relu, tanh, gelu]\n  epochs: 20\n"
        "strategy: {type: random, n_trials: 30}\nobjective: {metric: value}\nmetrics: [aux]\n"
        "executor: {function: 'objective:objective'}\n"
    )
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "study.yaml"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    body = text[text.index(TRIALS_OPENING) + len(TRIALS_OPENING):].split("\n")[1:-3]
    lines = [line.removeprefix(TRIAL_INDENT).removesuffix(",") for line in body]
    assert len(lines) == 30
    assert any('"log_dir"' in line for line in lines) and any('"aux": "inf"' in line for line in lines)
    for line in lines:
        assert REFERENCE(Trial.from_dict(json.loads(line)).to_dict()) == line
    assert json.loads(text)["trials"] == [json.loads(line) for line in lines]


def test_metric_values_that_are_not_finite_are_written_as_strings():
    trial = Trial(7, {"x": 0.5}, TrialState.COMPLETED, [MetricRecord("v", math.nan, None, 1_790_000_000.0)],
                  {"v": -math.inf}, 1_790_000_000.0, 3)
    line = trial_line(trial)
    assert line == reference_line(trial)
    assert json.loads(line)["values"] == {"v": "-inf"} and json.loads(line)["metrics"][0]["value"] == "nan"


def test_the_journal_holds_the_same_line_as_the_results_file(tmp_path: Path):
    from somatize.space import FloatDimension, SearchSpace
    from somatize.storage.journal import Journal
    from somatize.study import Objective, Study

    study = Study("j", SearchSpace((FloatDimension("x", 0.0, 1.0),)), [Objective("v")])
    trial = Trial(0, {"x": 0.25}, TrialState.COMPLETED, [MetricRecord("v", 0.5, None, 1_790_000_000.0)], {"v": 0.5},
                  1_790_000_000.0, 1, trial_seed=9)
    study.trials = [trial]
    journal = Journal(tmp_path / "j.journal.jsonl", sync=False)
    journal.begin(study)
    journal.close()
    assert (tmp_path / "j.journal.jsonl").read_text().splitlines()[1] == '{"trial": ' + REFERENCE(trial.to_dict()) + "}"
