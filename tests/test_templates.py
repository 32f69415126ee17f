"""Command templates: placeholders as names, values that never run, in real shells (SPEC §3)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from somatize.cli import app
from somatize.executors.base import Completed, Failed, TrialRequest
from somatize.executors.command import compile_template
from somatize.executors.shell import ShellExecutor
from somatize.executors.shelltemplate import ShellTemplate

cli = CliRunner()
TRIAL = {"trial_id": "trial_0003", "trial_number": 3, "trial_seed": 77, "study": "demo"}

# The values of the older injection tests, and ones that end a comment, a here-document or a line.
HOSTILE = [
    "$(touch pwned)",
    "; rm -f keep",
    "`touch pwned`",
    "a 'b' \"c\" \\ *",
    "x\ntouch pwned",
    "$(touch PWNED)",
    "`touch PWNED`",
    "; touch PWNED",
    "'",
    '"',
    "\\",
    "EOF\ntouch PWNED\nEOF",
    "a\\\ntouch PWNED",  # backslash-newline: a line continuation in an unquoted here-document
    "$HOME ${HOME} $((1+1))",
    "'; touch PWNED; '",
    '"; touch PWNED; "',
]

# Template shapes -> what out.txt must hold for value v (byte-exact).
SHAPES = {
    "command substitution": ('printf %s "$(printf %s {v})" > out.txt', "{v}"),
    "backticks": ('printf %s "`printf %s {v}`" > out.txt', "{v}"),
    "after a comment": ("printf %s {v} > out.txt # the value: {v}", "{v}"),
    "heredoc": ("cat > out.txt <<EOF\nvalue: {v}\nEOF", "value: {v}\n"),
    "heredoc <<-": ("cat > out.txt <<-EOF\n\tvalue: {v}\n\tEOF", "value: {v}\n"),
    "quoted heredoc": ("cat > out.txt <<'EOF'\n$HOME `x` \\n \\\n{v}\nEOF", "$HOME `x` \\n \\\n{v}\n"),
    "double-quoted heredoc": ('cat > out.txt <<"EOF"\n$(x) {v}\nEOF', "$(x) {v}\n"),
    "single quotes": ("printf %s 'value: {v}' > out.txt", "value: {v}"),
    "double quotes": ('printf %s "value: {v}" > out.txt', "value: {v}"),
    "inside $(...) in a heredoc": ('cat > out.txt <<EOF\n$(printf %s "[{v}]")\nEOF', "[{v}]\n"),
}


def expected(shape: str, value: str) -> str:
    return SHAPES[shape][1].replace("{v}", value)


def request(params: dict[str, Any], number: int = 3) -> TrialRequest:
    return TrialRequest(f"trial_{number:04d}", number, params, 77, "demo")


def only_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("shape", list(SHAPES))
def test_hostile_values_never_run_under_bin_sh(tmp_path: Path, shape: str) -> None:
    for i, value in enumerate(HOSTILE):
        work = tmp_path / str(i)
        work.mkdir()
        (work / "keep").write_text("")
        executor = ShellExecutor(SHAPES[shape][0].replace("{v}", "{label}"), ["f1"], work, {}, None)
        outcome = executor.run(request({"label": value}), _NoReports())
        assert isinstance(outcome, Completed), (value, outcome)
        assert only_files(work) == ["keep", "out.txt"], value  # nothing created, nothing removed
        assert (work / "out.txt").read_text() == expected(shape, value), value


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("shape", list(SHAPES))
def test_hostile_values_never_run_under_bash(tmp_path: Path, shape: str) -> None:
    """Where /bin/sh is bash (macOS, Fedora), the same script is just as safe."""
    template = compile_template(SHAPES[shape][0].replace("{v}", "{label}"))
    for i, value in enumerate(HOSTILE):
        work = tmp_path / str(i)
        work.mkdir()
        command = template.render({"label": value}, TRIAL)
        assert command.argv == template.render({"label": "plain"}, TRIAL).argv  # the value is not in the script
        subprocess.run(["bash", "-c", command.argv[-1]], cwd=work, env={**os.environ, **command.env}, check=True)
        assert only_files(work) == ["out.txt"], value
        assert (work / "out.txt").read_text() == expected(shape, value), value


class _NoReports:
    def report(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def should_prune(self) -> bool:
        return False


def test_args_and_trial_placeholders_in_every_quoting(tmp_path: Path) -> None:
    params = {"lr": 0.1 + 0.2, "act": "a 'b' $(touch pwned)", "deep": True}
    script = (
        "printf '%s\\n' {args} > unquoted.txt; printf %s \"{args}\" > double.txt; printf %s '{args}' > single.txt\n"
        "cat > heredoc.txt <<EOF\n{args} {trial_id} {trial_number} {trial_seed} {study}\nEOF"
    )
    assert isinstance(ShellExecutor(script, ["f1"], tmp_path, {}, None).run(request(params), _NoReports()), Completed)
    words = ["--lr", "0.30000000000000004", "--act", "a 'b' $(touch pwned)", "--deep", "true"]
    assert (tmp_path / "unquoted.txt").read_text().splitlines() == words
    assert (tmp_path / "double.txt").read_text() == " ".join(words)
    assert (tmp_path / "single.txt").read_text() == " ".join(words)
    assert (tmp_path / "heredoc.txt").read_text() == " ".join(words) + " trial_0003 3 77 demo\n"
    assert not (tmp_path / "pwned").exists()


def test_python_heredoc_gets_the_values(tmp_path: Path) -> None:
    """The realistic pattern: a Python snippet in a here-document, quoted or not."""
    for quote in ("", "'"):
        command = (
            f"{sys.executable} - <<{quote}EOF{quote}\n"
            'lr, act = {lr}, "{act}"\n'
            'print("f1=" + repr(lr * 2))\n'
            'print(act, "$HOME" if "{quote}" else "")\n'
            "EOF"
        ).replace("{quote}", quote)
        reports = _Recorder()
        executor = ShellExecutor(command, ["f1"], tmp_path, {}, None)
        assert isinstance(executor.run(request({"lr": 1 / 3, "act": "relu"}), reports), Completed)
        assert reports.records == [("f1", 2 / 3)]


class _Recorder(_NoReports):
    def __init__(self) -> None:
        self.records: list[tuple[str, float]] = []

    def report(self, name: str, value: float, step: int | None = None) -> None:
        self.records.append((name, value))


def test_a_value_that_cannot_go_fails_the_trial_not_the_study(tmp_path: Path) -> None:
    executor = ShellExecutor("echo $(( {n} + 1 ))", ["f1"], tmp_path, {}, None)
    outcome = executor.run(request({"n": "a[$(touch pwned)]"}), _NoReports())
    assert isinstance(outcome, Failed) and "arithmetic" in outcome.error
    for command in ("echo {v}", ["echo", "{v}"]):
        outcome = ShellExecutor(command, ["f1"], tmp_path, {}, None).run(request({"v": "a\0b"}), _NoReports())
        assert isinstance(outcome, Failed) and "NUL character" in outcome.error and "Traceback" not in outcome.error
    assert not (tmp_path / "pwned").exists()


# Through the command line ----------------------------------------------------------


def study(tmp_path: Path, search_space: str, command: str, name: str = "study.yaml") -> Path:
    """A grid study whose command is one double-quoted YAML scalar; `at(path)` is where it starts."""
    text = (
        f"name: tpl\nsearch_space:\n{search_space}strategy: {{type: grid}}\n"
        f"objective: {{metric: y, direction: maximize}}\nexecutor:\n  command: {json.dumps(command)}\n"
    )
    path = tmp_path / name
    path.write_text(text)
    return path


def at(path: Path) -> str:
    """FILE:LINE:COL of the command scalar that `study` wrote."""
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("  command: "))
    return f"{path}:{line}:12"


def test_run_passes_hostile_choices_byte_exact(tmp_path: Path) -> None:
    choices = ["EOF\ntouch PWNED\nEOF", "x\ntouch PWNED", "$(touch PWNED)", "`touch PWNED`", "'\";\\"]
    command = (
        "cat > v{trial_number}.txt <<EOF\n{v}\nEOF\n"
        '# the value was {v}\nprintf %s "$(printf %s {v})" > w{trial_number}.txt\n'
        "echo y=1"
    )
    path = study(tmp_path, f"  v: {json.dumps(choices)}\n", command)
    result = cli.invoke(app, ["run", str(path), "-o", str(tmp_path / "r.json"), "-q"])
    assert result.exit_code == 0, result.output
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["completed"] * len(choices)
    for trial in trials:
        number, value = trial["number"], trial["params"]["v"]
        assert (tmp_path / f"v{number}.txt").read_text() == value + "\n"
        assert (tmp_path / f"w{number}.txt").read_text() == value
    assert not list(tmp_path.glob("*wned*")) and not list(Path.cwd().glob("*wned*"))


def test_validate_shows_values_for_people_and_what_the_shell_runs(tmp_path: Path) -> None:
    path = study(tmp_path, "  v: ['$(touch PWNED)']\n  lr: {type: float, low: 0.5, high: 0.5001}\n",
                 "python train.py --lr {lr} --v {v}")  # fmt: skip
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    sample = next(line for line in lines if "sample command:" in line)
    assert re.fullmatch(r"  sample command: python train\.py --lr 0\.5\d* --v '\$\(touch PWNED\)'", sample), sample
    shell = next(line for line in lines if "as run by /bin/sh:" in line)
    assert shell.endswith('python train.py --lr "${SOMATIZE_P_lr}" --v "${SOMATIZE_P_v}"'), shell


# Placeholders are names (issues 14.9, 15.7) ------------------------------------------


def test_validate_refuses_every_format_spec_at_once(tmp_path: Path) -> None:
    command = "echo {x:{y}} {x!z} {x:>999999999} {} {1} {x y} {x[0]} } {"
    path = study(tmp_path, "  x: [a, b]\n  y: [1, 2]\n", command)
    path.write_text(path.read_text() + "  env: {A: '1'}\n")
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 9, problems
    for problem, shown in zip(problems, ["{x:{y}}", "{x!z}", "{x:>999999999}", "{}", "{1}", "{x y}", "{x[0]}"]):
        assert problem.startswith(f"{at(path)}: command has a malformed placeholder {shown}: "), problem
    lone = command.index(" } ") + 2  # 1-based
    assert f"single '}}' at character {lone}" in problems[7] and f"'{{' at character {lone + 2} is never" in problems[8]
    assert "Traceback" not in result.output


def test_list_form_refuses_format_specs_per_element(tmp_path: Path) -> None:
    text = (
        "name: tpl\nsearch_space:\n  x: [a, b]\nstrategy: {type: grid}\nobjective: {metric: y}\n"
        "executor:\n  command: [echo, '{x:>9}', ok, '{x!r}']\n"
    )
    (tmp_path / "s.yaml").write_text(text)
    result = cli.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2
    problems = result.stderr.strip().splitlines()
    assert [p.split(": ")[0] for p in problems] == [f"{tmp_path / 's.yaml'}:7:19", f"{tmp_path / 's.yaml'}:7:33"]
    assert all("malformed placeholder" in p for p in problems)


def test_names_with_dashes_and_dots_are_placeholders(tmp_path: Path) -> None:
    space = "  max-depth: [3, 4]\n  max_depth: [7]\n  opt.lr: [0.5]\n"
    record = "import json, sys; json.dump(sys.argv[2:], open(sys.argv[1] + sys.argv[2] + '.json', 'w')); print('y=1')"
    args = ["--max-depth", "{d}", "--max_depth", "7", "--opt.lr", "0.5"]
    string = f"{sys.executable} -c {json.dumps(record)} s {{max-depth}} {{max_depth}} {{opt.lr}} {{args}}"
    listed = [sys.executable, "-c", record, "l", "{max-depth}", "{max_depth}", "{opt.lr}", "{args}"]
    for form, command in (("s", string), ("l", listed)):
        path = study(tmp_path, space, "x", name=f"{form}.yaml")
        path.write_text(path.read_text().replace('command: "x"', f"command: {json.dumps(command)}"))
        result = cli.invoke(app, ["run", str(path), "-o", str(tmp_path / f"{form}.results.json"), "-q"])
        assert result.exit_code == 0, result.output
        for depth in ("3", "4"):
            argv = json.loads((tmp_path / f"{form}{depth}.json").read_text())
            assert argv == [depth, "7", "0.5", *[a.replace("{d}", depth) for a in args]], form


# Places where no text value can go ------------------------------------------------


def test_arithmetic_takes_numeric_parameters_only(tmp_path: Path) -> None:
    space = "  act: [relu, '1']\n  layers: {type: int, low: 1, high: 2}\n  k: [1, 2.5]\n"
    bad = study(tmp_path, space, "echo $(( {act} + {layers} )) ${{HOME:{act}}} y=1; let z={act}", name="bad.yaml")
    result = cli.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 1 and problems[0].startswith(f"{at(bad)}: command: placeholder {{act}} stands where")
    assert "use the list form of command (no shell), or read the value from $SOMATIZE_PARAMS" in problems[0]
    good = study(tmp_path, space, "echo y=$(( {layers} * 10 + {trial_number} ))", name="good.yaml")
    result = cli.invoke(app, ["run", str(good), "-o", str(tmp_path / "r.json"), "-q"])
    assert result.exit_code == 0, result.output
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    assert [t["values"]["y"] for t in trials] == [t["params"]["layers"] * 10 + t["number"] for t in trials]


def test_a_placeholder_in_a_heredoc_delimiter_is_refused(tmp_path: Path) -> None:
    path = study(tmp_path, "  v: [a, b]\n", "cat <<{v}\nhello\n{v}\necho y=1")
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{at(path)}: command: placeholder {{v}} is part of a here-document delimiter")


def test_values_bash_would_evaluate_are_refused(tmp_path: Path) -> None:
    """bash evaluates the argument of test -eq, printf %d, exit, ... as arithmetic, where a[$(cmd)] runs cmd."""
    space = "  v: ['a[$(touch PWNED)]', 'b[`touch PWNED`]', '[ok] $(fine)', ok]\n  w: ['c[${HOME}]']\n"
    path = study(tmp_path, space, "printf %d {v} 2>/dev/null; test {v} -gt 1; echo y=1 {args}")
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    problems = result.stderr.strip().splitlines()
    assert [p.split(" of {")[0] for p in problems] == [
        f"{at(path)}: command: the value 'a[$(touch PWNED)]'",
        f"{at(path)}: command: the value 'b[`touch PWNED`]'",
        f"{at(path)}: command: the value 'c[${{HOME}}]'",
    ]
    assert all(p.endswith("or read the value from $SOMATIZE_PARAMS") for p in problems)
    executor = ShellExecutor("printf %d {v}", ["f1"], tmp_path, {}, None)
    outcome = executor.run(request({"v": "a[$(touch PWNED)]"}), _NoReports())
    assert isinstance(outcome, Failed) and "cannot be given to a shell" in outcome.error
    assert only_files(tmp_path) == ["study.yaml"]


@pytest.mark.parametrize(
    "template",
    [
        "echo $(( {v} + 1 ))",
        'echo "$(( {v} ))"',
        "echo $[{v}]",
        "(( x = {v} ))",
        "[[ {v} -eq 1 ]]",
        "let x={v}",
        "echo ${{HOME:{v}}}",
        "a[{v}]=1",
        "for ((i=0; i<{v}; i++)); do :; done",
    ],
)
def test_every_arithmetic_place_takes_numbers_only(template: str) -> None:
    assert "stands where the shell does arithmetic" in " ".join(ShellTemplate(template).problems(set()))
    assert ShellTemplate(template).problems({"v"}) == []
    assert ShellTemplate(template.replace("{v}", "1") + "; echo {v}").problems(set()) == []


@pytest.mark.parametrize(
    "template",
    [
        'bash -c "python train.py --lr {v}"',
        "sh -ec 'echo {v}'",
        'docker run --rm img sh -c "train {v}"',
        'timeout 60 bash -lc "train {v}"',
        'sh -c "$(printf %s {v})"',
        'eval "echo {v}"',
        "ssh gpu-box train --lr {v}",
    ],
)
def test_text_given_to_another_shell_is_refused(template: str) -> None:
    (problem,) = ShellTemplate(template).problems(set())
    assert "is inside a command line that" in problem and "parses again, which would run its value" in problem
    assert "as an argument after the script" in problem and problem.endswith("read the value from $SOMATIZE_PARAMS")


def test_arguments_after_a_shell_script_are_safe(tmp_path: Path) -> None:
    command = 'sh -c \'printf %s "$1" > out.txt\' _ {v}; bash -c "printf %s \\"\\$1\\" >> out.txt" _ {v}'
    assert ShellTemplate(command).problems(set()) == []
    for value in HOSTILE:
        outcome = ShellExecutor(command, ["f1"], tmp_path, {}, None).run(request({"v": value}), _NoReports())
        assert isinstance(outcome, Completed)
        assert (tmp_path / "out.txt").read_text() == value * 2 and only_files(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("command", ["echo y=1 {args}", ["echo", "y=1", "{v}"]])
def test_validate_refuses_a_nul_in_a_value(tmp_path: Path, command: str | list[str]) -> None:
    path = study(tmp_path, '  v: ["a\\0b", ok]\n', "x")
    path.write_text(path.read_text().replace('command: "x"', f"command: {json.dumps(command)}"))
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"{at(path)}: command: the value 'a\\x00b' of {{v}} holds a NUL character, which no command can take\n"
    )
