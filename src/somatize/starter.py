"""`somatize init`: a commented starter study file and a tiny objective that run as they are.

The templates are plain strings with __NAME__-style markers (the YAML is full of braces,
so str.format is no use). Both starter studies validate and finish in about a second.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .errors import UsageError

EXECUTORS = ("function", "command")
DEFAULT_NAME = "study"
DEFAULT_EXECUTOR = "function"
SCHEMA_FILE = "somatize.schema.json"
TRAIN_SCRIPT = "train.py"

STUDY = """\
# yaml-language-server: $schema=./__SCHEMA__
# The line above gives editors completion and checks for this file (VS Code: the YAML
# extension). Write the schema it points at once with:  somatize schema -o __SCHEMA__
#
# A starter study: somatize samples parameters from search_space, runs __RUNS__
# with them once per trial, and keeps the best trial.
#   somatize validate __NAME__.yaml        check this file, see the planned trials
#   somatize run __NAME__.yaml             run it; results go to __NAME__.results.json
#   somatize best __NAME__.results.json    the best trial and its parameters
# Every section is explained below; edit freely, `somatize validate` says what is wrong.

name: __NAME__  # letters, digits, '_', '.' and '-'
seed: 42                    # makes sampling reproducible; remove it for fresh draws each run

search_space:
  # float: a real number in [low, high]. scale: log spreads the samples evenly over orders
  # of magnitude (learning rates, regularisation; needs low > 0). Optional: step: 0.1
  # (linear scale only: low, low + step, ...) and default.
  lr: {type: float, low: 1.0e-4, high: 1.0, scale: log}
  # int: an integer in [low, high], both ends included (scale: log needs low >= 1).
  layers: {type: int, low: 1, high: 4}
  # categorical: one of the choices (strings, numbers or booleans) ...
  activation: {type: categorical, choices: [relu, tanh]}
  # ... and a plain list is the same, written short.
  optimizer: [adam, sgd]
  # A plain value is a constant: passed to every trial, never searched.
  epochs: 8
  # A parameter may exist only for some values of another:
  #   momentum: {type: float, low: 0.5, high: 0.99, when: {optimizer: sgd}}

strategy:
  type: random              # grid: every combination | random | bayesian: learns from earlier trials
  n_trials: 12              # random and bayesian need it; for grid it is an optional cap
  # grid:     points_per_dim: 5       points per float/int dimension (categoricals: every choice)
  # bayesian: n_initial: 10           random trials before the model (scikit-optimize) takes over
  #           acquisition: EI         (or gp_hedge, PI, LCB); estimator: GP (or RF, ET, GBRT)

objective:
  metric: loss              # __METRIC_SOURCE__
  direction: minimize       # or maximize, for metrics like accuracy
# Several objectives (the first one is primary):
#   objectives: [{metric: loss, direction: minimize}, {metric: seconds, direction: minimize}]
# Stop the whole study once a trial is good enough:
#   target: {metric: loss, value: 0.06}

executor:
__EXECUTOR__
  timeout: 60               # seconds per trial (or "30m", "2h"); a slower trial fails

# Pruning stops trials that fall behind the others at the same step, judged on the
# intermediate values the trials report. Uncomment to try it:
# pruning: {type: median, warmup_steps: 2, min_trials: 4}   # or {type: successive_halving}

parallel: 2                 # trials at once (somatize run -j N overrides)
# retries: 1                # re-run a failed trial
# timeout: 1h               # a wall-clock budget for the whole study
# output: results/__NAME__.json   # the results file (somatize run -o overrides)
"""

FUNCTION_EXECUTOR = """\
  # objective(params, trial) in __MODULE__.py, next to this file, called in this process.
  # To run any program instead, give a command:
  #   command: python train.py --lr {lr} --layers {layers}    ({name}: a parameter's value)
  function: __MODULE__:objective"""

COMMAND_EXECUTOR = """\
  # Runs train.py (next to this file) once per trial. {name} is a parameter's value, passed
  # verbatim; {trial_seed} a seed for the trial; {args} would give --name value for all.
  # The script prints JSON lines with a "step" (intermediate reports) and a final loss=...
  # To call a Python function in this process instead:  function: mymodule:objective
  command: __PYTHON__ train.py --lr {lr} --layers {layers} --activation {activation} \
--optimizer {optimizer} --epochs {epochs} --seed {trial_seed}"""

OBJECTIVE = '''\
"""The objective of the starter study __NAME__.yaml: replace the made-up curve with your training.

somatize calls objective(params, trial) once per trial. params holds the sampled values and
the constants, e.g. {"lr": 0.003, "layers": 2, "activation": "relu", "optimizer": "adam",
"epochs": 8}; trial.seed is a seed for this trial's randomness.
"""

from __future__ import annotations

import math
import random

from somatize import TrialPruned


def objective(params, trial):
    rng = random.Random(trial.seed)
    # A made-up training run: the loss falls towards a floor set by the parameters
    # (lowest near lr=0.01 with 3 layers).
    floor = 0.05 + 0.1 * math.log10(params["lr"] / 0.01) ** 2 + 0.02 * abs(params["layers"] - 3)
    floor += 0.01 if params["activation"] == "tanh" else 0.0
    floor += 0.02 if params["optimizer"] == "sgd" else 0.0
    loss = 1.0
    for step in range(params["epochs"]):
        loss = floor + (1.0 - floor) * math.exp(-0.6 * (step + 1)) + rng.gauss(0.0, 0.002)
        trial.report(loss, step=step)  # an intermediate value of the study's metric (loss)
        if trial.should_prune():  # only ever true with pruning: in the study file
            raise TrialPruned
    return loss  # the final value; a mapping such as {"loss": loss, "accuracy": acc} works too
'''

TRAIN = '''\
"""A stand-in training script for the starter study __NAME__.yaml: replace it with your own.

somatize runs it once per trial with the sampled parameters as arguments (see the
command in the study file) and reads the metrics it prints:
  {"step": 3, "loss": 0.41}   a JSON object line: each number in it is a metric, and an
                              integer step marks an intermediate report (pruning uses them)
  loss=0.123                  a name=value line for a metric the study declares
A non-zero exit status fails the trial.
"""

from __future__ import annotations

import argparse
import json
import math
import random


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in training script.")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    # A made-up training run: the loss falls towards a floor set by the parameters
    # (lowest near lr=0.01 with 3 layers).
    floor = 0.05 + 0.1 * math.log10(args.lr / 0.01) ** 2 + 0.02 * abs(args.layers - 3)
    floor += 0.01 if args.activation == "tanh" else 0.0
    floor += 0.02 if args.optimizer == "sgd" else 0.0
    loss = 1.0
    for step in range(args.epochs):
        loss = floor + (1.0 - floor) * math.exp(-0.6 * (step + 1)) + rng.gauss(0.0, 0.002)
        print(json.dumps({"step": step, "loss": loss}), flush=True)
    print(f"loss={loss}")


if __name__ == "__main__":
    main()
'''


def study_name(raw: str) -> str:
    """NAME as given, without a .yaml/.yml suffix; it names the study and its file."""
    from .studyfile.loader import _NAME  # the loader's own rule for `name:`

    name = re.sub(r"\.ya?ml$", "", raw)
    if not _NAME.fullmatch(name):
        raise UsageError(f"NAME must be letters, digits, '_', '.' and '-' only, got {raw!r}")
    return name


def objective_module(name: str) -> str:
    """`NAME_objective`, made an importable module name; plain `objective` when it cannot be."""
    module = re.sub(r"\W", "_", name) + "_objective"
    return module if module.isidentifier() and not module[0].isdigit() else "objective"


def _python() -> str:
    """The interpreter name for the command: `python`, else `python3` where only that exists."""
    return "python" if shutil.which("python") or not shutil.which("python3") else "python3"


def _fill(template: str, values: dict[str, str]) -> str:
    for marker, value in values.items():
        template = template.replace(f"__{marker}__", value)
    return template


def starter_files(name: str, executor: str, python: str = "python") -> dict[str, str]:
    """File name -> content: the study file first, then the objective it runs."""
    if executor == "function":
        module = objective_module(name)
        code_file, code = f"{module}.py", OBJECTIVE
        runs = f"objective() in {code_file}"
        section = _fill(FUNCTION_EXECUTOR, {"MODULE": module})
        source = "the value objective() returns (and reports)"
    else:
        code_file, code = TRAIN_SCRIPT, TRAIN
        runs = TRAIN_SCRIPT
        section = _fill(COMMAND_EXECUTOR, {"PYTHON": python})
        source = "the value train.py prints as loss=... (and in its JSON lines)"
    study = _fill(STUDY, {"EXECUTOR": section, "RUNS": runs, "METRIC_SOURCE": source, "SCHEMA": SCHEMA_FILE})
    values = {"NAME": name}
    return {f"{name}.yaml": _fill(study, values), code_file: _fill(code, values)}


def write_starter(raw_name: str, executor: str, directory: Path, force: bool = False) -> list[Path]:
    """Write the starter files into `directory`; refuse to overwrite any file unless `force`."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    name = study_name(raw_name)
    files = starter_files(name, executor, _python() if executor == "command" else "python")
    paths = [directory / file for file in files]
    if not force:
        for path in paths:
            if path.exists() or path.is_symlink():
                advice = "choose another name" if path.suffix == ".yaml" else "choose another directory (-d)"
                raise UsageError(f"{path} already exists; {advice} or remove it")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, content in zip(paths, files.values()):
            path.write_text(content, encoding="utf-8")
    except OSError as exc:
        where = exc.filename or directory
        raise UsageError(f"{where}: cannot write: {exc.strerror or exc}") from None
    return paths


__all__ = ["DEFAULT_EXECUTOR", "DEFAULT_NAME", "EXECUTORS", "SCHEMA_FILE", "starter_files", "write_starter"]
