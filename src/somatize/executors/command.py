"""Command templates: `{name}` placeholders filled for one trial (SPEC §3).

A placeholder is a name in braces and nothing more: a parameter name (the
rule of `space.PARAMETER_NAME`, so `{max-depth}` and `{opt.lr}` work) or one
of TRIAL_PLACEHOLDERS. Format specs and conversions (`{lr:.3f}`, `{lr!r}`)
are refused, so a template can neither crash the validator nor ask for a
billion-character padding. `{{` and `}}` are literal braces.

List templates are argv: each value goes into its element verbatim and no
shell runs (`{args}` alone in an element expands to several). String
templates run under /bin/sh; `shelltemplate.py` passes their values in
environment variables so that the shell never parses a value.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..space import PARAMETER_NAME

Template = str | Sequence[str]

TRIAL_PLACEHOLDERS = ("trial_id", "trial_number", "trial_seed", "study", "args", "trial_dir", "gpus", "slot")
BRACES_HINT = "write {{ and }} for literal braces"


class TemplateError(ValueError):
    """A template that cannot be filled; `problems` holds one message per fault."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Slot:
    """One `{name}` in a template part."""

    name: str


Piece = str | Slot


def scan(part: str) -> tuple[list[Piece], list[str]]:
    """A template part as literal text and slots, and every malformed brace in it."""
    pieces: list[Piece] = []
    problems: list[str] = []
    literal: list[str] = []
    i = 0
    while i < len(part):
        ch = part[i]
        if ch not in "{}":
            literal.append(ch)
            i += 1
        elif part.startswith(ch * 2, i):  # {{ or }}
            literal.append(ch)
            i += 2
        elif ch == "}":
            problems.append(f"malformed placeholder: single '}}' at character {i + 1} ({BRACES_HINT})")
            i += 1
        else:
            end = _closing_brace(part, i)
            if end < 0:
                problems.append(f"malformed placeholder: '{{' at character {i + 1} is never closed ({BRACES_HINT})")
                literal.append(ch)
                i += 1
                continue
            name = part[i + 1 : end]
            if PARAMETER_NAME.fullmatch(name):
                pieces += ["".join(literal), Slot(name)]
                literal = []
            else:
                problems.append(_malformed(part[i : end + 1]))
            i = end + 1
    pieces.append("".join(literal))
    return [p for p in pieces if p != ""], problems


def _closing_brace(part: str, start: int) -> int:
    """The index of the `}` that closes the `{` at `start` (nested braces count), or -1."""
    depth = 0
    for i in range(start, len(part)):
        if part[i] == "{":
            depth += 1
        elif part[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _malformed(field_text: str) -> str:
    shown = field_text if len(field_text) <= 40 else field_text[:37] + "..."
    name = field_text[1:-1]
    if not name:
        why = "it is empty"
    elif any(c in name for c in ":!{}[]") and PARAMETER_NAME.match(name):
        why = "a placeholder is a name only, without format spec, conversion or index"
    else:
        why = "a placeholder name starts with a letter or _ and uses only letters, digits, _, . and -"
    return f"malformed placeholder {shown}: {why} ({BRACES_HINT})"


def parse_part(part: str) -> list[Piece]:
    pieces, problems = scan(part)
    if problems:
        raise TemplateError(problems)
    return pieces


def template_problems(part: str) -> list[str]:
    """Every malformed brace in one template part (a string, or one list element)."""
    return scan(part)[1]


def placeholders(template: Template) -> list[str]:
    """Names used in a template, in order; raises TemplateError (a ValueError) on malformed braces."""
    parts = [template] if isinstance(template, str) else list(template)
    return [p.name for part in parts for p in parse_part(part) if isinstance(p, Slot)]


def unknown_placeholders(template: Template, parameter_names: Sequence[str]) -> list[str]:
    allowed = set(parameter_names) | set(TRIAL_PLACEHOLDERS)
    return [n for n in dict.fromkeys(placeholders(template)) if n not in allowed]


def value_text(value: Any) -> str:
    """A parameter value as command-line text; floats keep full precision (repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def args_list(params: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in params.items():
        out += [f"--{name}", value_text(value)]
    return out


def fill_values(params: Mapping[str, Any], trial: Mapping[str, Any]) -> dict[str, Any]:
    """What each placeholder stands for; an inactive parameter is absent (renders empty)."""
    return {**params, **trial, "args": args_list(params)}


@dataclass(frozen=True)
class Command:
    """A rendered trial command: what to exec, and the variables its script refers to."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    shell: bool = False


class CompiledTemplate(Protocol):
    def render(self, params: Mapping[str, Any], trial: Mapping[str, Any]) -> Command: ...

    def display(self, params: Mapping[str, Any], trial: Mapping[str, Any]) -> str: ...


class ArgvTemplate:
    """A list template: argv with each value verbatim in its element; no shell."""

    def __init__(self, parts: Sequence[str]):
        self.parts = [parse_part(part) for part in parts]

    def render(self, params: Mapping[str, Any], trial: Mapping[str, Any]) -> Command:
        values = fill_values(params, trial)
        argv: list[str] = []
        for pieces in self.parts:
            if _alone(pieces, "args"):
                argv += values["args"]
            else:
                argv.append("".join(p if isinstance(p, str) else _text(values.get(p.name)) for p in pieces))
        if any("\0" in arg for arg in argv):
            raise ValueError("a value holds a NUL character, which no command argument can take")
        return Command(argv)

    def display(self, params: Mapping[str, Any], trial: Mapping[str, Any]) -> str:
        return shlex.join(self.render(params, trial).argv)


def _alone(pieces: list[Piece], name: str) -> bool:
    slots = [p for p in pieces if isinstance(p, Slot)]
    others = [p for p in pieces if isinstance(p, str)]
    return len(slots) == 1 and slots[0].name == name and not "".join(others).strip()


def _text(value: Any) -> str:
    if value is None:  # an inactive parameter renders empty
        return ""
    if isinstance(value, list):  # {args} inside a longer element
        return " ".join(value)
    return value_text(value)


def compile_template(template: Template) -> CompiledTemplate:
    """A template parsed once, ready to render for any number of trials; raises TemplateError."""
    if isinstance(template, str):
        from .shelltemplate import ShellTemplate

        return ShellTemplate(template)
    return ArgvTemplate(template)


def render(template: Template, params: Mapping[str, Any], trial: Mapping[str, Any]) -> Command:
    """The command for one trial. `trial` holds trial_id, trial_number, trial_seed and study."""
    return compile_template(template).render(params, trial)
