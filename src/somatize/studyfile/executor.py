"""The `executor:` section: a shell command or a Python function, plus timeout, workdir and env."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..executors.command import TRIAL_PLACEHOLDERS, placeholders, template_problems, unknown_placeholders, value_text
from ..executors.shelltemplate import ShellTemplate
from ..space import CategoricalDimension, SearchSpace
from .config import ExecutorConfig
from .fields import duration, mapping, text
from .problems import Where, did_you_mean, show

EXECUTOR_KEYS = ("command", "function", "timeout", "workdir", "env")
EXECUTOR_KINDS = ("command", "function")  # exactly one of them
# `pkg.mod:fn` (attribute after the colon may be dotted, e.g. Class.method) or `pkg.mod.fn`.
_IDENT = r"[^\W\d]\w*"
_FUNCTION = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*|{_IDENT}(?:\.{_IDENT})+")


def resolve_path(raw: str, base_dir: Path) -> Path:
    """A path from the study file, relative to the file's directory (absolute stays absolute)."""
    return Path(os.path.normpath(base_dir / os.path.expanduser(raw)))


def check_executor(
    value: Any, where: Where, parameter_names: Sequence[str] | None, base_dir: Path, space: SearchSpace | None = None
) -> tuple[ExecutorConfig, dict[str, Any]] | None:
    """The executor config and its plain-data form for the results file's spec.

    `space`, when it is valid, tells which placeholders only ever hold numbers
    (the only ones a string command may use in shell arithmetic) and the text
    values of the others, each checked before any trial runs.

    Parts that fail their check come back as None; the loader gives up when
    anything was reported, so the half-built config never escapes.
    """
    spec = mapping(value, where, "executor", EXECUTOR_KEYS)
    if spec is None:
        return None
    kinds = [key for key in EXECUTOR_KINDS if key in spec]
    if len(kinds) != 1:
        where.error("executor needs exactly one of command (a shell command) or function (module:function)")
    out: dict[str, Any] = {}
    config: dict[str, Any] = {"workdir": base_dir}
    if "command" in spec:
        values = placeholder_values(space) if space is not None else None
        out["command"] = config["command"] = _command(spec["command"], where / "command", parameter_names, values)
    if "function" in spec:
        rule = "a dotted path such as mypkg.train:objective or mypkg.train.objective"
        out["function"] = config["function"] = text(spec["function"], where / "function", "function", _FUNCTION, rule)
    if "timeout" in spec:
        out["timeout"] = config["timeout"] = duration(spec["timeout"], where / "timeout", "executor timeout")
    if "workdir" in spec:
        out["workdir"] = text(spec["workdir"], where / "workdir", "workdir")
        config["workdir"] = resolve_path(out["workdir"], base_dir) if out["workdir"] else base_dir
    if "env" in spec:
        out["env"] = config["env"] = _env(spec["env"], where / "env")
    return ExecutorConfig(**config), out


def placeholder_values(space: SearchSpace) -> tuple[set[str], dict[str, list[Any]]]:
    """The placeholders whose every value is a number, and the text values each other one can take."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    numeric = {"trial_number", "trial_seed"}
    texts: dict[str, list[Any]] = {}
    for dim in space:
        if not isinstance(dim, CategoricalDimension) or all(number(c) for c in dim.choices):
            numeric.add(dim.name)
        else:
            texts[dim.name] = [c for c in dim.choices if isinstance(c, str)]
    for name, value in space.constants.items():
        if number(value):
            numeric.add(name)
        elif isinstance(value, str):
            texts[name] = [value]
    return numeric, texts


def _command(
    value: Any, where: Where, names: Sequence[str] | None, values: tuple[set[str], dict[str, list[Any]]] | None
) -> str | list[str] | None:
    if isinstance(value, str):
        if not value.strip() or "\0" in value:
            where.error(f"command must be a non-empty string without NUL characters, got {show(value)}")
            return None
        if not _placeholders_ok(value, where, names):
            return None
        ok = _values_ok([value], where, values)
        return value if _shell_places_ok(value, where, values) and ok else None
    if not isinstance(value, list) or not value:
        where.error(f"command must be a string or a non-empty list of strings, got {show(value)}")
        return None
    ok = True
    for i, part in enumerate(value):
        if not isinstance(part, str) or "\0" in part or (i == 0 and not part.strip()):
            hint = " (quote it)" if isinstance(part, (int, float)) else ""
            (where / i).error(f"command list items must be non-empty strings, got {show(part)}{hint}")
            ok = False
        elif not _placeholders_ok(part, where / i, names):
            ok = False
    return value if ok and _values_ok(value, where, values) else None


def _values_ok(parts: list[str], where: Where, values: tuple[set[str], dict[str, list[Any]]] | None) -> bool:
    """No text value the command gets holds a NUL: neither an argument nor the environment can carry one."""
    if values is None:
        return True
    used = set(placeholders(parts))
    texts = values[1]
    bad = [(name, v) for name, vs in texts.items() if name in used or "args" in used for v in vs if "\0" in v]
    for name, v in bad:
        where.error(f"command: the value {v!r} of {{{name}}} holds a NUL character, which no command can take")
    return not bad


def _placeholders_ok(template: str, where: Where, names: Sequence[str] | None) -> bool:
    problems = template_problems(template)
    for problem in problems:
        where.error(f"command has a {problem}")
    if problems:
        return False
    if names is None:  # the search space itself is broken; it is reported there
        return True
    unknown = unknown_placeholders(template, names)
    known = list(names) + list(TRIAL_PLACEHOLDERS)
    for name in unknown:
        hint = did_you_mean(name, known) or f" (parameters: {', '.join(names)})"
        where.error(f"unknown placeholder {{{name}}} in command{hint}")
    return not unknown


def _shell_places_ok(template: str, where: Where, values: tuple[set[str], dict[str, list[Any]]] | None) -> bool:
    """Every placeholder of a string command stands where its values can go without being run."""
    if values is None:  # the search space is broken: which values there are is unknown
        return True
    problems = ShellTemplate(template).problems(*values)
    for problem in problems:
        where.error(f"command: {problem}")
    return not problems


def _env(value: Any, where: Where) -> dict[str, str] | None:
    if not isinstance(value, dict):
        where.error(f"env must be a mapping of variable names to values, got {show(value)}")
        return None
    out: dict[str, str] = {}
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            (where / key).key_error(f"env variable name {key!r} is not valid")
        elif not isinstance(item, (str, int, float, bool)) or "\0" in str(item):
            (where / key).error(f"env value for {key!r} must be a string, number or boolean, got {show(item)}")
        else:
            out[key] = value_text(item)
    return out if len(out) == len(value) else None
