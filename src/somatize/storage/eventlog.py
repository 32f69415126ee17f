"""`--events FILE`: every bus event as one JSON line (a bus subscriber)."""

from __future__ import annotations

import json
from typing import IO

from ..events import Event

_encode_line = json.JSONEncoder(allow_nan=False, default=str).encode  # reused: cheaper than json.dumps(**options)


class EventLog:
    """Inline handler writing JSON lines; flushed per event so `tail -f` and pipes see them at once."""

    def __init__(self, stream: IO[str], close: bool = False):
        self.stream = stream
        self._close = close
        self.broken = False

    def __call__(self, event: Event) -> None:
        if self.broken:
            return
        try:
            self.stream.write(_encode_line(event.to_json()) + "\n")
            self.stream.flush()
        except (BrokenPipeError, OSError):
            # A reader that went away (`| head`) must not fail the study.
            self.broken = True

    def close(self) -> None:
        if self._close:
            self.stream.close()
