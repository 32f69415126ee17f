"""Ask and tell: a study driven from anywhere, by any number of processes at once (SPEC §8).

`ask` proposes a trial and records it as running, with a lease; `tell`
records its outcome; `heartbeat` renews the lease; `run --join` runs trials
the same way. Every step is one transaction on the shared journal
(storage/shared.py): read what every process appended, decide, append,
update the results file, let go. Nothing is cached between processes: an
`ask` rebuilds the sampler from the journal (finished trials told, running
ones pending), so what one process knows, all do.

A trial whose lease runs out is recorded `stale` by the next transaction of
any process: its slot goes back to the budget, and a late tell is recorded
all the same (it was real work). Leases are wall-clock times, so machines
sharing a study need their clocks in step (NTP); a lease is minutes to
hours, far above their drift.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .bounds import MetricLog, clip_text
from .errors import NothingToAsk, ResultsFileError, UsageError
from .samplers.base import Sampler
from .space import SearchSpace
from .storage.journal import JournalState, header_record, journal_exists, journal_path, spec_changes
from .storage.paths import remove_stale_temp_files
from .storage.results import load_json, read_results, write_results
from .storage.shared import SharedJournal
from .study import MetricRecord, Objective, Study, Trial, TrialState, iso

if TYPE_CHECKING:
    from typing_extensions import Self

    from .events import Event
    from .studyfile.config import StudyConfig

# The lease of an asked trial: a trial of a batch system (a Slurm job, a CI job) runs for minutes to
# hours and may wait in a queue between its ask and its start, so the default is long; a worker that
# is killed leaves its trial running this long before the slot goes back. `--lease` sets it per ask.
DEFAULT_LEASE = 2 * 3600.0
# `run --join` renews its running trials' leases itself, every JOIN_RENEWALS-th of the lease, so its
# lease can be short: a joined run killed with `kill -9` gives its trials back within 5 minutes.
JOIN_LEASE = 300.0
JOIN_RENEWALS = 4

# `--metrics-from` is read in chunks this size, through the bounded metric log a shell trial uses.
_CHUNK = 1 << 16


# What tell is told ----------------------------------------------------------------------


@dataclass
class Told:
    """An outcome for `tell`: metric records, and failed (with a reason) or pruned (at a step)."""

    records: list[MetricRecord] = field(default_factory=list)
    failed: str | None = None  # the reason; "" for none given
    pruned: bool = False
    step: int | None = None
    log: MetricLog | None = None  # the records of --metrics-from, bounded like a shell trial's


def declared_metrics(header: dict[str, Any]) -> list[str]:
    """The objectives' metrics, then the `metrics:` entries (recorded, not optimised)."""
    extra = (header.get("spec") or {}).get("metrics") or []
    return [str(o["metric"]) for o in header.get("objectives") or []] + [str(m) for m in extra]


def told_outcome(
    header: dict[str, Any],
    value: str | None = None,
    metrics: Iterable[str] = (),
    metrics_from: IO[bytes] | None = None,
    source: str = "",
    failed: str | None = None,
    pruned: bool = False,
    step: int | None = None,
) -> Told:
    """The outcome the tell options describe; UsageError (exit 2) for a bad value or an undeclared metric."""
    from .executors.output import MetricStream, parse_number

    declared = declared_metrics(header)
    if failed is not None and pruned:
        raise UsageError("--failed and --pruned exclude each other: a trial has one outcome")
    if step is not None and not pruned:
        raise UsageError("--step goes with --pruned (the step the trial was stopped at)")
    if failed is None and not pruned and value is None and not metrics and metrics_from is None:
        raise UsageError("tell needs an outcome: --value, --metric, --metrics-from, --failed or --pruned")
    told = Told(failed=failed, pruned=pruned, step=step)
    if value is not None:
        number = parse_number(value.strip())
        if number is None:
            raise UsageError(f"--value {value!r} is not a number")
        told.records.append(MetricRecord(declared[0], number))
    for item in metrics:
        name, sep, text = item.partition("=")
        name = name.strip()
        number = parse_number(text.strip()) if sep else None
        if not sep or not name:
            raise UsageError(f"--metric {item!r}: expected NAME=VALUE")
        if name not in declared:
            raise UsageError(f"--metric {name}: not a metric of this study (its metrics: {', '.join(declared)})")
        if number is None:
            raise UsageError(f"--metric {item!r}: {text.strip()!r} is not a number")
        told.records.append(MetricRecord(name, number))
    if metrics_from is not None:
        stream, log = MetricStream(declared, source=source), MetricLog(declared)
        try:
            while chunk := metrics_from.read(_CHUNK):
                log.extend(MetricRecord(m.name, m.value, m.step) for m in stream.feed(chunk))
        except OSError as exc:
            raise UsageError(f"--metrics-from {source}: cannot read: {exc.strerror or exc}") from None
        log.extend(MetricRecord(m.name, m.value, m.step) for m in stream.close())
        told.log = log
    return told


def _finished(trial: Trial, told: Told, study: Study, now: float) -> Trial:
    """The asked trial with its outcome, as `run` records one (SPEC §3, §4), judged by the constraints on metrics."""
    objectives = study.objectives
    log = told.log if told.log is not None else MetricLog([*(o.metric for o in objectives), *study.metrics])
    log.extend(told.records)
    metrics = log.records()
    values = {}
    for objective in objectives:
        reduced = objective.reduce_records(metrics)
        if reduced is not None:
            values[objective.metric] = reduced
    started = trial.started_at if trial.started_at is not None else now
    done = replace(
        trial, metrics=metrics, values=values, truncated=log.truncation(), lease_seconds=None, lease_until=None,
        duration_ms=max(0, round((now - started) * 1000)), reason=None, error=None,
    )
    primary = objectives[0].metric
    if told.failed is not None:
        done.state, done.values = TrialState.FAILED, {}
        done.error = clip_text(told.failed)[0] or "told failed"
    elif told.pruned:
        done.state, done.pruned_step, done.reason = TrialState.PRUNED, told.step, "told pruned"
    elif primary not in values:
        seen = sorted({r.name for r in metrics})
        done.state, done.values = TrialState.FAILED, {}
        if any(r.name == primary for r in metrics):
            done.error = f"primary metric {primary!r} was NaN"
        else:
            done.error = f"no value for primary metric {primary!r} (metrics told: {', '.join(seen) or 'none'})"
    else:
        done.state = TrialState.COMPLETED
    if done.state is not TrialState.FAILED:
        for name, value in study.outcome_values(done).items():  # `metrics:` entries, by their last report
            done.values.setdefault(name, value)
    study.judge(done)  # an infeasible trial is still completed (SPEC §9)
    return done


# The study in the journal -----------------------------------------------------------------


def read_header(results: Path) -> dict[str, Any]:
    """The study header of the journal beside `results` (its first line, never rewritten), without the lock."""
    path = journal_path(results)
    if not journal_exists(path):
        raise UsageError(f"{results}: no journal {path.name} beside it, so no trial was asked there")
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.readline()
        record = load_json(line)
        return dict(record["study"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ResultsFileError(f"{path}:1: not a somatize journal ({exc})") from None


def study_from_header(header: dict[str, Any]) -> Study:
    """The study a journal header describes, its constraints included (they decide a grid's size)."""
    from dataclasses import replace as with_fields

    from .constraints import parse_constraint

    spec = dict(header.get("spec") or {})
    space = SearchSpace.from_spec(spec.get("search_space") or {})
    objectives = [Objective.from_dict(o) for o in header["objectives"]]
    metrics = tuple(str(m) for m in spec.get("metrics") or [])
    texts = spec.get("constraints") or []
    names = [*space.names, *space.constants]
    parsed = [parse_constraint(str(t), names, [*(o.metric for o in objectives), *metrics]) for t in texts]
    space = with_fields(space, constraints=tuple(c for c in parsed if not c.on_outcome))
    study = Study(
        name=str(header["name"]), space=space, objectives=objectives,
        strategy=dict(spec.get("strategy") or {}), spec=spec, id=str(header["id"]),
    )  # fmt: skip
    study.metrics, study.outcome_constraints = metrics, tuple(c for c in parsed if c.on_outcome)
    return study


def _planned(study: Study) -> int | None:
    """The planned number of trials, as the strategy counts it (without importing a model)."""
    strategy = study.strategy
    if strategy.get("type") == "grid":
        from .samplers.grid import DEFAULT_POINTS_PER_DIM, GridSampler

        points = strategy.get("points_per_dim", DEFAULT_POINTS_PER_DIM)
        # Seed 0: the size does not depend on it, and an unseeded sampler would draw fresh entropy (secrets).
        return GridSampler(study.space, study.primary, strategy.get("n_trials"), 0, points).total
    size, n_trials = study.space.cardinality(), strategy.get("n_trials")
    if size is None or n_trials is None:
        return n_trials if size is None else size
    return min(size, n_trials)


def write_shared_results(results: Path, state: JournalState, study: Study | None = None) -> Study:
    """The results file from the journal: every trial (running and stale ones too), written atomically."""
    assert state.header is not None
    study = study or study_from_header(state.header)
    study.trials = state.sorted_trials()
    started = [t.started_at for t in study.trials if t.started_at is not None]
    study.started_at = min(started, default=None)
    running = any(t.state is TrialState.RUNNING for t in study.trials)
    planned = _planned(study)
    finished = sum(t.state.is_finished() for t in study.trials)
    if not running and planned is not None and finished >= planned:
        study.status, study.stop_reason = "completed", "n_trials"
        study.finished_at = max((t.started_at + (t.duration_ms or 0) / 1000 for t in study.trials
                                 if t.started_at is not None), default=None)
    else:
        study.status, study.stop_reason, study.finished_at = "running", None, None
    # Not fsynced: the journal (fsynced) is the record, and every transaction rewrites this file from it.
    # Measured: the two fsyncs of a transaction took 16 ms of its 70 (200 trials, loaded 2-core machine).
    write_results(study, results, sync=False)
    return study


def expire_leases(journal: SharedJournal, state: JournalState, now: float) -> list[Trial]:
    """Record as stale every running trial whose lease ran out; those trials."""
    expired = []
    for trial in list(state.trials.values()):
        if trial.state is TrialState.RUNNING and trial.lease_until is not None and trial.lease_until <= now:
            stale = replace(trial, state=TrialState.STALE,
                            reason=f"its lease ran out at {iso(trial.lease_until)} with no tell or heartbeat")
            journal.append({"trial": stale.to_dict()})
            expired.append(stale)
    return expired


def _begin(journal: SharedJournal, state: JournalState, config: StudyConfig) -> None:
    """A new study's header (from the results file of an earlier run, if any), or the check that the
    journal is this study's; then the trials' parameters against its space."""
    if state.header is None:
        from .assemble import build_study

        study = build_study(config)
        earlier: list[Trial] = []
        if journal.results.exists():
            before = read_results(journal.results)
            _check_spec(before.spec, config, journal.results)
            study.id = before.id
            earlier = [t for t in before.trials if t.state.is_finished()]
        journal.append(header_record(study))
        for trial in earlier:
            journal.append({"trial": trial.to_dict()})
        return
    _check_spec(state.header.get("spec") or {}, config, journal.path)
    if state.space is None:
        for trial in state.trials.values():
            problem = config.space.problem(trial.params)
            if problem is not None:
                raise ResultsFileError(f"{journal.path}: trial {trial.number}'s params do not fit the study: {problem}")
        state.space = config.space  # lines read from now on are checked as they come


def _check_spec(spec: dict[str, Any], config: StudyConfig, source: Path) -> None:
    changes = spec_changes(spec, config.spec)
    if changes:
        raise UsageError(f"{source} belongs to another version of this study: its {' and '.join(changes)} changed; "
                         "use another -o for the changed study")


def _stop(config: StudyConfig, finished: list[Trial], running: int, planned: int | None) -> NothingToAsk | None:
    """Why no trial is left to ask, before asking the sampler: the budget, the target, max_failures."""
    if planned is not None and len(finished) + running >= planned:
        return NothingToAsk(f"nothing left to ask: {len(finished)} finished and {running} running "
                            f"of {planned} planned trials", "n_trials")
    if config.target is not None:
        metric, value = config.target
        direction = next((o.direction for o in config.objectives if o.metric == metric), config.primary.direction)
        for trial in finished:
            got = trial.values.get(metric) if trial.state is TrialState.COMPLETED else None
            if got is not None and direction.reached(got, value):
                return NothingToAsk(f"nothing left to ask: {trial.id} reached the target {metric} {value}", "target")
    failures = sum(t.state is TrialState.FAILED for t in finished)
    if config.max_failures is not None and failures >= config.max_failures:
        return NothingToAsk(f"nothing left to ask: {failures} trials failed (max_failures {config.max_failures})",
                            "max_failures")
    return None


def _next_trial(config: StudyConfig, state: JournalState, lease: float, now: float,
                warm: Sampler | None = None) -> tuple[Trial, Sampler]:
    """Propose the next trial from everything the journal holds, with a sampler built afresh (warmed from
    an earlier build, `warm`); NothingToAsk when there is none. The trial and the sampler."""
    from .samplers import make_sampler
    from .samplers.streams import derive_trial_seed

    trials = state.sorted_trials()
    finished = [t for t in trials if t.state.is_finished()]
    running = [t for t in trials if t.state is TrialState.RUNNING]
    strategy = make_sampler(config.strategy, config.space, config.objectives, config.seed, config.outcome_constraints)
    if warm is not None:
        strategy.warm_from(warm)
    sampler = strategy
    if config.enqueue:  # `enqueue:` first, as `run` does: a set finished or running anywhere is not handed out again
        from .samplers.queued import QueuedSampler

        sampler = QueuedSampler(strategy, config.enqueue)
    stop = _stop(config, finished, len(running), sampler.total)
    if stop is not None:
        raise stop
    for trial in finished:
        sampler.tell(trial)
    for trial in running:
        sampler.hold(trial.params)
    number = max(state.trials, default=-1) + 1
    params = sampler.propose(number)
    if params is None:
        if sampler.give_up:
            raise NothingToAsk(f"nothing left to ask: {sampler.give_up}", "infeasible")
        raise NothingToAsk("nothing left to ask: every parameter set of the space was asked", "exhausted")
    trial = Trial(number, params, started_at=now, trial_seed=derive_trial_seed(config.seed, number),
                  lease_seconds=lease, lease_until=now + lease)
    return trial, strategy


def _clean(journal: SharedJournal) -> None:
    # Inside a transaction every results write is finished, so a temp file beside it is one a killed
    # process left.
    remove_stale_temp_files(journal.results)


# The commands ---------------------------------------------------------------------------


def ask(config: StudyConfig, results: Path, lease: float = DEFAULT_LEASE) -> Trial:
    """Propose one trial, record it as running with its lease, update the results; NothingToAsk (exit 3)."""
    journal = SharedJournal(results, sync=config.durability == "power")
    with journal, journal.transaction() as state:
        _begin(journal, state, config)
        now = time.time()
        expire_leases(journal, state, now)
        try:
            trial, _ = _next_trial(config, state, lease, now)
        except NothingToAsk:
            _clean(journal)
            write_shared_results(journal.results, state)
            raise
        journal.append({"trial": trial.to_dict()})
        _clean(journal)
        write_shared_results(journal.results, state)
    return trial


def _trial_number(reference: str, state: JournalState) -> int:
    text = reference.strip()
    digits = text.removeprefix("trial_")
    number = int(digits) if digits.isdigit() and digits.isascii() else None
    if number is None or number not in state.trials:
        asked = f"trials asked: {min(state.trials)} to {max(state.trials)}" if state.trials else "no trial asked yet"
        raise UsageError(f"no trial {reference!r} in {state.path} ({asked})")
    return number


def _open_told(results: Path) -> tuple[SharedJournal, dict[str, Any]]:
    header = read_header(results)
    sync = (header.get("spec") or {}).get("durability", "power") == "power"
    return SharedJournal(results, sync=sync), header


def tell(results: Path, reference: str, told: Told) -> tuple[Trial, list[str]]:
    """Record an asked trial's outcome; the trial as recorded and warnings. UsageError (exit 2): told already,
    or no such trial."""
    journal, header = _open_told(results)
    warnings = []
    with journal, journal.transaction() as state:
        study = study_from_header(state.header or header)
        now = time.time()
        expire_leases(journal, state, now)
        trial = state.trials[_trial_number(reference, state)]
        if trial.state.is_finished():
            raise UsageError(f"{trial.id} was told already ({trial.state.value}); a trial has one outcome")
        if trial.state is TrialState.STALE:
            warnings.append(f"{trial.id}'s lease ran out at {iso(trial.lease_until)}, and its slot went back to "
                            "the budget; its outcome is recorded all the same")
        done = _finished(trial, told, study, now)
        journal.append({"trial": done.to_dict()})
        _clean(journal)
        write_shared_results(journal.results, state, study)
    return done, warnings


def heartbeat(results: Path, reference: str, lease: float | None = None) -> tuple[Trial, list[str]]:
    """Renew an asked trial's lease (by its own length, or `lease`); the trial and warnings."""
    journal, header = _open_told(results)
    warnings = []
    with journal, journal.transaction() as state:
        now = time.time()
        expire_leases(journal, state, now)
        trial = state.trials[_trial_number(reference, state)]
        if trial.state.is_finished():
            raise UsageError(f"{trial.id} was told already ({trial.state.value}): nothing to renew")
        if trial.state is TrialState.STALE:
            warnings.append(f"{trial.id}'s lease ran out at {iso(trial.lease_until)} and its slot went back to "
                            "the budget; it stays stale, and a tell is still recorded")
        else:
            seconds = lease if lease is not None else (trial.lease_seconds or DEFAULT_LEASE)
            trial = replace(trial, lease_seconds=seconds, lease_until=now + seconds)
            journal.append({"trial": trial.to_dict()})
        _clean(journal)
        write_shared_results(journal.results, state, study_from_header(state.header or header))
    return trial, warnings


# run --join -------------------------------------------------------------------------------


class SharedSampler(Sampler):
    """The runner's sampler in `run --join`: each claim is an ask on the shared journal."""

    def __init__(self, joined: JoinedStudy, total: int | None):
        config = joined.config
        super().__init__(config.space, config.primary, config.strategy.get("n_trials"), config.seed)
        self._joined = joined
        self._total = total

    @property
    def total(self) -> int | None:
        return self._total

    def claim(self, number: int) -> tuple[int, dict[str, Any]] | None:
        try:
            trial = self._joined.claim()
        except NothingToAsk as stop:
            self.ended_by = stop.reason
            if stop.reason == "infeasible":
                self.give_up = str(stop).removeprefix("nothing left to ask: ")
            return None
        return trial.number, trial.params

    def propose(self, number: int) -> dict[str, Any] | None:
        claimed = self.claim(number)
        return None if claimed is None else claimed[1]


class JoinedStudy:
    """One `run --join` process in a shared study: claims trials, records them, renews their leases.

    A bus subscriber for the finished trials of its runner. Leaving (the run
    ended, or was interrupted) records its trials still running as stale, so
    their slots go back to the budget at once.
    """

    def __init__(self, config: StudyConfig, results: Path, lease: float = JOIN_LEASE,
                 warn: Callable[[str], None] = lambda message: None):
        self.config = config
        self.lease = lease
        self.warn = warn
        self.journal = SharedJournal(results, sync=config.durability == "power")
        self.mine: set[int] = set()  # trials this process claimed and has not recorded
        self.study: Study | None = None  # the whole shared study, as last written
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._sampler: Sampler | None = None  # the last claim's, to warm the next one's model

    def __enter__(self) -> Self:
        self.journal.__enter__()
        try:
            with self.journal.transaction() as state:
                _begin(self.journal, state, self.config)
                expire_leases(self.journal, state, time.time())
                self._write(state)
        except BaseException:
            self.journal.close()
            raise
        self._renewer = threading.Thread(target=self._renew_loop, name="somatize-lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            with self.journal.transaction() as state:
                for number in sorted(self.mine):
                    trial = state.trials.get(number)
                    if trial is not None and trial.state is TrialState.RUNNING:
                        stale = replace(trial, state=TrialState.STALE, reason="the run --join running it stopped")
                        self.journal.append({"trial": stale.to_dict()})
                self.mine.clear()
                expire_leases(self.journal, state, time.time())
                self._write(state)
        finally:
            self.journal.close()

    @property
    def study_id(self) -> str:
        assert self.journal.state.header is not None
        return str(self.journal.state.header["id"])

    def sampler(self) -> SharedSampler:
        from .samplers import make_sampler

        total = make_sampler(self.config.strategy, self.config.space, self.config.primary, self.config.seed).total
        return SharedSampler(self, total)

    def claim(self) -> Trial:
        with self.journal.transaction() as state:
            now = time.time()
            expire_leases(self.journal, state, now)
            trial, self._sampler = _next_trial(self.config, state, self.lease, now, self._sampler)
            self.journal.append({"trial": trial.to_dict()})
            self.mine.add(trial.number)
            self._write(state)
        return trial

    def __call__(self, event: Event) -> None:
        from .events import FINISHED_TRIAL_EVENTS

        if not isinstance(event, FINISHED_TRIAL_EVENTS):
            return
        trial: Trial = event.trial  # type: ignore[attr-defined]
        with self.journal.transaction() as state:
            expire_leases(self.journal, state, time.time())
            before = state.trials.get(trial.number)
            self.mine.discard(trial.number)
            if before is not None and before.state.is_finished():
                self.warn(f"{trial.id} was told by another process meanwhile; this run's outcome is not recorded")
                return
            if before is not None and before.state is TrialState.STALE:
                self.warn(f"{trial.id}'s lease ran out while it ran; its outcome is recorded all the same")
            self.journal.append({"trial": trial.to_dict()})
            self._write(state)

    def _write(self, state: JournalState) -> None:
        from .assemble import build_study

        study = build_study(self.config)
        study.id = self.study_id
        self.study = write_shared_results(self.journal.results, state, study)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / JOIN_RENEWALS):
            try:
                with self.journal.transaction() as state:
                    now = time.time()
                    for number in sorted(self.mine):
                        trial = state.trials.get(number)
                        if trial is not None and trial.state is TrialState.RUNNING:
                            renewed = replace(trial, lease_until=now + self.lease)
                            self.journal.append({"trial": renewed.to_dict()})
                    if expire_leases(self.journal, state, now):
                        self._write(state)
            except Exception as exc:  # noqa: BLE001 - a failed renewal must not end the run; the lease says so
                self.warn(f"cannot renew the leases of this run's trials: {exc}")


__all__ = [
    "DEFAULT_LEASE", "JOIN_LEASE", "JoinedStudy", "SharedSampler", "Told", "ask", "heartbeat", "read_header",
    "study_from_header", "tell", "told_outcome",
]
