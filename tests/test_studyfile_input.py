"""Reading study files and captured outputs: regular files only, bounded in size and in YAML nodes (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_studyfile import BASE
from typer.testing import CliRunner

from somatize.cli import app
from somatize.errors import StudyFileError
from somatize.studyfile import load_study

cli = CliRunner()
# The documented limits.
MAX_STUDY_BYTES = 2 * 2**20
MAX_NODES = 20_000
# Generous: each command answers in well under a second; before the fix these hung for ever.
PROCESS_TIMEOUT = 60


def somatize(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "somatize", *map(str, args)]
    return subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)


def assert_refused(result, reason: str, name: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"{name}: cannot read: {reason}"]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    path = tmp_path / "study.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, fifo, command):
    result = somatize(command, fifo, cwd=tmp_path)
    assert_refused(result, "it is a named pipe (FIFO), not a regular file; to read a pipe, give '-' and pipe it in",
                   str(fifo))  # fmt: skip


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused_unread(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    assert_refused(somatize("validate", device, cwd=tmp_path), "it is a character device, not a regular file", device)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(StudyFileError) as info:
        load_study(tmp_path)
    assert info.value.problems == [f"{tmp_path}: cannot read: it is a directory, not a regular file"]


def padded(size: int) -> str:
    """BASE, a valid study, made `size` characters long with a trailing comment."""
    return BASE + "#" * (size - len(BASE) - 1) + "\n"


def test_a_file_over_the_limit_is_refused_and_one_at_the_limit_is_read(tmp_path):
    at_limit = tmp_path / "at.yaml"
    at_limit.write_text(padded(MAX_STUDY_BYTES), encoding="utf-8")
    assert load_study(at_limit).name == "demo"
    over = tmp_path / "over.yaml"
    over.write_text(padded(MAX_STUDY_BYTES + 1), encoding="utf-8")
    with pytest.raises(StudyFileError) as info:
        load_study(over)
    assert info.value.problems == [f"{over}: cannot read: it is larger than the 2 MiB limit"]


def test_stdin_has_the_same_limit(tmp_path):
    result = cli.invoke(app, ["validate", "-"], input=padded(MAX_STUDY_BYTES + 1))
    assert result.exit_code == 2
    assert result.output.splitlines() == ["<stdin>: cannot read: it is larger than the 2 MiB limit"]
    result = cli.invoke(app, ["validate", "-"], input=b"name: caf\xe9\n")
    assert result.exit_code == 2
    assert result.output.splitlines() == ["<stdin>:1:10: the file is not UTF-8 text (byte 0xe9)"]
    assert cli.invoke(app, ["validate", "-"], input=BASE).exit_code == 0


def test_output_sample_must_be_a_regular_file_too(tmp_path, fifo):
    study = tmp_path / "ok.yaml"
    study.write_text(BASE, encoding="utf-8")
    result = somatize("validate", study, "--output-sample", fifo, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"somatize: {fifo}: cannot read: it is a named pipe")
    assert "Traceback" not in result.stderr


# YAML bounds ------------------------------------------------------------------------


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    return [p.removeprefix(f"{path}:") for p in info.value.problems]


def test_too_many_nodes_stop_the_parser_at_the_first_one_over(tmp_path):
    found = problems(tmp_path, "a: [" + "1, " * MAX_NODES + "1]\n")
    # Nodes: the root mapping, the key, the list, then items 0, 1, ...; item k starts at column 5 + 3k.
    column = 5 + 3 * (MAX_NODES + 1 - 4)
    assert found == [f"1:{column}: the document is too large (over {MAX_NODES} YAML nodes)"]


def test_deep_nesting_is_refused_where_it_gets_too_deep(tmp_path):
    found = problems(tmp_path, "a:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(200)))
    assert found == ["101:101: YAML is nested too deeply (over 100 levels)"]


def test_a_long_string_aliased_many_times_is_refused(tmp_path):
    text = BASE + "x: &big " + "y" * 2**20 + "\n" + "z: [" + ", ".join(["*big"] * 20) + "]\n"
    expected = "13:4: the document is too large (over 8388608 characters of text once aliases are expanded)"
    assert problems(tmp_path, text) == [expected]


def test_billion_laughs_is_refused_alone(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    found = problems(tmp_path, BASE + "\n".join(levels) + "\n")
    assert len(found) == 1 and "the document is too large (over 100000 values once aliases are expanded)" in found[0]
