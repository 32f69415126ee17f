"""plotly figures of a study. The only module that imports plotly, which is an optional extra."""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go

from ..study import Direction, Objective, Study, Trial, TrialState
from ..ui.formats import short_value
from .data import Curve, Curves, History, ParamAxis, Sample, objective_value
from .importance import Importance

TEMPLATE = "plotly_white"
MARGIN = {"l": 60, "r": 20, "t": 30, "b": 50}
COMPLETED_COLOR = "#1f77b4"
PRUNED_COLOR = "#ff7f0e"
BEST_COLOR = "#d62728"
OTHER_COLOR = "#9aa5b1"
ABSENT = "absent"  # the tick of trials without a (conditional) parameter


def objective_title(objective: Objective) -> str:
    return f"{objective.metric} ({objective.direction.value})"


def hover_text(trial: Trial, value: float | None = None, metric: str = "") -> str:
    """A trial's id, value and parameters for a point's tooltip; escaped, since plotly reads it as HTML."""
    lines = [f"<b>{html.escape(trial.id)}</b>"]
    if value is not None:
        lines.append(f"{html.escape(metric)} = {value:.6g}")
    lines += [f"{html.escape(name)} = {html.escape(short_value(v))}" for name, v in trial.params.items()]
    return "<br>".join(lines)


def _layout(fig: go.Figure, height: int, **layout) -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height, margin=layout.pop("margin", MARGIN), **layout)
    return fig


def history_figure(study: Study, history: History) -> go.Figure:
    metric = study.primary.metric
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[p.trial.number for p in history.completed], y=[p.value for p in history.completed],
        mode="markers", name="completed", marker={"color": COMPLETED_COLOR, "size": 7},
        text=[hover_text(p.trial, p.value, metric) for p in history.completed], hoverinfo="text",
    ))
    if history.infeasible:
        fig.add_trace(_infeasible_trace(
            [p.trial.number for p in history.infeasible], [p.value for p in history.infeasible],
            [hover_text(p.trial, p.value, metric) for p in history.infeasible],
        ))
    if history.pruned:
        fig.add_trace(go.Scatter(
            x=[p.trial.number for p in history.pruned], y=[p.value for p in history.pruned],
            mode="markers", name="pruned (last reported value)",
            marker={"color": PRUNED_COLOR, "symbol": "x", "size": 8},
            text=[hover_text(p.trial, p.value, metric) for p in history.pruned], hoverinfo="text",
        ))
    fig.add_trace(go.Scatter(
        x=[p.trial.number for p in history.best_so_far], y=[p.value for p in history.best_so_far],
        mode="lines", name="best so far", line={"color": BEST_COLOR, "shape": "hv", "width": 2}, hoverinfo="skip",
    ))
    return _layout(
        fig, 420,
        xaxis_title="trial number", yaxis_title=objective_title(study.primary),
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )


def _infeasible_trace(x: list, y: list, text: list[str]) -> go.Scatter:
    """Completed trials that broke a constraint on metrics: hollow grey, apart from the feasible ones."""
    return go.Scatter(
        x=x, y=y, mode="markers", name="infeasible (broke a constraint on metrics)",
        marker={"color": OTHER_COLOR, "symbol": "circle-open", "size": 8}, text=text, hoverinfo="text",
    )


CURVE_COLORS = {
    TrialState.RUNNING: OTHER_COLOR,
    TrialState.COMPLETED: COMPLETED_COLOR,
    TrialState.PRUNED: PRUNED_COLOR,
    TrialState.FAILED: OTHER_COLOR,
    TrialState.STALE: OTHER_COLOR,
}


def _joined(curves: list[Curve]) -> tuple[list[int | None], list[float | None], list[str | None]]:
    """Many curves as one trace: None between trials breaks the line, so a state is one legend entry."""
    xs: list[int | None] = []
    ys: list[float | None] = []
    texts: list[str | None] = []
    for curve in curves:
        xs += [*curve.steps, None]
        ys += [*curve.values, None]
        texts += [html.escape(curve.trial.id)] * len(curve.steps) + [None]
    return xs[:-1], ys[:-1], texts[:-1]


def curves_figure(study: Study, curves: Curves) -> go.Figure:
    """Every trial's intermediate values against step: thin lines per state, pruned stops, the best trial bold."""
    scatter = go.Scatter
    hover = "%{text}<br>step %{x}<br>" + html.escape(curves.metric) + " = %{y:.6g}<extra></extra>"
    fig = go.Figure()
    for state, group in curves.by_state.items():
        x, y, text = _joined(group)
        fig.add_trace(scatter(
            x=x, y=y, text=text, mode="lines", name=f"{state.value} ({len(group)})", legendgroup=state.value,
            line={"color": CURVE_COLORS[state], "width": 1}, opacity=0.45, hovertemplate=hover,
        ))
    pruned = curves.by_state.get(TrialState.PRUNED, [])
    if pruned:
        fig.add_trace(scatter(
            x=[c.steps[-1] for c in pruned], y=[c.values[-1] for c in pruned],
            text=[html.escape(c.trial.id) for c in pruned], mode="markers", name="pruned: stopped here",
            legendgroup=TrialState.PRUNED.value, marker={"color": PRUNED_COLOR, "symbol": "x", "size": 6},
            hovertemplate="%{text} pruned<br>step %{x}<br>" + html.escape(curves.metric) + " = %{y:.6g}<extra></extra>",
        ))
    if curves.best is not None:
        best = curves.best
        fig.add_trace(scatter(
            x=best.steps, y=best.values, text=[html.escape(best.trial.id)] * len(best.steps), mode="lines+markers",
            name=f"best: {best.trial.id}", line={"color": BEST_COLOR, "width": 3}, marker={"size": 5},
            hovertemplate=hover,
        ))
    return _layout(
        fig, 460,
        xaxis_title="step", yaxis_title=objective_title(study.primary), hovermode="closest",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )


def log_ticks(low: float, high: float) -> list[float]:
    """Round values (1, 2, 5 times a power of ten) between low and high, for a log10-transformed axis."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    candidates = [(m, m * 10.0**e) for e in decades for m in (1, 2, 5)]
    ticks = [t for _, t in candidates if low <= t <= high]
    if len(ticks) > 7:  # many decades: powers of ten alone
        ticks = [t for m, t in candidates if m == 1 and low <= t <= high]
    return ticks if len(ticks) >= 2 else [low, high]


def linear_ticks(low: float, high: float) -> list[float]:
    """At most about six round values from low to high (a step of 1, 2 or 5 times a power of ten)."""
    rough = (high - low) / 5
    power = 10.0 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    first = math.ceil(low / step - 1e-9)
    return [float(f"{k * step:.12g}") for k in range(first, math.floor(high / step + 1e-9) + 1)]


def _parallel_dimension(axis: ParamAxis, column: list[float | None]) -> dict:
    """One axis of the parallel coordinates; trials without the parameter meet at an "absent" tick of their own."""
    present = [v for v in column if v is not None]
    absent = len(present) < len(column)
    if axis.categorical:
        labels = list(axis.categories) + ([ABSENT] if absent else [])
        values = [len(axis.categories) if v is None else v for v in column]
        return {"label": axis.name, "values": values, "range": [0, max(len(labels) - 1, 1)],
                "tickvals": list(range(len(labels))), "ticktext": labels}
    low = min([v for v in (axis.low, *present) if v is not None])
    high = max([v for v in (axis.high, *present) if v is not None])
    if axis.log:
        # Parallel coordinates have no log axes: draw log10(value), labelled with the values themselves.
        ticks = log_ticks(low, high)
        label, scale = f"{axis.name} (log)", math.log10
        tickvals, ticktext = [scale(t) for t in ticks], [f"{t:g}" for t in ticks]
    else:
        if low == high:
            low, high = low - 0.5, high + 0.5
        label, scale = axis.name, float
        ticks = linear_ticks(low, high)
        tickvals, ticktext = ticks, [f"{t:g}" for t in ticks]
    bottom, top = scale(low), scale(high)
    if absent:
        bottom = scale(low) - 0.15 * (scale(high) - scale(low))
        tickvals, ticktext = [bottom, *tickvals], [ABSENT, *ticktext]
    values = [bottom if v is None else scale(v) for v in column]
    return {"label": label, "values": values, "range": [bottom, top], "tickvals": tickvals, "ticktext": ticktext}


def parallel_figure(study: Study, axes: list[ParamAxis], samples: list[Sample]) -> go.Figure:
    objective = study.primary
    values = [s.value for s in samples]
    dimensions = [_parallel_dimension(axis, [s.params[i] for s in samples]) for i, axis in enumerate(axes)]
    dimensions.append({"label": objective_title(objective), "values": values})
    line = {
        "color": values, "colorscale": "Viridis", "showscale": True,
        # Bright is better whichever the direction.
        "reversescale": objective.direction is Direction.MINIMIZE,
    }
    fig = go.Figure(go.Parcoords(line=line, dimensions=dimensions))
    return _layout(fig, 460, margin={"l": 80, "r": 40, "t": 60, "b": 30})


def slice_figure(study: Study, axis: ParamAxis, index: int, samples: list[Sample]) -> go.Figure:
    """The primary objective against one parameter, for the trials that have it."""
    metric = study.primary.metric
    having = [s for s in samples if s.params[index] is not None]
    if axis.categorical:
        x = [axis.categories[int(s.params[index])] for s in having]  # type: ignore[arg-type]
        xaxis = {"type": "category", "categoryorder": "array", "categoryarray": list(axis.categories)}
    else:
        x = [s.params[index] for s in having]
        xaxis = {"type": "log" if axis.log else "linear"}
    fig = go.Figure(go.Scatter(
        x=x, y=[s.value for s in having], mode="markers",
        marker={"color": [s.trial.number for s in having], "colorscale": "Viridis", "size": 7, "opacity": 0.85,
                # Hollow: infeasible (a constraint on metrics broken).
                "symbol": ["circle" if s.trial.is_feasible else "circle-open" for s in having]},
        text=[hover_text(s.trial, s.value, metric) for s in having], hoverinfo="text",
    ))
    xaxis["title"] = {"text": axis.name + (" (log scale)" if axis.log else "")}
    return _layout(fig, 320, xaxis=xaxis, yaxis_title=metric, showlegend=False)


def importance_figure(importance: Importance) -> go.Figure:
    names, scores = list(importance.scores), list(importance.scores.values())
    fig = go.Figure(go.Bar(
        x=scores, y=names, orientation="h", marker={"color": COMPLETED_COLOR},
        text=[f"{s:.2f}" for s in scores], textposition="auto", hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    ))
    return _layout(
        fig, 110 + 32 * len(names),
        xaxis={"title": {"text": "importance"}, "range": [0, max(1.0, *scores) if scores else 1.0]},
        yaxis={"autorange": "reversed"},
    )


def pareto_figure(study: Study, front: list[Trial]) -> go.Figure:
    """The first two objectives of the completed trials; the front (over all objectives) highlighted."""
    first, second = study.objectives[:2]
    front_ids = {t.id for t in front}
    points = []
    for trial in sorted(study.completed(), key=lambda t: t.number):
        x, y = objective_value(trial, first), objective_value(trial, second)
        if x is not None and y is not None:
            points.append((trial, x, y))
    infeasible = [p for p in points if not p[0].is_feasible]
    others = [p for p in points if p[0].id not in front_ids and p[0].is_feasible]
    on_front = sorted((p for p in points if p[0].id in front_ids), key=lambda p: (p[1], p[2]))
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[p[1] for p in others], y=[p[2] for p in others], mode="markers", name="dominated",
        marker={"color": OTHER_COLOR, "size": 7}, text=[hover_text(p[0]) for p in others], hoverinfo="text+x+y",
    ))
    if infeasible:
        fig.add_trace(_infeasible_trace(
            [p[1] for p in infeasible], [p[2] for p in infeasible], [hover_text(p[0]) for p in infeasible]
        ))
    # With two objectives the front is a curve worth joining in order; with more, its projection is just points.
    mode = "lines+markers" if len(study.objectives) == 2 else "markers"
    fig.add_trace(go.Scatter(
        x=[p[1] for p in on_front], y=[p[2] for p in on_front], mode=mode, name="Pareto front",
        marker={"color": BEST_COLOR, "size": 9}, line={"color": BEST_COLOR, "width": 1, "dash": "dot"},
        text=[hover_text(p[0]) for p in on_front], hoverinfo="text+x+y",
    ))
    return _layout(
        fig, 460, xaxis_title=objective_title(first), yaxis_title=objective_title(second),
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )


def hypervolume_figure(numbers: list[int], volumes: list[float]) -> go.Figure:
    """The hypervolume of the front after each trial (hypervolume.progress), as a step line."""
    fig = go.Figure(go.Scatter(
        x=numbers, y=volumes, mode="lines+markers", name="hypervolume",
        line={"color": BEST_COLOR, "shape": "hv", "width": 2}, marker={"color": BEST_COLOR, "size": 4},
        hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>",
    ))
    return _layout(
        fig, 320, xaxis_title="trial number", yaxis={"title": {"text": "hypervolume (normalised)"}, "rangemode": "tozero"},
        showlegend=False,
    )
