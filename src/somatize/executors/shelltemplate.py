"""String commands: values reach /bin/sh in environment variables, never in the script.

Quoting a value into a script is only as safe as our idea of where it lands:
inside `"$(printf %s {p})"`, backticks, a `#` comment or a here-document,
a quoted value was parsed again and could run. So no value is ever written
into the script. Each placeholder becomes a reference to a variable that
holds its value (`"${SOMATIZE_P_lr}"`); the shell expands a reference as
data and does not parse what it expands to.

The reference still has to fit where the placeholder stands (quoted or
not, inside '...', in a here-document), and the tree-sitter bash grammar
tells us where that is. Every reference is made of quotes, `$`, braces and
the variable name only, with its quotes balanced in any context, so even a
place misjudged on an odd template gives a wrong value, never a value run
as code. Some places are refused at validation instead:

- where bash evaluates text as arithmetic (`$((...))`, `[[ ]]`, `let`, an
  index, `${x:offset}`): an expanded `a[$(cmd)]` runs there when /bin/sh is
  bash, so only numeric parameters may stand there;
- a here-document delimiter;
- text that another shell parses again: the script of `sh -c SCRIPT` (also
  behind `docker run img`, `timeout 60` and the like), `eval`, ssh's remote
  command. The inner shell may not even see our environment (docker,
  ssh), so a value can only go after the script, as `$1`.

Values are checked too: bash reads the argument of `test -eq`, `printf %d`,
`exit` and others as arithmetic, so a choice like `a[$(cmd)]` is refused.

Inside a quoted here-document (`<<'EOF'`) nothing expands, so one holding a
placeholder is rewritten as unquoted with `\\`, `$` and backquotes of its
body escaped: the same text, and references expand in it.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .command import TRIAL_PLACEHOLDERS, Command, Slot, fill_values, parse_part, value_text

SHELL = "/bin/sh"
ADVICE = "use the list form of command (no shell), or read the value from $SOMATIZE_PARAMS"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.-]+")
_SPELLING = {"_": "__", "-": "_d", ".": "_o"}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"}
_RUN_FLAG = re.compile(r"-[A-Za-z]*c[A-Za-z]*")  # -c, -lc, -ec: the next argument is a script
_BASH_INDEX_CODE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[.*?(?:\$\(|`|\$\{)", re.DOTALL)  # name[ ... $( ` ${


class Place(Enum):
    """Where a placeholder stands, as far as the shell's parsing is concerned."""

    UNQUOTED = "unquoted"
    DOUBLE = "double-quoted"
    SINGLE = "single-quoted"
    ANSI_C = "$'...'"
    HEREDOC = "here-document"
    COMMENT = "comment"
    ARITHMETIC = "arithmetic"


@dataclass(frozen=True)
class Spot:
    """A placeholder in a compiled template; `refused` says why no value can go there."""

    name: str
    place: Place
    refused: str | None = None


def variable(name: str) -> str:
    """The environment variable that carries placeholder `name`'s value.

    SOMATIZE_TRIAL_ID etc. for trial placeholders (the same variables every
    trial gets), SOMATIZE_P_<name> for a parameter whose name is an
    identifier, and SOMATIZE_PX_<name spelled with __, _d, _o for _, -, .>
    otherwise, so that `max-depth` and `max_depth` never share one.
    """
    if name in TRIAL_PLACEHOLDERS:
        return f"SOMATIZE_{name.upper()}"
    if _IDENTIFIER.fullmatch(name):
        return f"SOMATIZE_P_{name}"
    return "SOMATIZE_PX_" + "".join(_SPELLING.get(c, c) for c in name)


def reference(var: str, place: Place) -> str:
    """Shell text that expands to the variable's value, unsplit and unparsed, at `place`."""
    if place is Place.UNQUOTED:
        return f'"${{{var}}}"'
    if place is Place.SINGLE:  # close the quote, expand in double quotes, reopen
        return f"'\"${{{var}}}\"'"
    if place is Place.ANSI_C:
        return f"'\"${{{var}}}\"$'"
    return f"${{{var}}}"  # double quotes, here-document, arithmetic; a comment ignores it


def quoted(text: str, place: Place) -> str:
    """A value written into the script for people to read (validate), quoted for `place`."""
    if place is Place.UNQUOTED:
        return shlex.quote(text)
    if place is Place.DOUBLE:
        return re.sub(r'([\\$`"])', r"\\\1", text)
    if place is Place.SINGLE:
        return text.replace("'", "'\\''")
    if place is Place.ANSI_C:
        return text.replace("\\", "\\\\").replace("'", "\\'")
    return text


def _parser() -> Any:
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


class ShellTemplate:
    """A string command parsed once: literal script text and the placeholders between it."""

    def __init__(self, template: str):
        self.template = template
        source, spans, slots = _with_markers(template)
        tree = _parser().parse(source)
        heredocs: dict[int, Any] = {}  # quoted here-documents holding a placeholder, by start byte
        spots: list[Spot] = []
        for slot, (start, end) in zip(slots, spans):
            spot, heredoc = _locate(slot.name, tree.root_node.descendant_for_byte_range(start, end), source)
            spots.append(spot)
            if heredoc is not None:
                heredocs[heredoc.start_byte] = heredoc
        plans = {key: _unquote_heredoc(heredoc, source) for key, heredoc in heredocs.items()}
        bad = {key for key, plan in plans.items() if plan is None}
        if bad:  # a delimiter that is no plain word: no value can go in there
            spots = [_refuse_in_heredoc(spot, span, heredocs, bad) for spot, span in zip(spots, spans)]
        edits = [edit for plan in plans.values() if plan for edit in plan]
        self.spots = spots
        self._script = _assemble(source, spans, spots, edits)
        self._display = _assemble(source, spans, spots, [])

    def problems(self, numeric: Collection[str], choices: Mapping[str, Sequence[Any]] | None = None) -> list[str]:
        """Why values cannot go where some placeholders stand.

        `numeric` names the placeholders that only ever hold numbers; `choices`
        maps a placeholder to every text value it can take (categorical
        choices, constants), each checked against `bash_would_run`.
        """
        out: list[str] = []
        used: set[str] = set()
        for spot in self.spots:
            used |= set(choices or {}) if spot.name == "args" else {spot.name}
            if spot.refused:
                out.append(spot.refused)
            elif spot.place is Place.ARITHMETIC and spot.name not in numeric:
                out.append(_arithmetic_problem(spot.name))
        for name, values in (choices or {}).items():
            out += [_bash_problem(name, value) for value in values if name in used and bash_would_run(value)]
        return list(dict.fromkeys(out))

    def render(self, params: Mapping[str, Any], trial: Mapping[str, Any]) -> Command:
        """The script for /bin/sh and the variables it refers to; ValueError for a value that cannot go."""
        values = fill_values(params, trial)
        env: dict[str, str] = {}
        out: list[str] = []
        for item in self._script:
            if isinstance(item, str):
                out.append(item)
                continue
            if item.refused:
                raise ValueError(item.refused)
            names = list(params) if item.name == "args" else [item.name]
            for name in names:
                value = values.get(name)
                if item.place is Place.ARITHMETIC and not _is_number(value):
                    raise ValueError(_arithmetic_problem(name) + f"; got {value_text(value)!r}")
                text = "" if value is None else value_text(value)
                if bash_would_run(text):
                    raise ValueError(_bash_problem(name, text))
                if "\0" in text:
                    raise ValueError(f"the value of {{{name}}} holds a NUL character, which no command can take")
                env[variable(name)] = text
            if item.name == "args":
                out.append(" ".join(f"--{name} {reference(variable(name), item.place)}" for name in names))
            else:
                out.append(reference(variable(item.name), item.place))
        return Command([SHELL, "-c", "".join(out)], env, shell=True)

    def display(self, params: Mapping[str, Any], trial: Mapping[str, Any]) -> str:
        """The command with each value written in, quoted for where it stands: for people to read."""
        values = fill_values(params, trial)
        out: list[str] = []
        for item in self._display:
            if isinstance(item, str):
                out.append(item)
            elif item.name == "args":
                out.append(" ".join(quoted(a, item.place) for a in values["args"]))
            else:
                value = values.get(item.name)
                out.append(quoted("" if value is None else value_text(value), item.place))
        return "".join(out)


def bash_would_run(text: Any) -> bool:
    """Whether bash could run part of this value as a command, given it where a number is read.

    Not only in `$((...))`: `test -eq`, `printf %d`, `exit`, `shift`, `read -t`
    and more evaluate their argument as arithmetic, and arithmetic expands an
    index `a[...]`, command substitution included. So `a[$(cmd)]` runs cmd
    even from "${VAR}". A value without an index (`name[`) followed by `$(`,
    a backquote or `${` cannot do that; dash never evaluates a value at all.
    """
    return isinstance(text, str) and _BASH_INDEX_CODE.search(text) is not None


def _bash_problem(name: str, value: str) -> str:
    return (
        f"the value {value!r} of {{{name}}} cannot be given to a shell: where bash reads a number (test -eq, "
        f"printf %d, $((...)), ...) it would run the command inside [...]; {ADVICE}"
    )


def _with_markers(template: str) -> tuple[bytes, list[tuple[int, int]], list[Slot]]:
    """The template as the shell will see it, each placeholder a marker word; the markers' byte spans.

    A marker is a plain word, so the grammar places it as it would place the
    reference that replaces it; byte offsets because tree-sitter counts bytes.
    """
    pieces = parse_part(template)  # TemplateError on malformed braces
    prefix = "SmtzSlot"
    while prefix in template:
        prefix += "Q"
    source = bytearray()
    spans: list[tuple[int, int]] = []
    slots: list[Slot] = []
    for piece in pieces:
        if isinstance(piece, str):
            source += piece.encode()
        else:
            start = len(source)
            source += f"{prefix}{len(slots)}Q".encode()
            spans.append((start, len(source)))
            slots.append(piece)
    return bytes(source), spans, slots


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _arithmetic_problem(name: str) -> str:
    return (
        f"placeholder {{{name}}} stands where the shell does arithmetic ($((...)), [[ ]], let, an index or "
        f"${{x:offset}}), which evaluates a text value as code; only numeric parameters may stand there: {ADVICE}"
    )


def _locate(name: str, node: Any, source: bytes) -> tuple[Spot, Any]:
    """Where the placeholder whose text is `node` stands; with the quoted here-document around it, if any."""
    chain = []
    while node is not None:
        chain.append(node)
        node = node.parent
    for n in chain:  # in a quoted here-document nothing expands: its inner syntax does not count
        if n.type == "heredoc_body" and _quoted_heredoc(n.parent, source):
            return Spot(name, Place.HEREDOC), n.parent
    program = _reparsed_by(chain, source)
    if program is not None:
        return Spot(name, Place.UNQUOTED, _reparse_problem(name, program)), None
    first = chain[0]
    for below, n in zip([None, *chain], chain):
        kind = n.type
        if kind in ("heredoc_start", "heredoc_end"):
            why = f"placeholder {{{name}}} is part of a here-document delimiter: make the delimiter a fixed word, or "
            return Spot(name, Place.UNQUOTED, why + ADVICE), None
        if kind == "heredoc_body":
            return Spot(name, Place.HEREDOC), None
        if kind == "comment":
            return Spot(name, Place.COMMENT), None
        if kind == "raw_string":
            return Spot(name, Place.SINGLE), None
        if kind == "ansi_c_string":
            return Spot(name, Place.ANSI_C), None
        if kind in ("string", "translated_string"):
            return Spot(name, Place.DOUBLE), None
        if kind in ("command_substitution", "process_substitution"):
            return Spot(name, Place.UNQUOTED), None  # a new command: quoting starts afresh
        if _arithmetic(n, first, source) or kind == "c_style_for_statement" and below.type != "do_group":
            return Spot(name, Place.ARITHMETIC), None
    return Spot(name, Place.UNQUOTED), None


def _reparsed_by(chain: list[Any], source: bytes) -> str | None:
    """The program that parses the placeholder's text as a shell command line again, if any.

    `sh -c SCRIPT` (any sh-like shell, also after a wrapper such as `docker
    run img` or `timeout 60`), `eval ...` and `ssh HOST COMMAND` hand text to a
    shell; a value inside it would be parsed there. Arguments after the
    script (`sh -c '...' _ {lr}`, $1 in the script) are not parsed.
    """
    for below, node in itertools.pairwise(chain):
        if node.type != "command":
            continue
        name = node.child_by_field_name("name")
        words = [_text(name, source)] + [_text(a, source) for a in node.children_by_field_name("argument")]
        nodes = [name, *node.children_by_field_name("argument")]
        index = next((i for i, n in enumerate(nodes) if n is not None and n.id == below.id), None)
        if index is None:
            continue
        program = os.path.basename(words[0])
        if program in ("eval", "ssh") and index > 0:
            return program
        for i, word in enumerate(words[:index]):
            if os.path.basename(word) in _SHELLS and _script_index(words, i) == index:
                return f"{os.path.basename(word)} -c"
    return None


def _script_index(words: list[str], shell: int) -> int | None:
    """Where the script of `sh [options] -c SCRIPT` stands; None when the shell has no -c."""
    for j in range(shell + 1, len(words)):
        if not words[j].startswith("-"):  # the options end at the first other word
            return None
        if _RUN_FLAG.fullmatch(words[j]):
            return j + 1
    return None


def _text(node: Any, source: bytes) -> str:
    return "" if node is None else source[node.start_byte : node.end_byte].decode(errors="replace")


def _reparse_problem(name: str, program: str) -> str:
    return (
        f"placeholder {{{name}}} is inside a command line that {program} parses again, which would run its value: "
        f"pass it as an argument after the script instead (sh -c '... \"$1\"' _ {{{name}}}), or {ADVICE}"
    )


def _arithmetic(node: Any, first: Any, source: bytes) -> bool:
    """Whether bash evaluates text at `node` as arithmetic (where a[$(cmd)] would run cmd)."""
    kind = node.type
    if kind in ("arithmetic_expansion", "subscript"):
        return True
    opener = node.children[0].type if node.children else ""
    if kind == "compound_statement" and opener == "((" or kind == "test_command" and opener == "[[":
        return True
    if kind == "expansion":  # ${x:offset:length}; the word of ${x:-word} is ordinary text
        return first.type == "variable_name" and first.parent is not None and first.parent.id == node.id
    if kind == "command":
        name = node.child_by_field_name("name")
        return name is not None and source[name.start_byte : name.end_byte] == b"let"
    return False


def _quoted_heredoc(redirect: Any, source: bytes) -> bool:
    start = _child(redirect, "heredoc_start")
    return start is not None and any(c in source[start.start_byte : start.end_byte] for c in b"'\"\\")


def _child(node: Any, kind: str) -> Any:
    return next((c for c in node.children if c.type == kind), None) if node is not None else None


def _unquote_heredoc(redirect: Any, source: bytes) -> list[tuple[int, int, bytes]] | None:
    """Edits that turn `<<'EOF'` into `<<EOF` with the same body text; None if the delimiter is no plain word."""
    start, body = _child(redirect, "heredoc_start"), _child(redirect, "heredoc_body")
    word = re.sub(rb"[\"'\\]", b"", source[start.start_byte : start.end_byte])
    if body is None or not _PLAIN_WORD.fullmatch(word.decode(errors="replace")):
        return None
    return [(start.start_byte, start.end_byte, word), (body.start_byte, body.end_byte, b"")]  # b"": escape


def _refuse_in_heredoc(spot: Spot, span: tuple[int, int], heredocs: dict[int, Any], bad: set[int]) -> Spot:
    for key in bad:
        body = _child(heredocs[key], "heredoc_body")
        if body is not None and body.start_byte <= span[0] < body.end_byte:
            return Spot(
                spot.name,
                spot.place,
                f"placeholder {{{spot.name}}} is inside a quoted here-document "
                f"whose delimiter is not a plain word, where no value can expand: use <<EOF, or {ADVICE}",
            )
    return spot


def _assemble(
    source: bytes, spans: list[tuple[int, int]], spots: list[Spot], edits: list[tuple[int, int, bytes]]
) -> list[str | Spot]:
    """Literal text and spots in order; an edit replaces its range, or (b"") escapes \\ $ ` in it."""
    out: list[str | Spot] = []
    cuts = sorted([(s, e, spot) for (s, e), spot in zip(spans, spots)], key=lambda c: c[0])
    position = 0
    for start, end, spot in cuts:
        out.append(_literal(source, position, start, edits))
        out.append(spot)
        position = end
    out.append(_literal(source, position, len(source), edits))
    return [item for item in out if item != ""]


def _literal(source: bytes, start: int, end: int, edits: list[tuple[int, int, bytes]]) -> str:
    text = bytearray()
    i = start
    for first, last, replacement in sorted(e for e in edits if e[0] < end and e[1] > start):
        text += source[i : max(i, first)]
        if replacement:  # a delimiter: never cut by a placeholder, so it lies whole in this stretch
            text += replacement
        else:
            text += re.sub(rb"([\\$`])", rb"\\\1", source[max(i, first) : min(end, last)])
        i = min(end, last)
    text += source[i:end]
    return text.decode()
