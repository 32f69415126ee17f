"""Command templates: `{param}` placeholders rendered for one trial (SPEC §3).

String templates run under /bin/sh, so every substituted value is
shell-quoted; list templates are argv and each placeholder stays inside its
own element (`{args}` alone in an element expands to several).
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping, Sequence
from typing import Any

Template = str | Sequence[str]

TRIAL_PLACEHOLDERS = ("trial_id", "trial_number", "trial_seed", "study", "args")

_formatter = string.Formatter()


def value_text(value: Any) -> str:
    """A parameter value as command-line text; floats keep full precision (repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def placeholders(template: Template) -> list[str]:
    """Names used in a template, in order; raises ValueError on unbalanced braces."""
    parts = [template] if isinstance(template, str) else list(template)
    names: list[str] = []
    for part in parts:
        for _, name, _, _ in _formatter.parse(part):
            if name is not None:
                if not name.isidentifier():
                    raise ValueError(f"invalid placeholder {{{name}}}")
                names.append(name)
    return names


def unknown_placeholders(template: Template, parameter_names: Sequence[str]) -> list[str]:
    allowed = set(parameter_names) | set(TRIAL_PLACEHOLDERS)
    return [n for n in dict.fromkeys(placeholders(template)) if n not in allowed]


def args_list(params: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in params.items():
        out += [f"--{name}", value_text(value)]
    return out


def _shell_state(literal: str, state: str) -> str:
    """The sh quoting state after `literal`: "" (unquoted), "'" or '"'.

    A value is quoted for the context its placeholder sits in, so `'{x}'` and
    `"{x}"` in a template cannot let `$(...)` in a value run.
    """
    escaped = False
    for ch in literal:
        if escaped:
            escaped = False
        elif state == "'":
            state = "" if ch == "'" else state
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            state = "" if state == '"' else '"'
        elif ch == "'" and not state:
            state = "'"
    return state


def _shell_quote(text: str, state: str) -> str:
    if state == "'":  # close, an escaped quote, reopen
        return text.replace("'", "'\\''")
    if state == '"':  # the four characters still special inside double quotes
        return re.sub(r'([\\$`"])', r"\\\1", text)
    return shlex.quote(text)


def _fill(part: str, values: Mapping[str, Any], quote: bool) -> str:
    out = []
    state = ""
    for literal, name, spec, conversion in _formatter.parse(part):
        out.append(literal)
        state = _shell_state(literal, state) if quote else state
        if name is None:
            continue
        value = values.get(name)
        if value is None:  # an inactive parameter renders empty
            text = ""
        elif spec or conversion:
            text = format(_formatter.convert_field(value, conversion), spec)
        elif name == "args" and quote and not state:
            out.append(" ".join(shlex.quote(a) for a in value))
            continue
        elif name == "args":
            text = " ".join(value)
        else:
            text = value_text(value)
        out.append(_shell_quote(text, state) if quote else text)
    return "".join(out)


def render(template: Template, params: Mapping[str, Any], trial: Mapping[str, Any]) -> str | list[str]:
    """The command for one trial: a shell string, or an argv list for list templates.

    `trial` holds trial_id, trial_number, trial_seed and study.
    """
    values: dict[str, Any] = dict(params)
    values.update(trial)
    values["args"] = args_list(params)
    if isinstance(template, str):
        return _fill(template, values, quote=True)
    argv: list[str] = []
    for part in template:
        if part.strip() == "{args}":
            argv += values["args"]
        else:
            argv.append(_fill(part, values, quote=False))
    return argv
