"""Where a Bayesian run on a noisy test function of noisy.py sends its trials, and what its model believed.

    python benchmarks/noisy_trace.py [--problem styblinski6-noisy] [--seeds 10] [--first-seed 0] [--trials] [--src TREE]

For each run (somatize-bayesian with its defaults, the runs of noisy.py seed for seed): per model-based
trial, the GP the sampler fitted (kernel chosen: full ARD or additive; warped or not; the fitted noise sd in
the objective's units; the length scales in the unit cube), and the proposal (its noise-free regret, how
many of its coordinates lie on a bound, and for Styblinski-Tang its basin: the sign of each coordinate
against the barrier at 0.157). `--trials` prints those rows; the summary per run is always printed: the
recommended and the best searched regret, the proposals with a coordinate on a bound and those worse than
the median of random points, the share of the proposals in their most frequent basin, how often each kernel
and the warp were chosen, the median fitted noise sd by kernel against the true one, and at the end the
model's skill away from its data (the correlation of its posterior mean with the truth at 2,000 uniform
points). It reads the sampler's private state: a diagnostic, not an interface. `--src TREE`: another source
tree (`git archive <commit> src | tar -x -C /tmp/old`, then /tmp/old/src).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

BARRIER = 0.157  # Styblinski-Tang's local maximum along each coordinate, between its two wells


def _gp_state(sampler: Any) -> dict[str, Any]:
    model = sampler._model
    if model is None or not hasattr(model, "kernel_"):
        return {}
    kernel = model.kernel_
    shape = kernel.k1 if hasattr(kernel, "k1") and not hasattr(kernel, "length_scales") else kernel
    if sampler._additive:
        scales = np.atleast_1d(shape.length_scales)
    else:
        scales = np.atleast_1d(shape.k2.length_scale)
    return {"kernel": "additive" if sampler._additive else "ard", "warped": bool(sampler._warped),
            "noise_sd": sampler.noise_sd(), "scales": [round(float(s), 2) for s in scales]}  # fmt: skip


def trace(problem: Any, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import noisy  # (on sys.path: main() puts this directory there)

    from somatize import StudyRunner
    from somatize.samplers.acquisition import Posterior

    study, sampler, executor = noisy.somatize_run(problem, seed, {"type": "bayesian"})
    rows: list[dict[str, Any]] = []
    propose = sampler.propose
    bounds = {name: (dim["low"], dim["high"]) for name, dim in problem.space.items()}

    def traced(number: int) -> Any:
        params = propose(number)
        if params is not None:
            row = {"number": number, "regret": problem.truth(params) - problem.minimum, **_gp_state(sampler)}
            row["on_bound"] = sum(1 for k, v in params.items() if v in bounds[k])
            if problem.name.startswith("styblinski"):
                row["basin"] = "".join("-" if params[k] < BARRIER else "+" for k in sorted(params))
            rows.append(row)
        return params

    sampler.propose = traced  # type: ignore[method-assign]
    StudyRunner(study, sampler, executor, seed=seed).run()
    chosen = study.recommended_trial() or study.best_trial()
    assert chosen is not None
    rng = np.random.default_rng(seed)
    names = sorted(bounds)
    unit = rng.random((2000, len(names)))
    points = [{k: bounds[k][0] + u * (bounds[k][1] - bounds[k][0]) for k, u in zip(names, row)} for row in unit]
    truth = np.array([problem.truth(p) for p in points])
    X = np.asarray(sampler._opt.space.transform([[p[a.name] for a in sampler._axes] for p in points]))
    mean = Posterior(sampler._fitted())(X)[0]
    summary = {"recommended": problem.truth(chosen.params) - problem.minimum,
               "searched": min(r["regret"] for r in rows), "random_median": float(np.median(truth)) - problem.minimum,
               "skill": float(np.corrcoef(mean, truth)[0, 1])}  # fmt: skip
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", default="styblinski6-noisy")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", action="store_true", help="print every model-based trial")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import noisy

    noisy.fixed_arithmetic()  # as noisy.py's runs are
    problem = noisy.PROBLEMS[args.problem]
    totals: dict[str, int] = {"model": 0, "on_bound": 0, "worse_than_random": 0}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows, summary = trace(problem, seed)
        model = [r for r in rows if "kernel" in r]
        if args.trials:
            for r in rows:
                print(r)
        on_bound = sum(1 for r in model if r["on_bound"])
        worse = sum(1 for r in model if r["regret"] > summary["random_median"])
        basins = [r["basin"] for r in model if "basin" in r]
        share = max((basins.count(b) for b in set(basins)), default=0) / max(len(basins), 1)
        sds = {k: [r["noise_sd"] for r in model if r["kernel"] == k and r["noise_sd"] is not None]
               for k in ("ard", "additive")}  # fmt: skip
        print(f"seed {seed}: recommended {summary['recommended']:.4g} searched {summary['searched']:.4g}; "
              f"{len(model)} model-based trials: {on_bound} with a coordinate on a bound, {worse} worse than a "
              f"random point's median ({summary['random_median']:.4g}), {share:.0%} in one basin; additive "
              f"{sum(r['kernel'] == 'additive' for r in model)}, warped {sum(r['warped'] for r in model)}; "
              f"noise sd ard {statistics.median(sds['ard']) if sds['ard'] else float('nan'):.3g} additive "
              f"{statistics.median(sds['additive']) if sds['additive'] else float('nan'):.3g}; "
              f"skill away from the data {summary['skill']:.2f}", flush=True)  # fmt: skip
        totals["model"] += len(model)
        totals["on_bound"] += on_bound
        totals["worse_than_random"] += worse
    print(f"all: {totals['on_bound']} of {totals['model']} model-based proposals with a coordinate on a bound, "
          f"{totals['worse_than_random']} worse than a random point's median")  # fmt: skip


if __name__ == "__main__":
    main()
