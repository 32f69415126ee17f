"""Checks for single study-file fields: each reports to a Where and returns the clean value or None."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from typing import Any

from .problems import Where, did_you_mean, show

# A duration is a number or pieces like "1h30m": a number, then a unit (any case) from _SECONDS.
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
DURATION_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
DURATION_UNITS = "".join(_SECONDS)
_DURATION = re.compile(rf"(?:({DURATION_NUMBER})\s*([{DURATION_UNITS}]))", re.IGNORECASE)


def is_int(value: Any) -> bool:
    # YAML `true` is a bool, and bool is an int subclass in Python: never accept it as a count.
    return isinstance(value, int) and not isinstance(value, bool)


def as_number(value: Any) -> float | int | None:
    """A finite int or float, or a numeric string (users quote 1e-4); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        converted = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int too large for a float
        return None
    if not math.isfinite(converted):
        return None
    return converted if isinstance(value, str) else value


def mapping(value: Any, where: Where, what: str, allowed: Collection[str], required: Sequence[str] = ()) -> dict | None:
    """A mapping with only `allowed` keys; reports unknown keys (with a hint) and missing ones."""
    if not isinstance(value, dict):
        where.error(f"{what} must be a mapping, got {show(value)}")
        return None
    for key in value:
        if key not in allowed:
            (where / key).key_error(f"unknown key {key!r} in {what}{did_you_mean(key, allowed)}")
    for key in required:
        if key not in value:
            where.error(f"missing required key {key!r} in {what}")
    return value


def _int_rule(minimum: int | None) -> str:
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return "an integer" if minimum is None else f"an integer >= {minimum}"


def integer(value: Any, where: Where, name: str, minimum: int | None = None, *, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if not is_int(value) or (minimum is not None and value < minimum):
        rule = _int_rule(minimum) + (" or null" if nullable else "")
        where.error(f"{name} must be {rule}, got {show(value)}")
        return None
    return value


def number(value: Any, where: Where, name: str, *, positive: bool = False) -> float | None:
    found = as_number(value)
    if found is None or (positive and found <= 0):
        where.error(f"{name} must be a {'positive ' if positive else ''}number, got {show(value)}")
        return None
    return float(found)


def parse_duration(text: str) -> float | None:
    """Seconds in "90", "90s", "30m", "2h", "1h30m", "1.5h", "1d"; None when not a duration."""
    text = text.strip()
    plain = as_number(text)
    if plain is not None:
        return float(plain)
    pieces = _DURATION.findall(text)
    if not pieces or "".join(f"{n}{u}" for n, u in pieces) != re.sub(r"\s+", "", text):
        return None
    return sum(float(n) * _SECONDS[u.lower()] for n, u in pieces)


def duration(value: Any, where: Where, name: str) -> float | None:
    """null, a positive number of seconds, or a duration string such as "2h" or "1h30m"."""
    if value is None:
        return None
    seconds = parse_duration(value) if isinstance(value, str) else as_number(value)
    if seconds is None or seconds <= 0 or not math.isfinite(seconds):
        where.error(
            f"{name} must be a positive number of seconds or a duration like '90s', '30m', '2h', got {show(value)}"
        )
        return None
    return float(seconds)


def choice(value: Any, where: Where, name: str, options: Sequence[str]) -> str | None:
    if isinstance(value, str) and value in options:
        return value
    hint = did_you_mean(value, options) if isinstance(value, str) else ""
    where.error(f"{name} must be one of {', '.join(options)}, got {show(value)}{hint}")
    return None


def text(value: Any, where: Where, name: str, pattern: re.Pattern[str] | None = None, rule: str = "") -> str | None:
    """A non-empty string, optionally matching `pattern` (described by `rule` in the message)."""
    if not isinstance(value, str) or not value.strip():
        where.error(f"{name} must be a non-empty string, got {show(value)}")
        return None
    if pattern is not None and not pattern.fullmatch(value):
        where.error(f"{name} must be {rule}, got {show(value)}")
        return None
    return value
