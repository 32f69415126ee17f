"""The command line: one thin function per command; user errors become exit codes here only."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core

from . import __version__
from .errors import SomatizeError, StudyFileError, StudyInterrupted, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    suggest_commands=False,  # click (8.2 on) already says "Did you mean ...?"; typer's own said it a second time
    help="Hyperparameter optimization from the command line: YAML study in, JSON results out.",
)

EXIT_NO_RESULT = 1
EXIT_INTERRUPTED = 130
BEST_FORMATS = ("table", "json", "params", "env", "args", "yaml")
SHOW_FORMATS = ("table", "csv", "json")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    _say(f"somatize: warning: {message}")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The one place where user errors turn into a message and an exit code."""
    try:
        yield
    except StudyFileError as exc:
        for problem in exc.problems:
            _say(problem)
        raise typer.Exit(exc.exit_code) from None
    except SomatizeError as exc:
        _say(f"somatize: {exc}")
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        # The reader went away (`| head`); nothing left to say to it.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python's exit flush quiet
        raise typer.Exit(0) from None


def _version(value: bool) -> None:
    if value:
        print(f"somatize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """somatize: tune hyperparameters of any program or Python function."""


def _piped_stdin():
    """Standard input, refused when it is a terminal: '-' means data is piped in."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("'-' reads from standard input, but nothing is piped in")
    return sys.stdin


def _read_stdin() -> str:
    return _piped_stdin().read()


def _load(study: str, overrides: list[str]):
    from .studyfile import load_study

    return load_study(study, overrides, stdin=_piped_stdin().buffer if study == "-" else None)


def _load_results(results: str, best_of: str | None | bool = False):
    """The study in a results file ('-': stdin). With `best_of` (an objective, or None for the primary),
    only the trials `best` prints are read where the file's layout allows (storage/reader.py)."""
    from .storage.results import parse_results

    if results == "-":
        return parse_results(_read_stdin(), "<stdin>")
    from .storage.reader import read_all, read_for_best

    return read_all(results) if best_of is False else read_for_best(results, best_of)  # type: ignore[arg-type]


# validate --------------------------------------------------------------------


@app.command()
def validate(
    studies: Annotated[list[str], typer.Argument(help="Study files to check ('-' reads standard input).")],
    output_sample: Annotated[
        Optional[Path],
        typer.Option("--output-sample", help="A captured trial output: show which metrics would be read from it."),
    ] = None,
) -> None:
    """Check study files and summarise each valid one."""
    from .studyfile.probe import probe_executor

    invalid = 0
    for study in studies:
        try:
            with user_errors():
                config = _load(study, [])
                warnings = probe_executor(config)
                print("\n".join(_summary(config, output_sample)), flush=True)
                for warning in warnings:
                    _warn(warning)
        except typer.Exit:
            invalid += 1
    if invalid:
        raise typer.Exit(2)


def _summary(config, output_sample: Path | None) -> list[str]:
    from .assemble import sample_params
    from .executors.command import compile_template
    from .studyfile import describe

    lines = [f"{config.path}: valid"] + [f"  {line}" for line in describe(config)]
    if config.executor.command is not None:
        params = sample_params(config.space)
        trial = {"trial_id": "trial_0000", "trial_number": 0, "trial_seed": 0, "study": config.name,
                 "trial_dir": f"{config.name}.results.trials/trial_0000"}
        if config.slots:
            trial.update(slot=config.slots[0].label, gpus=config.slots[0].gpus)
        template = compile_template(config.executor.command)
        lines.append(f"  sample command: {template.display(params, trial)}")
        command = template.render(params, trial)
        if command.shell:  # what /bin/sh really gets: the values stay in the environment
            lines.append(f"  as run by {command.argv[0]}: {command.argv[-1]}")
            lines.append("    (each value is in an environment variable that the shell expands but never parses)")
    if output_sample is not None:
        from .executors.output import explain_output
        from .studyfile.source import MAX_OUTPUT_SAMPLE_BYTES, Unreadable, read_regular_file

        try:
            text = read_regular_file(output_sample, MAX_OUTPUT_SAMPLE_BYTES).decode("utf-8", errors="replace")
        except Unreadable as exc:
            raise UsageError(f"{output_sample}: cannot read: {exc}") from None
        lines.append(f"  metrics read from {output_sample}:")
        declared = [*(o.metric for o in config.objectives), *config.metrics]
        lines += [f"    {line}" for line in explain_output(text, declared)]
    return lines


# run -------------------------------------------------------------------------


@app.command()
def run(
    study: Annotated[str, typer.Argument(help="The study file ('-' reads standard input).")],
    output: Annotated[
        Optional[str], typer.Option("-o", "--output", help="Results file ('-' writes to standard output).")
    ] = None,
    jobs: Annotated[Optional[int], typer.Option("-j", "--jobs", min=1, help="Trials at once.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a study from its journal.")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override the study seed.")] = None,
    n_trials: Annotated[Optional[int], typer.Option("--n-trials", min=1, help="Override strategy.n_trials.")] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a study-file key: KEY=VALUE (dotted path).")
    ] = None,
    events: Annotated[
        Optional[str], typer.Option("--events", help="Write every event as a JSON line to FILE ('-': stdout).")
    ] = None,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help="Dask scheduler address.")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress output.")] = False,
    mlflow: Annotated[
        Optional[str], typer.Option("--mlflow", metavar="URI", help="Log every trial to this MLflow tracking URI.")
    ] = None,
    gpus: Annotated[
        Optional[str],
        typer.Option("--gpus", metavar="IDS", help="Devices for the trials, e.g. 0,1,2,3 (resources.gpus)."),
    ] = None,
    warm_start: Annotated[
        Optional[list[str]],
        typer.Option("--warm-start", metavar="RESULTS", help="Tell the sampler the trials of an earlier study first."),
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="With --resume: run the failed trials again first.")
    ] = False,
    join: Annotated[
        bool, typer.Option("--join", help="Share the study with other run --join and ask/tell processes.")
    ] = False,
    lease: Annotated[
        Optional[str], typer.Option("--lease", metavar="DURATION", help="With --join: the lease of each trial (5m).")
    ] = None,
) -> None:
    """Run a study: sample parameters, run trials, write results as JSON."""
    with user_errors():
        settings = list(overrides or [])
        if gpus is not None:
            settings.append(_gpus_override(gpus))
        if seed is not None:
            settings.append(f"seed={seed}")
        if n_trials is not None:
            settings.append(f"strategy.n_trials={n_trials}")
        if jobs is not None:
            settings.append(f"parallel={jobs}")
        if cluster is not None:
            settings.append(f"cluster={cluster}")
        if output == "-" and events == "-":
            raise UsageError("-o - and --events - cannot both write to standard output")
        if retry_failed and not resume:
            raise UsageError("--retry-failed reruns the failed trials of a resumed study: use it with --resume")
        if join and (resume or output == "-"):
            raise UsageError("--join shares a study through its results file: not with --resume or -o -")
        if join and (warm_start or retry_failed):
            raise UsageError("--join runs the shared study's own trials: not with --warm-start or --retry-failed")
        if lease is not None and not join:
            raise UsageError("--lease goes with --join (an ask takes its own --lease)")
        config = _with_tracking(_load(study, settings), mlflow)
        if join:
            code = _join_study(config, output, events, quiet, _lease_seconds(lease, join=True))
            raise typer.Exit(code)
        again = _resume_command(study, output, jobs, seed, n_trials, overrides or [], cluster, mlflow, gpus,
                                warm_start or [])
        code = _run_study(config, output, events, quiet, resume, again, warm_start or [], retry_failed)
    raise typer.Exit(code)


def _gpus_override(gpus: str) -> str:
    """--gpus 0,1,2,3 as the override resources.gpus=[...]: each id as YAML reads it (0 an int, a UUID a string)."""
    import json

    ids = [part.strip() for part in gpus.split(",")]
    if not all(ids):
        raise UsageError(f"--gpus takes device ids separated by commas, such as 0,1,2,3; got {gpus!r}")
    return "resources.gpus=" + json.dumps([int(i) if i.isdigit() else i for i in ids])


def _resume_command(
    study: str, output: str | None, jobs: int | None, seed: int | None, n_trials: int | None,
    overrides: list[str], cluster: str | None, mlflow: str | None = None, gpus: str | None = None,
    warm_start: list[str] | None = None,
) -> str:
    """The `somatize run ... --resume` that continues this run: the same study, output and settings."""
    import shlex

    words = ["somatize", "run", study]
    for flag, value in (("-o", output), ("-j", jobs), ("--seed", seed), ("--n-trials", n_trials),
                        ("--cluster", cluster), ("--mlflow", mlflow), ("--gpus", gpus)):
        if value is not None:
            words += [flag, str(value)]
    for override in overrides:
        words += ["--set", override]
    for earlier in warm_start or []:
        words += ["--warm-start", earlier]
    return shlex.join([*words, "--resume"])


def _results_path(config, output: str | None) -> Path | None:
    if output == "-":
        return None
    if output is not None:
        return Path(output)
    if config.output is not None:
        return config.output
    stem = config.name if config.path == "<stdin>" else Path(config.path).stem
    return Path(f"{stem}.results.json")


def _run_study(config, output: str | None, events: str | None, quiet: bool, resume: bool, again: str,
               warm_start: list[str] | None = None, retry_failed: bool = False) -> int:
    """`again` is the command line that resumes this study, for the message over an unfinished journal."""
    with contextlib.ExitStack() as held:
        path, journal_file = _claim_output(config, output, resume, held)
        return _run_locked(config, path, journal_file, events, quiet, resume, again, warm_start or [], retry_failed)


def _claim_output(
    config, output: str | None, resume: bool, held: contextlib.ExitStack
) -> tuple[Path | None, Path | None]:
    """The results file and journal to write, checked, and locked until `held` closes."""
    path = _results_path(config, output)
    if path is None:
        if resume:
            raise UsageError("--resume needs a results file; it cannot resume with -o -")
        return None, None
    from .storage.journal import journal_path
    from .storage.lock import StudyLock, lock_path
    from .storage.paths import check_own_file, remove_stale_temp_files
    from .storage.results import check_writable

    path = check_writable(path)  # a symlink to a regular file: its target
    journal_file = journal_path(path)
    check_own_file(journal_file, "journal")
    lock = StudyLock(lock_path(path), path)
    lock.acquire()  # held to the end of the run, so no other run writes these files meanwhile
    held.callback(lock.release)
    remove_stale_temp_files(path)  # left by a run killed mid-write; under the lock, no live run's file is stale
    return path, journal_file


def _run_locked(config, path: Path | None, journal_file: Path | None, events: str | None, quiet: bool,
                resume: bool, again: str, warm_start: list[str] | None = None, retry_failed: bool = False) -> int:
    from .assemble import build_study
    from .errors import OutputWriteError
    from .events import EventBus
    from .history import history_frozen
    from .samplers import make_sampler
    from .storage.journal import Journal, journal_exists

    study = build_study(config)
    journal = None
    known: dict = {}  # resumed trials already encoded: number -> (trial, its JSON), written again as they are
    if path is not None and journal_file is not None:
        journal = Journal(journal_file, sync=config.durability == "power")
        _restore(study, path, journal.path, resume, again, known)
    sampler = make_sampler(config.strategy, config.space, config.objectives, config.seed,
                           config.outcome_constraints)
    config, sampler = _known_points(config, study, sampler, retry_failed, warm_start or [], quiet)
    _before_first_trial(config, study, path, quiet, reruns=(sampler.total or 0) - (sampler.inner.total or 0)
                        if hasattr(sampler, "inner") else 0)
    bus = EventBus()
    try:
        with history_frozen(study.trials):
            return _run_with_subscribers(config, study, sampler, bus, path, journal, events, quiet, resume, known)
    except OutputWriteError as exc:
        if journal is None or not journal_exists(journal.path):
            raise
        raise OutputWriteError(f"{exc} (the journal {journal.path} keeps {_finished_in(journal.path)}; "
                               f"with room again, resume: `{again}`)") from None


def _run_with_subscribers(config, study, sampler, bus, path: Path | None, journal, events: str | None,
                          quiet: bool, resume: bool = False, known: dict | None = None) -> int:
    from .assemble import build_executor, stop_conditions
    from .pruners import make_pruner
    from .runner import StudyRunner
    from .storage.results import PeriodicResults, TrialLines, results_json, write_results

    periodic = None
    with _interrupts_as_keyboard_interrupt():  # also covers the final write
        with contextlib.ExitStack() as stack:
            _attach_event_log(bus, events, stack)  # before the journal: an unwritable --events leaves no journal
            _attach_tracker(bus, config, study, quiet, stack)
            # Each trial encoded once, for the journal and the results file; made before the trial directories
            # are, so a resumed trial whose directory the keep policy removes now is encoded again, without it.
            encoded = TrialLines(known)
            trial_dirs = _attach_trial_dirs(bus, config, study, path, resume)  # before the journal: it sets log_dir
            if journal is not None and path is not None:
                stack.callback(journal.close)
                journal.begin(study, encoded)
                bus.subscribe(journal)
                periodic = PeriodicResults(study, path, lines=encoded)  # writes in the background
                stack.callback(periodic.close)  # its thread ends with the run, also when the run fails
                bus.subscribe(periodic)
            _attach_progress(bus, quiet, stack)
            _attach_frozen_history(bus, stack)
            executor = build_executor(config)
            stack.callback(executor.close)  # also when connecting to a cluster fails
            slots = config.parallel
            if config.cluster:
                executor.connect()  # a wrong address fails here, before the first trial
                slots = config.parallel if config.parallel > 1 else executor.worker_slots()
                if config.slots:  # never more trials in flight than there are devices
                    slots = min(slots, len(config.slots))
            pruner = make_pruner(config.pruning, config.primary)
            runner = StudyRunner(
                study, sampler, executor, bus, stop_conditions(config), config.seed, slots, pruner,
                trial_dirs=trial_dirs, slots=_slot_pool(config),
            )  # fmt: skip
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # prints of trial functions are not results
            runner.run()
        if path is None:
            sys.stdout.write(results_json(study))
            sys.stdout.flush()
        else:
            periodic.write_final(study) if periodic is not None else write_results(study, path)
            if journal is not None and study.status != "interrupted":
                journal.remove()
        if not quiet:
            _say_top_trials(study, path)
    if sampler.give_up:
        _say(f"somatize: {sampler.give_up}")
    return _exit_code(study, quiet_if_none=bool(sampler.give_up))


def _known_points(config, study, sampler, retry_failed: bool, warm_start: list[str], quiet: bool):
    """`enqueue:` and --retry-failed as a queue before the strategy; --warm-start told to it now.

    A rerun takes the budget slot of the failed trial it reruns, and that
    failure no longer counts towards max_failures.
    """
    from dataclasses import replace

    reruns = _failed_to_rerun(study) if retry_failed else []
    if reruns:
        if config.max_failures is not None:
            config = replace(config, max_failures=config.max_failures + len(reruns))
        if not quiet:
            ids = ", ".join(t.id for t in reruns[:5]) + (", ..." if len(reruns) > 5 else "")
            _say(f"retrying {len(reruns)} failed trial{'' if len(reruns) == 1 else 's'} first ({ids}), "
                 "as new trials in the place of the failed ones in the budget")
    elif retry_failed and not quiet:
        _say("retrying failed trials: there are none to retry")
    if config.enqueue or reruns:
        from .samplers.queued import QueuedSampler

        sampler = QueuedSampler(sampler, config.enqueue, [t.params for t in reruns])
    if warm_start:
        from .storage.warmstart import load_warm_start

        warm = load_warm_start(warm_start, config.space, config.primary)
        for trial in warm.trials:
            sampler.tell(trial)
        if not quiet:
            _say(warm.summary())
    return config, sampler


def _failed_to_rerun(study) -> list:
    """The failed trials of a resumed study that no later trial has run again with the same parameters."""
    from .study import TrialState

    later: set = set()
    chosen = []
    for trial in sorted(study.trials, key=lambda t: t.number, reverse=True):
        key = study.space.key(trial.params)
        if trial.state is TrialState.FAILED and key not in later:
            chosen.append(trial)
        later.add(key)
    return sorted(chosen, key=lambda t: t.number)


def _before_first_trial(config, study, path: Path | None, quiet: bool, reruns: int = 0) -> None:
    """A function that cannot be imported is exit 2; what will not work is a warning; a resume says what it found."""
    from .assemble import function_runs_here
    from .studyfile import caveats, planned_trials
    from .studyfile.probe import probe_executor

    checked = probe_executor(config, in_process=function_runs_here(config), cluster_function=False)
    for warning in checked + caveats(config):
        _warn(warning)
    if study.trials and not quiet:  # only a resume starts with finished trials
        left = max(0, planned_trials(config.strategy, config.space) - len(study.trials)) + reruns
        _say(f"resuming: {len(study.trials)} finished trials from {path}; {left} to go")


TOP_TRIALS = 5


def _say_top_trials(study, path: Path | None) -> None:
    """The end of a run, for people: the best few trials, the best-so-far curve, where the results are."""
    from .ui.formats import best_so_far_line, format_trials, sort_trials

    top = sort_trials(study, study.feasible(), limit=TOP_TRIALS)
    if top and not _live_progress():  # the live table's own summary has just listed them, fitted to the terminal
        _say(f"top {len(top)} of {len(study.trials)} trials:")
        _say(format_trials(study, "table", top).rstrip("\n"))
    if top:
        _say(best_so_far_line(study).rstrip("\n"))
    if path is not None:
        _say(f"results: {path}")


def _restore(study, path: Path, journal: Path, resume: bool, again: str, known: dict | None = None) -> None:
    """Load earlier trials for --resume, or refuse to start over an unfinished run."""
    from .storage.journal import check_trials, journal_exists, read_journal, read_journal_header, spec_changes
    from .storage.reader import read_all as read_results

    if not resume:
        if journal_exists(journal):
            raise UsageError(f"{journal} holds {_unfinished(journal)}: continue it with `{again}`, "
                             "or write to another file with -o")
        return
    if journal_exists(journal):
        header, trials, source = read_journal_header(journal), [], journal  # the trials: below, read once
    elif path.exists():
        earlier = read_results(path, known)
        header, trials, source = {"id": earlier.id, "spec": earlier.spec}, earlier.trials, path
    else:
        raise UsageError(f"nothing to resume: neither {journal} nor {path} exists")
    changes = spec_changes(header.get("spec") or {}, study.spec)
    if changes:
        raise UsageError(
            f"cannot resume from {source}: the study's {' and '.join(changes)} changed; "
            "start afresh with another -o"
        )
    # The same study, so every trial must fit its space: read again with the checks that
    # name a bad record's line (after the spec check, which explains a changed space better).
    if source == journal:
        trials = read_journal(journal, study.space)[1]
    else:
        check_trials(trials, study.space, path)
    study.id = header.get("id") or study.id
    study.trials = [t for t in trials if t.state.is_finished()]


def _unfinished(journal: Path) -> str:
    """What an unfinished journal holds, in words: the run that wrote it stopped before the end
    (killed, a crash, or a second Ctrl-C), as a live run would hold the study's lock."""
    return f"an unfinished run of this study with {_finished_in(journal)}"


def _finished_in(journal: Path) -> str:
    from .errors import ResultsFileError
    from .storage.journal import read_journal

    try:
        _, trials = read_journal(journal)
    except ResultsFileError:
        return "trials that cannot be read (--resume says why)"
    finished = sum(t.state.is_finished() for t in trials)
    return f"{finished} finished trial{'' if finished == 1 else 's'}"


def _attach_event_log(bus, events: str | None, stack: contextlib.ExitStack) -> None:
    if events is None:
        return
    from .storage.eventlog import EventLog

    if events == "-":
        log = EventLog(sys.stdout)
    else:
        try:
            log = EventLog(open(events, "w", encoding="utf-8"), close=True)  # noqa: SIM115 - closed by the stack
        except OSError as exc:
            raise UsageError(f"{events}: cannot write events: {exc.strerror}") from None
    bus.subscribe(log)
    stack.callback(log.close)


def _with_tracking(config, uri: str | None):
    """--mlflow URI over the study file's mlflow: key; exit 2 before any trial when the extra is missing."""
    if uri is None and config.mlflow is None:
        return config
    from dataclasses import replace

    from .trackers.mlflow import EXTRA_HINT, mlflow_installed

    if not mlflow_installed():
        where = "--mlflow" if uri is not None else f"{config.path}: mlflow:"
        raise UsageError(f"{where} needs the mlflow extra: {EXTRA_HINT}")
    return config if uri is None else replace(config, mlflow={**(config.mlflow or {}), "tracking_uri": uri})


def _attach_tracker(bus, config, study, quiet: bool, stack: contextlib.ExitStack) -> None:
    if config.mlflow is None:
        return
    from .trackers.mlflow import QUEUE_EVENTS, MlflowTracker

    tracker = MlflowTracker(
        bus.subscribe_queue(QUEUE_EVENTS),
        study,
        config.mlflow.get("tracking_uri"),
        config.mlflow.get("experiment"),
        warn=lambda message: _say(f"somatize: warning: {message}"),
        say=(lambda message: None) if quiet else (lambda message: _say(f"somatize: {message}")),
    )
    tracker.start()
    stack.callback(tracker.close)


def _attach_trial_dirs(bus, config, study, path: Path | None, resume: bool):
    """Each trial's directory beside the results file (none when the results go to stdout)."""
    if path is None:
        return None
    from .executors.artifacts import TrialDirs

    # A function's trial makes its directory on first use, so a study of quiet ones makes none, nor the root.
    dirs = TrialDirs(path, config.trial_dirs, config.primary, on_demand=config.executor.function is not None)
    try:
        if not dirs.on_demand:
            dirs.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{dirs.root}: cannot make the trials' directory: {exc.strerror or exc}") from None
    if resume:
        dirs.resumed(study.trials)
    else:
        dirs.start_afresh()  # the study this run replaces in the results file leaves its trial directories too
    bus.subscribe(dirs)
    return dirs


def _attach_frozen_history(bus, stack: contextlib.ExitStack) -> None:
    """Finished trials kept out of the collector's full passes: no stall of the loop at 100,000 trials."""
    from .history import FrozenHistory

    frozen = FrozenHistory()
    bus.subscribe(frozen)
    stack.callback(frozen.close)


def _slot_pool(config):
    if not config.slots:
        return None
    from .executors.slots import SlotPool

    return SlotPool(config.slots)


def _attach_progress(bus, quiet: bool, stack: contextlib.ExitStack) -> None:
    if quiet:
        return
    if _live_progress():
        from .ui.live import LiveTable

        table = LiveTable(bus.subscribe_queue())
        table.start()
        stack.callback(table.stop)
        notice = table.interrupted
    else:
        from .ui.lines import PlainProgress

        progress = PlainProgress(sys.stderr)
        bus.subscribe(progress)
        notice = progress.interrupted
    _INTERRUPT_NOTICES.append(notice)
    stack.callback(_INTERRUPT_NOTICES.remove, notice)


# Who tells people what the first Ctrl-C waits for: the progress display of the run in progress.
_INTERRUPT_NOTICES: list[Callable[[], None]] = []


def _announce_interrupt() -> None:
    for notice in _INTERRUPT_NOTICES:
        with contextlib.suppress(Exception):  # a message must never stand in the way of stopping
            notice()


def _live_progress() -> bool:
    """Whether people see the live table (stderr is a terminal) rather than plain lines."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """First Ctrl-C, SIGTERM or SIGHUP (terminal closed): stop like Ctrl-C (no new trial,
    results written, exit 130).

    A second one exits at once: running trials are killed and the journal,
    flushed after every trial, is what remains for --resume. Throughout, trial
    processes are supervised: none outlives its trial or somatize, even `kill -9`.
    """
    from .executors.processes import LIVE_GROUPS, supervise

    interrupted = False

    def on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal interrupted
        if signum == getattr(signal, "SIGHUP", None):
            _leave_the_closed_terminal()
        if not interrupted:
            interrupted = True
            _announce_interrupt()  # issue 15.10: what the wait is for
            raise StudyInterrupted  # not a KeyboardInterrupt an objective raised: that fails its trial
        LIVE_GROUPS.kill_all()
        _say("somatize: interrupted again; stopped at once (resume with --resume)")
        os._exit(EXIT_INTERRUPTED)

    handled = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        with supervise():
            yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _leave_the_closed_terminal() -> None:
    """After a hangup, point stdout and stderr at /dev/null if they were the terminal (a character
    device): every write to a closed terminal fails (EIO), which would turn the orderly stop into
    an error instead of exit 130 with the results written."""
    import stat

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        null_device = os.fstat(devnull).st_rdev
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                status = os.fstat(fd)
                if stat.S_ISCHR(status.st_mode) and status.st_rdev != null_device:
                    os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _exit_code(study, quiet_if_none: bool = False) -> int:
    if study.status == "interrupted":
        _say(f"somatize: interrupted after {len(study.trials)} trials; results written")
        return EXIT_INTERRUPTED
    if study.status == "failed":
        last_error = next((t.error for t in reversed(study.trials) if t.error), "")
        first_line = last_error.splitlines()[0] if last_error else ""
        _say(f"somatize: study stopped ({study.stop_reason}); last error: {first_line}")
        return EXIT_NO_RESULT
    from .study import TrialState

    if not any(t.state is TrialState.COMPLETED for t in study.trials):  # stops at the first (study.completed: all)
        if not quiet_if_none:  # the sampler already said why no trial ran
            _say("somatize: no trial completed")
        return EXIT_NO_RESULT
    return 0


def _join_study(config, output: str | None, events: str | None, quiet: bool, lease: float) -> int:
    """`run --join`: the runner's trials come from, and go to, the study's shared journal (SPEC §8)."""
    from .asktell import JoinedStudy
    from .assemble import build_executor, build_study, stop_conditions
    from .events import EventBus
    from .pruners import make_pruner
    from .runner import StudyRunner
    from .storage.results import check_writable

    path = check_writable(_results_path(config, output))
    with JoinedStudy(config, path, lease, warn=_warn) as joined:
        study = build_study(config)
        study.id = joined.study_id
        _before_first_trial(config, study, path, quiet)
        sampler = joined.sampler()
        bus = EventBus()
        with _interrupts_as_keyboard_interrupt(), contextlib.ExitStack() as stack:
            _attach_event_log(bus, events, stack)
            _attach_tracker(bus, config, study, quiet, stack)
            # resume=True: the other processes' trial directories are theirs, not a replaced study's
            trial_dirs = _attach_trial_dirs(bus, config, study, path, resume=True)
            bus.subscribe(joined)
            _attach_progress(bus, quiet, stack)
            executor = build_executor(config)
            stack.callback(executor.close)
            slots = config.parallel
            if config.cluster:
                executor.connect()
                slots = config.parallel if config.parallel > 1 else executor.worker_slots()
                if config.slots:
                    slots = min(slots, len(config.slots))
            pruner = make_pruner(config.pruning, config.primary)
            runner = StudyRunner(
                study, sampler, executor, bus, stop_conditions(config), config.seed, slots, pruner,
                trial_dirs=trial_dirs, slots=_slot_pool(config),
            )  # fmt: skip
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            runner.run()
    shared = joined.study
    if not quiet and shared is not None:
        _say(f"this run: {len(study.trials)} trials; the shared study: {len(shared.trials)}")
        _say_top_trials(shared, path)
    if sampler.give_up:
        _say(f"somatize: {sampler.give_up}")
    if study.status == "interrupted" or shared is None or study.status == "failed":
        return _exit_code(study)
    return 0 if shared.completed() else _exit_code(shared)


# ask / tell / heartbeat --------------------------------------------------------

ASK_FORMATS = ("json", "args", "env", "yaml")


def _lease_seconds(text: str | None, join: bool = False) -> float:
    from .asktell import DEFAULT_LEASE, JOIN_LEASE
    from .studyfile.fields import parse_duration

    if text is None:
        return JOIN_LEASE if join else DEFAULT_LEASE
    seconds = parse_duration(text)
    if seconds is None or not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"--lease must be a positive duration like '90s', '30m', '2h', got {text!r}")
    return seconds


def _shared_results(config, output: str | None) -> Path:
    from .storage.results import check_writable

    path = _results_path(config, output)
    if path is None:
        raise UsageError("ask records its trial in a results file and its journal: not with -o -")
    return check_writable(path)


@app.command()
def ask(
    study: Annotated[str, typer.Argument(help="The study file ('-' reads standard input).")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="The study's results file.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json | args | env | yaml")] = "json",
    lease: Annotated[
        Optional[str], typer.Option("--lease", metavar="DURATION", help="Time to tell or renew before it is stale (2h).")
    ] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a study-file key: KEY=VALUE (dotted path).")
    ] = None,
) -> None:
    """Propose one trial of a study, record it as running, and print it (exit 3: nothing left to ask)."""
    from .asktell import ask as ask_trial
    from .ui.formats import format_asked

    with user_errors():
        if fmt not in ASK_FORMATS:
            raise UsageError(f"--format must be one of {', '.join(ASK_FORMATS)}, got {fmt!r}")
        seconds = _lease_seconds(lease)
        config = _load(study, list(overrides or []))
        trial = ask_trial(config, _shared_results(config, output), seconds)
        print(format_asked(trial, fmt), flush=True)


class _TellCommand(typer.core.TyperCommand):
    """`--failed [REASON]`: a flag whose value may be left out (typer has no spelling for it; click has)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name == "failed":
                param._flag_needs_value = True  # type: ignore[attr-defined]
                param.flag_value = ""  # type: ignore[attr-defined]


@app.command(cls=_TellCommand)
def tell(
    results: Annotated[str, typer.Argument(help="The study's results file.")],
    trial: Annotated[str, typer.Argument(metavar="TRIAL_ID", help="The asked trial (trial_0007, or 7).")],
    value: Annotated[Optional[str], typer.Option("--value", help="The first objective's value.")] = None,
    metric: Annotated[
        Optional[list[str]], typer.Option("--metric", metavar="NAME=VALUE", help="A metric's value (repeatable).")
    ] = None,
    metrics_from: Annotated[
        Optional[str],
        typer.Option("--metrics-from", metavar="FILE", help="Read metrics as from a shell trial's output ('-': stdin)."),
    ] = None,
    failed: Annotated[
        Optional[str], typer.Option("--failed", metavar="[REASON]", help="The trial failed (optionally why).")
    ] = None,
    pruned: Annotated[bool, typer.Option("--pruned", help="The trial was stopped early.")] = False,
    step: Annotated[Optional[int], typer.Option("--step", min=0, help="With --pruned: the step it stopped at.")] = None,
) -> None:
    """Record the outcome of an asked trial; the results file is updated."""
    from .asktell import read_header, told_outcome
    from .asktell import tell as tell_trial

    with user_errors():
        path = Path(results)
        header = read_header(path)
        with _metrics_source(metrics_from) as (stream, source):
            told = told_outcome(header, value, metric or [], stream, source, failed, pruned, step)
        done, warnings = tell_trial(path, trial, told)
        for warning in warnings:
            _warn(warning)
        if done.state.value == "failed" and failed is None:
            _warn(f"{done.id} is recorded as failed: {done.error}")


@contextlib.contextmanager
def _metrics_source(name: str | None):
    """--metrics-from FILE or '-' (stdin) as a binary stream; a FIFO or device is refused like a metrics file."""
    if name is None:
        yield None, ""
        return
    if name == "-":
        yield _piped_stdin().buffer, "<stdin>"
        return
    import stat

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: a FIFO must not hang the open
    except (OSError, ValueError) as exc:
        raise UsageError(f"--metrics-from {name}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"--metrics-from {name}: not a regular file; to read a pipe, give '-' and pipe it in")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        yield handle, name


@app.command()
def heartbeat(
    results: Annotated[str, typer.Argument(help="The study's results file.")],
    trial: Annotated[str, typer.Argument(metavar="TRIAL_ID", help="The asked trial (trial_0007, or 7).")],
    lease: Annotated[
        Optional[str], typer.Option("--lease", metavar="DURATION", help="Renew by this much (default: its lease).")
    ] = None,
) -> None:
    """Renew an asked trial's lease, so it is not taken for stale while it runs."""
    from .asktell import heartbeat as renew

    with user_errors():
        seconds = None if lease is None else _lease_seconds(lease)
        _, warnings = renew(Path(results), trial, seconds)
        for warning in warnings:
            _warn(warning)


@app.command()
def server(
    action: Annotated[str, typer.Argument(metavar="ACTION", help="status | stop")] = "status",
) -> None:
    """The warm command server of ask/tell/heartbeat: is it running (status), or make it exit (stop)."""
    from . import server as warm

    with user_errors():
        if action not in ("status", "stop"):
            raise UsageError(f"ACTION must be status or stop, got {action!r}")
        now = warm.status()
        if now is None:
            _say("somatize: no command server runs for this installation")
            raise typer.Exit(1)
        if action == "stop":
            warm.stop()
            _say(f"somatize: command server {now['pid']} stops once its running commands end")
            return
        print(warm.describe(now), flush=True)


# best / show -----------------------------------------------------------------


@app.command()
def best(
    results: Annotated[str, typer.Argument(help="Results file ('-' reads standard input).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | params | env | args | yaml")] = "table",
    param: Annotated[Optional[str], typer.Option("--param", help="Print only this parameter's value.")] = None,
    objective: Annotated[Optional[str], typer.Option("--objective", help="Pick the best by this metric.")] = None,
    pareto: Annotated[
        bool, typer.Option("--pareto", help="List the Pareto front of a multi-objective study (table or json).")
    ] = False,
    observed: Annotated[
        bool, typer.Option("--observed", help="The best observed trial, even where the model recommends another.")
    ] = False,
) -> None:
    """Print the best trial of a results file: a Bayesian study's recommendation, else the best observed."""
    from .ui.formats import format_best, format_param, format_trials

    with user_errors():
        if fmt not in BEST_FORMATS:
            raise UsageError(f"--format must be one of {', '.join(BEST_FORMATS)}, got {fmt!r}")
        if pareto and (fmt not in ("table", "json") or param is not None or objective is not None):
            raise UsageError("--pareto lists several trials: use it with --format table or json only")
        study = _load_results(results) if pareto else _load_results(results, best_of=objective)
        if pareto:
            if len(study.objectives) < 2:
                raise UsageError("--pareto needs a study with two or more objectives; this one has one")
            front = study.pareto_front()
            if not front:
                _say(f"somatize: {_none_best(study)} in {results}")
                raise typer.Exit(EXIT_NO_RESULT)
            print(format_trials(study, fmt, front), end="")
            return
        metric = _check_objective(study, objective)
        trial = study.best_trial(metric)
        if trial is None:  # the reason needs every trial, which a file read for `best` alone has not given
            whole = study if results == "-" else _load_results(results)
            _say(f"somatize: {_none_best(whole)} in {results}")
            raise typer.Exit(EXIT_NO_RESULT)
        best_observed = trial
        recommended = None if observed or metric not in (None, study.primary.metric) else study.recommended_trial()
        if recommended is not None and recommended.number != trial.number:
            trial = recommended
            if param is not None or fmt != "table":  # the table says it itself
                _say(
                    f"somatize: {trial.id} is the recommended trial (best predicted {study.primary.metric}); "
                    f"the best observed is {best_observed.id} (--observed prints it)"
                )
        if param is not None:
            try:
                print(format_param(trial, param))
            except KeyError:
                known = ", ".join(trial.params) or "none"
                raise UsageError(f"no parameter {param!r} in the best trial (parameters: {known})") from None
            return
        print(format_best(study, trial, fmt, metric, best_observed=best_observed))


def _none_best(study) -> str:
    """Why `best` has nothing to print: no completed trial, or none that satisfied the constraints on metrics."""
    completed = len(study.completed())
    if completed and not study.feasible():
        return f"no feasible trial ({completed} completed, each breaking a constraint on metrics)"
    return "no completed trial"


def _check_objective(study, objective: str | None) -> str | None:
    if objective is not None and objective not in [o.metric for o in study.objectives]:
        known = ", ".join(o.metric for o in study.objectives)
        raise UsageError(f"--objective {objective!r} is not an objective of this study ({known})")
    return objective


@app.command()
def show(
    results: Annotated[str, typer.Argument(help="Results file ('-' reads standard input).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
    state: Annotated[
        Optional[str], typer.Option("--state", help="Only trials in this state (completed, pruned, failed).")
    ] = None,
    sort: Annotated[
        Optional[str],
        typer.Option(
            "--sort",
            help="Sort by an objective (best first), a parameter or duration_ms (ascending); "
            "-NAME descending, +NAME ascending.",
        ),
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Show at most N trials.")] = None,
) -> None:
    """List the trials of a results file."""
    from .study import TrialState
    from .ui.formats import best_so_far_line, filter_state, format_trials, sort_trials_by

    with user_errors():
        if fmt not in SHOW_FORMATS:
            raise UsageError(f"--format must be one of {', '.join(SHOW_FORMATS)}, got {fmt!r}")
        states = [s.value for s in TrialState]
        if state is not None and state not in states:
            raise UsageError(f"--state must be one of {', '.join(states)}, got {state!r}")
        if sort is None and results != "-" and _show_streamed(results, fmt, state, limit):
            return
        study = _load_results(results)
        trials = list(study.trials)
        if state is not None:
            trials = filter_state(trials, state)
        if sort is not None:
            try:
                trials = sort_trials_by(study, trials, sort)
            except ValueError as exc:
                raise UsageError(f"--sort {sort}: {exc}") from None
        if limit is not None:
            trials = trials[:limit]
        print(format_trials(study, fmt, trials, Path(results).parent if results != "-" else Path(".")), end="")
        if fmt == "table":
            print(best_so_far_line(study), end="")


@app.command()
def logs(
    results: Annotated[str, typer.Argument(help="Results file.")],
    trial_id: Annotated[str, typer.Argument(metavar="TRIAL_ID", help="The trial, e.g. trial_0007 (or its number).")],
    stdout: Annotated[bool, typer.Option("--stdout", help="Only the trial's stdout.")] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="Only the trial's stderr (printed on stdout).")] = False,
) -> None:
    """Print what a trial printed, kept in its directory: its stdout on stdout, its stderr on stderr."""
    from .executors.artifacts import trial_files

    with user_errors():
        if stdout and stderr:
            raise UsageError("--stdout and --stderr each print one stream; without either, logs prints both")
        if results == "-":
            raise UsageError("logs reads the trial directories beside a results file: give its path, not '-'")
        study = _load_results(results)
        out_file, err_file = trial_files(study, Path(results), trial_id)
        if stderr:
            _copy_to(err_file, sys.stdout)
        elif stdout:
            _copy_to(out_file, sys.stdout)
        else:
            _copy_to(out_file, sys.stdout)
            _copy_to(err_file, sys.stderr)


def _copy_to(path: Path, stream) -> None:
    """A kept output file, bytes as they are, onto a stream; none: the trial printed nothing there."""
    stream.flush()
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        while chunk := handle.read(65536):
            stream.buffer.write(chunk)
    stream.buffer.flush()


def _show_streamed(results: str, fmt: str, state: str | None, limit: int | None) -> bool:
    """show without --sort: each row written as its trial is read, in bounded memory; False when the
    file is not in the layout that allows it (then it is read whole, as before)."""
    from .storage.reader import open_results
    from .ui.rows import show_trials

    source = open_results(results)
    if source is None:
        return False
    show_trials(source, fmt, sys.stdout, state, limit, Path(results).parent)
    sys.stdout.flush()
    return True


# report ----------------------------------------------------------------------


@app.command()
def report(
    results: Annotated[str, typer.Argument(help="Results file ('-' reads standard input).")],
    output: Annotated[
        Optional[str],
        typer.Option(
            "-o", "--output",
            help="HTML file ('-' writes to standard output); default <results stem>.report.html here.",
        ),
    ] = None,
) -> None:
    """Write a self-contained HTML report of a results file: plots and a sortable trial table."""
    with user_errors():
        from .report import default_report_path, render_report, require_plotly, save_report, trial_links

        require_plotly()  # a missing extra is reported before any input is read
        study = _load_results(results)
        path = None if output == "-" else Path(output) if output is not None else default_report_path(results, study)
        html = render_report(study, "<stdin>" if results == "-" else results, trial_links(results, path))
        if path is None:
            sys.stdout.write(html)
            sys.stdout.flush()
            return
        save_report(html, path)
        _say(f"report: {path}")


# schema / init ---------------------------------------------------------------


@app.command()
def schema(
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="Write the schema to FILE ('-': standard output).")
    ] = None,
) -> None:
    """Print the JSON Schema of study files, for completion and checks in editors."""
    import json

    from .studyfile.schema import study_schema

    with user_errors():
        text = json.dumps(study_schema(), indent=2) + "\n"
        if output is None or output == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"{output}: cannot write: {reason}") from None
        _say(f"schema: {output}")


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="The study's name; writes NAME.yaml.")] = "study",
    executor: Annotated[
        str, typer.Option("--executor", "-e", help="function (a Python objective) | command (a script)")
    ] = "function",
    directory: Annotated[Path, typer.Option("-d", "--dir", help="Write the files here.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a commented starter study file and a tiny objective that run as they are."""
    import shlex

    with user_errors():
        from .starter import SCHEMA_FILE, write_starter

        study, code = write_starter(name, executor, directory, force)
        _say(f"wrote {study} (the study) and {code} (what each trial runs)")
        _say(f"next: somatize run {shlex.quote(str(study))}")
        _say(f"editor completion: somatize schema -o {shlex.quote(str(directory / SCHEMA_FILE))}")


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command being run, when `args` name one: typer turns every command's
    signature into click parameters at each start, and the other ten took a tenth of a cold `ask`
    (25 ms of cProfile's 73 for `--version`). No command, an option first or an unknown name: the whole app."""
    import copy

    name = args[0] if args else ""
    chosen = [
        info for info in app.registered_commands
        if (info.name or typer.main.get_command_name(info.callback.__name__)) == name  # type: ignore[union-attr]
    ]  # fmt: skip
    if len(chosen) != 1:
        return app
    single = copy.copy(app)
    single.registered_commands = chosen
    return single


def main(args: list[str] | None = None, prog_name: str | None = None, command: Callable | None = None) -> None:
    """The CLI in this process: sys.argv's command, or `args` and `command` (the warm server's child)."""
    try:
        (command or _app_for(sys.argv[1:] if args is None else args))(args=args, prog_name=prog_name)
    except KeyboardInterrupt:
        _exit(EXIT_INTERRUPTED)
    except SystemExit as exc:
        _exit(exc.code)


def prepared() -> Callable:
    """The app as click runs it: typer builds this at every call (half of a warm `ask`'s time, measured with
    cProfile), so the warm server (server.py) builds it once, before it forks; calling it is calling `app`."""
    return typer.main.get_command(app)


def _exit(code: object) -> None:
    """Exit with `code`; past interpreter shutdown when a tracker thread is still stuck in a network call.

    A daemon thread blocked in a socket call (MLflow unreachable, after the
    tracker's bounded wait) can make CPython's finalisation abort ("FATAL:
    exception not rethrown", SIGABRT) after the results were written; nothing
    is left to clean up by then, so leave at once with the study's own status.
    """
    import threading

    if not any(t.name == "somatize-mlflow" and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if not isinstance(code, (int, type(None))):
        print(code, file=sys.stderr)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


__all__ = ["app", "main"]
