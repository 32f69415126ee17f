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


# a full disk ------------------------------------------------------------------------


class FullDisk:
    """os.write that fails with ENOSPC on the files `full` selects: a disk that fills while somatize runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.full = lambda name, written: False  # (file name, its size now) -> no room?
        real_write = os.write

        def write(fd: int, data) -> int:
            try:
                name = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                name = ""
            if name and self.full(os.path.basename(name), os.fstat(fd).st_size):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)


@pytest.fixture
def disk(monkeypatch) -> FullDisk:
    return FullDisk(monkeypatch)


def journal_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")  # never half a line
    return [json.loads(line) for line in text.splitlines()]


def resume_recovers(study: Path, out: Path, journaled: list[dict]) -> None:
    resumed = run(study, "-o", out, "-q", "--resume")
    assert resumed.exit_code == 0, resumed.output
    trials = json.loads(out.read_text())["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    for record in journaled:
        assert trials[record["number"]]["params"] == record["params"]


def assert_disk_full_message(result, path: Path, journal: Path) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"somatize: cannot write {path}: No space left on device (")
    assert f"the journal {journal} keeps " in result.stderr and "--resume`)" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_full_disk_at_a_journal_append_is_one_line_and_resume_recovers(tmp_path, study, disk):
    out, journal = tmp_path / "r.json", tmp_path / "r.journal.jsonl"
    sizes = []

    def full(name: str, size: int) -> bool:
        if name == journal.name:
            sizes.append(size)
        return name == journal.name and len(sizes) > 3  # the header and two trials fit
    disk.full = full
    result = run(study, "-o", out, "-q")
    assert_disk_full_message(result, journal, journal)
    lines = journal_lines(journal)
    assert len(lines) == 3 and [r["trial"]["number"] for r in lines[1:]] == [0, 1]
    disk.full = lambda name, size: False  # room again
    resume_recovers(study, out, [r["trial"] for r in lines[1:]])


@pytest.mark.parametrize("when", ["periodic", "final"])
def test_a_full_disk_at_a_results_write_is_one_line_and_keeps_the_journal(tmp_path, study, disk, monkeypatch, when):
    from somatize.storage import results

    out, journal = tmp_path / "r.json", tmp_path / "r.journal.jsonl"
    monkeypatch.setattr(results, "PERIODIC_WRITE_SECONDS", 0.0 if when == "periodic" else 1e9)
    writes = []

    def full(name: str, size: int) -> bool:
        if name.startswith(".r.json.") and size == 0:
            writes.append(name)
        # periodic: the first results write fits; final: the only one does not
        return name.startswith(".r.json.") and len(writes) > (1 if when == "periodic" else 0)
    disk.full = full
    result = run(study, "-o", out, "-q")
    assert_disk_full_message(result, out, journal)
    assert not list(tmp_path.glob(".r.json.*"))  # no temp file left
    lines = journal_lines(journal)
    if when == "periodic":  # the first trial's results file intact
        assert [t["number"] for t in json.loads(out.read_text())["trials"]] == [0]
        # Stopped at the first trial to finish after the failed write, which ran in the background
        # (issue 18): the second trial or a later one, every finished trial in the journal.
        assert 3 <= len(lines) <= 5
    else:
        assert not out.exists() and len(lines) == 5
    disk.full = lambda name, size: False
    resume_recovers(study, out, [r["trial"] for r in lines[1:]])
    assert not journal.exists()


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 96 KiB tmpfs, mounted for the test (root only; skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


FILLING = """\
import errno, os

calls = 0


def objective(params):
    global calls
    calls += 1
    if calls == FILL_AT and os.environ.get("FILL_THE_DISK"):
        with open("filler", "wb") as handle:
            try:
                while True:
                    handle.write(b"x" * 1024)
                    handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return params["x"]
"""


@pytest.mark.parametrize("n_trials, fill_at, full_file", [(60, 2, "r.journal.jsonl"), (3, 3, "r.json")])
def test_a_real_full_disk_is_one_line_and_resume_recovers_after_space_is_freed(small_tmpfs, n_trials, fill_at,
                                                                                full_file):
    import subprocess

    (small_tmpfs / "objective.py").write_text(FILLING.replace("FILL_AT", str(fill_at)))
    (small_tmpfs / "study.yaml").write_text(STUDY.replace("n_trials: 4", f"n_trials: {n_trials}"))
    argv = ["somatize", "run", "study.yaml", "-o", "r.json", "-q"]
    full = subprocess.run(argv, cwd=small_tmpfs, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FILL_THE_DISK": "1"})
    assert full.returncode == 2, full.stderr
    assert full.stderr.startswith(f"somatize: cannot write {full_file}: No space left on device ("), full.stderr
    assert full.stderr.count("\n") == 1
    journaled = [r["trial"] for r in journal_lines(small_tmpfs / "r.journal.jsonl")[1:]]
    assert journaled and not list(small_tmpfs.glob(".r.json.*"))
    (small_tmpfs / "filler").unlink()
    resumed = subprocess.run([*argv, "--resume"], cwd=small_tmpfs, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    trials = json.loads((small_tmpfs / "r.json").read_text())["trials"]
    assert [t["number"] for t in trials] == list(range(n_trials))
    for record in journaled:
        assert trials[record["number"]]["params"] == record["params"]
