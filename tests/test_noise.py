"""Noise in the Bayesian strategy (SPEC §9): `strategy.noise`, the recommended trial, and `somatize best`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from somatize import FloatDimension, Objective, SearchSpace, Study, Trial, TrialState, make_sampler
from somatize.cli import app
from somatize.errors import StudyFileError
from somatize.storage.results import read_results, write_results
from somatize.study import MetricRecord, Recommendation
from somatize.studyfile import load_study

LINE = SearchSpace((FloatDimension("x", 0.0, 1.0),))
UNIT = SearchSpace((FloatDimension("x", 0.0, 1.0), FloatDimension("y", 0.0, 1.0)))


def wave(x: float) -> float:
    return math.sin(6 * x)


def told(space: SearchSpace, points: list[dict[str, Any]], values: list[float], **options: Any) -> Any:
    """A Bayesian sampler that was told `values` at `points` (as a resumed history is)."""
    strategy = {"type": "bayesian", "n_trials": len(points) + 10, "n_initial": 5, **options}
    sampler = make_sampler(strategy, space, Objective("loss"), 0)
    for number, (params, value) in enumerate(zip(points, values)):
        sampler.tell(Trial(number, params, TrialState.COMPLETED, values={"loss": value}))
    return sampler


# The noise estimate ---------------------------------------------------------------


@pytest.mark.parametrize("sd", [0.1, 0.3])
def test_the_fitted_noise_is_near_the_truth_on_a_noisy_problem(sd: float) -> None:
    rng = np.random.default_rng(1)
    xs = np.linspace(0.0, 1.0, 40)
    sampler = told(LINE, [{"x": float(x)} for x in xs], [wave(x) + sd * rng.normal() for x in xs])
    recommendation = sampler.recommend()
    assert recommendation is not None
    assert 0.5 * sd < sampler.noise_sd() < 1.5 * sd
    assert recommendation.noise == sampler.noise_sd()


def test_the_fitted_noise_is_near_zero_on_a_noise_free_problem() -> None:
    xs = np.linspace(0.0, 1.0, 40)
    sampler = told(LINE, [{"x": float(x)} for x in xs], [wave(x) for x in xs])
    sampler.recommend()
    assert sampler.noise_sd() < 1e-3  # the function's range is 2


def test_noise_none_has_no_noise_estimate_and_a_fixed_number_is_kept() -> None:
    xs = np.linspace(0.0, 1.0, 20)
    points, values = [{"x": float(x)} for x in xs], [wave(x) for x in xs]
    none = told(LINE, points, values, noise="none")
    none.recommend()
    assert none.noise_sd() is None
    fixed = told(LINE, points, values, noise=0.25)
    fixed.recommend()
    assert fixed.noise_sd() == pytest.approx(0.25)


@pytest.mark.parametrize("noise", ["auto", "none"])
def test_repeated_points_inform_the_noise_and_do_not_break_the_fit(noise: str) -> None:
    rng = np.random.default_rng(2)
    centres = [0.1, 0.3, 0.5, 0.7, 0.9]
    points = [{"x": c} for c in centres for _ in range(6)]  # each point six times over
    values = [wave(p["x"]) + 0.2 * rng.normal() for p in points]
    sampler = told(LINE, points, values, noise=noise)
    for number in range(len(points), len(points) + 3):
        params = sampler.propose(number)
        assert params is not None and LINE.contains(params)
        sampler.tell(Trial(number, params, TrialState.COMPLETED, values={"loss": wave(params["x"])}))
    recommendation = sampler.recommend()
    assert recommendation is not None and math.isfinite(recommendation.mean) and math.isfinite(recommendation.sd)
    if noise == "auto":
        assert 0.1 < sampler.noise_sd() < 0.3
        # The repeats average out: the recommended point is where the function is lowest.
        means = {c: np.mean([v for p, v in zip(points, values) if p["x"] == c]) for c in centres}
        recommended = points[recommendation.number]["x"] if recommendation.number < len(points) else None
        assert recommended is None or means[recommended] <= sorted(means.values())[1]


# Warped or not: chosen by evidence under noise -------------------------------------------


def random_history(fn: Any, sd: float, seed: int, n: int = 40) -> tuple[list[dict[str, Any]], list[float]]:
    rng = np.random.default_rng(seed)
    xs = rng.random(n)
    return [{"x": float(x)} for x in xs], [fn(float(x)) + sd * rng.normal() for x in xs]


@pytest.mark.parametrize("seed", [0, 2])
def test_noise_larger_than_the_signal_is_not_warped_into_a_lucky_recommendation(seed: int) -> None:
    # The lowest of 40 noisy values sets the warp's origin; warped, Gaussian noise becomes skewed there,
    # and the warped GP (the only one before) recommended x = 0.003 (true loss 0.088, seed 0) and 0.438
    # (0.019, seed 2). The plain GP has the higher evidence for such values and is chosen.
    def bowl(x: float) -> float:
        return (x - 0.3) ** 2

    points, values = random_history(bowl, 0.3, seed)
    recommendation = told(LINE, points, values).recommend()
    assert recommendation is not None
    assert bowl(points[recommendation.number]["x"]) < 0.01


def test_values_spanning_orders_of_magnitude_stay_warped_under_noise() -> None:
    # exp(4x) spans 1 to 55: the warp is the better model by evidence, and the recommendation stays near x = 0.
    points, values = random_history(lambda x: math.exp(4 * x), 0.3, 1)
    sampler = told(LINE, points, values)
    recommendation = sampler.recommend()
    assert recommendation is not None
    assert points[recommendation.number]["x"] < 0.05
    assert recommendation.mean == pytest.approx(1.1, abs=0.3)


# Repeats: telling noise from structure (noise: auto) -------------------------------------


def drive(space: SearchSpace, fn: Any, n_trials: int, **options: Any) -> tuple[Any, list[Trial]]:
    """A Bayesian sampler run through `n_trials` proposals of `fn` (5 initial), and its trials."""
    strategy = {"type": "bayesian", "n_trials": n_trials, "n_initial": 5, **options}
    sampler = make_sampler(strategy, space, Objective("loss"), 0)
    trials: list[Trial] = []
    for number in range(n_trials):
        params = sampler.propose(number)
        assert params is not None
        trials.append(Trial(number, params, TrialState.COMPLETED, values={"loss": fn(params)}))
        sampler.tell(trials[-1])
    return sampler, trials


def repeated(space: SearchSpace, trials: list[Trial]) -> list[int]:
    """The numbers of the trials whose parameters an earlier trial already had."""
    seen: set[tuple] = set()
    again = []
    for trial in trials:
        key = space.key(trial.params)
        if key in seen:
            again.append(trial.number)
        seen.add(key)
    return again


def ripples(p: dict[str, Any]) -> float:
    """Deterministic, with structure much finer than a dozen points resolve (as Ackley's)."""
    return (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2 + 0.3 * math.sin(40 * p["x"]) * math.sin(40 * p["y"])


def test_auto_evaluates_the_best_initial_point_again_and_a_repeatable_objective_is_modelled_noise_free() -> None:
    sampler, trials = drive(UNIT, ripples, 14)
    assert repeated(UNIT, trials) == [5]  # once, right after the 5 initial points
    assert trials[5].params == min(trials[:5], key=lambda t: t.values["loss"]).params
    assert sampler.noise_sd() == 0.0
    recommendation = sampler.recommend()
    assert recommendation is not None and recommendation.noise == 0.0
    # Noise-free, the best observation is the answer.
    assert recommendation.number == min(trials, key=lambda t: (t.values["loss"], t.number)).number


def test_a_nearly_repeatable_objective_gets_a_noise_no_larger_than_its_repeats_allow() -> None:
    rng = np.random.default_rng(5)
    jitter = 1e-6  # a nondeterministic kernel's last digits: far below the ripples a smooth GP calls noise
    sampler, trials = drive(UNIT, lambda p: ripples(p) + jitter * rng.normal(), 20)
    assert repeated(UNIT, trials) == [5]
    assert 0.0 < sampler.noise_sd() < 1e-4


def test_a_noisy_repeat_keeps_the_noise_fitted_and_none_never_repeats() -> None:
    rng = np.random.default_rng(3)

    def noisy(p: dict[str, Any]) -> float:
        return (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2 + 0.1 * rng.normal()

    sampler, trials = drive(UNIT, noisy, 14)
    assert repeated(UNIT, trials) == [5]
    assert sampler.noise_sd() > 0.01
    _, trials = drive(UNIT, noisy, 14, noise="none")
    assert repeated(UNIT, trials) == []


def test_a_finite_space_is_never_repeated() -> None:
    from somatize import IntDimension

    grid = SearchSpace((IntDimension("a", 0, 9), IntDimension("b", 0, 9)))
    _, trials = drive(grid, lambda p: (p["a"] - 3) ** 2 + (p["b"] - 6) ** 2, 14)
    assert repeated(grid, trials) == []


@pytest.mark.parametrize("seed", range(3))
def test_in_a_finite_space_under_noise_the_model_proposes_unseen_points_near_the_optimum(seed: int) -> None:
    """Under noise the acquisition is often highest at an evaluated point, which a finite space does
    not run again: the proposal is then the best unseen point the search found, not a random one."""
    from somatize import IntDimension

    line = SearchSpace((IntDimension("x", 0, 199),))
    rng = np.random.default_rng(seed)
    _, trials = drive(line, lambda p: ((p["x"] - 60) / 40) ** 2 + 0.3 * rng.normal(), 30)
    assert repeated(line, trials) == []
    far = [t.params["x"] for t in trials[5:] if abs(t.params["x"] - 60) > 60]  # a loss above 2.25, 7 sds
    assert len(far) <= 1, far


# The recommendation ----------------------------------------------------------------


def test_the_recommendation_is_the_best_mean_not_the_luckiest_draw() -> None:
    # The lowest value is a lucky draw at a bad point, among repeats of a good one.
    points = [{"x": 0.8}] * 8 + [{"x": 0.25}] * 8 + [{"x": 0.05}, {"x": 0.5}, {"x": 0.95}]
    rng = np.random.default_rng(3)
    values = [wave(p["x"]) + 0.3 * rng.normal() for p in points]
    lucky = int(np.argmin(values[:8]))  # near x = 0.8, sin(4.8) = -1.0, the best region
    values[8] = -3.0  # x = 0.25: sin(1.5) = +1.0, the worst region, one lucky draw
    sampler = told(LINE, points, values)
    recommendation = sampler.recommend()
    assert recommendation is not None
    assert points[recommendation.number]["x"] == 0.8
    assert recommendation.mean == pytest.approx(-1.0, abs=0.4)
    assert lucky >= 0
    observed = told(LINE, points, values, noise="none").recommend()
    assert observed is not None and observed.number == 8  # noise-free: the best observation is the answer


def test_parallel_proposals_under_noise_do_not_collapse_onto_one_point() -> None:
    strategy = {"type": "bayesian", "n_trials": 40, "n_initial": 8}
    sampler = make_sampler(strategy, UNIT, Objective("loss"), 4)
    rng = np.random.default_rng(4)

    def loss(p: dict[str, Any]) -> float:
        return (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2 + 0.3 * rng.normal()  # noise larger than the signal

    number = 0
    # Two batches of the initial design, then three of the model's: the first of them holds
    # noise: auto's repeat of the best point (pending while the others are proposed), the
    # later ones come from the noise fitted within what the repeat showed.
    for _ in range(5):
        batch = []
        for _ in range(4):  # four trials in flight, as with -j 4
            params = sampler.propose(number)
            assert params is not None
            batch.append((number, params))
            number += 1
        points = np.array([[p["x"], p["y"]] for _, p in batch])
        gaps = [np.linalg.norm(a - b) for i, a in enumerate(points) for b in points[i + 1 :]]
        assert min(gaps) > 0.02, points
        for done, params in reversed(batch):
            sampler.tell(Trial(done, params, TrialState.COMPLETED, values={"loss": loss(params)}))
    assert sampler.noise_sd() > 0.05


# The results file and `somatize best` ---------------------------------------------------

NOISY_OBJECTIVE = """\
import math
import random


def noisy(params, trial):
    return (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2 + 0.2 * random.Random(trial.number).gauss(0, 1)
"""

NOISY_STUDY = """\
name: noisy
seed: 5
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  y: {type: float, low: 0.0, high: 1.0}
strategy: {type: bayesian, n_trials: 16, n_initial: 6}
objective: {metric: loss}
executor: {function: objective:noisy}
"""


def test_a_real_run_writes_the_recommended_trial_beside_the_best(tmp_path: Path) -> None:
    (tmp_path / "objective.py").write_text(NOISY_OBJECTIVE, encoding="utf-8")
    (tmp_path / "study.yaml").write_text(NOISY_STUDY, encoding="utf-8")
    command = [sys.executable, "-m", "somatize", "run", "study.yaml", "-q", "-o", "out.json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    recommended, best = data["recommended_trial"], data["best_trial"]
    assert set(recommended) == {"id", "number", "value", "params", "mean", "sd", "noise"}
    trials = {t["id"]: t for t in data["trials"]}
    assert trials[recommended["id"]]["state"] == "completed"
    assert recommended["params"] == trials[recommended["id"]]["params"]
    assert recommended["value"] == trials[recommended["id"]]["values"]["loss"]
    assert best["value"] == min(t["values"]["loss"] for t in data["trials"] if t["state"] == "completed")
    assert recommended["sd"] >= 0 and recommended["noise"] > 0.05


def noisy_results(tmp_path: Path) -> tuple[Path, Study]:
    """A results file whose recommended trial (1) is not its best observed one (0)."""
    space = SearchSpace((FloatDimension("lr", 1e-4, 1.0, scale="log"),), {"epochs": 3})
    study = Study("noisy", space, [Objective("loss")], {"type": "bayesian", "n_trials": 3})
    for number, (lr, loss) in enumerate([(0.5, 0.1), (0.01, 0.2), (0.001, 0.4)]):
        trial = Trial(number, {"lr": lr, "epochs": 3}, TrialState.COMPLETED, values={"loss": loss})
        trial.metrics = [MetricRecord("loss", loss)]
        study.trials.append(trial)
    study.status = "completed"
    study.recommended = Recommendation(1, 0.15, 0.02, 0.08)
    path = tmp_path / "noisy.json"
    write_results(study, path)
    return path, study


def best(*args: str) -> Any:
    return CliRunner().invoke(app, ["best", *args])


def test_best_prints_the_recommendation_and_says_which_is_which(tmp_path: Path) -> None:
    path, _ = noisy_results(tmp_path)
    table = best(str(path))
    assert table.exit_code == 0, table.stderr
    assert "trial_0001  (recommended: best predicted value)" in table.stdout
    assert "best observed  trial_0000: loss 0.1" in table.stdout and "--observed" in table.stdout
    assert "0.15 ± 0.02" in table.stdout
    observed = best(str(path), "--observed")
    assert observed.exit_code == 0 and "trial_0000" in observed.stdout and "recommended" not in observed.stdout
    document = json.loads(best(str(path), "--format", "json").stdout)
    assert document["id"] == "trial_0001" and document["best_observed"] == {"id": "trial_0000", "value": 0.1}
    assert document["predicted"] == {"mean": 0.15, "sd": 0.02}


def test_best_param_and_args_follow_the_recommendation(tmp_path: Path) -> None:
    path, _ = noisy_results(tmp_path)
    param = best(str(path), "--param", "lr")
    assert param.exit_code == 0 and param.stdout == "0.01\n"
    assert "trial_0001 is the recommended trial" in param.stderr and "trial_0000" in param.stderr
    assert best(str(path), "--format", "args").stdout == "--lr 0.01 --epochs 3\n"
    assert best(str(path), "--param", "lr", "--observed").stdout == "0.5\n"
    assert best(str(path), "--format", "args", "--observed").stdout == "--lr 0.5 --epochs 3\n"


def test_results_without_a_recommendation_still_read(tmp_path: Path) -> None:
    path, _ = noisy_results(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["recommended_trial"]
    path.write_text(json.dumps(data), encoding="utf-8")
    assert read_results(path).recommended is None
    result = best(str(path), "--param", "lr")
    assert result.exit_code == 0 and result.stdout == "0.5\n" and result.stderr == ""


def test_a_recommendation_of_no_trial_is_a_clear_error(tmp_path: Path) -> None:
    path, _ = noisy_results(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["recommended_trial"]["number"] = 9
    path.write_text(json.dumps(data), encoding="utf-8")
    result = best(str(path))
    assert result.exit_code == 2
    assert "recommended_trial names no completed trial" in result.stderr


# Validation --------------------------------------------------------------------------

STUDY = """\
name: demo
search_space:
  x: {type: float, low: 0.0, high: 1.0}
strategy:
  type: bayesian
  n_trials: 10
  noise: NOISE
objective: {metric: loss}
executor: {function: objective:noisy}
"""


@pytest.mark.parametrize(("given", "expected"), [("auto", "auto"), ("none", "none"), ("0.05", 0.05), ("0", 0.0),
                                                 ("'1e-3'", 0.001)])  # fmt: skip
def test_noise_accepts_auto_none_and_numbers(tmp_path: Path, given: str, expected: Any) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.replace("NOISE", given), encoding="utf-8")
    assert load_study(path).strategy["noise"] == expected


@pytest.mark.parametrize("given", ["loud", "atuo", "-0.1", "true", "[1]", "null"])
def test_bad_noise_is_reported_at_its_line_and_column(tmp_path: Path, given: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.replace("NOISE", given), encoding="utf-8")
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith(f"{path}:7:10: noise must be auto, none or a number >= 0 (a standard deviation")
    if given == "atuo":
        assert "did you mean 'auto'" in problem


def test_noise_on_another_strategy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.replace("type: bayesian", "type: random").replace("NOISE", "auto"), encoding="utf-8")
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    assert info.value.problems == [f"{path}:7:3: noise is a bayesian option; it does not apply to a random strategy"]


# The additive kernel (issue 16, third round) -------------------------------------------------------

CUBE = SearchSpace(tuple(FloatDimension(f"x{i}", 0.0, 1.0) for i in range(3)))


def double_wells(p: dict[str, Any]) -> float:
    """Separable: a double well along each coordinate, the deeper one below 0.5."""
    return sum((2 * v - 1) ** 4 - (2 * v - 1) ** 2 + 0.3 * (2 * v - 1) for v in p.values())


def ridge(p: dict[str, Any]) -> float:
    """Not separable: a valley along the diagonal, where every coordinate's best value depends on the others."""
    centre = sum(p.values()) / len(p)
    return -math.exp(-sum((v - centre) ** 2 for v in p.values()) / 0.05)


def noisy_history(fn: Any, seed: int) -> Any:
    """A sampler told 40 random points of `fn` in the cube with noise sd 0.1, the first one twice."""
    rng = np.random.default_rng(seed)
    points = [{f"x{i}": float(rng.random()) for i in range(3)} for _ in range(40)]
    points.append(points[0])
    sampler = told(CUBE, points, [fn(p) + 0.1 * rng.normal() for p in points])
    sampler.recommend()
    return sampler


@pytest.mark.parametrize("seed", [0, 1])
def test_a_separable_noisy_objective_is_modelled_as_a_sum_of_one_dimensional_effects(seed: int) -> None:
    assert noisy_history(double_wells, seed).surrogate_kernel == "additive"


@pytest.mark.parametrize("seed", [0, 1])
def test_coordinates_that_interact_keep_the_full_kernel(seed: int) -> None:
    assert noisy_history(ridge, seed).surrogate_kernel == "ard"


def test_a_noise_free_study_keeps_the_full_kernel() -> None:
    rng = np.random.default_rng(0)
    points = [{f"x{i}": float(rng.random()) for i in range(3)} for _ in range(20)]
    sampler = told(CUBE, points, [double_wells(p) for p in points], noise="none")
    sampler.recommend()
    assert sampler.surrogate_kernel == "ard"


# Averaging the variants (issue 16, eighth round) ------------------------------------------------------


def kernel_weights(sampler: Any) -> dict[bool, float]:
    """The last average's total weight of the additive (True) and the full (False) kernel's variants."""
    last = sampler.mixture_weights[-1]
    return {kernel: sum(w for (_, additive), w in last.items() if additive == kernel) for kernel in (True, False)}


@pytest.mark.parametrize("seed", [0, 1])
def test_the_weights_follow_how_well_each_kernel_predicts_held_out_values(seed: int) -> None:
    assert kernel_weights(noisy_history(double_wells, seed))[True] > 0.5
    assert kernel_weights(noisy_history(ridge, seed))[False] > 0.8


def test_split_weights_make_the_proposal_the_mixture_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from somatize.samplers import bayesian

    averaged = noisy_history(double_wells, 1)
    weights = list(averaged.mixture_weights[-1].values())
    assert sum(w >= bayesian.MIXTURE_FLOOR for w in weights) >= 2 and max(weights) < 0.6  # split between variants
    monkeypatch.setattr(bayesian, "MODEL_AVERAGING", False)
    single = noisy_history(double_wells, 1)
    assert single.mixture_weights == []
    assert averaged.propose(41) != single.propose(41)
