"""YAML text -> plain data plus the position of every key and value.

We compose with PyYAML's safe loader and convert nodes ourselves instead of
calling `yaml.safe_load`, because validation messages need FILE:LINE:COL of
each node and duplicate keys must be errors (PyYAML silently keeps the last).
Only the core scalar types are constructed; any other tag is a problem, never
a call into Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

PathKey = str | int
Path = tuple[PathKey, ...]

# Guards against alias bombs ("billion laughs") and runaway nesting.
MAX_VALUES = 100_000
MAX_DEPTH = 100
# Nodes written in the text (aliases count once). A large study (100 dimensions and
# a thousand listed parameter sets) has about 10k; PyYAML's pure-Python parser
# composes ~30k nodes a second here, so the cap keeps a hostile file under a second
# or two, long before its nodes fill memory.
MAX_NODES = 20_000
# Characters of text once aliases are expanded: a 1 MB string aliased 100k times
# would be 100 GB in a results file.
MAX_EXPANDED_CHARS = 8 * 2**20

_TAG = "tag:yaml.org,2002:"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float, as YAML 1.2 and every user do,
    and stops composing at MAX_NODES nodes or MAX_DEPTH levels."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._nodes += 1
        self._depth += 1
        try:
            if self._nodes > MAX_NODES:
                self._refuse(f"the document is too large (over {MAX_NODES} YAML nodes)")
            if self._depth > MAX_DEPTH + 1:  # a key or value at path length MAX_DEPTH is depth MAX_DEPTH + 1
                self._refuse(f"YAML is nested too deeply (over {MAX_DEPTH} levels)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _refuse(self, message: str) -> None:
        raise YamlProblems([Problem(Position.of(self.peek_event().start_mark), message)])


# PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent.
_Loader.add_implicit_resolver(
    _TAG + "float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based

    @classmethod
    def of(cls, mark: yaml.Mark) -> Position:
        return cls(mark.line + 1, mark.column + 1)


@dataclass
class Document:
    """Plain data (dict/list/scalars) and where each path's key and value start.

    `problems` are node-level faults (duplicate keys, unsupported tags) that
    still leave usable data, so they are reported with the schema problems.
    """

    data: Any
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    position: Position
    message: str


class YamlProblems(Exception):
    """The text could not be turned into data at all (a syntax error, a bad character)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def compose_document(text: str) -> Document:
    """Parse one YAML document; raises YamlProblems when the text is not YAML at all."""
    node = _compose(text)
    converter = _Converter()
    document = Document(None, converter.values, converter.keys, converter.problems)
    if node is not None:
        document.data = converter.convert(node, ())
    return document


def _compose(text: str) -> yaml.Node | None:
    loader = None
    try:
        loader = _Loader(text)  # the reader rejects unprintable characters right here
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise YamlProblems([_syntax_problem(exc)]) from None
    except yaml.reader.ReaderError as exc:
        where = _offset_position(text, exc.position)
        message = f"YAML syntax error: unacceptable character #x{exc.character:04x}"
        raise YamlProblems([Problem(where, message)]) from None
    except yaml.YAMLError as exc:
        raise YamlProblems([Problem(Position(1, 1), f"YAML syntax error: {exc}")]) from None
    except RecursionError:
        raise YamlProblems([Problem(Position(1, 1), "YAML is nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    where = Position.of(mark) if mark is not None else Position(1, 1)
    parts = [p for p in (exc.context, exc.problem) if p]
    return Problem(where, "YAML syntax error: " + (", ".join(parts) or "invalid document"))


def _offset_position(text: str, offset: int) -> Position:
    before = text[:offset]
    return Position(before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


class _Converter:
    def __init__(self) -> None:
        self.values: dict[Path, Position] = {}
        self.keys: dict[Path, Position] = {}
        self.problems: list[Problem] = []
        self._count = 0
        self._chars = 0
        self._active: set[int] = set()  # node ids on the current branch: a self-referencing alias
        self._constructor = yaml.SafeLoader("")

    def _unsupported(self, node: yaml.Node) -> None:
        shown = "!!" + node.tag[len(_TAG) :] if node.tag.startswith(_TAG) else node.tag
        self._fail(node, f"unsupported YAML tag {shown}: only plain mappings, lists, strings, numbers and booleans")

    @staticmethod
    def _too_large(node: yaml.Node, why: str) -> None:
        """A bomb: refuse the whole document, as its data would be cut short anyway."""
        raise YamlProblems([Problem(Position.of(node.start_mark), f"the document is too large ({why})")])

    def _fail(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(Position.of(node.start_mark), message))

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self.values[path] = Position.of(node.start_mark)
        self._count += 1
        if self._count > MAX_VALUES:
            self._too_large(node, f"over {MAX_VALUES} values once aliases are expanded")
        if len(path) > MAX_DEPTH or id(node) in self._active:
            self._fail(node, "the document is nested too deeply (or an alias refers to itself)")
            return None
        if isinstance(node, yaml.ScalarNode):
            self._chars += len(node.value)
            if self._chars > MAX_EXPANDED_CHARS:
                self._too_large(node, f"over {MAX_EXPANDED_CHARS} characters of text once aliases are expanded")
            return self._scalar(node)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        kind = node.tag[len(_TAG) :] if node.tag.startswith(_TAG) else None
        if kind in ("str", "timestamp"):  # dates stay text: they must survive JSON unchanged
            return node.value
        builders = {
            "null": lambda: None,
            "bool": lambda: self._constructor.construct_yaml_bool(node),
            "int": lambda: self._constructor.construct_yaml_int(node),
            "float": lambda: self._constructor.construct_yaml_float(node),
        }
        if kind not in builders:
            self._unsupported(node)
            return None
        try:
            return builders[kind]()
        except (ValueError, TypeError, yaml.YAMLError):
            self._fail(node, f"cannot read {node.value!r} as {kind}")
            return None

    def _sequence(self, node: yaml.SequenceNode, path: Path) -> list[Any] | None:
        if node.tag != _TAG + "seq":
            self._unsupported(node)
            return None
        return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any] | None:
        if node.tag != _TAG + "map":
            self._unsupported(node)
            return None
        out: dict[str, Any] = {}
        # Merged keys first so that explicit keys (and their positions) win over them.
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                self._merge(value_node, path, out)
        self.values[path] = Position.of(node.start_mark)
        explicit: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._fail(key_node, "a mapping key must be plain text, not a list or mapping")
                continue
            key = key_node.value  # keys are names: `on`, `1` and `null` stay text
            if key in explicit:
                self._fail(key_node, f"duplicate key {key!r}")
                continue
            explicit.add(key)
            self.keys[path + (key,)] = Position.of(key_node.start_mark)
            out[key] = self.convert(value_node, path + (key,))
        return out

    def _merge(self, node: yaml.Node, path: Path, out: dict[str, Any]) -> None:
        """`<<: *base` (or a list of them): copy keys, the earliest source winning."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self._fail(source, "a merge key (<<) needs a mapping or a list of mappings")
                continue
            merged = self.convert(source, path)
            if isinstance(merged, dict):
                for key, value in merged.items():
                    if key not in out:
                        out[key] = value
