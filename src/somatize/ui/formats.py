"""Output formats for `somatize best` and `somatize show` (SPEC §5).

Pure functions from a Study to text. Everything here is data for stdout, so
nothing is coloured. rich is imported only inside `_rich_table_text`, which
keeps `somatize best --format params` quick to start.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import operator
import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..executors.command import args_list, value_text
from ..study import Direction, Study, Trial, TrialState

BEST_FORMATS = ("table", "json", "params", "env", "args", "yaml")
TRIAL_FORMATS = ("table", "csv", "json")
REASON_WIDTH = 60


# Small value helpers (shared with lines.py and live.py) ------------------------------


def short_number(value: float | None) -> str:
    """A metric value for people: 6 significant digits, blank when absent or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def short_value(value: Any) -> str:
    """A parameter value for people: floats shortened, everything else as on a command line."""
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:.6g}"
    return value_text(value)


def params_text(params: dict[str, Any], short: bool = True) -> str:
    show = short_value if short else value_text
    return " ".join(f"{name}={show(value)}" for name, value in params.items())


def first_line(text: str | None, width: int = REASON_WIDTH) -> str:
    """The first non-empty line of an error, cut to width (tracebacks do not fit a row)."""
    if not text:
        return ""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def trial_reason(trial: Trial, width: int = REASON_WIDTH, now: float | None = None) -> str:
    """Why a trial did not complete: the error's first line, or the pruning step and reason; for an
    asked trial still out (running or stale), its age and its lease; for an infeasible one, the
    constraints on metrics it broke."""
    if trial.state in (TrialState.RUNNING, TrialState.STALE):
        return first_line(asked_age(trial, now), width)
    if trial.feasible is False:
        return first_line("; ".join(trial.violated or []), width)
    if trial.state is TrialState.FAILED:
        return first_line(trial.error, width)
    if trial.state is TrialState.PRUNED:
        step = "" if trial.pruned_step is None else f"at step {trial.pruned_step}"
        return first_line(": ".join(p for p in (step, trial.reason or "") if p), width)
    return ""


def asked_age(trial: Trial, now: float | None = None) -> str:
    """`asked 12m05s ago, lease 1h47m left` (running) or `asked 2h10m ago, lease ran out 10m00s ago` (stale)."""
    import time

    now = time.time() if now is None else now
    parts = [] if trial.started_at is None else [f"asked {duration_text(max(0.0, now - trial.started_at))} ago"]
    if trial.lease_until is not None:
        left = trial.lease_until - now
        parts.append(f"lease {duration_text(left)} left" if left > 0 else f"lease ran out {duration_text(-left)} ago")
    return ", ".join(parts)


def format_asked(trial: Trial, fmt: str) -> str:
    """An asked trial for `somatize ask` (SPEC §8): `json` one line, `args`/`env`/`yaml` as `best` prints
    parameters, with the trial id (`--trial-id X`, `SOMATIZE_TRIAL_ID=X`, `trial_id: X`)."""
    if fmt == "json":
        document = {"trial_id": trial.id, "number": trial.number, "params": trial.params, "trial_seed": trial.trial_seed}
        return json.dumps(document, ensure_ascii=False)
    if fmt == "args":
        return " ".join(shlex.quote(arg) for arg in ["--trial-id", trial.id, *args_list(trial.params)])
    if fmt == "env":
        lines = [f"SOMATIZE_TRIAL_ID={trial.id}"]
        return "\n".join(lines + [f"{env_name(n)}={shlex.quote(value_text(v))}" for n, v in trial.params.items()])
    if fmt == "yaml":
        import yaml

        document = {"trial_id": trial.id, "number": trial.number, "trial_seed": trial.trial_seed, "params": trial.params}
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).rstrip("\n")
    raise ValueError(f"unknown format {fmt!r}")


def attempt_text(attempt: int, attempts: int) -> str:
    """` (attempt 2 of 3)` for a trial that was retried, else "" (most trials run once)."""
    return f" (attempt {attempt} of {max(attempt, attempts)})" if attempt > 1 else ""


def interrupt_text(running: int) -> str:
    """What the first Ctrl-C is waiting for."""
    waiting = f"waiting for {running} running trial{'s' if running != 1 else ''}" if running else "writing the results"
    return f"interrupted: {waiting} (Ctrl-C again to stop at once)"


def duration_text(seconds: float | None) -> str:
    """A duration for people: 1.2s, 3m05s, 2h10m."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _json_number(value: float | None) -> float | str | None:
    # Same convention as the results file: JSON has no NaN/Infinity, keep them as strings.
    if value is None or math.isfinite(value):
        return value
    return str(value)


# best ---------------------------------------------------------------------------


def format_best(
    study: Study, trial: Trial, fmt: str, objective: str | None = None, best_observed: Trial | None = None
) -> str:
    """The best trial in one of BEST_FORMATS, without a trailing newline (the caller prints it).

    When `trial` is the study's recommended trial and `best_observed` another
    one, the table and json formats say which is which (SPEC §9).
    """
    other = best_observed if best_observed is not None and best_observed.number != trial.number else None
    if fmt == "json":
        return _best_json(study, trial, objective, other)
    if fmt == "params":
        return "\n".join(f"{name}={value_text(value)}" for name, value in trial.params.items())
    if fmt == "env":
        return "\n".join(f"{env_name(name)}={shlex.quote(value_text(value))}" for name, value in trial.params.items())
    if fmt == "args":
        return " ".join(shlex.quote(arg) for arg in args_list(trial.params))
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(trial.params, sort_keys=False, allow_unicode=True).rstrip("\n")
    if fmt == "table":
        return _best_table(study, trial, objective, other)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(BEST_FORMATS)}")


def format_param(trial: Trial, name: str) -> str:
    """One parameter's bare value; KeyError when the trial has no such parameter."""
    return value_text(trial.params[name])


def env_name(name: str) -> str:
    """A parameter name as a shell variable name: upper case, other characters become `_`."""
    text = re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    # A shell variable may not start with a digit.
    return f"_{text}" if not text or text[0].isdigit() else text


def _best_json(study: Study, trial: Trial, objective: str | None, best_observed: Trial | None) -> str:
    metric = study.objective(objective).metric
    document: dict[str, Any] = {
        "id": trial.id,
        "number": trial.number,
        "value": _json_number(trial.values.get(metric)),
        "values": {name: _json_number(value) for name, value in trial.values.items()},
        "params": trial.params,
    }
    recommendation = study.recommended
    if best_observed is not None and recommendation is not None:
        document["recommended"] = True
        document["predicted"] = {"mean": _json_number(recommendation.mean), "sd": _json_number(recommendation.sd)}
        document["best_observed"] = {"id": best_observed.id, "value": _json_number(best_observed.values.get(metric))}
    return json.dumps(document, indent=2, ensure_ascii=False)


def _best_table(study: Study, trial: Trial, objective: str | None, best_observed: Trial | None) -> str:
    # Plain aligned text: full-precision values, nothing to import, easy to copy from.
    chosen = study.objective(objective)
    recommendation = study.recommended if best_observed is not None else None
    note = "  (recommended: best predicted value)" if recommendation is not None else ""
    rows: list[tuple[str, str]] = [("study", study.name), ("trial", trial.id + note)]
    for obj in study.objectives:
        value = trial.values.get(obj.metric)
        note = obj.direction.value + (", best by" if obj.metric == chosen.metric and recommendation is None else "")
        rows.append((obj.metric, f"{'' if value is None else value_text(value)}  ({note})"))
    if recommendation is not None and best_observed is not None:
        noise = "" if recommendation.noise is None else f", noise sd {short_number(recommendation.noise)}"
        rows.append(("predicted", f"{short_number(recommendation.mean)} ± {short_number(recommendation.sd)}"
                                  f"  (the model's mean ± sd{noise})"))  # fmt: skip
        observed = best_observed.values.get(chosen.metric)
        rows.append(("best observed", f"{best_observed.id}: {chosen.metric} {short_number(observed)}"
                                      "  (a single draw; --observed prints it)"))  # fmt: skip
    if trial.params:
        rows.append(("params:", ""))
        rows += [(f"  {name}", value_text(value)) for name, value in trial.params.items()]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}".rstrip() for key, value in rows)


# show ---------------------------------------------------------------------------


def format_trials(study: Study, fmt: str, trials: Sequence[Trial], trial_dirs: Path | None = None) -> str:
    """Trials in one of TRIAL_FORMATS, ending with a newline.

    With `trial_dirs` (the results file's directory) the table and CSV end with
    each trial's directory as a path from here, when any trial has one kept.
    """
    if fmt == "json":
        return json.dumps([t.to_dict() for t in trials], indent=2, ensure_ascii=False) + "\n"
    dirs = None if trial_dirs is None or not any(t.log_dir for t in trials) else trial_dirs
    if fmt == "csv":
        return _trials_csv(study, trials, dirs)
    if fmt == "table":
        return _trials_table(study, trials, dirs)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(TRIAL_FORMATS)}")


def param_names(study: Study, trials: Iterable[Trial]) -> list[str]:
    """Declared dimensions first, then any other names the trials carry (constants, old runs)."""
    names = dict.fromkeys(study.space.names)
    for trial in trials:
        names.update(dict.fromkeys(trial.params))
    return list(names)


def _metric_columns(study: Study) -> list[str]:
    """The objectives' metrics, then the `metrics:` entries (recorded, not optimised)."""
    return [*(o.metric for o in study.objectives), *(m for m in study.metrics)]


def _judged(trials: Sequence[Trial]) -> bool:
    """Whether any trial carries feasibility (a study with constraints on metrics): then `feasible` is a column."""
    return any(t.feasible is not None for t in trials)


def _feasible_text(trial: Trial, yes: str = "yes", no: str = "no") -> str:
    return "" if trial.feasible is None else yes if trial.feasible else no


def _columns(study: Study, trials: Sequence[Trial]) -> tuple[list[str], list[str]]:
    """Header and the param names; a param that shares a column's name gets a `param.` prefix."""
    metrics = _metric_columns(study)
    feasible = ["feasible"] if _judged(trials) else []
    fixed = ["id", "number", "state", *feasible, *metrics, "duration_ms", "reason"]
    params = param_names(study, trials)
    param_headers = [f"param.{p}" if p in fixed else p for p in params]
    return fixed[:-1] + param_headers + fixed[-1:], params


def _csv_number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(value)


def _log_dir(trial: Trial, base: Path) -> str:
    return "" if trial.log_dir is None else str(base / trial.log_dir)


def _trials_csv(study: Study, trials: Sequence[Trial], dirs: Path | None = None) -> str:
    header, params = _columns(study, trials)
    if dirs is not None:
        header.append("log_dir")
    import csv

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    judged = _judged(trials)
    for trial in trials:
        writer.writerow(csv_row(study, trial, params, judged, dirs))
    return out.getvalue()


def csv_row(study: Study, trial: Trial, params: Sequence[str], judged: bool = False,
            dirs: Path | None = None) -> list[Any]:
    """One trial's CSV fields, under the header _columns gives (ui/rows.py writes them as they are read);
    `judged`: with the feasible column; `dirs`: with the log_dir column."""
    row: list[Any] = [trial.id, trial.number, trial.state.value]
    row += [_feasible_text(trial, "true", "false")] if judged else []
    row += [_csv_number(trial.values.get(m)) for m in _metric_columns(study)]
    row.append("" if trial.duration_ms is None else trial.duration_ms)
    row += ["" if p not in trial.params else value_text(trial.params[p]) for p in params]
    row.append(trial_reason(trial, width=200))
    if dirs is not None:
        row.append(_log_dir(trial, dirs))
    return row


def table_row(study: Study, trial: Trial, params: Sequence[str], judged: bool = False,
              dirs: Path | None = None) -> list[str]:
    """One trial's table cells, under the header _columns gives."""
    row = [trial.id, str(trial.number), trial.state.value]
    row += [_feasible_text(trial)] if judged else []
    row += [short_number(trial.values.get(m)) for m in _metric_columns(study)]
    row.append("" if trial.duration_ms is None else str(trial.duration_ms))
    row += ["" if p not in trial.params else short_value(trial.params[p]) for p in params]
    row.append(trial_reason(trial))
    if dirs is not None:
        row.append(_log_dir(trial, dirs))
    return row


def numeric_columns(study: Study) -> set[str]:
    """The table's right-aligned columns."""
    return {"number", "duration_ms", *_metric_columns(study)}


def _trials_table(study: Study, trials: Sequence[Trial], dirs: Path | None = None) -> str:
    header, params = _columns(study, trials)
    if dirs is not None:
        header.append("log_dir")
    judged = _judged(trials)
    rows = [table_row(study, trial, params, judged, dirs) for trial in trials]
    return _rich_table_text(header, rows, numeric_columns(study))


def _rich_table_text(header: list[str], rows: list[list[str]], right: set[str]) -> str:
    """A rich Table as plain text, at its natural width (never squeezed) so nothing is cut when piped."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="", pad_edge=False)
    for name in header:
        table.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    out = io.StringIO()
    console = Console(file=out, width=10_000, color_system=None, force_terminal=False, highlight=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


# the best-so-far sparkline ---------------------------------------------------------

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60


def best_so_far(study: Study, metric: str | None = None) -> list[float]:
    """After each completed feasible trial (in trial order), the best value of the objective so far."""
    objective = study.objective(metric)
    name = objective.metric
    trials = sorted(study.feasible(), key=operator.attrgetter("number"))
    # By C-level passes: a loop of comparisons took 0.28 s (under cProfile) of the summary at the end of a
    # 100,000-trial resume (issue 18).
    isnan = math.isnan
    values = [value for trial in trials if (value := trial.values.get(name)) is not None and not isnan(value)]
    return list(itertools.accumulate(values, min if objective.direction is Direction.MINIMIZE else max))


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """Values as block characters by rank, lowest ▁ to highest █; long series sampled down to `width`.

    By rank, not by magnitude: a best-so-far curve often falls by orders of
    magnitude once and then by little, and a linear scale would flatten every
    later improvement into the same bar.
    """
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    distinct = sorted(set(values))
    top = max(len(distinct) - 1, 1)
    rank = {value: i for i, value in enumerate(distinct)}
    return "".join(SPARKS[round(rank[v] * (len(SPARKS) - 1) / top)] for v in values)


def best_so_far_line(study: Study) -> str:
    """`best so far: ▇▅▃▂▁▁ 0.398 after 60 trials` for people, or "" when nothing completed."""
    return best_so_far_text(study.primary.metric, best_so_far(study), len(study.trials))


def best_so_far_text(metric: str, curve: Sequence[float], trials: int) -> str:
    """best_so_far_line from the curve and the number of trials (ui/rows.py has no Study of them all)."""
    if not curve:
        return ""
    return f"best {metric} so far: {sparkline(curve)} {short_number(curve[-1])} after {trials} trials\n"


# sort and filter -------------------------------------------------------------------


def sort_trials(study: Study, trials: Iterable[Trial], metric: str | None = None, limit: int | None = None
                ) -> list[Trial]:
    """Best first by metric (the primary objective by default); trials without a value last; the first `limit`."""
    objective = study.objective(metric)
    sign = -1.0 if objective.direction.value == "maximize" else 1.0

    def key(trial: Trial) -> tuple[int, float, int]:
        value = trial.values.get(objective.metric)
        if value is None or math.isnan(value):
            return (1, 0.0, trial.number)
        return (0, sign * value, trial.number)

    if limit is not None:  # the top few of a 100,000-trial study (the end of a resumed run): no sort of them all
        import heapq

        return heapq.nsmallest(limit, trials, key=key)
    return sorted(trials, key=key)


def sort_trials_by(study: Study, trials: Iterable[Trial], key: str) -> list[Trial]:
    """`show --sort KEY`: by an objective, a parameter or duration_ms; `-KEY` descending, `+KEY` ascending.

    Without a sign an objective sorts best first (by its direction) and anything
    else ascending. A parameter that shares an objective's name is `param.NAME`.
    Trials without a value (not completed, an inactive parameter, NaN) come
    last either way; ties keep trial order. ValueError names what can be sorted by.
    """
    trials = sorted(trials, key=lambda t: t.number)
    sign, name = (key[0], key[1:]) if key[:1] in ("-", "+") else ("", key)
    metrics = [o.metric for o in study.objectives]
    params = param_names(study, trials)
    if name in metrics:
        if not sign:
            return sort_trials(study, trials, name)

        def value(trial: Trial) -> Any:
            return trial.values.get(name)

    elif name in study.metrics:  # recorded, not optimised: no better way, so ascending unless signed

        def value(trial: Trial) -> Any:
            return trial.values.get(name)

    elif name == "duration_ms":

        def value(trial: Trial) -> Any:
            return trial.duration_ms

    elif name in params or (name.startswith("param.") and name[len("param.") :] in params):
        param = name if name in params else name[len("param.") :]

        def value(trial: Trial) -> Any:
            return trial.params.get(param)

    else:
        known = f"objectives: {', '.join(metrics)}; parameters: {', '.join(params) or 'none'}; duration_ms"
        raise ValueError(f"no objective or parameter named {name!r} ({known})")
    present = [t for t in trials if _sortable(value(t))]
    absent = [t for t in trials if not _sortable(value(t))]
    # Numbers before text, so a categorical of mixed choices still sorts; stable, so ties keep trial order.
    present.sort(key=lambda t: _order(value(t)), reverse=sign == "-")
    return present + absent


def _sortable(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, value_text(value))


def filter_state(trials: Iterable[Trial], state: TrialState | str) -> list[Trial]:
    wanted = TrialState(state)
    return [t for t in trials if t.state is wanted]
