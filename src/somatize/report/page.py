"""The report page: sections of figures and notes, the trial table, plotly.js inlined once.

Everything the page needs is inside it (script, style, data), so it opens
offline, from an e-mail attachment or an archive, years later.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from .. import __version__
from ..executors.command import value_text
from ..study import Study, Trial, TrialState
from ..ui.formats import duration_text, param_names, short_number, short_value, trial_reason
from .data import Curves, History, ParamAxis, Sample, curves, history, param_axes, samples
from .figures import (
    ABSENT,
    curves_figure,
    history_figure,
    hypervolume_figure,
    importance_figure,
    objective_title,
    parallel_figure,
    pareto_figure,
    slice_figure,
)
from .importance import parameter_importance
from .sampling import (
    BEST_SHARE,
    MAX_FIT,
    MAX_LINES,
    MAX_POINTS,
    MAX_ROWS,
    sampled_note,
    thin,
    thin_curves,
    thin_history,
    thin_samples,
)

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
REASON_WIDTH = 200

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430;
       margin: 0 auto; padding: 1.5em 2em 4em; max-width: 1400px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #dde3ea; }
nav a { margin-right: 1em; } .note { color: #4a5565; max-width: 75em; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1.2em; }
dl.summary dt { font-weight: 600; } dl.summary dd { margin: 0; }
.slices { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }
.slices h3 { margin: 0.5em 0 0; font-size: 1em; }
.table-wrap { overflow-x: auto; }
table.trials { border-collapse: collapse; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.trials th, table.trials td { padding: 0.25em 0.7em; border-bottom: 1px solid #e6eaef; text-align: left; }
table.trials td.num { text-align: right; }
table.trials th { position: sticky; top: 0; background: #f3f5f8; cursor: pointer; user-select: none; }
table.trials th[aria-sort=ascending]::after { content: " \\25B2"; }
table.trials th[aria-sort=descending]::after { content: " \\25BC"; }
tr.pruned td { color: #9a5a00; } tr.failed td { color: #b42318; } tr.best td { background: #eef8ee; }
td.reason { white-space: normal; min-width: 20em; }
"""

# Click a header to sort by it, again to reverse; empty cells stay last. Numbers
# sort by the number in data-key. Opening the page as report.html#sort=COLUMN
# (or #sort=-COLUMN, descending) sorts on load, so a sorted view can be linked.
# COLUMN is what a user knows: a metric or parameter name (`#sort=-val_loss`,
# `#sort=lr`), a header as the page shows it (`#sort=trial`), or the column's key
# (`value.val_loss`, `param.lr`); a metric wins over a parameter of the same name.
SORT_SCRIPT = """
(function () {
  function compare(a, b) {
    if (a === "" || b === "") return (a === "") - (b === "");
    var x = Number(a), y = Number(b);
    return (isNaN(x) || isNaN(y)) ? a.localeCompare(b, undefined, {numeric: true}) : x - y;
  }
  function sortBy(th, descending) {
    var body = th.closest("table").tBodies[0], col = th.cellIndex, sign = descending ? -1 : 1;
    var key = function (row) { var c = row.cells[col]; return c.hasAttribute("data-key") ? c.dataset.key : c.textContent; };
    var rows = Array.prototype.slice.call(body.rows).map(function (r) { return [key(r), r]; });
    rows.sort(function (p, q) { var c = compare(p[0], q[0]); return (p[0] === "" || q[0] === "") ? c : sign * c; });
    rows.forEach(function (p) { body.appendChild(p[1]); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  document.querySelectorAll("table.trials th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th, th.getAttribute("aria-sort") === "ascending"); });
  });
  var wanted = /^#sort=(-?)(.+)$/.exec(decodeURIComponent(location.hash));
  if (wanted) {
    var headers = Array.prototype.slice.call(document.querySelectorAll("table.trials th"));
    var name = wanted[2], th = null;
    var tests = [
      function (h) { return h.dataset.column === name; },
      function (h) { return h.dataset.column === "value." + name; },
      function (h) { return h.dataset.column === "param." + name; },
      function (h) { return h.textContent.trim() === name.trim(); }
    ];
    for (var i = 0; i < tests.length && !th; i++) th = headers.find(tests[i]) || null;
    if (th) sortBy(th, wanted[1] === "-");
  }
})();
"""


def render_page(study: Study, source: str, trial_links: str | None = None) -> str:
    """The whole report as one HTML document."""
    trial_history = history(study)
    axes = param_axes(study)
    sign = _sign(study)  # a study too large to draw whole is sampled (sampling.py): each plot says so
    total = len(trial_history.completed)  # the completed trials with a finite value: what samples() keeps
    fitted = thin(trial_history.completed, MAX_FIT, lambda p: sign * p.value)
    drawable = samples(_with_trials(study, [p.trial for p in fitted]) if len(fitted) < total else study, axes)
    sections = [_section("history", "Optimization history", _history_body(study, trial_history))]
    learning = curves(study)
    if learning is not None:  # only studies whose trials report steps have curves
        sections.append(_section("curves", "Learning curves", _curves_body(study, learning)))
    sections += [
        _section("parallel", "Parallel coordinates",
                 _parallel_body(study, axes, thin_samples(drawable, MAX_LINES, sign), trial_history, total)),
        _section("slices", "Slice plots", _slices_body(study, axes, thin_samples(drawable, MAX_POINTS, sign), total)),
        _section("importance", "Parameter importance", _importance_body(axes, drawable, total)),
    ]
    if len(study.objectives) >= 2:
        sections.append(_section("pareto", "Pareto front", _pareto_body(study)))
    sections.append(_section("trials", "Trials", _trial_table(study, trial_links)))
    nav = " ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(html for _, _, html in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="somatize {escape(__version__)}">
<title>{escape(study.name)}: somatize report</title>
<style>{STYLE}</style>
<script data-library="plotly.js">{get_plotlyjs()}</script>
</head>
<body>
<h1>Study {escape(study.name)}</h1>
{_summary(study, source, trial_history)}
<noscript><p class="note">The plots and the sortable table need JavaScript.</p></noscript>
<nav>{nav}</nav>
{body}
<script>{SORT_SCRIPT}</script>
</body>
</html>
"""


def _sign(study: Study) -> float:
    """1 when the primary objective is minimised, -1 when maximised: sampling.thin keeps the lowest scores."""
    return 1.0 if study.primary.direction.value == "minimize" else -1.0


def _sampled(shown: int, total: int, what: str = "trials") -> str:
    note = sampled_note(shown, total, what)
    return _note(note) if note else ""


def _section(key: str, title: str, body: str) -> tuple[str, str, str]:
    return key, title, f'<section id="{key}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _figure(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def _time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _counts(history: History) -> str:
    total = sum(history.states.values())
    parts = [f"{history.states[state]} {state.value}" for state in TrialState if history.states[state]]
    if history.infeasible:
        parts.append(f"{len(history.infeasible)} of them infeasible")
    return f"{total} trials" + (f": {', '.join(parts)}" if parts else "")


def _summary(study: Study, source: str, history: History) -> str:
    best = study.best_trial()
    if best is None:
        best_text = "no feasible trial" if study.completed() else "no completed trial"
    else:
        params = ", ".join(f"{name}={short_value(value)}" for name, value in best.params.items())
        best_text = f"{best.id}: {study.primary.metric} = {short_number(best.values[study.primary.metric])} ({params})"
    status = study.status + (f" ({study.stop_reason})" if study.stop_reason else "")
    rows = [
        ("results", source),
        ("study id", study.id),
        ("status", status),
        ("strategy", str(study.strategy.get("type", ""))),
        ("objectives", ", ".join(objective_title(o) for o in study.objectives)),
        ("trials", _counts(history)),
        ("best trial", best_text),
        ("started", _time(study.started_at)),
        ("finished", _time(study.finished_at)),
    ]
    items = "\n".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows if v)
    return f'<dl class="summary">\n{items}\n</dl>'


def _history_body(study: Study, history: History) -> str:
    objective = study.primary
    notes = [
        (f"{objective.metric} of each trial by trial number; the line is the best value so far "
         f"({objective.direction.value}). Pruned trials are crosses at the last value they reported.")
    ]
    failed = history.states[TrialState.FAILED]
    if failed:
        notes.append(f"{failed} failed trial{'s' if failed != 1 else ''} (no value) not plotted.")
    if history.completed_without_value:
        notes.append(f"{history.completed_without_value} completed trial(s) without a finite value not plotted.")
    if history.pruned_without_value:
        notes.append(f"{history.pruned_without_value} pruned trial(s) that reported no value not plotted.")
    note = _note(" ".join(notes))
    if not history.completed and not history.pruned:
        return note + _note("No trial has a value to plot yet.")
    drawn = thin_history(history, _sign(study))
    sample = _sampled(len(drawn.completed) + len(drawn.pruned), len(history.completed) + len(history.pruned),
                      "trials with a value")
    return note + sample + _figure(history_figure(study, drawn), "history-plot")


def _curves_body(study: Study, learning: Curves) -> str:
    shown = sum(len(group) for group in learning.by_state.values())
    text = (f"{learning.metric} of each trial at each step it reported, one thin line per trial, coloured by how the "
            "trial ended; pruned trials end in a cross where they were stopped")
    text += f", and the best trial, {learning.best.trial.id}, is drawn bold." if learning.best is not None else "."
    text += f" Hover over a line for its trial. {shown} of {len(study.trials)} trials reported steps."
    drawn = thin_curves(learning, _sign(study))
    sample = _sampled(sum(len(group) for group in drawn.by_state.values()), shown, "learning curves")
    return _note(text) + sample + _figure(curves_figure(study, drawn), "curves-plot")


def _parallel_body(study: Study, axes: list[ParamAxis], drawable: list[Sample], history: History,
                   total: int = 0) -> str:
    notes = [(f"One line per completed trial through its parameters and its {study.primary.metric}; "
              "brighter is better. Drag along an axis to filter.")]
    if any(axis.categorical for axis in axes):
        notes.append("Categorical parameters are drawn as evenly spaced categories.")
    if any(axis.log for axis in axes):
        notes.append("Log-scale parameters are drawn on a log10-transformed axis, labelled with their values.")
    if any(None in s.params for s in drawable):
        notes.append(f"Trials without a parameter (a condition switched it off) meet at its {ABSENT!r} tick.")
    if history.completed_without_value:
        notes.append(f"{history.completed_without_value} completed trial(s) without a finite value left out.")
    if not drawable:
        return _note(" ".join(notes[:1])) + _note("No completed trial to draw yet.")
    return (_note(" ".join(notes)) + _sampled(len(drawable), total)
            + _figure(parallel_figure(study, axes, drawable), "parallel-plot"))


def _slices_body(study: Study, axes: list[ParamAxis], drawable: list[Sample], total: int = 0) -> str:
    if not drawable:
        return _note("No completed trial to draw yet.")
    note = _note(f"{study.primary.metric} against each parameter on its own, completed trials only; "
                 "colour is the trial number (dark: early, bright: late).") + _sampled(len(drawable), total)
    cells = []
    for index, axis in enumerate(axes):
        having = sum(s.params[index] is not None for s in drawable)
        title = axis.name if having == len(drawable) else f"{axis.name} (in {having} of {len(drawable)} trials)"
        plot = _figure(slice_figure(study, axis, index, drawable), f"slice-plot-{index}") if having else ""
        cells.append(f'<div class="slice"><h3>{escape(title)}</h3>{plot}</div>')
    return note + '<div class="slices">\n' + "\n".join(cells) + "\n</div>"


def _importance_body(axes: list[ParamAxis], drawable: list[Sample], total: int = 0) -> str:
    importance = parameter_importance(axes, drawable)
    fitted = "" if len(drawable) >= total else (
        f" Fitted to {len(drawable):,} of the {total:,} completed trials (sampled as the plots are).")
    if not importance.scores:
        return _note(importance.note)
    return _note(importance.note + fitted) + _figure(importance_figure(importance), "importance-plot")


def _pareto_body(study: Study) -> str:
    front = study.pareto_front()
    first, second = study.objectives[:2]
    text = (f"Completed trials by {first.metric} and {second.metric}; the {len(front)} trial(s) on the Pareto front "
            "(not dominated by any other trial) are highlighted.")
    if len(study.objectives) > 2:
        text += f" The front is taken over all {len(study.objectives)} objectives, so here it is a projection."
    if not front:
        return _note(text) + _note("No completed trial has a value for every objective yet.")
    completed = study.completed()
    on_front = {t.number for t in front}
    others = [t for t in completed if t.number not in on_front]
    first = study.primary
    sign = _sign(study)
    shown = thin(others, MAX_POINTS, lambda t: sign * t.values.get(first.metric, float("inf")))
    drawn = study if len(shown) == len(others) else _with_trials(study, sorted([*front, *shown], key=_number))
    sample = _sampled(len(shown), len(others), "dominated trials")
    return _note(text) + sample + _figure(pareto_figure(drawn, front), "pareto-plot") + _hypervolume_body(study)


def _number(trial: Trial) -> int:
    return trial.number


def _with_trials(study: Study, trials: list[Trial]) -> Study:
    """A copy of the study holding only `trials`: what a figure that reads study.trials draws."""
    import copy

    drawn = copy.copy(study)
    drawn.trials = trials
    return drawn
def _hypervolume_body(study: Study) -> str:
    """The front's progress: its hypervolume after each trial, in the box of the study's own best and worst values."""
    try:
        from ..hypervolume import progress

        numbers, volumes = progress(study.trials, study.objectives)
    except ImportError:  # moocore comes with the `report` extra
        return _note("The front's progress (hypervolume against trials) needs moocore: pip install 'somatize[report]'.")
    text = ("The front's progress: the hypervolume it dominates after each trial, over all objectives, with every "
            "objective scaled so that the best value any trial reached is 0 and the worst is 1 (so 1 would be one "
            "trial best at everything). A flat line is a front that stopped growing.")
    return _note(text) + _figure(hypervolume_figure(numbers, volumes), "hypervolume-plot")


# the trial table -----------------------------------------------------------------


def _number_key(value: Any) -> str:
    """A data-key the page's script sorts as a number; empty (sorted last) when there is none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    return repr(value)


def _cell(text: str, key: str | None = None, title: str | None = None, css: str = "") -> str:
    attrs = ""
    if key is not None:
        attrs += f' data-key="{escape(key)}"'
    if title:
        attrs += f' title="{escape(title)}"'
    if css:
        attrs += f' class="{css}"'
    return f"<td{attrs}>{escape(text)}</td>"


def _output_links(trial: Trial, base: str) -> str:
    """Links to a trial's kept directory and its two output files, relative to the report."""
    from urllib.parse import quote

    if trial.log_dir is None:
        return "<td></td>"
    folder = f"{base}/{quote(trial.log_dir)}"
    links = [f'<a href="{escape(folder)}/">directory</a>']
    links += [f'<a href="{escape(folder)}/{name}.txt">{name}</a>' for name in ("stdout", "stderr")]
    return f'<td class="output">{" ".join(links)}</td>'


def _trial_table(study: Study, trial_links: str | None = None) -> str:
    trials = sorted(study.trials, key=lambda t: t.number)
    links = trial_links if trial_links is not None and any(t.log_dir for t in trials) else None
    params = param_names(study, trials)
    best = study.best_trial()
    headers = [("number", "#"), ("id", "trial"), ("state", "state")]
    headers += [(f"value.{o.metric}", objective_title(o)) for o in study.objectives]
    headers += [(f"param.{name}", name) for name in params]
    headers += [("duration", "duration"), ("reason", "reason / error")]
    if links is not None:
        headers.append(("output", "output"))
    head = "".join(f'<th data-column="{escape(key)}" scope="col">{escape(text)}</th>' for key, text in headers)
    total = len(trials)
    metric, sign = study.primary.metric, _sign(study)
    trials = thin(trials, MAX_ROWS, lambda t: sign * t.values.get(metric, sign * float("inf"))
                  if t.state is TrialState.COMPLETED and t.is_feasible else float("inf"))
    rows = [_trial_row(study, trial, params, trial is best, links) for trial in trials]
    shown = (f"{total} trials" if len(trials) == total else
             f"{len(trials):,} of {total:,} trials (the best {int(MAX_ROWS * BEST_SHARE):,} and the rest evenly "
             "spaced by trial number; `somatize show` lists them all)")
    note = _note(f"{shown}. Click a column header to sort by it; click again to reverse.")
    return (f'{note}<div class="table-wrap"><table class="trials">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table></div>")


def _trial_row(study: Study, trial: Trial, params: list[str], is_best: bool, links: str | None = None) -> str:
    cells = [
        _cell(str(trial.number), _number_key(trial.number), css="num"),
        _cell(trial.id),
        _cell(trial.state.value),
    ]
    for objective in study.objectives:
        value = trial.values.get(objective.metric)
        cells.append(_cell(short_number(value), _number_key(value), repr(value) if value is not None else None, "num"))
    for name in params:
        if name not in trial.params:
            cells.append(_cell("", ""))
            continue
        value = trial.params[name]
        numeric = not isinstance(value, bool) and isinstance(value, (int, float))
        cells.append(_cell(short_value(value), _number_key(value) if numeric else value_text(value),
                           value_text(value), "num" if numeric else ""))
    seconds = None if trial.duration_ms is None else trial.duration_ms / 1000
    cells.append(_cell(duration_text(seconds), _number_key(trial.duration_ms), css="num"))
    cells.append(_cell(trial_reason(trial, REASON_WIDTH), title=trial.error or trial.reason, css="reason"))
    if links is not None:
        cells.append(_output_links(trial, links))
    css = trial.state.value + (" best" if is_best else "")
    return f'<tr class="{css}">' + "".join(cells) + "</tr>"
