"""JSON text read by orjson where it reads it as the json module does, by json otherwise (issue 18).

A resumed 100,000-trial study decodes 100,000 trial lines: json's C decoder
took 0.64-0.79 s, this 0.45 s (orjson 0.25-0.29 s, the rest the guard below;
BENCHMARKS.md, "`--resume` of the 100,000-trial file, read and checked in bulk"). The two
agree on every document json reads, but for these, where orjson differs and json's
reading is kept: an integer past 64 bits (a float in orjson: any run of 19
digits sends the text to json), and what orjson refuses but json reads (1e400
as infinity, a lone surrogate escape) or refuses with its own message (NaN):
every error comes from json, as it always did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency of somatize; without it json reads the same, slower
    orjson = None  # type: ignore[assignment]

# Every digit made a 0, so that a run of 19 digits is found by `in`: a regular expression for it took
# 13 µs a trial line, longer than decoding the line (encode, translate and `in`: 1.4 µs).
_ZEROED = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def loads(text: str, reference: Callable[[str], Any]) -> Any:
    """What `reference(text)` (a json decoder's reading, with its checks) returns or raises, sooner."""
    if orjson is not None:
        try:
            data = text.encode("utf-8")
            if _LONG_RUN not in data.translate(_ZEROED):
                return orjson.loads(data)
        except (UnicodeEncodeError, orjson.JSONDecodeError):  # a lone surrogate in the text itself, too
            pass
    return reference(text)
