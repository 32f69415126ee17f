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

from . import __version__
from .errors import SomatizeError, StudyFileError, StudyInterrupted, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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


def _load_results(results: str):
    from .storage.results import parse_results, read_results

    if results == "-":
        return parse_results(_read_stdin(), "<stdin>")
    return read_results(results)


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
        trial = {"trial_id": "trial_0000", "trial_number": 0, "trial_seed": 0, "study": config.name}
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
        lines += [f"    {line}" for line in explain_output(text, [o.metric for o in config.objectives])]
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
) -> None:
    """Run a study: sample parameters, run trials, write results as JSON."""
    with user_errors():
        settings = list(overrides or [])
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
        config = _with_tracking(_load(study, settings), mlflow)
        again = _resume_command(study, output, jobs, seed, n_trials, overrides or [], cluster, mlflow)
        code = _run_study(config, output, events, quiet, resume, again)
    raise typer.Exit(code)


def _resume_command(
    study: str, output: str | None, jobs: int | None, seed: int | None, n_trials: int | None,
    overrides: list[str], cluster: str | None, mlflow: str | None = None,
) -> str:
    """The `somatize run ... --resume` that continues this run: the same study, output and settings."""
    import shlex

    words = ["somatize", "run", study]
    for flag, value in (("-o", output), ("-j", jobs), ("--seed", seed), ("--n-trials", n_trials),
                        ("--cluster", cluster), ("--mlflow", mlflow)):
        if value is not None:
            words += [flag, str(value)]
    for override in overrides:
        words += ["--set", override]
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


def _run_study(config, output: str | None, events: str | None, quiet: bool, resume: bool, again: str) -> int:
    """`again` is the command line that resumes this study, for the message over an unfinished journal."""
    with contextlib.ExitStack() as held:
        path, journal_file = _claim_output(config, output, resume, held)
        return _run_locked(config, path, journal_file, events, quiet, resume, again)


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
                resume: bool, again: str) -> int:
    from .assemble import build_study
    from .errors import OutputWriteError
    from .events import EventBus
    from .samplers import make_sampler
    from .storage.journal import Journal, journal_exists

    study = build_study(config)
    journal = None
    if path is not None and journal_file is not None:
        journal = Journal(journal_file, sync=config.durability == "power")
        _restore(study, path, journal.path, resume, again)
    sampler = make_sampler(config.strategy, config.space, config.objectives, config.seed)
    _before_first_trial(config, study, path, quiet)
    bus = EventBus()
    try:
        return _run_with_subscribers(config, study, sampler, bus, path, journal, events, quiet)
    except OutputWriteError as exc:
        if journal is None or not journal_exists(journal.path):
            raise
        raise OutputWriteError(f"{exc} (the journal {journal.path} keeps {_finished_in(journal.path)}; "
                               f"with room again, resume: `{again}`)") from None


def _run_with_subscribers(config, study, sampler, bus, path: Path | None, journal, events: str | None,
                          quiet: bool) -> int:
    from .assemble import build_executor, stop_conditions
    from .pruners import make_pruner
    from .runner import StudyRunner
    from .storage.results import PeriodicResults, results_json, write_results

    with _interrupts_as_keyboard_interrupt():  # also covers the final write
        with contextlib.ExitStack() as stack:
            _attach_event_log(bus, events, stack)  # before the journal: an unwritable --events leaves no journal
            _attach_tracker(bus, config, study, quiet, stack)
            if journal is not None and path is not None:
                stack.callback(journal.close)
                journal.begin(study)
                bus.subscribe(journal)
                bus.subscribe(PeriodicResults(study, path))
            _attach_progress(bus, quiet, stack)
            executor = build_executor(config)
            stack.callback(executor.close)  # also when connecting to a cluster fails
            slots = config.parallel
            if config.cluster:
                executor.connect()  # a wrong address fails here, before the first trial
                slots = config.parallel if config.parallel > 1 else executor.worker_slots()
            pruner = make_pruner(config.pruning, config.primary)
            runner = StudyRunner(study, sampler, executor, bus, stop_conditions(config), config.seed, slots, pruner)
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # prints of trial functions are not results
            runner.run()
        if path is None:
            sys.stdout.write(results_json(study))
            sys.stdout.flush()
        else:
            write_results(study, path)
            if journal is not None and study.status != "interrupted":
                journal.remove()
        if not quiet:
            _say_top_trials(study, path)
    if sampler.give_up:
        _say(f"somatize: {sampler.give_up}")
    return _exit_code(study, quiet_if_none=bool(sampler.give_up))


def _before_first_trial(config, study, path: Path | None, quiet: bool) -> None:
    """A function that cannot be imported is exit 2; what will not work is a warning; a resume says what it found."""
    from .assemble import function_runs_here
    from .studyfile import caveats, planned_trials
    from .studyfile.probe import probe_executor

    checked = probe_executor(config, in_process=function_runs_here(config), cluster_function=False)
    for warning in checked + caveats(config):
        _warn(warning)
    if study.trials and not quiet:  # only a resume starts with finished trials
        left = max(0, planned_trials(config.strategy, config.space) - len(study.trials))
        _say(f"resuming: {len(study.trials)} finished trials from {path}; {left} to go")


TOP_TRIALS = 5


def _say_top_trials(study, path: Path | None) -> None:
    """The end of a run, for people: the best few trials, the best-so-far curve, where the results are."""
    from .ui.formats import best_so_far_line, format_trials, sort_trials

    top = sort_trials(study, study.completed())[:TOP_TRIALS]
    if top and not _live_progress():  # the live table's own summary has just listed them, fitted to the terminal
        _say(f"top {len(top)} of {len(study.trials)} trials:")
        _say(format_trials(study, "table", top).rstrip("\n"))
    if top:
        _say(best_so_far_line(study).rstrip("\n"))
    if path is not None:
        _say(f"results: {path}")


def _restore(study, path: Path, journal: Path, resume: bool, again: str) -> None:
    """Load earlier trials for --resume, or refuse to start over an unfinished run."""
    from .storage.journal import check_trials, journal_exists, read_journal, spec_changes
    from .storage.results import read_results

    if not resume:
        if journal_exists(journal):
            raise UsageError(f"{journal} holds {_unfinished(journal)}: continue it with `{again}`, "
                             "or write to another file with -o")
        return
    if journal_exists(journal):
        header, trials, source = *read_journal(journal), journal
    elif path.exists():
        earlier = read_results(path)
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
    if not study.completed():
        if not quiet_if_none:  # the sampler already said why no trial ran
            _say("somatize: no trial completed")
        return EXIT_NO_RESULT
    return 0


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
        study = _load_results(results)
        if pareto:
            if len(study.objectives) < 2:
                raise UsageError("--pareto needs a study with two or more objectives; this one has one")
            front = study.pareto_front()
            if not front:
                _say(f"somatize: no completed trial in {results}")
                raise typer.Exit(EXIT_NO_RESULT)
            print(format_trials(study, fmt, front), end="")
            return
        metric = _check_objective(study, objective)
        trial = study.best_trial(metric)
        if trial is None:
            _say(f"somatize: no completed trial in {results}")
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
        print(format_trials(study, fmt, trials), end="")
        if fmt == "table":
            print(best_so_far_line(study), end="")


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
        from .report import default_report_path, render_report, require_plotly, save_report

        require_plotly()  # a missing extra is reported before any input is read
        study = _load_results(results)
        html = render_report(study, "<stdin>" if results == "-" else results)
        if output == "-":
            sys.stdout.write(html)
            sys.stdout.flush()
            return
        path = Path(output) if output is not None else default_report_path(results, study)
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _exit(EXIT_INTERRUPTED)
    except SystemExit as exc:
        _exit(exc.code)


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
