"""`somatize run --warm-start OLD.results.json`: earlier studies' trials told to the sampler (SPEC §10).

A completed trial of an earlier results file is used when its parameters are
a runnable point of the current search space and it has a value for the
current primary metric; it is told to the sampler before the first proposal
(not run again, not one of this study's trials: it gets a negative number, so
it can never stand for one of them). Every other trial is counted by why it
was not used, for the one line `run` prints.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ResultsFileError
from ..space import SearchSpace
from ..study import Objective, Trial, TrialState
from .results import read_results


@dataclass
class WarmStart:
    trials: list[Trial] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # why -> how many
    example: str | None = None  # the first parameter set outside the space, and why

    def summary(self) -> str:
        total = len(self.trials) + sum(self.skipped.values())
        line = f"warm start: {len(self.trials)} of {total} earlier trials told to the sampler ({', '.join(self.files)})"
        if self.skipped:
            reasons = [f"{count} {why}" for why, count in self.skipped.most_common()]
            line += "; not used: " + ", ".join(reasons)
            if self.example:
                line += f" (e.g. {self.example})"
        return line


def load_warm_start(paths: Sequence[str], space: SearchSpace, primary: Objective) -> WarmStart:
    """The usable trials of every file in `paths`; ResultsFileError (exit 2) for a file that cannot be read."""
    warm = WarmStart()
    number = -1
    for path in paths:
        warm.files.append(str(path))
        try:
            earlier = read_results(Path(path))
        except ResultsFileError as exc:
            raise ResultsFileError(f"--warm-start {exc}") from None
        for trial in earlier.trials:
            why = _unusable(trial, space, primary, warm)
            if why is not None:
                warm.skipped[why] += 1
                continue
            warm.trials.append(replace(trial, number=number, log_dir=None, slot=None))
            number -= 1
    return warm


def _unusable(trial: Trial, space: SearchSpace, primary: Objective, warm: WarmStart) -> str | None:
    if trial.state is not TrialState.COMPLETED:
        return f"{trial.state.value}"
    value = trial.values.get(primary.metric)
    if value is None or not math.isfinite(value):
        return f"without a value for {primary.metric}"
    problem = space.problem(trial.params)
    if problem is not None:
        if warm.example is None:
            warm.example = f"{trial.id}: {problem}"
        return "outside the search space"
    return None
