"""The JSON Schema (draft 2020-12) of study files, built from the validator's own tables.

Editors use it for completion and early marks (`somatize schema -o somatize.schema.json`,
then `# yaml-language-server: $schema=./somatize.schema.json` atop a study file). Every
key list, choice, minimum, default and pattern here is read from the modules that check
study files, so the two cannot drift apart. `somatize validate` stays the judge: rules
across values (low < high, unique metrics, known placeholders, satisfiable constraints)
are not expressed here.
"""

from __future__ import annotations

import re
from typing import Any

from ..executors.command import TRIAL_PLACEHOLDERS
from ..samplers import STRATEGIES
from ..space import LOG, SCALES
from ..study import REDUCES
from . import dimensions, executor, loader, sections, workstation
from .config import CLUSTER_WORKER_TIMEOUT, DURABILITY
from .fields import DURATION_NUMBER, DURATION_UNITS

SCHEMA_ID = "https://somatize.dev/schema/study.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# What `as_number` (float()) accepts from a quoted number such as "1e-4"; YAML 1.1 reads an
# unquoted 1e-4 as a string too, so the validator takes numeric strings wherever it wants a number.
_NUMERIC_TEXT = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$"
_NON_EMPTY = r"\S"  # `text()`: a string that is not blank

_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_NUMBER: dict[str, Any] = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _NUMERIC_TEXT}]}


def _pattern(regex: re.Pattern[str]) -> str:
    """A regex the validator applies with fullmatch, anchored for JSON Schema's search semantics."""
    return f"^(?:{regex.pattern})$"


def _text(description: str, regex: re.Pattern[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": _pattern(regex) if regex is not None else _NON_EMPTY,
        "description": description,
        **extra,
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}


def _count(key: str, description: str) -> dict[str, Any]:
    minimum, nullable, default = loader.COUNTS[key]
    schema: dict[str, Any] = {"type": ["integer", "null"] if nullable else "integer", "minimum": minimum}
    if key == "seed":
        schema["maximum"] = loader._SEED_MAX
    if key == "parallel":
        schema["maximum"] = loader.MAX_PARALLEL
    return {"title": key, "description": description, **schema, "default": default}


def _duration(description: str) -> dict[str, Any]:
    units = DURATION_UNITS.lower() + DURATION_UNITS.upper()
    pieces = rf"^\s*(?:(?:{DURATION_NUMBER})\s*[{units}]\s*)+$"
    return {
        "description": description,
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "string", "pattern": _NUMERIC_TEXT},
            {"type": "string", "pattern": pieces},
            {"type": "null"},
        ],
        "examples": [600, "90s", "30m", "2h", "1h30m"],
    }


# search_space ------------------------------------------------------------------


def _when() -> dict[str, Any]:
    return {
        "description": "Active only while the named parameters have one of the given values.",
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "minItems": 1, "items": _SCALAR}]},
    }


def _choices() -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "uniqueItems": True, "items": _SCALAR}


def _kind_fields(kind: str) -> dict[str, dict[str, Any]]:
    """The typed value of each key a dimension of this kind takes."""
    if kind == "categorical":
        value: dict[str, Any] = _SCALAR
    elif kind == "int":
        value = {"type": "integer", "minimum": -dimensions._INT_LIMIT, "maximum": dimensions._INT_LIMIT}
    else:
        value = _NUMBER
    fields = {
        "type": {"const": kind},
        "low": value,
        "high": value,
        "scale": {"enum": list(SCALES)},
        "step": {"anyOf": [value, {"type": "null"}]},
        "default": {"anyOf": [value, {"type": "null"}]},
        "choices": _choices(),
        "when": _when(),
    }
    return {key: fields[key] for key in dimensions._KEYS_OF[kind]}


def _dimension() -> dict[str, Any]:
    described = {
        "type": f"The kind of dimension: {', '.join(dimensions.KINDS)}.",
        "low": "Lower bound (float: low < high; int: inclusive).",
        "high": "Upper bound (int: inclusive).",
        "scale": f"{' or '.join(SCALES)}; {LOG} samples evenly in orders of magnitude (float: low > 0, int: low >= 1).",
        "step": "Values on the lattice low + k*step (linear scale only; int default 1).",
        "default": "A value inside the dimension.",
        "choices": "The values of a categorical: a non-empty list of unique strings, numbers or booleans.",
        "when": "Conditional parameter: {parent: value} or {parent: [values]}.",
    }
    properties: dict[str, Any] = {key: {"description": described[key]} for key in dimensions.DIMENSION_KEYS}
    properties["type"]["enum"] = list(dimensions.KINDS)
    rules = [
        {
            "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": {
                "required": list(dimensions._REQUIRED[kind]),
                "propertyNames": {"enum": list(dimensions._KEYS_OF[kind])},
                "properties": _kind_fields(kind),
            },
        }
        for kind in dimensions.KINDS
    ]
    return {
        "title": "dimension",
        "description": "A searched parameter: float, int or categorical.",
        "type": "object",
        "properties": properties,
        "required": ["type"],
        "additionalProperties": False,
        "allOf": rules,
    }


def _search_space() -> dict[str, Any]:
    return {
        "title": "search_space",
        "description": (
            "Parameter name -> a dimension ({type: float|int|categorical, ...}), a list of choices "
            "(a categorical), or a scalar (a constant: passed to every trial, not searched). Order is kept."
        ),
        "type": "object",
        "minProperties": 1,
        "propertyNames": {
            "pattern": _pattern(dimensions._NAME),
            "not": {"enum": list(TRIAL_PLACEHOLDERS)},
        },
        "additionalProperties": {
            "anyOf": [
                {"$ref": "#/$defs/dimension"},
                {**_choices(), "description": "Shorthand for a categorical: the list of its choices."},
                {**_SCALAR, "description": "A constant: passed to every trial, not searched."},
            ]
        },
    }


# strategy and pruning ------------------------------------------------------------


def _option(key: str, rule: sections.OptionRule) -> dict[str, Any]:
    if isinstance(rule, sections.WordOrNumber):
        return {
            "anyOf": [
                {"enum": list(rule.words)},
                {"type": "number", "minimum": rule.minimum},
                {"type": "string", "pattern": _NUMERIC_TEXT},
            ],
            "description": f"{' | '.join(rule.words)} | a number: {rule.unit}.",
            "examples": [*rule.words, 0.01],
        }
    if isinstance(rule, tuple):
        return {"enum": list(rule)}
    schema: dict[str, Any] = {"type": "integer", "minimum": rule}
    if key in sections.OPTION_MAXIMA:
        schema["maximum"] = sections.OPTION_MAXIMA[key]
    return schema


def _options_by_type(
    table: dict[str, dict[str, Any]], fixed: tuple[str, ...], value_of: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every option as a property, and a rule per type allowing only that type's options."""
    properties: dict[str, Any] = {}
    rules = []
    for kind, options in table.items():
        for key, rule in options.items():
            value = value_of(key, rule)
            described = " ".join([f"{kind} only.", *value.get("description", "").split()])
            properties[key] = {**value, "description": described}
        rules.append(
            {
                "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                "then": {"propertyNames": {"enum": [*fixed, *options]}},
            }
        )
    return properties, rules


def _strategy() -> dict[str, Any]:
    properties, rules = _options_by_type(sections._STRATEGY_OPTIONS, ("type", "n_trials"), _option)
    n_trials = {"type": "integer", "minimum": sections.N_TRIALS_MIN}
    required_n_trials = [kind for kind in STRATEGIES if kind not in sections.N_TRIALS_OPTIONAL]
    rules.append(
        {
            "if": {"properties": {"type": {"enum": required_n_trials}}, "required": ["type"]},
            "then": {"required": ["n_trials"], "properties": {"n_trials": n_trials}},
        }
    )
    return {
        "title": "strategy",
        "description": "How parameters are chosen: grid (every combination), random, or bayesian (scikit-optimize).",
        "type": "object",
        "properties": {
            "type": {"enum": list(STRATEGIES), "description": "grid | random | bayesian"},
            "n_trials": {
                **_nullable(n_trials),
                "description": f"Trials to run: required by {', '.join(required_n_trials)}; "
                f"an optional cap for {', '.join(sections.N_TRIALS_OPTIONAL)} (null: no cap).",
            },
            **properties,
        },
        "required": ["type"],
        "additionalProperties": False,
        "allOf": rules,
    }


def _pruning() -> dict[str, Any]:
    properties, rules = _options_by_type(sections._PRUNER_OPTIONS, ("type",), _option)
    return {
        "title": "pruning",
        "description": "Stop unpromising trials early from their intermediate reports (those with a step).",
        "type": ["object", "null"],
        "properties": {"type": {"enum": list(sections._PRUNER_OPTIONS)}, **properties},
        "required": ["type"],
        "additionalProperties": False,
        "allOf": rules,
    }


def _mlflow() -> dict[str, Any]:
    fields = {
        "tracking_uri": _text(
            "Any MLflow tracking URI: sqlite:///mlflow.db, http://host:5000, or a directory (relative to the "
            "study file). Default: MLflow's own (MLFLOW_TRACKING_URI). somatize run --mlflow overrides.",
            examples=["sqlite:///mlflow.db"],
        ),
        "experiment": _text("The MLflow experiment the study's runs go to (default: the study's name)."),
    }
    return {
        "title": "mlflow",
        "description": "Log every trial to MLflow as a run, nested under one run for the study "
        "(needs the mlflow extra: pip install 'somatize[mlflow]').",
        "type": ["object", "null"],
        "properties": {key: fields[key] for key in sections.MLFLOW_KEYS},
        "additionalProperties": False,
    }


# objectives, target, executor ----------------------------------------------------


def _objective() -> dict[str, Any]:
    fields = {
        "metric": {
            **_text("The metric's name, as returned or printed by a trial.", sections._METRIC),
            "not": {"const": sections.RESERVED_METRIC},
        },
        "direction": {"enum": list(sections.DIRECTIONS), "default": sections.DEFAULT_DIRECTION},
        "reduce": {
            "enum": list(REDUCES),
            "default": sections.DEFAULT_REDUCE,
            "description": "A trial's value: the best of its reports for the metric, or the last one.",
        },
    }
    return {
        "title": "objective",
        "type": "object",
        "properties": {key: fields[key] for key in sections.OBJECTIVE_KEYS},
        "required": ["metric"],
        "additionalProperties": False,
    }


def _target() -> dict[str, Any]:
    fields = {
        "metric": {"type": "string", "description": "An objective's metric (default: the first objective's)."},
        "value": {**_NUMBER, "description": "Stop the study once a trial reaches this value."},
    }
    return {
        "title": "target",
        "description": "Stop the study once a trial reaches this value of an objective.",
        "type": ["object", "null"],
        "properties": {key: fields[key] for key in sections.TARGET_KEYS},
        "required": ["value"],
        "additionalProperties": False,
    }


def _executor() -> dict[str, Any]:
    fields = {
        "command": {
            "description": (
                "A shell command with {param} placeholders (each value passed in an environment variable, never parsed "
                "by the shell), or a list: argv, no shell. "
                f"Also {', '.join('{' + p + '}' for p in TRIAL_PLACEHOLDERS)}."
            ),
            "anyOf": [
                {"type": "string", "pattern": _NON_EMPTY},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
            ],
        },
        "function": _text(
            "A Python function: module:function (or module.function), called as fn(params) or fn(params, trial). "
            "The study file's directory is importable.",
            executor._FUNCTION,
            examples=["train:objective"],
        ),
        "timeout": _duration("Seconds per trial, or a duration such as '30m'."),
        "workdir": _text("The trials' working directory, relative to the study file."),
        "env": {
            "description": "Extra environment variables for the trials.",
            "type": "object",
            "propertyNames": {"pattern": r"^[^=\x00]+$"},
            "additionalProperties": _SCALAR,
        },
    }
    return {
        "title": "executor",
        "description": f"What a trial runs: exactly one of {' or '.join(executor.EXECUTOR_KINDS)}.",
        "type": "object",
        "properties": {key: fields[key] for key in executor.EXECUTOR_KEYS},
        "additionalProperties": False,
        "oneOf": [{"required": [kind]} for kind in executor.EXECUTOR_KINDS],
    }


# the whole file ----------------------------------------------------------------


def _top_level() -> dict[str, dict[str, Any]]:
    return {
        "name": {
            "title": "name",
            **_text("The study's name: letters, digits, '_', '.' and '-'.", loader._NAME),
        },
        "seed": _count("seed", "Makes sampling reproducible; each trial gets a trial_seed derived from it."),
        "search_space": {"$ref": "#/$defs/search_space"},
        "strategy": {"$ref": "#/$defs/strategy"},
        "objectives": {
            "title": "objectives",
            "description": "The metrics to optimise; the first is primary. Give this or objective.",
            "type": "array",
            "minItems": 1,
            "items": {"$ref": "#/$defs/objective"},
        },
        "objective": {
            "$ref": "#/$defs/objective",
            "description": "The one metric to optimise. Give this or objectives.",
        },
        "target": {"$ref": "#/$defs/target"},
        "executor": {"$ref": "#/$defs/executor"},
        "parallel": _count("parallel", "Trials at once (somatize run --jobs overrides)."),
        "retries": _count("retries", "Re-runs of a failed trial (not of a pruned one)."),
        "max_failures": _count("max_failures", "Stop the study after this many failed trials (null: never)."),
        "max_consecutive_failures": _count(
            "max_consecutive_failures", "Stop the study after this many failures in a row (null: never)."
        ),
        "timeout": {"title": "timeout", **_duration("Whole-study wall-clock budget: seconds or a duration.")},
        "output": _nullable(
            _text("The results file, relative to the study file (default <study file stem>.results.json).")
        ),
        "pruning": {"$ref": "#/$defs/pruning"},
        "cluster": _nullable(
            _text("A Dask scheduler address such as tcp://host:8786 (somatize run --cluster).", loader._CLUSTER)
        ),
        "cluster_worker_timeout": {
            "title": "cluster_worker_timeout",
            **_duration(
                "Seconds the Dask cluster may have no worker before waiting trials fail and the study stops "
                "(null: wait forever)."
            ),
            "default": CLUSTER_WORKER_TIMEOUT,
        },
        "mlflow": {"$ref": "#/$defs/mlflow"},
        "durability": {
            "title": "durability",
            "description": "What a finished trial survives: power (the journal is fsynced at most a second after "
            "a trial finishes; a power loss loses at most the last second's trials) or process (flushed only: "
            "survives a kill of somatize, not a power loss; for trials of microseconds).",
            "enum": list(DURABILITY),
            "default": DURABILITY[0],
        },
        "trial_dirs": {
            "title": "trial_dirs",
            "description": "Which trial directories (<results stem>.trials/<trial_id>/: output, metrics file, the "
            "trial's own files) are kept once trials finish: all (default), the best k, or none.",
            "type": ["object", "null"],
            "properties": {
                key: {
                    "keep": {"enum": list(workstation.KEEP), "default": "all"},
                    "best": {"type": "integer", "minimum": 1, "default": 1,
                             "description": "With keep: best, how many of the best completed trials keep theirs."},
                }[key]
                for key in workstation.TRIAL_DIRS_KEYS
            },
            "additionalProperties": False,
        },
        "resources": {
            "title": "resources",
            "description": "Slots that running trials hold one each: gpus (device ids, per_trial of them per trial, "
            "as CUDA_VISIBLE_DEVICES and {gpus}) or slots (any names, as {slot}). parallel defaults to the number "
            "of slots (somatize run --gpus sets gpus).",
            "type": ["object", "null"],
            "properties": {
                key: {
                    "gpus": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}},
                    "per_trial": {"type": "integer", "minimum": 1, "default": 1},
                    "slots": {"type": "array", "minItems": 1, "uniqueItems": True,
                              "items": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}},
                }[key]
                for key in workstation.RESOURCES_KEYS
            },
            "additionalProperties": False,
        },
        "enqueue": {
            "title": "enqueue",
            "description": "Parameter sets to run first, in order, each a point of search_space (they count "
            "towards n_trials; a resumed study does not run them again).",
            "type": ["array", "null"],
            "items": {"type": "object", "additionalProperties": _SCALAR},
        },
        "constraints": {
            "title": "constraints",
            "description": "Expressions over parameters (checked before a trial: a violating sample is never "
            "run) or over metrics (checked after it: a trial that violates one is completed but infeasible).",
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "examples": ["batch_size * layers <= 1024", "latency_ms <= 50"]},
        },
        "metrics": {
            "title": "metrics",
            "description": "Metrics recorded and usable in constraints, but not optimised.",
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": _text("A metric's name, as returned or printed by a trial.", sections._METRIC),
        },
    }


def study_schema() -> dict[str, Any]:
    """The JSON Schema of a study file, as plain data."""
    properties = _top_level()
    objectives = [key for key in ("objectives", "objective") if key in loader.TOP_KEYS]
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "somatize study file",
        "description": "A hyperparameter search: the space, the strategy, the objectives and what a trial runs.",
        "type": "object",
        # KeyError here means the loader accepts a key this schema does not describe yet.
        "properties": {key: properties[key] for key in loader.TOP_KEYS},
        "required": list(loader.REQUIRED_KEYS),
        "additionalProperties": False,
        "oneOf": [{"required": [key]} for key in objectives],
        "$defs": {
            "search_space": _search_space(),
            "dimension": _dimension(),
            "strategy": _strategy(),
            "objective": _objective(),
            "target": _target(),
            "executor": _executor(),
            "pruning": _pruning(),
            "mlflow": _mlflow(),
        },
    }


__all__ = ["DRAFT", "SCHEMA_ID", "study_schema"]
