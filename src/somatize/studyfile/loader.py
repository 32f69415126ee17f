"""Study file -> validated StudyConfig, or a StudyFileError listing every problem (SPEC §1, §5)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import StudyFileError
from ..trackers import is_path
from .conditions import check_constraints
from .config import CLUSTER_WORKER_TIMEOUT, DURABILITY, StudyConfig
from .dimensions import check_search_space
from .executor import EXECUTOR_KINDS, check_executor, resolve_path
from .fields import choice, duration, integer, mapping, text
from .metrics import check_metrics
from .overrides import apply_overrides
from .problems import Problems, Where, one_line, show
from .sections import (
    check_grid_size,
    check_mlflow,
    check_objectives,
    check_pruning,
    check_strategy,
    check_target,
    objective_metrics,
)
from .source import MAX_STUDY_BYTES, Unreadable, read_regular_file, read_stream
from .workstation import check_enqueue, check_parallel, check_resources, check_trial_dirs
from .yamlnodes import Document, YamlProblems, compose_document

STDIN = "<stdin>"
TOP_KEYS = (
    "name", "seed", "search_space", "strategy", "objectives", "objective", "target", "executor",
    "parallel", "retries", "max_failures", "max_consecutive_failures", "timeout", "output", "pruning", "cluster",
    "cluster_worker_timeout", "constraints", "mlflow", "durability", "trial_dirs", "resources", "enqueue",
    "metrics",
)  # fmt: skip
REQUIRED_KEYS = ("name", "search_space", "strategy", "executor")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_CLUSTER = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(?::\d{1,5})?")
_SEED_MAX = 2**32 - 1  # numpy and scikit-optimize accept seeds in [0, 2**32)
# Trials in flight at once, each a thread here and a process or worker: more than this
# on one machine is a fork bomb, and a cluster's size comes from Dask when it is unset.
MAX_PARALLEL = 1024
# The integer run-control keys: (minimum, null allowed, default when absent), SPEC §1.
COUNTS = {
    "seed": (0, True, None),
    "parallel": (1, False, 1),
    "retries": (0, False, 0),
    "max_failures": (1, True, None),
    "max_consecutive_failures": (1, True, 5),
}


def load_study(
    source: str | Path, overrides: Sequence[str] = (), text: str | None = None, stdin: BinaryIO | None = None
) -> StudyConfig:
    """Read, parse and validate a study file; `source` "-" reads `stdin` (or takes `text` as what it gave).

    With `text` and a real path, the text is used as that file's content (tests, editors).
    Only a regular file (or standard input) of at most MAX_STUDY_BYTES is read.

    Raises StudyFileError with every problem, each `FILE:LINE:COL: message`
    (or `--set KEY: message` for a value that came from an override).
    """
    filename = STDIN if str(source) == "-" else str(source)
    if text is None:
        text = _read(source, filename, stdin)
    base_dir = Path.cwd() if filename == STDIN else Path(os.path.abspath(source)).parent
    problems = Problems(filename, _parse(text, filename))
    data = problems.document.data
    if data is None and problems:  # the root node itself was refused (a tag): nothing else to say
        raise StudyFileError(problems.lines())
    if not isinstance(data, dict):
        found = "empty" if data is None else f"{show(data)}, not a mapping"
        problems.add((), f"the study file must be a mapping with name, search_space, strategy, ... (it is {found})")
        raise StudyFileError(problems.lines())
    apply_overrides(data, overrides, problems)
    config = _validate(data, Where(problems), filename, base_dir)
    if problems or config is None:
        raise StudyFileError(problems.lines())
    return config


def _read(source: str | Path, filename: str, stdin: BinaryIO | None) -> str:
    try:
        if filename != STDIN:
            raw = read_regular_file(source, MAX_STUDY_BYTES)
        elif stdin is not None:
            raw = read_stream(stdin, MAX_STUDY_BYTES)
        else:
            raise Unreadable("no input was given")
    except Unreadable as exc:
        raise StudyFileError([one_line(f"{filename}: cannot read: {exc}")]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start]
        raise StudyFileError([f"{filename}:{line}:{column}: the file is not UTF-8 text (byte 0x{byte:02x})"]) from None


def _parse(text: str, filename: str) -> Document:
    try:
        return compose_document(text)
    except YamlProblems as exc:
        problems = sorted(exc.problems, key=lambda p: (p.position.line, p.position.column))
        lines = [one_line(f"{filename}:{p.position.line}:{p.position.column}: {p.message}") for p in problems]
        raise StudyFileError(list(dict.fromkeys(lines))) from None


def _validate(data: dict[str, Any], root: Where, filename: str, base_dir: Path) -> StudyConfig | None:
    mapping(data, root, "the study file", TOP_KEYS, REQUIRED_KEYS)
    name = (
        text(data["name"], root / "name", "name", _NAME, "letters, digits, '_', '.' and '-' only")
        if "name" in data
        else None
    )
    space = check_search_space(data["search_space"], root / "search_space") if "search_space" in data else None
    declared = list(data["search_space"]) if isinstance(data.get("search_space"), dict) else []
    metrics = check_metrics(data.get("metrics"), root / "metrics", objective_metrics(data), declared)
    outcome_constraints: tuple = ()
    if "constraints" in data and (space is not None or declared):
        outcome_names = [*objective_metrics(data), *metrics]
        space, outcome_constraints = check_constraints(
            data["constraints"], root / "constraints", space, declared, outcome_names
        )
    strategy = check_strategy(data["strategy"], root / "strategy") if "strategy" in data else None
    if strategy is not None and space is not None:
        check_grid_size(strategy, space, root / "strategy")
    objectives = check_objectives(data, root)
    target = check_target(data.get("target"), root / "target", objective_metrics(data))
    names = declared if isinstance(data.get("search_space"), dict) else None
    executor = check_executor(data["executor"], root / "executor", names, base_dir, space) if "executor" in data else None
    settings = _settings(data, root, base_dir)
    settings["slots"] = check_resources(data.get("resources"), root / "resources")
    given = "parallel" in data  # else parallel defaults to the number of slots
    settings["parallel"] = check_parallel(settings["parallel"], settings["slots"], given, root / "parallel")
    settings["enqueue"] = check_enqueue(data.get("enqueue"), root / "enqueue", space)
    if root.problems or None in (name, space, strategy, objectives, executor):
        return None
    assert space is not None and strategy is not None and objectives is not None and executor is not None
    spec = {
        "name": name,
        "seed": settings["seed"],
        "search_space": space.to_spec(),
        "strategy": strategy,
        "objectives": [o.to_dict() for o in objectives],
        "target": {"metric": target[0], "value": target[1]} if target else None,
        "executor": executor[1],
        **{key: settings[key] for key in ("parallel", "retries", "max_failures", "max_consecutive_failures")},
        "timeout": settings["timeout"],
        "output": data.get("output"),
        "pruning": settings["pruning"],
        "cluster": settings["cluster"],
        "cluster_worker_timeout": settings["cluster_worker_timeout"],
        "mlflow": settings["mlflow"],
    }
    for key in ("trial_dirs", "resources", "enqueue"):  # as written: they say how it ran, not what it is
        if data.get(key) is not None:
            spec[key] = data[key]
    if space.constraints or outcome_constraints:  # in the file's order, on parameters and on metrics
        spec["constraints"] = list(data["constraints"])
    if metrics:
        spec["metrics"] = list(metrics)
    locations = {f"executor.{key}": root.problems.location(("executor", key)) for key in EXECUTOR_KINDS}
    locations["strategy.acquisition"] = root.problems.location(("strategy", "acquisition"))
    return StudyConfig(
        filename, base_dir, name, space, strategy, objectives, executor[0],  # type: ignore[arg-type]
        target=target, spec=spec, locations=locations, metrics=metrics,
        outcome_constraints=outcome_constraints, **settings,
    )  # fmt: skip


def _settings(data: dict[str, Any], root: Where, base_dir: Path) -> dict[str, Any]:
    """The run-control keys, each checked, with the defaults of SPEC §1."""

    def get(key: str, default: Any = None) -> Any:
        return data.get(key, default)

    counts = {
        key: integer(get(key, default), root / key, key, minimum, nullable=nullable)
        for key, (minimum, nullable, default) in COUNTS.items()
    }
    seed = counts["seed"]
    if seed is not None and seed > _SEED_MAX:
        (root / "seed").error(f"seed must be at most {_SEED_MAX}, got {seed}")
    if counts["parallel"] is not None and counts["parallel"] > MAX_PARALLEL:
        (root / "parallel").error(f"parallel must be at most {MAX_PARALLEL}, got {counts['parallel']}")
    output = get("output")
    if output is not None:
        output = text(output, root / "output", "output")
    cluster = get("cluster")
    if cluster is not None:
        cluster = text(cluster, root / "cluster", "cluster", _CLUSTER, "a scheduler address such as tcp://host:8786")
    return {
        **counts,
        "timeout": duration(get("timeout"), root / "timeout", "timeout"),
        "output": resolve_path(output, base_dir) if output else None,
        "pruning": check_pruning(get("pruning"), root / "pruning"),
        "cluster": cluster,
        "cluster_worker_timeout": duration(
            get("cluster_worker_timeout", CLUSTER_WORKER_TIMEOUT),
            root / "cluster_worker_timeout",
            "cluster_worker_timeout",
        ),
        "mlflow": _mlflow(get("mlflow"), root / "mlflow", base_dir),
        # How this run writes, not what the study is: kept out of the spec, so the results do not depend on it.
        "durability": choice(get("durability", DURABILITY[0]), root / "durability", "durability", DURABILITY),
        "trial_dirs": check_trial_dirs(get("trial_dirs"), root / "trial_dirs"),
    }


def _mlflow(value: Any, where: Where, base_dir: Path) -> dict[str, str] | None:
    """A directory tracking URI is relative to the study file, like output; other URIs go to MLflow as written."""
    spec = check_mlflow(value, where)
    if spec and "tracking_uri" in spec and is_path(spec["tracking_uri"]):
        spec["tracking_uri"] = str(resolve_path(spec["tracking_uri"], base_dir))
    return spec
