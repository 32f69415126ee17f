"""`metrics:` and constraints on metrics (issue 17 item 2, SPEC §9): judged after the trial, an
infeasible trial is completed but never best, and the Bayesian strategy models feasibility."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from somatize import Objective, SearchSpace, Study, StudyRunner, make_sampler
from somatize.cli import app
from somatize.constraints import parse_constraint
from somatize.executors.base import Completed
from somatize.samplers.feasibility import FeasibilityModel, with_feasibility
from somatize.study import MetricRecord, Trial, TrialState

runner = CliRunner()

# latency grows with x; loss is best at x = 0.8, where latency (80) breaks `latency_ms <= 50`.
OBJECTIVE = """
def f(params):
    x = params["x"]
    out = {"loss": (x - 0.8) ** 2, "latency_ms": 100 * x}
    if params.get("drop_latency") and x > 0.5:
        del out["latency_ms"]
    return out
"""

STUDY = """\
name: mc
seed: 3
search_space:
  x: {type: float, low: 0.0, high: 1.0}
strategy: {type: random, n_trials: 16}
objective: {metric: loss}
metrics: [latency_ms]
constraints:
  - latency_ms <= 50
executor: {function: objective:f}
"""


def write_study(tmp_path: Path, text: str = STUDY, objective: str = OBJECTIVE) -> Path:
    (tmp_path / "objective.py").write_text(objective)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def run(path: Path, *args: str):
    out = path.parent / "results.json"
    result = runner.invoke(app, ["run", str(path), "-o", str(out), "-q", *args])
    return result, out


def trials_of(out: Path) -> list[dict]:
    return json.loads(out.read_text())["trials"]


# Validation -----------------------------------------------------------------------------


def test_a_constraint_naming_an_undeclared_metric_is_a_validate_error_at_its_place(tmp_path):
    path = write_study(tmp_path, STUDY.replace("  - latency_ms <= 50", "  - latency_msec <= 50"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert (
        f"{path}:9:5: constraint 'latency_msec <= 50' names 'latency_msec', not a parameter or a declared metric"
        in (result.output)
    )
    assert "did you mean 'latency_ms'?" in result.output
    assert "Traceback" not in result.output


def test_a_constraint_may_name_an_objective_and_validate_lists_the_metric_constraints(tmp_path):
    path = write_study(
        tmp_path, STUDY.replace("  - latency_ms <= 50", "  - latency_ms <= 50\n  - loss < 0.5\n  - x < 2")
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "metrics (recorded, not optimised): latency_ms" in result.output
    assert "    latency_ms <= 50\n    loss < 0.5\n" in result.output
    assert "constraints:\n    x < 2" in result.output  # on a parameter: with the search space


@pytest.mark.parametrize(
    "metrics, message",
    [
        ("[loss]", "9: metric 'loss' is already an objective"),
        ("[x]", "metric 'x' has the name of a parameter"),
        ("[step]", "metric 'step' is reserved"),
        ("[a, a]", "metric 'a' is listed twice"),
        ("latency_ms", "metrics must be a non-empty list of metric names"),
        ("['a b']", "a metric must be a name without spaces"),
    ],
)
def test_bad_metrics_are_validate_errors(tmp_path, metrics, message):
    path = write_study(tmp_path, STUDY.replace("metrics: [latency_ms]", f"metrics: {metrics}"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert message.split(": ", 1)[-1] in result.output
    assert f"{path}:7:" in result.output


# Judged after the trial ------------------------------------------------------------------


def test_a_violating_trial_is_completed_but_infeasible_and_never_best(tmp_path):
    result, out = run(write_study(tmp_path))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    trials = document["trials"]
    assert all(t["state"] == "completed" for t in trials)
    infeasible = [t for t in trials if t["feasible"] is False]
    feasible = [t for t in trials if t["feasible"] is True]
    assert infeasible and feasible and len(infeasible) + len(feasible) == len(trials)
    assert all(t["values"]["latency_ms"] > 50 and t["violated"] == ["latency_ms <= 50"] for t in infeasible)
    assert all(t["values"]["latency_ms"] <= 50 and "violated" not in t for t in feasible)
    # The best loss overall is infeasible (x near 0.8); the best trial is the best feasible one.
    best_loss = min(t["values"]["loss"] for t in trials)
    assert min(t["values"]["loss"] for t in infeasible) == best_loss
    best = min(feasible, key=lambda t: t["values"]["loss"])
    assert document["best_trial"]["id"] == best["id"]
    shown = runner.invoke(app, ["best", str(out), "--format", "json"])
    assert json.loads(shown.output)["id"] == best["id"]


def test_a_trial_missing_a_constrained_metric_is_infeasible_and_says_why(tmp_path):
    text = STUDY.replace(
        "  x: {type: float, low: 0.0, high: 1.0}", "  x: {type: float, low: 0.0, high: 1.0}\n  drop_latency: true"
    )
    result, out = run(write_study(tmp_path, text))
    assert result.exit_code == 0, result.output
    missing = [t for t in trials_of(out) if t["params"]["x"] > 0.5]
    assert missing and all(t["state"] == "completed" and t["feasible"] is False for t in missing)
    assert all(t["violated"] == ["latency_ms <= 50 (no value for latency_ms)"] for t in missing)


def test_best_says_when_no_trial_is_feasible(tmp_path):
    path = write_study(tmp_path, STUDY.replace("latency_ms <= 50", "latency_ms <= -1"))
    result, out = run(path)
    assert result.exit_code == 0  # trials completed; none is feasible
    assert json.loads(out.read_text())["best_trial"] is None
    shown = runner.invoke(app, ["best", str(out)])
    assert shown.exit_code == 1
    assert "no feasible trial (16 completed, each breaking a constraint on metrics)" in shown.output


def test_show_has_a_feasible_column_and_the_metrics(tmp_path):
    _, out = run(write_study(tmp_path))
    table = runner.invoke(app, ["show", str(out), "--sort", "latency_ms"]).output
    header = table.splitlines()[0].split()
    assert header[:6] == ["id", "number", "state", "feasible", "loss", "latency_ms"]
    rows = [line.split() for line in table.splitlines()[2:] if line.startswith("trial_")]
    latencies = [float(r[5]) for r in rows]
    assert latencies == sorted(latencies)
    assert {r[3] for r in rows} == {"yes", "no"}
    assert all((r[3] == "no") == (float(r[5]) > 50) for r in rows)
    csv = runner.invoke(app, ["show", str(out), "--format", "csv"]).output
    assert csv.splitlines()[0].startswith("id,number,state,feasible,loss,latency_ms,")


def test_the_target_is_reached_only_by_a_feasible_trial(tmp_path):
    # Every infeasible trial (x > 0.5) reaches loss <= 0.09; the feasible ones (x <= 0.5) never do.
    path = write_study(tmp_path, STUDY.replace("executor:", "target: {value: 0.0899}\nexecutor:"))
    _, out = run(path)
    document = json.loads(out.read_text())
    assert any(t["values"]["loss"] <= 0.0899 for t in document["trials"])  # infeasible ones reached it
    assert document["stop_reason"] == "n_trials"
    assert len(document["trials"]) == 16


def test_best_updated_events_and_plain_lines_name_only_feasible_trials(tmp_path):
    path = write_study(tmp_path)
    events = tmp_path / "events.jsonl"
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["run", str(path), "-o", str(out), "--events", str(events)])
    assert result.exit_code == 0
    feasible = {t["id"]: t["feasible"] for t in trials_of(out)}
    best = [json.loads(line) for line in events.read_text().splitlines() if '"best_updated"' in line]
    assert best and all(feasible[e["trial_id"]] for e in best)
    assert "(infeasible: latency_ms <= 50)" in result.output


def test_pareto_front_holds_only_feasible_trials(tmp_path):
    text = STUDY.replace("objective: {metric: loss}", "objectives:\n  - {metric: loss}\n  - {metric: cost}")
    objective = OBJECTIVE.replace('"latency_ms": 100 * x}', '"latency_ms": 100 * x, "cost": -x}')
    result, out = run(write_study(tmp_path, text, objective))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    feasible = {t["id"]: t["feasible"] for t in document["trials"]}
    assert document["pareto_front"] and all(feasible[i] for i in document["pareto_front"])
    front = json.loads(runner.invoke(app, ["best", str(out), "--pareto", "--format", "json"]).output)
    assert [t["id"] for t in front] == document["pareto_front"]
    # Without the constraint, the infeasible trials with x > 0.8 would dominate on cost.
    assert any(not ok and t["params"]["x"] > 0.8 for t, ok in ((t, t["feasible"]) for t in document["trials"]))


def test_a_shell_trial_reports_a_declared_metric_as_a_name_value_line(tmp_path):
    text = STUDY.replace(
        "executor: {function: objective:f}", 'executor: {command: "echo loss={x}; echo latency_ms=60"}'
    )
    result, out = run(write_study(tmp_path, text), "--n-trials", "2")
    assert result.exit_code == 0, result.output
    assert all(t["values"]["latency_ms"] == 60 and t["feasible"] is False for t in trials_of(out))


def test_a_malformed_feasible_in_a_results_file_is_bad_input(tmp_path):
    _, out = run(write_study(tmp_path))
    document = json.loads(out.read_text())
    document["trials"][0]["feasible"] = "no"
    out.write_text(json.dumps(document))
    shown = runner.invoke(app, ["best", str(out)])
    assert shown.exit_code == 2
    assert "feasible must be true or false" in shown.output


def test_kill_9_then_resume_keeps_each_trial_s_feasibility(tmp_path):
    # The sixth trial kills somatize itself (it runs in process): the journal keeps the five before it.
    objective = OBJECTIVE + textwrap.dedent("""
        import os, signal
        _f = f
        def g(params):
            marker = os.path.join(os.path.dirname(__file__), "killed")
            if params["number"] == 5 and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return _f(params)
    """)
    text = STUDY.replace("objective:f", "objective:g").replace(
        "  x: {type: float, low: 0.0, high: 1.0}",
        "  x: {type: float, low: 0.0, high: 1.0}\n  number: {type: int, low: 0, high: 9}",
    )
    path = write_study(tmp_path, text.replace("n_trials: 16", "n_trials: 40"), objective)
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "somatize", "run", str(path), "-o", str(out), "-q"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == -signal.SIGKILL
    journal = [json.loads(line) for line in (tmp_path / "results.journal.jsonl").read_text().splitlines()]
    before = {r["trial"]["id"]: r["trial"]["feasible"] for r in journal if "trial" in r}
    assert before and set(before.values()) <= {True, False}
    again = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    after = {t["id"]: t["feasible"] for t in trials_of(out)}
    assert all(after[i] == ok for i, ok in before.items())
    assert all(t["feasible"] == (t["values"]["latency_ms"] <= 50) for t in trials_of(out))


class LatencyExecutor:
    """loss is best at x = 0.8; latency_ms = 100 x, so `latency_ms <= 50` holds for x <= 0.5."""

    def run(self, request, reporter):
        x = request.params["x"]
        return Completed([MetricRecord("loss", (x - 0.8) ** 2), MetricRecord("latency_ms", 100 * x)])

    def cancel(self) -> None: ...

    def close(self) -> None: ...


# The Bayesian strategy models feasibility ---------------------------------------------------


def told(x: float, loss: float, margin_metric: float, number: int, feasible: bool) -> Trial:
    trial = Trial(
        number, {"x": x}, TrialState.COMPLETED, [MetricRecord("loss", loss), MetricRecord("c", margin_metric)]
    )
    trial.values = {"loss": loss, "c": margin_metric}
    trial.feasible = feasible
    return trial


def bayesian(constraint: str, n_initial: int = 3):
    space = SearchSpace.from_spec({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    parsed = parse_constraint(constraint, ["x"], ["c"])
    strategy = {"type": "bayesian", "n_trials": 30, "n_initial": n_initial, "noise": "none"}
    return make_sampler(strategy, space, Objective("loss"), 0, [parsed])


def test_before_any_feasible_trial_the_bayesian_strategy_seeks_the_feasible_region():
    # c = x, feasible at c >= 0.9: every trial so far (x <= 0.6) is infeasible, and loss is best at x = 0.
    sampler = bayesian("c >= 0.9")
    for i, x in enumerate([0.0, 0.15, 0.3, 0.45, 0.6]):
        sampler.tell(told(x, x, x, i, feasible=False))
    proposed = sampler.propose(5)["x"]
    assert proposed > 0.75


def test_the_bayesian_strategy_improves_on_the_best_feasible_value_near_the_boundary():
    # loss = x is best at x = 0, but the constraint c = x >= 0.5 cuts that off: the search stays near 0.5.
    sampler = bayesian("c >= 0.5")
    for i, x in enumerate(np.linspace(0.0, 1.0, 9)):
        sampler.tell(told(float(x), float(x), float(x), i, feasible=bool(x >= 0.5)))
    proposals = [sampler.propose(9 + k)["x"] for k in range(3)]
    assert all(0.4 <= x <= 0.75 for x in proposals), proposals


def test_an_infeasible_trial_is_never_recommended():
    sampler = bayesian("c >= 0.5")
    for i, x in enumerate(np.linspace(0.0, 1.0, 9)):
        sampler.tell(told(float(x), float(x), float(x), i, feasible=bool(x >= 0.5)))
    assert sampler.recommend().number == 4  # x = 0.5, the best feasible; trials 0-3 have lower loss


def test_a_bayesian_run_finds_the_constrained_optimum_and_never_names_an_infeasible_best():
    space = SearchSpace.from_spec({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    constraint = parse_constraint("latency_ms <= 50", ["x"], ["latency_ms"])
    strategy = {"type": "bayesian", "n_trials": 14, "n_initial": 5, "noise": "none"}
    study = Study("b", space, [Objective("loss")], strategy, metrics=("latency_ms",), outcome_constraints=(constraint,))
    sampler = make_sampler(strategy, space, Objective("loss"), 1, [constraint])
    StudyRunner(study, sampler, LatencyExecutor(), seed=1).run()
    best = study.best_trial()
    assert best.feasible is True and 0.45 <= best.params["x"] <= 0.5
    assert study.recommended_trial() is None or study.recommended_trial().feasible is True


def test_with_feasibility_adds_log_pof_and_its_gradient():
    from somatize.samplers.bayesian import _HyperparameterSearch

    model = FeasibilityModel(1, seed=0, search=_HyperparameterSearch)
    X = np.linspace(0.0, 1.0, 8)[:, None]
    model.fit(X, [[float(np.sin(5 * x)) - 0.5] for x in X[:, 0]])  # feasible for x in about (0.1, 0.52)
    points = np.array([[0.05], [0.3], [0.65], [0.95]])
    log_pof, grad = model.log_pof(points, gradient=True)
    assert log_pof[1] > np.log(0.9) and log_pof[2] < np.log(0.1) and log_pof[3] < np.log(0.01)
    h = 1e-6
    numeric = (model.log_pof(points + h)[0] - model.log_pof(points - h)[0]) / (2 * h)
    assert np.allclose(grad[:, 0], numeric, rtol=1e-3, atol=1e-6)
    value, weighted_grad = with_feasibility(model, points, np.ones(4), np.zeros((4, 1)))
    assert np.allclose(value, 1.0 + log_pof) and np.allclose(weighted_grad, grad)
    alone, _ = with_feasibility(model, points, None)
    assert np.allclose(alone, log_pof)
    unchanged, _ = with_feasibility(None, points[:2], np.array([2.0, 3.0]))
    assert list(unchanged) == [2.0, 3.0]


def margin_model(margin, inside, rows: int, seed: int = 3) -> FeasibilityModel:
    """A feasibility model fitted to the margins at `rows` random points of the square that `inside` keeps."""
    from somatize.samplers.bayesian import _HyperparameterSearch

    points = np.random.default_rng(seed).random((200, 2))
    X = points[[bool(inside(x)) for x in points]][:rows]
    model = FeasibilityModel(1, seed=0, search=_HyperparameterSearch)
    model.fit(X, [[float(margin(x))] for x in X])
    return model


def test_a_margin_that_grows_with_the_parameters_is_followed_out_of_the_points_told():
    # latency = x + y / 2 <= 0.6, told only where the search found it feasible (x + y / 2 < 0.45): far
    # out, a constant-mean GP reverted to the mean of the (feasible) margins told and said feasible.
    model = margin_model(lambda x: 0.6 - x[0] - 0.5 * x[1], lambda x: x[0] + 0.5 * x[1] < 0.45, rows=12)
    far_out, inside = np.array([[0.95, 0.9], [0.95, 0.1]]), np.array([[0.05, 0.1], [0.02, 0.02]])
    assert np.all(model.probability(far_out) < 0.05) and np.all(model.probability(inside) > 0.95)


def test_a_feasible_region_inside_the_space_is_modelled_as_ending_before_its_edges():
    # A disk in the middle, told only inside the square [0.15, 0.85]²: the corners are infeasible.
    model = margin_model(lambda x: 0.09 - float(np.sum((x - 0.5) ** 2)), lambda x: np.abs(x - 0.5).max() < 0.35,
                         rows=14)
    corners = np.array([[0.02, 0.02], [0.98, 0.02], [0.02, 0.98], [0.98, 0.98]])
    assert np.all(model.probability(corners) < 0.05)
    assert model.probability(np.array([[0.5, 0.5]]))[0] > 0.95


def test_the_trend_of_a_margin_keeps_log_pof_s_gradient_exact():
    # A bowl with a ripple: the quadratic trend and the GP on what it leaves, both in the gradient.
    model = margin_model(lambda x: 0.1 - float(np.sum((x - 0.5) ** 2)) + 0.02 * np.sin(9 * x[0]), lambda x: True, 30)
    points = np.random.default_rng(1).random((6, 2))
    _, grad = model.log_pof(points, gradient=True)
    h = 1e-6
    for column in range(2):
        step = h * np.eye(2)[column]
        numeric = (model.log_pof(points + step)[0] - model.log_pof(points - step)[0]) / (2 * h)
        assert np.allclose(grad[:, column], numeric, rtol=1e-4, atol=1e-6)


class Dip:
    """A surrogate without gradients, as a forest is: a loss of 0, but -1 within 0.03 of `centre`."""

    def __init__(self, centre: np.ndarray):
        self.centre = centre

    def predict(self, X, return_std: bool = False):
        mean = np.where(np.linalg.norm(np.asarray(X) - self.centre, axis=1) < 0.03, -1.0, 0.0)
        return (mean, np.full(len(mean), 0.01)) if return_std else mean


def test_the_acquisition_search_looks_along_the_boundary_next_to_the_best_feasible_point():
    # x0 + ... + x3 <= 0.6 keeps 0.5% of the cube: some 10 of the 2,048 uniform candidates, none
    # near the best feasible point, on the boundary, where the model expects an improvement a step
    # along it (and only there; without gradients there is no local search to find it).
    from skopt.space import Real, Space

    from somatize.samplers.acquisition import AcquisitionSearch
    from somatize.samplers.bayesian import _HyperparameterSearch

    rng = np.random.default_rng(0)
    X = np.vstack([rng.random((12, 4)), rng.dirichlet(np.ones(4), 12) * rng.uniform(0.3, 0.6, (12, 1))])
    feasibility = FeasibilityModel(1, seed=0, search=_HyperparameterSearch)
    feasibility.fit(X, [[0.6 - float(x.sum())] for x in X])
    incumbent = np.array([0.3, 0.2, 0.1, 0.0])
    dip = incumbent + np.array([-0.025, 0.025, 0.0, 0.0])  # still on the boundary, beyond the incumbent
    space = Space([Real(0.0, 1.0) for _ in range(4)])
    found = []
    for seed in range(3):
        search = AcquisitionSearch(space, np.random.default_rng(seed))
        found.append(search.best(Dip(dip), ("EI",), 0.0, incumbent, feasibility)[0])
    assert all(np.linalg.norm(x - dip) < 0.03 for x in found), found
    assert np.all(feasibility.probability(np.array(found)) > 0.2)


def test_the_example_study_with_a_constraint_on_a_result_is_valid():
    study = Path(__file__).resolve().parent.parent / "studies" / "digits-small.yaml"
    result = runner.invoke(app, ["validate", str(study)])
    assert result.exit_code == 0, result.output
    assert "metrics (recorded, not optimised): support_vectors" in result.output
    assert "    support_vectors <= 300" in result.output


def test_the_live_table_marks_infeasible_trials_and_leaves_them_out_of_the_top():
    import io

    from rich.console import Console

    from somatize.events import EventBus
    from somatize.ui.live import LiveModel, render, summary

    space = SearchSpace.from_spec({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    constraint = parse_constraint("latency_ms <= 50", ["x"], ["latency_ms"])
    strategy = {"type": "random", "n_trials": 12}
    study = Study(
        "live", space, [Objective("loss")], strategy, metrics=("latency_ms",), outcome_constraints=(constraint,)
    )
    model, bus = LiveModel(), EventBus()
    bus.subscribe(model.apply)
    StudyRunner(study, make_sampler(strategy, space, Objective("loss"), 2), LatencyExecutor(), bus, seed=2).run()
    infeasible = {t.id for t in study.trials if t.feasible is False}
    assert infeasible and model.best_id == study.best_trial().id
    assert not {r.trial_id for r in model.top(20)} & infeasible
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)
    console.print(render(model))
    console.print(summary(model))
    text = out.getvalue()
    rows = [line for line in text.splitlines() if any(i in line for i in infeasible) and "latency_ms <= 50" in line]
    assert rows and all("infeasible" in line for line in rows)
    assert f"({len(infeasible)} infeasible)" in text


@pytest.mark.parametrize("noise", ["none", "auto"])
def test_bayesian_with_trials_in_flight_and_constraints_never_repeats_a_point(noise):
    space = SearchSpace.from_spec({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    constraint = parse_constraint("latency_ms <= 50", ["x"], ["latency_ms"])
    strategy = {"type": "bayesian", "n_trials": 10, "n_initial": 4, "noise": noise}
    study = Study("j", space, [Objective("loss")], strategy, metrics=("latency_ms",), outcome_constraints=(constraint,))
    sampler = make_sampler(strategy, space, Objective("loss"), 4, [constraint])
    StudyRunner(study, sampler, LatencyExecutor(), seed=4, parallel=3).run()
    xs = [t.params["x"] for t in study.trials]
    # noise: auto evaluates its best initial point once more, by design (bayesian.py `_replicate`): no other repeat.
    assert len(xs) == 10 and len(xs) - len(set(xs)) <= (0 if noise == "none" else 1)
    assert study.best_trial().feasible is True


def test_the_report_draws_infeasible_trials_apart(tmp_path):
    pytest.importorskip("plotly")
    _, out = run(write_study(tmp_path))
    infeasible = sum(t["feasible"] is False for t in trials_of(out))
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(out), "-o", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "infeasible (broke a constraint on metrics)" in html
    assert f"{infeasible} of them infeasible" in html


def test_the_results_file_written_while_a_study_runs_never_names_an_infeasible_trial_best(tmp_path):
    import time

    from somatize.events import TrialCompleted
    from somatize.storage.results import PeriodicResults
    from somatize.study import Trial, TrialState

    space = SearchSpace.from_spec({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    constraint = parse_constraint("latency_ms <= 50", ["x"], ["latency_ms"])
    study = Study("p", space, [Objective("loss")], {"type": "random"}, metrics=("latency_ms",),
                  outcome_constraints=(constraint,))
    path = tmp_path / "r.json"
    periodic = PeriodicResults(study, path, every_seconds=0)
    lucky = Trial(0, {"x": 0.1}, TrialState.COMPLETED, values={"loss": 0.01, "latency_ms": 80.0})
    study.judge(lucky)
    periodic(TrialCompleted(trial_id=lucky.id, values=lucky.values, trial=lucky))  # the first write starts here
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    data = json.loads(path.read_text())
    assert data["trials"][0]["feasible"] is False and data["best_trial"] is None
