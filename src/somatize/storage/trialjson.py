"""A finished trial's JSON object on one line, written from its fields in one pass (issue 18).

The text is exactly what `json.JSONEncoder(allow_nan=False).encode(trial.to_dict())` gives (Python's
default separators, ASCII escapes, the same members in the same order), which tests/test_trialjson.py
checks over trials with every member set and unusual values. It exists because that encoding was the
largest single piece of a quick trial's cost: building the dictionaries of `to_dict` and walking them
again in the encoder took some 100,000 instructions of a trivial trial's 400,000 (valgrind, issue 18);
here the members whose form is known (numbers, the id, the state, timestamps) are written as text and
only the parameters, values and texts go through the C encoder. Keep it in step with `Trial.to_dict`.

A quick function's trial (the commonest line) has its parameters and its value written by orjson instead:
the same content (json reads the same numbers and texts back), fewer instructions (below); what readers find
a line by (storage/reader.py: its opening up to `"params": `, and `"values": {`) is written as before.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from ..study import MetricRecord, Trial, _iso_seconds, _json_number, iso
from .fastjson import orjson  # its one import (None without it: the C encoder then writes every line)

_orjson = None if orjson is None else orjson.dumps

# The standard library's C encoder for one value (the parameters, a text), without the Python-level set-up
# `JSONEncoder.encode` repeats at every call (a tenth of a small trial's encoding); the encoder itself when
# the C accelerator is missing.
_json_encoder = json.JSONEncoder(allow_nan=False, check_circular=False)


def _c_encoder() -> Any:
    """The C encoder's one-value function (its text in pieces), made as JSONEncoder.iterencode makes it; None
    when it is missing or does not write what JSONEncoder does (another Python's internals)."""
    sample = {"a": [1.5, None, True, "é\n"], "b": {"c": 10**30}}
    try:
        iterencode = json.encoder.c_make_encoder(  # type: ignore[misc]
            None, _json_encoder.default, _string, None, ": ", ", ", False, False, False
        )
        made = "".join(iterencode(sample, 0))
    except Exception:  # noqa: BLE001 - any mismatch: the plain encoder, as before
        return None
    return iterencode if made == _json_encoder.encode(sample) else None


_pieces = _c_encoder()
_value = (lambda value: "".join(_pieces(value, 0))) if _pieces is not None else _json_encoder.encode


def _scalar(value: Any) -> str:
    """A member that is an int or a text when it is not None; anything else as the encoder writes it."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _string(value)
    return _value(value)


def _number(value: Any) -> str:
    """A metric's value: a finite float as its repr (what the encoder writes), NaN and infinities as text."""
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return _value(_json_number(value))


def _record(m: MetricRecord) -> str:
    value, step, timestamp = m.value, m.step, m.timestamp
    return (
        f'{{"name": {_string(m.name) if type(m.name) is str else _value(m.name)}, '
        f'"value": {float.__repr__(value) if type(value) is float and -_INF < value < _INF else _number(value)}, '
        f'"step": {"null" if step is None else _scalar(step)}, '
        f'"timestamp": {_scalar(iso(timestamp)) if type(timestamp) is not float else _quoted(iso(timestamp))}}}'
    )


def _quoted(text: str) -> str:
    return '"' + text + '"'  # a timestamp: digits and -:.+, nothing to escape


_INF = math.inf


def _stamps(first: float, second: float) -> tuple[str, str]:
    """`iso()` of two timestamps, in quotes, the seconds' text kept from the last call: a trial's two (its
    start, its value's record) and the next trials' fall in the same second. One call for both."""
    last = _last_second[0]  # one tuple, read and replaced whole: the write thread may encode lines too
    texts = []
    for timestamp in (first, second):
        whole = _floor(timestamp)
        micros = round((timestamp - whole) * 1e6)
        if micros == 1_000_000:
            whole, micros = whole + 1, 0
        if last[0] != whole:
            last = _last_second[0] = (whole, '"' + _iso_seconds(whole) + ".")
        # %-formatting: 1,100 instructions where f"{micros:06d}" took 2,400 (valgrind, issue 18)
        texts.append(last[1] + '%06d+00:00"' % micros)  # noqa: UP031
    return texts[0], texts[1]


_floor = math.floor
_last_second: list[tuple[Any, str]] = [(None, "")]  # the whole second of the last _stamp, and its text


def trial_json(trial: Trial) -> str:
    """`trial.to_dict()` as the results file and the journal hold it, one line.

    Each member is written inline (a call of a Python function costs as much as writing a member): the
    id, the state and timestamps hold nothing to escape; ints are their repr, as the encoder writes them.
    """
    values, metrics = trial.values, trial.metrics
    if len(metrics) == 1 and len(values) == 1 and _pieces is not None:
        # The commonest trial, a quick function's: one value, which is its one record's (the runner takes it as
        # it is), started and timed, no error, no optional member. Written here, not in a function of its own
        # (a call is some 1,000 instructions): the value's text made once for both places it appears, the two
        # timestamps in one call sharing their second's text, the state's text its `_value_` (Enum's `value`
        # is a property).
        record = metrics[0]
        value, started, duration, seed, attempts, timestamp, name = (
            record.value, trial.started_at, trial.duration_ms, trial.trial_seed, trial.attempts,
            record.timestamp, record.name,
        )  # fmt: skip
        if (
            type(value) is float
            and -_INF < value < _INF
            and type(values.get(name)) is float
            and type(name) is str
            and record.step is None
            and type(started) is float
            and type(timestamp) is float
            and type(duration) is int
            and type(seed) is int
            and type(attempts) is int
            and trial.error is None
            and trial.pruned_step is None
            and trial.reason is None
            and trial.truncated is None
            and trial.log_dir is None
            and trial.slot is None
            and trial.lease_until is None
            and trial.feasible is None
            and _orjson is not None
        ):
            # The parameters and the value by orjson: 3,300 and 1,400 instructions where the C encoder's walk of
            # the parameters took 22,900 and a float's repr 8,600 (valgrind, the benchmark's study; issue 18, fifth
            # round). Its text is JSON that json reads back to the same values (floats in their shortest form, as
            # repr, but 1e-05 as 0.00001 and 1e+16 as 1e16; no space after a separator). Back to the encoder for
            # what orjson writes otherwise than json reads or refuses: NaN and the infinities (orjson: null, json:
            # an error, so any null), an integer past 64 bits (orjson refuses it), text that is not ASCII (the
            # encoder escapes it, and a file of ASCII lines is read in bulk: bulkread.py).
            try:
                params = _orjson(trial.params)
            except TypeError:  # orjson.JSONEncodeError: an integer past 64 bits, a key that is not a string
                params = None
            text = _orjson(value)
            other = values[name]
            # Its value the record's (the same object when the runner made it; read back, an equal float): the
            # text then depends on the trial's content alone, as a file read and written again needs.
            if (
                params is not None and b"null" not in params and params.isascii()
                and (other is value or _orjson(other) == text)
            ):  # fmt: skip
                number, named = text.decode(), _string(name)
                recorded, began = _stamps(timestamp, started)
                return (
                    f'{{"id": "{trial.id}", "number": {int.__repr__(trial.number)}, "state": "{trial.state._value_}", '
                    f'"params": {params.decode()}, "values": {{{named}: {number}}}, '
                    f'"metrics": [{{"name": {named}, "value": {number}, "step": null, "timestamp": {recorded}}}], '
                    f'"started_at": {began}, "duration_ms": {int.__repr__(duration)}, "error": null, '
                    f'"pruned_step": null, "reason": null, "trial_seed": {int.__repr__(seed)}, '
                    f'"attempts": {int.__repr__(attempts)}}}'
                )
    started, duration, error, pruned, reason, seed, attempts = (
        trial.started_at,
        trial.duration_ms,
        trial.error,
        trial.pruned_step,
        trial.reason,
        trial.trial_seed,
        trial.attempts,
    )
    text = (
        f'{{"id": "{trial.id}", "number": {int.__repr__(trial.number)}, "state": "{trial.state.value}", '
        f'"params": {_value(trial.params)}, '
        f'"values": {_value({k: _json_number(v) for k, v in values.items()}) if values else "{}"}, '
        f'"metrics": {"[" + ", ".join(map(_record, metrics)) + "]" if metrics else "[]"}, '
        f'"started_at": {"null" if started is None else _quoted(iso(started))}, '
        f'"duration_ms": {int.__repr__(duration) if type(duration) is int else _scalar(duration)}, '
        f'"error": {"null" if error is None else _scalar(error)}, '
        f'"pruned_step": {"null" if pruned is None else _scalar(pruned)}, '
        f'"reason": {"null" if reason is None else _scalar(reason)}, '
        f'"trial_seed": {int.__repr__(seed) if type(seed) is int else _scalar(seed)}, '
        f'"attempts": {int.__repr__(attempts) if type(attempts) is int else _scalar(attempts)}'
    )
    if (
        trial.truncated is None
        and trial.log_dir is None
        and trial.slot is None
        and trial.lease_until is None
        and trial.feasible is None
    ):
        return text + "}"
    rest: dict[str, Any] = {}  # the members only some trials have, as to_dict adds them
    if trial.truncated is not None:
        rest["truncated"] = trial.truncated
    if trial.log_dir is not None:
        rest["log_dir"] = trial.log_dir
    if trial.slot is not None:
        rest["slot"] = trial.slot
    if trial.lease_until is not None:
        rest["lease"] = {"seconds": trial.lease_seconds, "until": iso(trial.lease_until)}
    if trial.feasible is not None:
        rest["feasible"] = trial.feasible
        if not trial.feasible:
            rest["violated"] = list(trial.violated or [])
    return text + ", " + _value(rest)[1:]
