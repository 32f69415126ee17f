"""What a report draws of a study too large to draw whole (issue 18).

A browser draws a few thousand markers or lines per plot readably and
quickly; a 100,000-trial report drew every trial (181 MB of HTML, 1.56 GB to
build). Past these limits a plot shows a sample: the best trials by the
primary objective, then trials evenly spaced by trial number, so the spread
over the whole run is kept. The best-so-far line is drawn exactly (only its
steps: where it improves). Counts, the best trial and the summary always
cover every trial, and each plot says when it shows a sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from .data import Curves, History, Point, Sample

# Markers per scatter trace (history, slices, Pareto): plotly draws a few thousand at once without lag.
MAX_POINTS = 3_000
# Lines in parallel coordinates and learning curves: past a thousand they merge into one band.
MAX_LINES = 1_000
# Rows of the trial table: `somatize show` lists every trial; a page of 100,000 rows is 60 MB.
MAX_ROWS = 1_000
# Trials that parameter importance is fitted to (and the pool the plots' samples come from):
# a 100-tree forest on 5,000 rows takes a few seconds.
MAX_FIT = 5_000
# Of each sample, this share is the best trials, so the region that matters is always drawn.
BEST_SHARE = 0.2

T = TypeVar("T")


def thin(items: Sequence[T], limit: int, score: Callable[[T], float]) -> list[T]:
    """At most `limit` of `items` (in their order): the best BEST_SHARE by `score` (lower is better),
    then evenly spaced ones. All of them when there are few enough."""
    if len(items) <= limit:
        return list(items)
    ranked = sorted(range(len(items)), key=lambda i: score(items[i]))
    chosen = set(ranked[: int(limit * BEST_SHARE)])
    rest = [i for i in range(len(items)) if i not in chosen]
    want = limit - len(chosen)
    chosen.update(rest[round(k * (len(rest) - 1) / max(want - 1, 1))] for k in range(want))
    return [items[i] for i in sorted(chosen)]


def sampled_note(shown: int, total: int, what: str = "trials") -> str:
    """What a plot that shows a sample says about it; "" when it shows everything."""
    if shown >= total:
        return ""
    return (f"This plot shows {shown:,} of {total:,} {what}: the best {int(BEST_SHARE * 100)}% of the sample "
            "by the primary objective, the rest evenly spaced by trial number.")


def thin_history(history: History, sign: float) -> History:
    """The history with at most MAX_POINTS completed and pruned points each, and the best-so-far line
    reduced to where it changes (drawn as steps, so nothing of it is lost)."""
    steps: list[Point] = []
    for point in history.best_so_far:
        if not steps or point.value != steps[-1].value:
            steps.append(point)
    if history.best_so_far and steps[-1] is not history.best_so_far[-1]:
        steps.append(history.best_so_far[-1])  # the line runs on to the last completed trial
    return replace(
        history,
        completed=thin(history.completed, MAX_POINTS, lambda p: sign * p.value),
        pruned=thin(history.pruned, MAX_POINTS, lambda p: sign * p.value),
        best_so_far=steps,
    )


def thin_samples(samples: Sequence[Sample], limit: int, sign: float) -> list[Sample]:
    return thin(samples, limit, lambda s: sign * s.value)


def thin_curves(curves: Curves, sign: float) -> Curves:
    """At most MAX_LINES curves in all, shared among the states in proportion; the best trial's is kept."""
    total = sum(len(group) for group in curves.by_state.values())
    if total <= MAX_LINES:
        return curves
    by_state = {}
    for state, group in curves.by_state.items():
        share = max(1, MAX_LINES * len(group) // total)
        by_state[state] = thin(group, share, lambda c: sign * c.values[-1])
        if curves.best is not None and curves.best in group and curves.best not in by_state[state]:
            by_state[state].append(curves.best)
    return replace(curves, by_state=by_state)
