"""`somatize report`: real studies run through the CLI, the HTML checked as text and rendered in headless Chromium."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.cli import app
from somatize.report import default_report_path, render_report
from somatize.report.data import curves, history, param_axes, samples
from somatize.report.figures import curves_figure
from somatize.report.importance import parameter_importance
from somatize.space import CategoricalDimension, SearchSpace
from somatize.storage.results import read_results
from somatize.study import MetricRecord, Objective, Study, Trial, TrialState

cli = CliRunner()
CHROMIUM = "/usr/bin/chromium"
SECTIONS = ["Optimization history", "Parallel coordinates", "Slice plots", "Parameter importance", "Trials"]

# One module for every study below: the Python executor imports it by name, once per process.
OBJECTIVES = '''
import math
import somatize


def tune(params):
    penalty = {"relu": 0.0, "tanh": 0.3, "gelu": 0.1}[params["act"]]
    return (math.log10(params["lr"]) + 2.5) ** 2 + 0.1 * params["layers"] + penalty


def pareto(params):
    x = math.log10(params["x"]) + 0.3 * params["k"] + (0.5 if params["flag"] else 0.0)
    return {"a": x ** 2, "b": -((x - 2) ** 2)}


def unstable(params, trial):
    if params["act"] == "gelu":
        raise RuntimeError("diverged\\nsecond line of the error")
    value = tune(params)
    for step in range(4):
        trial.report(value + 1.0 / (step + 1), step=step)
        if trial.should_prune():
            raise somatize.TrialPruned()
    return value


def broken(params):
    raise ValueError("nothing works")


def curves(params, trial):
    """A learning curve per trial: loss falls with the steps, faster for a good lr; gelu diverges at step 3."""
    base = tune(params)
    for step in range(10):
        trial.report(base + 2.0 / (step + 1), step=step)
        if params["act"] == "gelu" and params["layers"] == 4 and step == 3:
            raise RuntimeError("diverged")
        if trial.should_prune():
            raise somatize.TrialPruned()
'''

SPACE = """\
search_space:
  lr: {type: float, low: 1.0e-4, high: 0.1, scale: log}
  layers: {type: int, low: 1, high: 4}
  act: [relu, tanh, gelu]
"""

STUDIES = {
    "tune": f"name: tune\nseed: 0\n{SPACE}strategy: {{type: random, n_trials: 15}}\n"
    "objective: {metric: loss, direction: minimize}\nexecutor: {function: 'report_objectives:tune'}\n",
    "pareto": """\
name: pareto
seed: 1
search_space:
  x: {type: float, low: 1.0, high: 1000.0, scale: log}
  k: {type: int, low: 0, high: 3}
  flag: [true, false]
strategy: {type: random, n_trials: 16}
objectives:
  - {metric: a, direction: minimize}
  - {metric: b, direction: maximize}
executor: {function: 'report_objectives:pareto'}
""",
    "unstable": f"name: unstable\nseed: 2\n{SPACE}strategy: {{type: random, n_trials: 12}}\n"
    "objective: {metric: loss, direction: minimize}\npruning: {type: median, warmup_steps: 1, min_trials: 2}\n"
    "executor: {function: 'report_objectives:unstable'}\n",
    "curves": f"name: curves\nseed: 4\n{SPACE}strategy: {{type: random, n_trials: 200}}\n"
    "objective: {metric: loss, direction: minimize}\npruning: {type: median, warmup_steps: 2, min_trials: 5}\n"
    "executor: {function: 'report_objectives:curves'}\n",
    "broken": f"name: broken\nseed: 3\n{SPACE}strategy: {{type: random, n_trials: 3}}\n"
    "objective: {metric: loss}\nexecutor: {function: 'report_objectives:broken'}\n",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """Results files of real runs of every study above, by name."""
    root = tmp_path_factory.mktemp("studies")
    (root / "report_objectives.py").write_text(OBJECTIVES)
    paths = {}
    for name, text in STUDIES.items():
        study = root / f"{name}.yaml"
        study.write_text(text)
        paths[name] = root / f"{name}.results.json"
        outcome = cli.invoke(app, ["run", str(study), "-o", str(paths[name]), "-q"])
        assert outcome.exit_code == (1 if name == "broken" else 0), outcome.output
    return paths


def report(*args: str, input: str | None = None):
    return cli.invoke(app, ["report", *map(str, args)], input=input)


def table_rows(page: str) -> list[str]:
    body = page[page.index("<tbody>"): page.index("</tbody>")]
    return re.findall(r"<tr class=\"[^\"]*\">.*?</tr>", body, flags=re.DOTALL)  # an error's title spans lines


def assert_self_contained(page: str) -> None:
    """No tag loads anything from elsewhere, and plotly.js is inlined exactly once."""
    tags = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", page, flags=re.DOTALL)
    assert 'src="http' not in page and '<link href="http' not in page
    assert not re.search(r"<(?!a\s)[^>]+\b(src|href)=\"(?!#)", tags)  # nothing loaded from a file
    # Links (which load nothing) go to in-page anchors, or to the trial directories beside the results.
    assert all(re.fullmatch(r"#.*|[^:]*\.trials/trial_\d{4}/(stdout\.txt|stderr\.txt)?", href)
               for href in re.findall(r"<a\s[^>]*\bhref=\"([^\"]*)\"", tags))
    plotly_js = re.findall(r'<script data-library="plotly.js">(.*?)</script>', page, flags=re.DOTALL)
    assert len(plotly_js) == 1 and len(plotly_js[0]) > 1_000_000 and "Plotly.newPlot(" in page


# the page as text ------------------------------------------------------------


def test_report_has_every_section_and_a_row_per_trial(results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = report(results["tune"])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stderr == "report: tune.report.html\n" and outcome.stdout == ""
    page = (tmp_path / "tune.report.html").read_text()
    assert_self_contained(page)
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert "Pareto front" not in page  # one objective
    for plot in ("history-plot", "parallel-plot", "slice-plot-0", "slice-plot-1", "slice-plot-2", "importance-plot"):
        assert f'id="{plot}"' in page
    assert "RandomForestRegressor" in page and "impurity" in page
    assert "lr (log)" in page  # the log-scale dimension on a log10 axis
    study = read_results(results["tune"])
    rows = table_rows(page)
    assert len(rows) == len(study.trials) == 15
    assert sum('class="completed best"' in row for row in rows) == 1
    assert (tmp_path / "tune.report.html").stat().st_mode & 0o044  # shareable, unlike a mkstemp file


def test_two_objectives_show_the_pareto_front(results, tmp_path):
    out = tmp_path / "pareto.html"
    assert report(results["pareto"], "-o", out).exit_code == 0
    page = out.read_text()
    front = json.loads(results["pareto"].read_text())["pareto_front"]
    assert "<h2>Pareto front</h2>" in page and 'id="pareto-plot"' in page
    assert f"the {len(front)} trial(s) on the Pareto front" in page
    assert "a (minimize)" in page and "b (maximize)" in page


def test_pruned_and_failed_trials_are_shown_and_counted(results, tmp_path):
    out = tmp_path / "unstable.html"
    assert report(results["unstable"], "-o", out).exit_code == 0
    page = out.read_text()
    study = read_results(results["unstable"])
    failed = [t for t in study.trials if t.state is TrialState.FAILED]
    pruned = [t for t in study.trials if t.state is TrialState.PRUNED]
    assert failed and pruned, "the study should fail and prune some trials"
    assert f"{len(failed)} failed trial" in page and "not plotted" in page
    assert "pruned (last reported value)" in page
    rows = table_rows(page)
    assert len(rows) == len(study.trials)
    assert sum(row.startswith('<tr class="failed') for row in rows) == len(failed)
    assert "RuntimeError: diverged" in page


def test_pruned_trials_are_plotted_at_their_last_reported_value(results):
    study = read_results(results["unstable"])
    points = history(study)
    assert [p.trial.number for p in points.pruned] == [t.number for t in study.trials if t.state is TrialState.PRUNED]
    for point in points.pruned:
        assert point.value == [r.value for r in point.trial.metrics if r.name == "loss"][-1]
    best = [p.value for p in points.best_so_far]
    assert best == sorted(best, reverse=True)  # minimize: never gets worse


def test_learning_curves_have_every_stepped_report_one_legend_entry_per_state_and_the_best_bold(results, tmp_path):
    study = read_results(results["curves"])
    stepped = {t.id: [(r.step, r.value) for r in t.metrics if r.step is not None] for t in study.trials}
    by_state = {state: [t for t in study.trials if t.state is state] for state in TrialState}
    assert len(study.trials) == 200 and all(by_state[s] for s in (TrialState.PRUNED, TrialState.FAILED))
    fig = curves_figure(study, curves(study))
    traces = {trace.name: trace for trace in fig.data}
    best = study.best_trial()
    assert list(traces) == [
        f"completed ({len(by_state[TrialState.COMPLETED])})", f"pruned ({len(by_state[TrialState.PRUNED])})",
        f"failed ({len(by_state[TrialState.FAILED])})", "pruned: stopped here", f"best: {best.id}",
    ]
    for state in (TrialState.COMPLETED, TrialState.PRUNED, TrialState.FAILED):
        trace = traces[f"{state.value} ({len(by_state[state])})"]
        assert trace.line.width == 1 and trace.mode == "lines"
        drawn = [(t, (x, y)) for t, x, y in zip(trace.text, trace.x, trace.y) if x is not None]
        assert drawn == [(t.id, point) for t in by_state[state] for point in stepped[t.id]]  # every report, by trial
        assert trace.x.count(None) == len(by_state[state]) - 1  # one break between trials: thin separate lines
        assert "%{text}" in trace.hovertemplate  # hover names the trial
    stops = traces["pruned: stopped here"]
    assert list(stops.text) == [t.id for t in by_state[TrialState.PRUNED]]
    assert list(zip(stops.x, stops.y)) == [stepped[t.id][-1] for t in by_state[TrialState.PRUNED]]
    assert all(x == t.pruned_step for x, t in zip(stops.x, by_state[TrialState.PRUNED]) if t.pruned_step is not None)
    bold = traces[f"best: {best.id}"]
    assert list(zip(bold.x, bold.y)) == stepped[best.id] and bold.line.width > 1
    out = tmp_path / "curves.html"
    assert report(results["curves"], "-o", out).exit_code == 0
    page = out.read_text()
    assert "<h2>Learning curves</h2>" in page and 'id="curves-plot"' in page and '<a href="#curves">' in page


def test_no_learning_curves_when_no_trial_reports_steps(results, tmp_path):
    assert curves(read_results(results["tune"])) is None
    out = tmp_path / "tune.html"
    assert report(results["tune"], "-o", out).exit_code == 0
    assert "Learning curves" not in out.read_text()


def test_a_study_with_no_completed_trial_still_renders(results, tmp_path):
    out = tmp_path / "broken.html"
    assert report(results["broken"], "-o", out).exit_code == 0
    page = out.read_text()
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert "No trial has a value to plot yet." in page and "No completed trial to draw yet." in page
    assert "Needs at least 5 completed trials" in page and "no completed trial" in page
    assert len(table_rows(page)) == 3 and "ValueError: nothing works" in page


def test_nan_values_one_bool_parameter_absent_values_and_markup_in_names():
    space = SearchSpace((CategoricalDimension("flag", (True, False)),))
    study = Study("edge </script>", space, [Objective("loss")])
    values = [0.5, math.nan, math.inf, 0.2, 0.4, 0.1, 0.3]
    study.trials = [
        Trial(i, {"flag": i % 2 == 0}, TrialState.COMPLETED, [MetricRecord("loss", v)], {"loss": v}, duration_ms=5)
        for i, v in enumerate(values)
    ]
    study.trials.append(Trial(7, {}, TrialState.COMPLETED, values={"loss": 0.6}))  # a parameter switched off
    study.trials.append(Trial(8, {"flag": "<b>odd</b>"}, TrialState.FAILED, error="<script>alert(1)</script>"))
    page = render_report(study, "edge.json")
    assert "<h1>Study edge &lt;/script&gt;</h1>" in page
    assert page.count("<script") == page.count("</script>")  # no value closed a script early
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "2 completed trial(s) without a finite value not plotted." in page
    assert "absent" in page  # trial 7 meets the other trials at the parallel axis' absent tick
    assert len(table_rows(page)) == 9
    axes = param_axes(study)
    assert axes[0].categories == ("true", "false", "<b>odd</b>")
    drawable = samples(study, axes)
    assert [s.trial.number for s in drawable] == [0, 3, 4, 5, 6, 7] and drawable[-1].params == (None,)
    assert list(parameter_importance(axes, drawable).scores) == ["flag"]


def test_importance_says_why_it_is_missing(results, monkeypatch):
    study = read_results(results["tune"])
    axes = param_axes(study)
    drawable = samples(study, axes)
    assert "at least 5" in parameter_importance(axes, drawable[:4]).note
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)  # as if scikit-learn were not installed
    missing = parameter_importance(axes, drawable)
    assert not missing.scores and "scikit-learn is not installed" in missing.note


# the command line ------------------------------------------------------------


def test_reads_standard_input_and_writes_standard_output(results):
    outcome = report("-", "-o", "-", input=results["pareto"].read_text())
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout.startswith("<!DOCTYPE html>") and outcome.stdout.rstrip().endswith("</html>")
    assert outcome.stderr == "" and "<dt>results</dt><dd>&lt;stdin&gt;</dd>" in outcome.stdout


def test_default_path_is_the_results_stem_here(results):
    study = read_results(results["tune"])
    assert default_report_path("runs/tune.results.json", study) == Path("tune.report.html")
    assert default_report_path("train.json", study) == Path("train.report.html")
    assert default_report_path("-", study) == Path("tune.report.html")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read: No such file or directory"),
        ("{", "not valid JSON"),
        ('{"format": "somatize.results", "version": 1}', "not a valid results file"),
    ],
)
def test_bad_results_file_exits_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    outcome = report(path, "-o", tmp_path / "out.html")
    assert outcome.exit_code == 2
    assert outcome.stderr.count("\n") == 1 and outcome.stderr.startswith(f"somatize: {path}: ")
    assert message in outcome.stderr and not (tmp_path / "out.html").exists()


def test_unwritable_output_exits_2_with_one_line(results, tmp_path):
    outcome = report(results["tune"], "-o", tmp_path / "missing" / "r.html")
    assert outcome.exit_code == 2
    assert outcome.stderr == f"somatize: {tmp_path / 'missing' / 'r.html'}: cannot write the report: No such file or directory\n"


def test_without_plotly_report_exits_2_and_other_commands_work(results, tmp_path):
    blocker = tmp_path / "blocker" / "plotly"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('plotly blocked by test_report.py')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}

    def somatize(*args):
        argv = [sys.executable, "-m", "somatize", *map(str, args)]
        return subprocess.run(argv, check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    outcome = somatize("report", results["tune"])
    assert outcome.returncode == 2
    assert outcome.stderr == "somatize: report needs plotly: pip install 'somatize[report]'\n"
    assert outcome.stdout == "" and not list(tmp_path.glob("*.html"))
    assert somatize("best", results["tune"], "--format", "json").returncode == 0


def test_import_somatize_does_not_import_plotly():
    code = "import sys, somatize, somatize.cli, somatize.report; print('plotly' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# in a real browser -----------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed here if missing and this is a root Debian machine (as CI is)."""
    found = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium"
        subprocess.run(install, check=False, shell=True, capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium binary, and it could not be installed (apt-get install chromium needs root on Debian)")
    return found


def requests_from_page(net_log: Path) -> list[str]:
    """URLs the page asked the network for; the browser's own update checks come from no page, so are left out."""
    events = json.loads(net_log.read_text())["events"]
    page_sources = {e["source"]["id"] for e in events if "file://" in str(e.get("params", {}).get("network_isolation_key"))}
    urls = (e.get("params", {}).get("url") for e in events if e["source"]["id"] in page_sources)
    return sorted({url for url in urls if url})


def test_every_plot_renders_offline_in_chromium(results, tmp_path, chromium):
    page = tmp_path / "pareto.html"
    assert report(results["pareto"], "-o", page).exit_code == 0
    net_log = tmp_path / "net-log.json"
    argv = [
        chromium, "--headless", "--disable-gpu", "--no-sandbox", "--enable-unsafe-swiftshader",  # parcoords is WebGL
        f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", "--disable-background-networking",
        '--host-resolver-rules=MAP * ~NOTFOUND', f"--log-net-log={net_log}", "--virtual-time-budget=10000",
        "--dump-dom", f"{page.as_uri()}#sort=-value.a",  # the page sorts its table on load, as a header click does
    ]
    browser = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    assert browser.returncode == 0, browser.stderr[-2000:]
    dom = browser.stdout
    plots = re.split(r'(?=<div id="[^"]+" class="plotly-graph-div)', dom)[1:]
    rendered = {re.match(r'<div id="([^"]+)"', p).group(1) for p in plots if '<svg class="main-svg"' in p}
    expected = {"history-plot", "parallel-plot", "slice-plot-0", "slice-plot-1", "slice-plot-2", "importance-plot",
                "pareto-plot", "hypervolume-plot"}
    assert rendered == expected == {re.match(r'<div id="([^"]+)"', p).group(1) for p in plots}
    assert requests_from_page(net_log) == []
    a_values = [float(v) for v in re.findall(r'<tr class="[^"]*"><td[^>]*>\d+</td><td>trial_\d+</td><td>\w+</td>'
                                              r'<td data-key="([^"]*)"', dom)]
    assert len(a_values) == 16 and a_values == sorted(a_values, reverse=True)


def test_learning_curves_of_200_trials_render_in_chromium(results, tmp_path, chromium):
    page = tmp_path / "curves.html"
    assert report(results["curves"], "-o", page).exit_code == 0
    study = read_results(results["curves"])
    dom = dump_dom(chromium, page.as_uri(), tmp_path / "profile", budget=10000)
    plot = re.split(r'(?=<div id="[^"]+" class="plotly-graph-div)', dom)
    curves_div = next(p for p in plot if p.startswith('<div id="curves-plot"'))
    assert '<svg class="main-svg"' in curves_div
    legend = re.findall(r'class="legendtext"[^>]*>([^<]*)<', curves_div)
    counts = {state: sum(t.state is state for t in study.trials) for state in TrialState}
    assert legend == [  # plotly lists a legend group's entries together
        f"completed ({counts[TrialState.COMPLETED]})", f"pruned ({counts[TrialState.PRUNED]})",
        "pruned: stopped here", f"failed ({counts[TrialState.FAILED]})", f"best: {study.best_trial().id}",
    ]
    assert len(re.findall(r'<g class="trace scatter', curves_div)) == 5  # one trace per state, not per trial
    assert curves_div.count('class="js-line"') >= 4 and curves_div.count('class="point"') >= counts[TrialState.PRUNED]


def dump_dom(chromium: str, url: str, profile: Path, budget: int = 2000) -> str:
    """The page's DOM after load, as headless Chromium builds it (its scripts run, network off)."""
    argv = [
        chromium, "--headless", "--disable-gpu", "--no-sandbox", "--enable-unsafe-swiftshader",
        f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--virtual-time-budget={budget}", "--dump-dom", url,
    ]
    browser = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    assert browser.returncode == 0, browser.stderr[-2000:]
    return browser.stdout


def column(dom: str, key: str) -> list[str]:
    """The sort keys of one trial-table column (by its data-column), top row first."""
    head = dom[dom.index('<table class="trials">'): dom.index("</thead>")]
    index = re.findall(r'<th data-column="([^"]*)"', head).index(key)
    body = dom[dom.index("<tbody>", dom.index('<table class="trials">')): dom.index("</tbody>")]
    rows = re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", body, flags=re.DOTALL)
    return [_keys(row)[index] for row in rows]


def _keys(row: str) -> list[str]:
    """Each cell's data-key, or its text when it has none."""
    cells = re.findall(r"<td([^>]*)>(.*?)</td>", row, flags=re.DOTALL)
    return [m.group(1) if (m := re.search(r'data-key="([^"]*)"', attrs)) else text for attrs, text in cells]


@pytest.fixture(scope="module")
def sortable_page(results, tmp_path_factory) -> Path:
    """The pareto study's report without its 5 MB of plotly.js: the plots then fail, the table's
    script does not need them, and the page loads in a second instead of five."""
    html = report(results["pareto"], "-o", "-").stdout
    page = tmp_path_factory.mktemp("sortable") / "pareto.html"
    page.write_text(re.sub(r'(<script data-library="plotly.js">).*?(</script>)', r"\1\2", html, flags=re.DOTALL))
    return page


@pytest.mark.parametrize(
    ("fragment", "key", "descending"),
    [
        ("-a", "value.a", True),  # a metric by its name, as README shows it (#sort=-val_loss)
        ("x", "param.x", False),  # a parameter by its name
        ("-k", "param.k", True),
        ("b%20(maximize)", "value.b", False),  # a header as the page shows it
    ],
)
def test_a_link_to_the_report_opens_it_sorted_by_a_metric_or_parameter_name(
    sortable_page, tmp_path, chromium, fragment, key, descending
):
    dom = dump_dom(chromium, f"{sortable_page.as_uri()}#sort={fragment}", tmp_path / "profile")
    keys = [float(v) for v in column(dom, key)]
    assert len(keys) == 16 and len(set(keys)) > 1
    assert keys == sorted(keys, reverse=descending)
    assert f'data-column="{key}" scope="col" aria-sort="{"descending" if descending else "ascending"}"' in dom
