"""A trial's line in the results file and the journal (storage/trialjson.py, issue 18): written from the
trial's fields, it must be exactly the JSON encoder's text of `Trial.to_dict()`, for any trial but a quick
function's, whose parameters and value orjson writes: that line must hold the same content (the same
members in the same order, the same numbers and texts as json reads them back) and begin as readers find
a line by (storage/reader.py)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from somatize.storage.reader import _OPENING
from somatize.storage.results import trial_line
from somatize.storage.trialjson import trial_json
from somatize.study import MetricRecord, Trial, TrialState

ENCODER = json.JSONEncoder(allow_nan=False, check_circular=False)


def content(text: str) -> str:
    """The JSON text as json reads it, written again canonically: members in their order, each number's repr
    (so 1e-05 and 0.00001 are the same, -0.0 and 0.0, or 1 and 1.0, are not)."""
    return json.dumps(json.loads(text))


def same_content_and_opening(ours: str, encoder: str) -> None:
    assert content(ours) == content(encoder)
    assert ours.isascii()
    # What ResultsFile.trial and summary find a line by: its opening, then `"values": {`.
    opening = _OPENING.match("    " + ours)
    assert (opening is None) == (_OPENING.match("    " + encoder) is None)
    assert ('"values": {' in ours) == ('"values": {' in encoder)

texts = st.text(max_size=12)  # any unicode: quotes, backslashes, control characters, astral planes
moments = st.floats(min_value=0.0, max_value=4.0e9, allow_nan=False)
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | texts
    | st.floats(allow_nan=False, allow_infinity=False)
)
maybe_int = st.none() | st.integers(-(10**20), 10**20)


@st.composite
def trials(draw) -> Trial:
    trial = Trial(
        draw(st.integers(0, 10**7)),
        draw(st.dictionaries(texts, scalars, max_size=5)),
        state=draw(st.sampled_from(list(TrialState))),
        metrics=draw(st.lists(st.builds(MetricRecord, texts, numbers.map(float), maybe_int, moments), max_size=4)),
        values=draw(st.dictionaries(texts, numbers.map(float), max_size=3)),
        started_at=draw(st.none() | moments),
        duration_ms=draw(maybe_int | st.floats(allow_nan=False, allow_infinity=False)),
        error=draw(st.none() | texts),
        pruned_step=draw(maybe_int),
        reason=draw(st.none() | texts),
        trial_seed=draw(maybe_int),
        attempts=draw(st.integers(1, 5)),
        truncated=draw(st.none() | st.dictionaries(texts, st.integers(0, 10**6), min_size=1, max_size=2)),
        log_dir=draw(st.none() | texts),
        slot=draw(st.none() | texts),
        feasible=draw(st.none() | st.booleans()),
    )
    if trial.feasible is False:
        trial.violated = draw(st.none() | st.lists(texts, max_size=2))
    if draw(st.booleans()):
        trial.lease_seconds, trial.lease_until = draw(st.floats(0.0, 1e6)), draw(moments)
    return trial


@settings(max_examples=150, deadline=None)
@given(trials())
def test_a_trial_line_is_the_encoders_text_of_its_dict(trial):
    assert trial_json(trial) == ENCODER.encode(trial.to_dict())
    assert trial_line(trial) == trial_json(trial)


def test_a_quick_functions_trial_reads_back_as_written():
    trial = Trial(
        7,
        {"x": 0.1 + 0.2, "act": "relu", "n": 3, "flag": True},
        TrialState.COMPLETED,
        [MetricRecord("loss", 1e-05, None, 1_700_000_000.25)],
        {"loss": 1e-05},
        1_700_000_000.0,
        0,
        trial_seed=12345,
    )
    text = trial_json(trial)
    same_content_and_opening(text, ENCODER.encode(trial.to_dict()))
    assert Trial.from_dict(json.loads(text)) == trial


@pytest.mark.parametrize(
    "params",
    [{"x": None}, {"x": "é"}, {"x": 10**30}, {"x": -(2**63) - 1}, {"x": math.inf}, {"x": 1.5, "y": "null"}],
    ids=["null", "non-ascii", "big-int", "below-int64", "inf", "null-text"],
)
def test_parameters_orjson_writes_otherwise_than_json_take_the_encoders_text(params):
    # NaN and the infinities (orjson writes null, json refuses them), an integer past 64 bits (orjson refuses
    # it), text that is not ASCII: the line is the encoder's, byte for byte, as it always was.
    trial = Trial(3, params, TrialState.COMPLETED, [MetricRecord("loss", 0.5, None, 1_700_000_000.25)],
                  {"loss": 0.5}, 1_700_000_000.0, 0, trial_seed=1)
    if math.inf in params.values():
        with pytest.raises(ValueError, match="Out of range float values"):
            trial_json(trial)
        return
    assert trial_json(trial) == ENCODER.encode(trial.to_dict())


def test_a_parameter_that_json_cannot_hold_fails_as_with_the_encoder():
    trial = Trial(0, {"x": math.nan})
    with pytest.raises(ValueError) as theirs:
        ENCODER.encode(trial.to_dict())
    with pytest.raises(ValueError, match="Out of range float values") as ours:
        trial_json(trial)
    assert str(ours.value) == str(theirs.value)


@st.composite
def quick_trials(draw) -> Trial:
    """A quick function's trial as the runner records it: its one value is its one record's, the same float
    (the shape trialjson writes on a path of its own), with timestamps on and near whole seconds."""
    name = draw(texts)
    value = draw(st.floats(allow_nan=True, allow_infinity=True))
    second = draw(st.integers(0, 4 * 10**9))
    stamps = st.sampled_from([0.0, 0.9999999, 0.9999994, 1e-7, 0.5]).map(lambda f: second + f) | moments
    record = MetricRecord(name, value, draw(st.none() | st.integers(0, 3)), draw(stamps))
    trial = Trial(
        draw(st.integers(0, 10**7)),
        draw(st.dictionaries(texts, scalars, max_size=5)),
        state=draw(st.sampled_from(list(TrialState))),
        metrics=[record],
        values={name: value} if draw(st.booleans()) else {name: draw(st.floats())},
        started_at=draw(stamps),
        duration_ms=draw(st.integers(0, 10**9) | st.floats(allow_nan=False, allow_infinity=False)),
        trial_seed=draw(st.integers(0, 2**31 - 1)),
        attempts=draw(st.integers(1, 3)),
    )
    if draw(st.booleans()):
        trial.error = draw(texts)
    if draw(st.booleans()):
        trial.log_dir = draw(texts)
    return trial


@settings(max_examples=300, deadline=None)
@given(quick_trials(), quick_trials())
def test_a_quick_functions_trial_line_is_the_encoders_text_of_its_dict(first, second):
    # Two trials in turn: the second's timestamps may fall in the second the first left its text for, or not.
    for trial in (first, second, first):
        ours, theirs = trial_json(trial), ENCODER.encode(trial.to_dict())
        if ours != theirs:  # orjson's parameters and value: the same content
            same_content_and_opening(ours, theirs)
            # Read back (the value and its record's no longer one object), the trial is written as it was.
            assert trial_json(Trial.from_dict(json.loads(ours))) == ours
        assert Trial.from_dict(json.loads(ours)).to_dict() == Trial.from_dict(json.loads(theirs)).to_dict()
