"""What `somatize run` writes to: regular files or new paths only, never through a node or a dangling link;
stale temp files of a killed run removed; a full disk reported in one line with the journal kept."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.cli import app

cli = CliRunner()

STUDY = """\
name: files
seed: 5
search_space:
  x: {type: float, low: 0.0, high: 1.0}
strategy: {type: random, n_trials: 4}
objective: {metric: y, direction: minimize}
executor: {function: objective:objective}
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    (tmp_path / "objective.py").write_text("def objective(params):\n    return params['x']\n")
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


def run(*args: object):
    return cli.invoke(app, ["run", *map(str, args)])


def assert_one_line_exit_2(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def device_node(path: Path) -> Path:
    """A copy of /dev/null (character device 1:3), as `mknod` makes it."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not permitted here")
    return path


def unix_socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


# -o on anything but a regular file -----------------------------------------------------

NODES = {
    "device": device_node,
    "fifo": lambda p: (os.mkfifo(p), p)[1],
    "socket": unix_socket,
    "directory": lambda p: (p.mkdir(), p)[1],
}


@pytest.mark.parametrize("kind", sorted(NODES))
@pytest.mark.parametrize("through_symlink", [False, True], ids=["itself", "symlink"])
def test_results_on_a_node_are_refused_and_the_node_is_left(tmp_path, study, kind, through_symlink):
    node = NODES[kind](tmp_path / "node")
    mode = os.lstat(node).st_mode
    out = node
    if through_symlink:
        out = tmp_path / "link.json"
        out.symlink_to(node)
    result = run(study, "-o", out, "-q")
    assert_one_line_exit_2(result, f"{out}: cannot write results: it is ")
    assert os.lstat(node).st_mode == mode  # still the node it was, not a regular file
    assert not list(tmp_path.glob(".*tmp")) and not (tmp_path / "node.journal.jsonl").exists()


def test_results_through_a_dangling_symlink_are_refused(tmp_path, study):
    out = tmp_path / "r.json"
    out.symlink_to(tmp_path / "missing" / "x.json")
    assert_one_line_exit_2(run(study, "-o", out, "-q"), "it is a symbolic link to a missing file")
    assert out.is_symlink()


def test_results_through_a_symlink_to_a_regular_file_go_to_that_file(tmp_path, study):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.json"
    target.write_text("{}")
    out = tmp_path / "r.json"
    out.symlink_to(target)
    assert run(study, "-o", out, "-q").exit_code == 0
    assert out.is_symlink()  # the link kept, the file it names rewritten
    assert len(json.loads(target.read_text())["trials"]) == 4


@pytest.mark.parametrize("role, name", [("journal", "r.journal.jsonl"), ("lock file", "r.lock")])
@pytest.mark.parametrize("points_to", ["missing", "device", "regular"])
def test_a_symlink_at_the_journal_or_lock_is_never_followed(tmp_path, study, role, name, points_to):
    target = tmp_path / "elsewhere"
    if points_to == "device":
        device_node(target)
    elif points_to == "regular":
        target.write_text("")
    (tmp_path / name).symlink_to(target)
    result = run(study, "-o", tmp_path / "r.json", "-q")
    assert_one_line_exit_2(result, f"cannot use it as the study's {role}" if role == "lock file"
                           else "cannot use it as the journal", "it is a symbolic link")
    assert (tmp_path / name).is_symlink()
    assert points_to != "missing" or not target.exists()  # nothing created where a dangling link points
    assert points_to != "regular" or target.read_text() == ""
    assert not (tmp_path / "r.json").exists()


# stale temp files -------------------------------------------------------------------


def test_temp_files_of_a_killed_final_write_are_removed_on_the_next_start(tmp_path, study):
    stale = [tmp_path / ".r.json.k3_x9abq.tmp", tmp_path / ".r.json.00000000.tmp"]
    kept = [tmp_path / ".other.json.k3_x9abq.tmp", tmp_path / "r.json.k3_x9abq.tmp", tmp_path / ".r.json.keep.tmp"]
    for path in stale + kept:
        path.write_text('{"format": "somatize.results", "trials": [')  # half a results file
    (tmp_path / ".r.json.dir00000.tmp").mkdir()  # our pattern, but not a file we wrote
    assert run(study, "-o", tmp_path / "r.json", "-q").exit_code == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and (tmp_path / ".r.json.dir00000.tmp").is_dir()
