"""The journal: every finished trial appended and flushed before the next one starts.

A bus subscriber (inline, so the flush happens before the runner moves on).
One JSON object per line: a header naming the study, then one line per
finished trial. A `kill -9` loses at most the trials that were running; a
torn last line (killed mid-write) is ignored on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..errors import ResultsFileError
from ..events import FINISHED_TRIAL_EVENTS, Event
from ..study import Study, Trial
from .results import check_trial, load_json, one_line

JOURNAL_FORMAT = "somatize.journal"

# What must not change between a study and its resumption.
RESUME_KEYS = ("search_space", "constraints", "strategy", "objectives")

# One encoder for every line: json.dumps with options builds a new one per call.
_encode_line = json.JSONEncoder(allow_nan=False, check_circular=False).encode  # plain trees: no cycles to look for


def journal_path(results_path: Path) -> Path:
    """`results/mlp.json` -> `results/mlp.journal.jsonl`."""
    name = results_path.name
    stem = name[: -len(".json")] if name.endswith(".json") else name
    return results_path.with_name(f"{stem}.journal.jsonl")


class Journal:
    """Appends each finished trial, flushing every line."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: IO[str] | None = None

    def begin(self, study: Study) -> None:
        """Start a new journal with the study header and any trials it already has (resumed)."""
        if journal_exists(self.path):
            return
        self._append({"format": JOURNAL_FORMAT, "version": 1, "study": _header(study)})
        for trial in study.trials:
            self._append({"trial": trial.to_dict()})

    def __call__(self, event: Event) -> None:
        if isinstance(event, FINISHED_TRIAL_EVENTS):
            self._append({"trial": event.trial.to_dict()})  # type: ignore[attr-defined]

    def _append(self, record: Mapping[str, Any]) -> None:
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the study
        self._handle.write(_encode_line(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        """Once the results file holds everything, the journal has done its job."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def journal_exists(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _header(study: Study) -> dict[str, Any]:
    return {"name": study.name, "id": study.id, "spec": study.spec, "objectives": [o.to_dict() for o in study.objectives]}


def read_journal(path: Path) -> tuple[dict[str, Any], list[Trial]]:
    """The header and the finished trials (the last record of a trial number wins)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path}: cannot read journal: {exc}") from None
    header: dict[str, Any] | None = None
    trials: dict[int, Trial] = {}
    for index, line in enumerate(lines):
        try:
            record = load_json(line)
            if index == 0:
                if not isinstance(record, dict) or record.get("format") != JOURNAL_FORMAT:
                    raise ValueError("not a somatize journal")
                header = _check_header(record["study"])
            else:
                trial = check_trial(Trial.from_dict(record["trial"]))
                trials[trial.number] = trial
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
            if index == len(lines) - 1 and index > 0:
                break  # torn final line from a kill mid-write
            reason = "nested too deeply" if isinstance(exc, RecursionError) else one_line(exc)
            raise ResultsFileError(f"{path}:{index + 1}: corrupt journal line ({reason})") from None
    if header is None:
        raise ResultsFileError(f"{path}: empty journal")
    return header, [trials[n] for n in sorted(trials)]


def _check_header(header: Any) -> dict[str, Any]:
    """The header as --resume uses it: a mapping whose spec is a mapping and whose id is a string."""
    if not isinstance(header, dict):
        raise TypeError("the study header must be a JSON object")
    if not isinstance(header.get("spec", {}), dict):
        raise TypeError("the study spec must be a JSON object")
    if not isinstance(header.get("id", ""), str):
        raise TypeError("the study id must be a string")
    return header


def spec_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two study specs among the keys a resume must keep (n_trials may grow)."""
    changes = []
    for key in RESUME_KEYS:
        before, after = old.get(key), new.get(key)
        if key == "strategy" and isinstance(before, Mapping) and isinstance(after, Mapping):
            before = {k: v for k, v in before.items() if k != "n_trials"}
            after = {k: v for k, v in after.items() if k != "n_trials"}
        if _canonical(before) != _canonical(after):
            changes.append(key)
    return changes


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
