"""What a noise-free Bayesian run of noisy.py thought of one named point, trial by trial, and whether its data asked for a nugget.

    python benchmarks/fixed_trace.py [--problem forest-wine-fixed] [--seeds 10] [--first-seed 0] [--point JSON] [--trials]

For each run (somatize-bayesian with its defaults, the runs of noisy.py seed for seed) whose GP is noise-free
(`noise: none`, or `auto` once its repeat came back the same): at each model-based trial, the log expected
improvement of `--point` (by default forest-wine's best: entropy, min_samples_leaf 1, no bootstrap, depth 10,
10 of 13 features) under each of the two prior means the sampler proposes from (the worst value's, the
values'), against the log EI there of the proposal taken; and at each search of the GP's hyperparameters,
whether the data ask for a nugget (a white-noise term fitted with `noise: auto`'s prior, as Gramacy and Lee 2012
suggest for deterministic objectives): twice the gain in log marginal likelihood over the same GP with the
nugget held at its floor (kept by a likelihood-ratio test at 2.71), and the nugget of highest leave-one-out
density on a grid, the kernel held. `--trials` prints those rows; the summary per run is always printed: the
loss reached, the trial from which the point's log EI stays more than 5 below the proposal's, and the nugget
counts. It reads the sampler's private state: a diagnostic, not an interface (as benchmarks/noisy_trace.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

FOREST_BEST = {"max_features": 0.81, "min_samples_leaf": 1, "max_depth": 10, "criterion": "entropy",
               "bootstrap": False}  # fmt: skip
NUGGET_GRID = (1e-8, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3)  # of the standardised values' variance
CRITICAL = 2.7055434540954146  # ½χ²₀ + ½χ²₁ at 5%, as bayesian.OFFSETS_CRITICAL
LOST = 5.0  # log EI units below the proposal's from which the point counts as given up


def _loo_density(kernel: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out log predictive density of standardised `y` under a GP with `kernel` (held)."""
    from scipy.linalg import cholesky, solve_triangular

    values = (y - y.mean()) / (y.std() or 1.0)
    inverse = solve_triangular(cholesky(kernel(X), lower=True), np.eye(len(X)), lower=True)
    precision = np.sum(inverse**2, axis=0)
    alpha = inverse.T @ (inverse @ values)
    return float(np.sum(0.5 * np.log(precision / (2 * math.pi)) - alpha**2 / (2 * precision)))


def _nugget_test(sampler: Any, model: Any) -> tuple[float, float, float]:
    """(fitted nugget, 2 Δ log marginal likelihood against the nugget at its floor, LOO-best nugget) at `model`'s data."""
    from sklearn.base import clone

    from somatize.samplers import bayesian as B
    from somatize.samplers import noise as N

    X, y = sampler._fit_X, sampler._fit_y
    template = B._gaussian_process(sampler._axes, sampler.seed, N.AUTO)
    # Both searches start from the noise-free fit, without restarts (the GP's own seeded generator, not the sampler's).
    template.set_params(n_restarts_optimizer=0)
    free = clone(template).set_params(kernel=B._fitted_kernel(model, (N.NOISE_FLOOR, N.NOISE_CEILING)))
    floor = clone(template).set_params(kernel=B._fitted_kernel(model, "fixed"))
    name = B._noise_term(floor.kernel)
    floor.kernel.set_params(**{name: B.ObservationNoise(N.NOISE_FLOOR, "fixed")})
    free, floor = B._fit(free, X, y), B._fit(floor, X, y)
    statistic = 2.0 * (B._plain_lml(free) - B._plain_lml(floor))
    held = B._fitted_kernel(model)
    name = B._noise_term(held) or "k2"
    densities = []
    for level in NUGGET_GRID:
        kernel = clone(held)
        kernel.set_params(**{name: B.ObservationNoise(level, "fixed")})
        densities.append(_loo_density(kernel, X, y))
    return float(free.noise_), statistic, NUGGET_GRID[int(np.argmax(densities))]


def trace(problem: Any, seed: int, point: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import noisy  # (on sys.path: main() puts this directory there)

    from somatize import StudyRunner
    from somatize.samplers import bayesian as B
    from somatize.samplers.acquisition import Posterior, acquisition

    study, sampler, executor = noisy.somatize_run(problem, seed, {"type": "bayesian"})
    rows: list[dict[str, Any]] = []
    nuggets: list[tuple[float, float, float]] = []
    exact = sampler._exact_proposal

    def traced(model: Any, best: Any, incumbent: Any, feasibility: Any) -> Any:
        chosen, by = exact(model, best, incumbent, feasibility)
        if sampler._searched_at == len(sampler._opt.yi):
            nuggets.append(_nugget_test(sampler, model))
        target = np.asarray(sampler._opt.space.transform([sampler._to_point(point)]), dtype=float)
        row: dict[str, Any] = {"trial": len(sampler._losses), "by": "worst" if by is not model else "values"}
        for name, surrogate in (("worst", B._mean_at_worst(model)), ("values", model)):
            # (the proposal taken, under each model: no second search, which would draw from the sampler's
            # generator and so change the run)
            mean, sd = Posterior(surrogate)(np.vstack([target, chosen[None]]))
            ei = acquisition("EI", mean, sd, best)
            row[name] = (float(mean[0] - best), float(sd[0]), float(ei[0]), float(ei[1]))
        shape = model.kernel_.k1.k2 if hasattr(model.kernel_, "k1") else model.kernel_
        row["scales"] = [round(float(s), 2) for s in np.atleast_1d(getattr(shape, "length_scale", []))]
        rows.append(row)
        return chosen, by

    sampler._exact_proposal = traced  # type: ignore[method-assign]
    StudyRunner(study, sampler, executor, seed=seed).run()
    best = study.best_trial()
    assert best is not None
    lost = next((r["trial"] for i, r in enumerate(rows)
                 if all(q["worst"][2] < q["worst"][3] - LOST for q in rows[i:])), None)  # fmt: skip
    summary = {"seed": seed, "loss": problem.truth(best.params), "lost_from": lost, "searches": len(nuggets),
               "nugget_floor": sum(1 for n in nuggets if n[0] <= 1e-9),
               "nugget_passes": sum(1 for n in nuggets if n[1] > CRITICAL),
               "loo_smallest": sum(1 for n in nuggets if n[2] == NUGGET_GRID[0]),
               "largest_statistic": max((n[1] for n in nuggets), default=math.nan)}  # fmt: skip
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="forest-wine-fixed")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--point", help="the parameters to follow, as JSON (default: forest-wine's best)")
    parser.add_argument("--trials", action="store_true", help="print a row per model-based trial")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    import noisy

    noisy.fixed_arithmetic()  # as noisy.py's runs are
    problem = noisy.PROBLEMS[args.problem]
    point = json.loads(args.point) if args.point else FOREST_BEST
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows, summary = trace(problem, seed, point)
        if args.trials:
            for r in rows:
                cells = "  ".join(f"{k}: {m:+.2f}±{s:.2f} logEI {e:.1f} (proposal {p:.1f})"
                                  for k, (m, s, e, p) in ((k, r[k]) for k in ("worst", "values")))  # fmt: skip
                print(f"  trial {r['trial']:3d} by {r['by']:6s} {cells}  scales {r['scales']}")
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
