"""User-facing errors: one family, rendered to a one-line message in cli.py only."""

from __future__ import annotations


class SomatizeError(Exception):
    """An error caused by the user's input; carries the process exit code."""

    exit_code = 2


class StudyFileError(SomatizeError):
    """One or more problems in a study file, each already formatted as FILE:LINE:COL: message."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ResultsFileError(SomatizeError):
    """A results or journal file that cannot be read."""


class OutputWriteError(ResultsFileError):
    """A results file or journal that could not be written while a study ran (a full disk)."""


class StudyBusyError(SomatizeError):
    """A results file that another live `somatize run` holds the lock of."""


class UsageError(SomatizeError):
    """Bad command-line arguments."""


class SpaceError(ValueError):
    """An invalid dimension or search space; `field` names the offending key, if any."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


class TrialPruned(Exception):
    """Raised from an objective to stop its trial early; the trial is recorded as pruned."""

    def __init__(self, reason: str = "pruned by the objective", step: int | None = None):
        self.reason = reason
        self.step = step
        super().__init__(reason)


class StudyInterrupted(KeyboardInterrupt):
    """A real Ctrl-C, SIGTERM or SIGHUP, raised by the command line's signal handler.

    Distinct from a KeyboardInterrupt that user code raises itself, which fails
    its trial like any other exception instead of stopping the study.
    """


class NothingToAsk(SomatizeError):
    """`somatize ask` on a study with nothing left to propose (SPEC §5: exit 3); `reason` is the stop reason."""

    exit_code = 3

    def __init__(self, message: str, reason: str):
        self.reason = reason
        super().__init__(message)
