"""The user reference in docs/ against the code: every key, command, option, variable and link.

The reference marks each table the code must agree with by an HTML comment just before it
(`<!-- keys: strategy -->`, `<!-- options: run -->`, `<!-- env: trial -->`, `<!-- placeholders -->`),
and names each key or option in backticks in the first cell of its row. These tests read those
tables with a Markdown parser and compare them, in both directions, with the validator's key
tables, `somatize schema`, the typer app and what a real trial gets, so that a key or option
added on one side only fails here.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer.main
from click import Argument, Option
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from somatize.cli import app
from somatize.executors.command import TRIAL_PLACEHOLDERS
from somatize.executors.processes import THREAD_VARIABLES
from somatize.pruners.halving import SuccessiveHalvingPruner
from somatize.pruners.median import MedianPruner
from somatize.samplers.grid import DEFAULT_POINTS_PER_DIM
from somatize.studyfile import dimensions, executor, loader, sections, workstation

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
MARKER = re.compile(r"<!--\s*(keys|options|env|placeholders)(?::\s*([\w-]+))?\s*-->")
cli = CliRunner()
_markdown = MarkdownIt("commonmark").enable("table")


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)  # each cell: the inline token of that cell

    def codes(self, row: list[Any], column: int = 0) -> list[str]:
        """The `code` spans of one cell, in order."""
        return [child.content for child in row[column].children or [] if child.type == "code_inline"]

    def first_codes(self) -> list[str]:
        return [code for row in self.rows for code in self.codes(row)]

    def cell(self, row: list[Any], name: str) -> Any:
        return row[self.header.index(name)]


def marked_tables(page: Path) -> dict[str, Table]:
    """Every table that follows a marker comment, by `kind:name` (or `kind`)."""
    tokens = _markdown.parse(page.read_text(encoding="utf-8"))
    tables: dict[str, Table] = {}
    pending: str | None = None
    table: Table | None = None
    row: list[Any] | None = None
    in_head = False
    for i, token in enumerate(tokens):
        if token.type == "html_block":
            match = MARKER.fullmatch(token.content.strip())
            if match:
                pending = match[1] + (f":{match[2]}" if match[2] else "")
        elif token.type == "table_open" and pending is not None:
            assert pending not in tables, f"{page.name}: two tables marked {pending}"
            table = tables[pending] = Table([])
            pending = None
        elif token.type == "table_close":
            table = None
        elif table is not None:
            if token.type == "thead_open":
                in_head = True
            elif token.type == "thead_close":
                in_head = False
            elif token.type == "tr_open":
                row = []
            elif token.type == "tr_close" and not in_head:
                table.rows.append(row)
            elif token.type == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
                if in_head:
                    table.header.append(token.content.strip())
                else:
                    assert row is not None
                    row.append(token)
        elif pending is not None:
            raise AssertionError(f"{page.name}: the marker {pending} is not followed by a table")
    assert pending is None, f"{page.name}: the marker {pending} is not followed by a table"
    return tables


def all_tables() -> dict[str, Table]:
    found: dict[str, Table] = {}
    for page in sorted(DOCS.glob("*.md")):
        for key, table in marked_tables(page).items():
            assert key not in found, f"the table {key} is marked twice in docs/"
            found[key] = table
    return found


@pytest.fixture(scope="module")
def tables() -> dict[str, Table]:
    return all_tables()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    outcome = cli.invoke(app, ["schema"])
    assert outcome.exit_code == 0, outcome.output
    return json.loads(outcome.stdout)


# study-file keys ----------------------------------------------------------------

# Each documented table and the validator's own key list for it.
VALIDATOR_KEYS = {
    "top": loader.TOP_KEYS,
    "dimension": dimensions.DIMENSION_KEYS,
    "strategy": sections.STRATEGY_KEYS,
    "objective": sections.OBJECTIVE_KEYS,
    "target": sections.TARGET_KEYS,
    "executor": executor.EXECUTOR_KEYS,
    "pruning": sections.PRUNING_KEYS,
    "mlflow": sections.MLFLOW_KEYS,
    "trial_dirs": workstation.TRIAL_DIRS_KEYS,
    "resources": workstation.RESOURCES_KEYS,
}


def schema_objects(schema: dict[str, Any]) -> dict[str, list[str]]:
    """Every mapping of the schema that has named keys: the top level, each $def, and any
    object nested in a top-level property, by the name the docs' marker uses."""
    found = {"top": list(schema["properties"])}
    for name, definition in schema["$defs"].items():
        if "properties" in definition:
            found[name] = list(definition["properties"])
    for name, definition in schema["properties"].items():
        if isinstance(definition, dict) and "properties" in definition:
            found[name] = list(definition["properties"])
    return found


def test_every_mapping_of_the_study_file_has_a_key_table(tables, schema):
    documented = {key.split(":", 1)[1] for key in tables if key.startswith("keys:")}
    assert documented == set(schema_objects(schema)) == set(VALIDATOR_KEYS)


@pytest.mark.parametrize("section", sorted(VALIDATOR_KEYS))
def test_documented_keys_are_the_validators_and_the_schemas(tables, schema, section):
    table = tables[f"keys:{section}"]
    documented = table.first_codes()
    assert all(len(table.codes(row)) == 1 for row in table.rows), f"one `key` per row in keys:{section}"
    assert len(documented) == len(set(documented)), f"a key documented twice in keys:{section}"
    assert set(documented) == set(VALIDATOR_KEYS[section])
    assert set(documented) == set(schema_objects(schema)[section])


def documented_defaults(table: Table) -> dict[str, str]:
    """key -> the first `code` span of its default cell (absent when the cell has none)."""
    column = table.header.index("default")
    out = {}
    for row in table.rows:
        codes = table.codes(row, column)
        if codes:
            out[table.codes(row)[0]] = codes[0]
    return out


def _text(value: Any) -> str:
    return "null" if value is None else str(value)


def test_documented_defaults_of_the_run_control_keys(tables):
    defaults = documented_defaults(tables["keys:top"])
    assert {key: defaults.get(key) for key in loader.COUNTS} == {
        key: _text(default) for key, (_, _, default) in loader.COUNTS.items()
    }


def _constructor_defaults(cls: type, names: list[str]) -> dict[str, str]:
    parameters = inspect.signature(cls.__init__).parameters
    return {name: _text(parameters[name].default) for name in names}


def test_documented_defaults_of_strategy_and_pruning_options(tables):
    from somatize.samplers.bayesian import BayesianSampler  # imports scikit-optimize: only here

    strategy = documented_defaults(tables["keys:strategy"])
    bayesian = list(sections._STRATEGY_OPTIONS["bayesian"])
    assert {k: strategy.get(k) for k in bayesian} == _constructor_defaults(BayesianSampler, bayesian)
    assert strategy.get("points_per_dim") == str(DEFAULT_POINTS_PER_DIM)
    pruning = documented_defaults(tables["keys:pruning"])
    for kind, cls in (("median", MedianPruner), ("successive_halving", SuccessiveHalvingPruner)):
        names = list(sections._PRUNER_OPTIONS[kind])
        assert {k: pruning.get(k) for k in names} == _constructor_defaults(cls, names)
    objective = documented_defaults(tables["keys:objective"])
    assert objective.get("direction") == sections.DEFAULT_DIRECTION
    assert objective.get("reduce") == sections.DEFAULT_REDUCE


# commands and options -------------------------------------------------------------


def command_headings() -> list[str]:
    tokens = _markdown.parse((DOCS / "commands.md").read_text(encoding="utf-8"))
    names = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h2":
            match = re.fullmatch(r"`?somatize (\w+)`?", tokens[i + 1].content.strip())
            if match:
                names.append(match[1])
    return names


def cli_names(params: list[Any]) -> set[str]:
    """What a user types or reads: every spelling of each option, each argument's metavar."""
    names: set[str] = set()
    for param in params:
        if isinstance(param, Option):
            names.update(param.opts + param.secondary_opts)
        elif isinstance(param, Argument):
            names.add(param.human_readable_name.rstrip("."))
    return names


def test_every_command_is_documented_and_every_documented_command_exists():
    group = typer.main.get_command(app)
    assert sorted(command_headings()) == sorted(group.commands)


def test_documented_options_are_the_apps(tables):
    group = typer.main.get_command(app)
    expected = {"somatize": cli_names(group.params)}
    expected.update({name: cli_names(command.params) for name, command in group.commands.items()})
    documented = {
        key.split(":", 1)[1]: set(table.first_codes()) for key, table in tables.items() if key.startswith("options:")
    }
    assert documented == expected


# what a trial gets ----------------------------------------------------------------


def test_documented_placeholders_are_the_commands(tables):
    documented = tables["placeholders"].first_codes()
    assert set(documented) == {"{name}", *(f"{{{name}}}" for name in TRIAL_PLACEHOLDERS)}


def _environment_study(tmp_path: Path, jobs: int) -> Path:
    """A shell study whose two trials save their environment, as JSON, in the study's directory."""
    save = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w')); print('y=1')"
    study = {
        "name": "env",
        "search_space": {"x": [1, 2]},
        "strategy": {"type": "grid"},
        "objective": {"metric": "y"},
        "parallel": jobs,
        "executor": {"command": ["python", "-c", save, "{trial_id}.env.json"]},
    }
    path = tmp_path / "env.yaml"
    path.write_text(json.dumps(study))  # JSON is YAML
    return path


def test_documented_trial_variables_are_what_a_trial_gets(tables, tmp_path, monkeypatch):
    for name in THREAD_VARIABLES:  # unset, so that somatize sets them for parallel trials
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SOMATIZE_SERVER", raising=False)  # conftest.py's, passed on like any variable of the user's
    study = _environment_study(tmp_path, jobs=2)
    outcome = cli.invoke(app, ["run", str(study), "-o", str(tmp_path / "env.json"), "-q"])
    assert outcome.exit_code == 0, outcome.output
    environments = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("trial_*.env.json"))]
    assert len(environments) == 2
    documented = set(tables["env:trial"].first_codes())
    for environment in environments:
        assert {name for name in environment if name.startswith("SOMATIZE_")} == documented
        assert set(tables["env:threads"].first_codes()) <= set(environment)
    assert set(tables["env:threads"].first_codes()) == set(THREAD_VARIABLES)


# links --------------------------------------------------------------------------


def _inline_text(token: Any) -> str:
    return "".join(child.content for child in token.children or [] if child.type in ("text", "code_inline"))


def anchors(page: Path) -> set[str]:
    """GitHub's anchor for each heading: lower case, punctuation dropped, spaces as hyphens."""
    tokens = _markdown.parse(page.read_text(encoding="utf-8"))
    slugs = set()
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            text = _inline_text(tokens[i + 1]).strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return slugs


def links(page: Path) -> list[str]:
    found = []
    for token in _markdown.parse(page.read_text(encoding="utf-8")):
        for child in token.children or []:
            if child.type in ("link_open", "image"):
                found.append(child.attrs.get("href") or child.attrs.get("src"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page):
    problems = []
    for href in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", href):  # https:, mailto:: not ours to check
            continue
        path_part, _, anchor = href.partition("#")
        target = (page.parent / path_part).resolve() if path_part else page
        if not target.is_relative_to(ROOT) or not target.exists():
            problems.append(f"{href}: no such file in the repository")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            problems.append(f"{href}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert problems == []


def test_the_reference_is_linked_from_readme_and_every_page_from_its_index():
    readme = links(ROOT / "README.md")
    assert "docs/README.md" in readme
    index = {href.partition("#")[0] for href in links(DOCS / "README.md")}
    assert {p.name for p in DOCS.glob("*.md")} - {"README.md"} <= index
