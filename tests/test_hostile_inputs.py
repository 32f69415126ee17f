"""Property: hostile study files never hang, crash or exhaust memory; they get exit 2 and FILE:LINE lines (issue 14).

Mutations of the example studies and of the loader tests' valid files go
through `validate` and `run` in process (CliRunner); special files (FIFO,
devices, a huge file) and the bombs also through real subprocesses with a
timeout and an address-space limit, so a hang or a runaway allocation fails
the test instead of the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_studyfile import BASE, FULL
from typer.testing import CliRunner

from somatize.cli import app

STUDIES = Path(__file__).resolve().parent.parent / "studies"
SEEDS = [BASE, FULL, *(p.read_text(encoding="utf-8") for p in sorted(STUDIES.glob("*.yaml")))]
cli = CliRunner()
# Seconds a subprocess may take: each answers in about one, so only a hang reaches it.
PROCESS_TIMEOUT = 30
MEMORY_LIMIT = 1536 * 2**20  # bytes of address space per subprocess
# A point in the file, or "cannot read" for a file that is not read at all.
_LINE = r"(?:\d+:\d+: .+| cannot read: .+)"

# Fragments that have broken YAML loaders: bombs, deep nesting, tags, huge numbers, odd bytes.
LAUGHS = "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 10) + "]\n" for i in range(9)
)  # fmt: skip
HOSTILE = [
    LAUGHS,
    "deep: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
    "".join(" " * i + f"k{i}:\n" for i in range(300)),
    "loop: &loop [*loop]\n",
    "big: &big " + "x" * 100_000 + "\nmany: [" + ", ".join(["*big"] * 200) + "]\n",
    "target: !!python/object/apply:os.system ['echo pwned']\n",
    "x: !!binary aGVsbG8=\n",
    "strategy: {type: grid, points_per_dim: 100000000000}\n",
    "strategy: {type: random, n_trials: 1000000000000}\n",
    "strategy: {type: bayesian, n_trials: 5, n_initial: 1000000000, initial_points: sobol}\n",
    "parallel: 100000000\n",
    "timeout: 1.0e400\n",
    "seed: 99999999999999999999999999\n",
    "search_space: {x: {type: int, low: 0, high: 99999999999999999999, step: 1}}\n",
    "search_space: {x: {type: float, low: 0, high: 1.0e308, step: 1.0e-308}}\n",
    (
        "search_space: {x: {type: int, low: 0, high: 999}, y: {type: int, low: 0, high: 999}}\n"
        "constraints: ['x + y < 0']\n"
    ),
    "constraints: ['" + "(" * 500 + "x" + ")" * 500 + " > 0']\n",
    "constraints: ['9 ** 9 ** 9 ** 9 > 0']\n",
    "name: \x00\x01\x02\n",
    "name: \ud7ff\ufffe\n",
    "? [a, b]\n: c\n",
    "<<: [*nothing]\n",
    "---\n---\n",
    "%YAML 1.1\n%TAG ! tag:x,2000:\n---\nname: !x y\n",
]


def check_exit_2(result, name: str) -> None:
    """Exit 2, every line on stderr points into the file (or says it cannot be read), no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    stderr = result.stderr if hasattr(result, "stderr") else ""
    assert "Traceback" not in stderr
    assert result.exit_code == 2, (result.exit_code, stderr)
    lines = stderr.splitlines()
    assert lines, "no message"
    pattern = re.compile(re.escape(name) + ":" + _LINE)
    assert all(pattern.fullmatch(line) for line in lines), lines


def mutated(seed: str, data: st.DataObject) -> bytes:
    """One hostile change to a valid study: a fragment spliced in, a line dropped or bytes flipped."""
    lines = seed.splitlines(keepends=True)
    kind = data.draw(st.sampled_from(["splice", "replace", "drop", "bytes", "encode", "indent"]))
    at = data.draw(st.integers(0, len(lines)))
    if kind in ("splice", "replace"):
        fragment = data.draw(st.sampled_from(HOSTILE))
        lines[at : at + (kind == "replace")] = [fragment]
    elif kind == "drop" and lines:
        del lines[min(at, len(lines) - 1)]
    elif kind == "indent" and lines:
        lines[min(at, len(lines) - 1)] = "   " + lines[min(at, len(lines) - 1)]
    raw = "".join(lines).encode("utf-8", errors="surrogatepass")
    if kind == "bytes":
        noise = data.draw(st.binary(min_size=1, max_size=16))
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + noise + raw[cut + data.draw(st.integers(0, 8)) :]
    elif kind == "encode":
        codec = data.draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
        raw = "".join(lines).replace("name:", "name: café\nx:").encode(codec, errors="replace")
    return raw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_study_files_are_valid_or_exit_2_with_file_lines(seed, data):
    raw = mutated(seed, data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.yaml"
        path.write_bytes(raw)
        for module in STUDIES.glob("*.py"):  # the examples' objectives, so that a harmless mutation is valid
            (Path(tmp) / module.name).write_bytes(module.read_bytes())
        checked = cli.invoke(app, ["validate", str(path)])
        event(f"validate exit {checked.exit_code}")
        if checked.exit_code == 0:
            assert checked.stdout.startswith(f"{path}: valid"), checked.stdout
            return  # a harmless mutation: running it would run real trials
        check_exit_2(checked, str(path))
        ran = cli.invoke(app, ["run", str(path), "-o", str(Path(tmp) / "r.json"), "-q"])
        check_exit_2(ran, str(path))
        assert ran.stderr == checked.stderr  # the same problems, whichever command reads the file


@settings(max_examples=20, deadline=None)
@given(st.binary(max_size=2000))
def test_binary_data_on_stdin_is_exit_2_with_stdin_lines(raw):
    result = cli.invoke(app, ["validate", "-"], input=raw)
    check_exit_2(result, "<stdin>")


# Real subprocesses: special files and the bombs, with a timeout and a memory limit ----------------


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


class _Ran:
    """A finished subprocess, shaped like CliRunner's result for check_exit_2."""

    def __init__(self, done: subprocess.CompletedProcess[str]):
        self.exit_code, self.stderr, self.exception = done.returncode, done.stderr, None


def somatize(*args: str, cwd: Path) -> _Ran:
    done = subprocess.run(
        [sys.executable, "-m", "somatize", *args],
        check=False, cwd=cwd, capture_output=True, text=True, timeout=PROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL, preexec_fn=_limit_memory,
    )  # fmt: skip
    return _Ran(done)


def _special_file(kind: str, tmp_path: Path) -> str:
    if kind.startswith("/dev/"):
        if not os.path.exists(kind):
            pytest.skip(f"no {kind}")
        return kind
    path = tmp_path / "study.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "null-node":
        try:
            os.mknod(path, 0o600 | __import__("stat").S_IFCHR, os.stat("/dev/null").st_rdev)
        except PermissionError:
            pytest.skip("mknod needs privileges")
    elif kind == "huge":
        with open(path, "wb") as out:  # sparse: 50 MB of zeros on disk in no time
            out.truncate(50 * 2**20)
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "laughs":
        path.write_text(BASE + LAUGHS, encoding="utf-8")
    elif kind == "nodes":
        path.write_text(BASE + "many: [" + "1, " * 600_000 + "1]\n", encoding="utf-8")  # 1.8 MB, under the limit
    elif kind == "deep":
        path.write_text(BASE + "deep: " + "[" * 500_000 + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")
@pytest.mark.parametrize(
    ("kind", "command"),
    [
        ("fifo", "validate"), ("fifo", "run"), ("/dev/zero", "run"), ("/dev/urandom", "validate"),
        ("null-node", "validate"), ("huge", "run"), ("binary", "validate"), ("laughs", "run"),
        ("nodes", "validate"), ("deep", "run"),
    ],
)  # fmt: skip
def test_special_and_huge_files_get_exit_2_at_once_in_bounded_memory(tmp_path, kind, command):
    name = _special_file(kind, tmp_path)
    check_exit_2(somatize(command, name, cwd=tmp_path), name)
